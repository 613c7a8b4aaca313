"""The S5 word problem (Zhang et al. §3): compose a sequence of permutations of 5 elements."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations

import numpy as np

from sepbench.tasks.base import Batch, Vocab, register
from sepbench.tasks.serial import EQUALS, FILL, SerialTask

PERMUTATIONS = list(permutations(range(5)))  # lexicographic; index 0 is the identity
PERMUTATION_TOKENS = ["p" + "".join(map(str, p)) for p in PERMUTATIONS]


def composition_table() -> np.ndarray:
    """``table[x, y]``: index of "x then y", the map i -> y(x(i)), for permutation indices."""
    perms = np.array(PERMUTATIONS)  # (120, 5)
    composed = perms[:, perms].transpose(1, 0, 2)  # [x, y, i] = y[x[i]]
    weights = 5 ** np.arange(5)  # a permutation's base-5 code
    index_of_code = np.zeros(5**5, np.int64)
    index_of_code[perms @ weights] = np.arange(len(perms))
    return index_of_code[composed @ weights]


@register
class StateTracking(SerialTask):
    """The S5 word problem: ``length`` = N permutations of {0..4}, answer their composition.

    Each permutation is one of 120 tokens in one-line notation: ``p20134`` maps 0 -> 2,
    1 -> 0, 2 -> 1, 3 -> 3, 4 -> 4. Composition order: the input is applied left to right,
    so the state after step t is pi_t = sigma_t o pi_(t-1), pi_t(i) = sigma_t(pi_(t-1)(i)),
    with pi_0 the identity; the answer is pi_N. Prompt: ``sigma_1 .. sigma_N =`` with the
    sigma_t i.i.d. uniform on S5 (the identity included), so the answer is uniform on S5.
    ``cot``: pi_1 .. pi_N (one token each, no separators), then the answer pi_N again.
    ``filler``: N ``[FILL]`` tokens, then the answer. ``cot="interleaved"``:
    ``sigma_1 pi_1 .. sigma_N pi_N =`` then pi_N, the input given one step at a time
    (``filler="interleaved"``: ``[FILL]`` for each pi_t; see :mod:`sepbench.tasks.serial`).
    Training lengths ~ U{1..N}, test length N
    (papers.md §3).
    """

    name = "state_tracking"
    paper = "Zhang et al. §3"
    summary = "S5 word problem: composing permutations, a non-solvable group (NC1-complete)"
    length_meaning = "permutations in the input sequence"
    interleavable = True

    def __init__(self, *, cot: bool | str = False, filler: bool | str = False) -> None:
        self._set_trace(cot, filler)
        self.vocab = Vocab([*PERMUTATION_TOKENS, EQUALS, FILL])
        self.offset = self.vocab.id(PERMUTATION_TOKENS[0])  # permutation k has id offset + k
        self.table = composition_table()

    def chance(self, length: int) -> float:
        """1/120 for the uniform answer; with ``cot`` the running products spell out the
        input: 120^-N."""
        self.validate_length(length)
        return len(PERMUTATIONS) ** -length if self.cot else 1 / len(PERMUTATIONS)

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        self.validate_length(length)
        steps = rng.integers(0, len(PERMUTATIONS), (batch_size, length), dtype=np.int64)
        running = np.empty_like(steps)
        state = np.zeros(batch_size, np.int64)
        for t in range(length):  # serial by nature; each step is one gather over the batch
            state = self.table[state, steps[:, t]]
            running[:, t] = state
        texts = [PERMUTATION_TOKENS[s] for s in state]
        if self.interleaved:
            final = state[:, None] + self.offset
            return self._interleave(steps + self.offset, running + self.offset, final, texts)
        middle = running + self.offset if self.cot else self._fillers(batch_size, length)
        prompts = np.concatenate(
            [steps + self.offset, np.full((batch_size, 1), self.vocab.id(EQUALS))], axis=1
        )
        completions = np.concatenate([middle, state[:, None] + self.offset], axis=1)
        return Batch.from_arrays(prompts, completions, texts)

    def final_answer(self, completion: Sequence[int]) -> str | None:
        """The last token: the trace has no end mark, and the answer is one permutation."""
        ids = [int(t) for t in completion]
        return super().final_answer(ids[-1:]) if ids else None

    def _solve(self, prompt: list[int]) -> tuple[list[int], list[int], int] | None:
        body = prompt[:-1]
        if not body or prompt[-1] != self.vocab.id(EQUALS):
            return None
        names = {self.vocab.id(token): token for token in PERMUTATION_TOKENS}
        state = [0, 1, 2, 3, 4]
        trace = []
        for token in body:
            if token not in names:
                return None
            sigma = [int(digit) for digit in names[token][1:]]
            state = [sigma[image] for image in state]
            trace.append(self.vocab.id("p" + "".join(map(str, state))))
        return trace, trace[-1:], len(body)
