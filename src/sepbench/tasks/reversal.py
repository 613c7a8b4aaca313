"""String reversal (Zhang et al. §3), with a CoT that writes the stack after every symbol."""

from __future__ import annotations

import numpy as np

from sepbench.errors import check_int
from sepbench.tasks.base import Batch, Vocab, register
from sepbench.tasks.serial import EQUALS, FILL, MAX_SYMBOLS, STEP, SerialTask, symbols


def stack_trace_indices(length: int) -> np.ndarray:
    """Input positions read by the stack trace at ``length``: t, t-1, .., 0, then -1 (``|``)
    for t = 0 .. length - 1."""
    step = np.repeat(np.arange(length), np.arange(2, length + 2))
    starts = np.cumsum(np.r_[0, np.arange(2, length + 1)])
    offset = np.arange(len(step)) - starts[step]
    return np.where(offset <= step, step - offset, -1)


@register
class Reversal(SerialTask):
    """Reverse a string of ``length`` = N symbols over ``vocab_size`` symbols ``s0`` ...

    Prompt: ``x_1 .. x_N =``, symbols i.i.d. uniform (default binary, as in Delétang et al.).
    Answer: ``x_N .. x_1`` (exactly N tokens, so no end token is needed).
    ``cot``: the state a recurrent reverser carries is the stack of symbols read so far, so
    after every input symbol x_t the trace writes that stack top first, ``x_t .. x_1``, and
    ``|``; each step prepends one symbol to the previous one. The last step already is the
    answer, written again after the trace as in every serial task. The trace has
    N (N + 3) / 2 tokens (quadratic in N: keep N modest with ``cot``). ``filler``: that many
    ``[FILL]`` tokens, then the answer. Training lengths ~ U{1..N}, test length N
    (papers.md §3).
    """

    name = "reversal"
    paper = "Zhang et al. §3"
    summary = "reverse a string: a stack (last in, first out), serial for a fixed-depth model"
    length_meaning = "symbols in the input string"

    def __init__(self, *, vocab_size: int = 2, cot: bool = False, filler: bool = False) -> None:
        self.vocab_size = check_int(self.name, "vocab_size", vocab_size, 2, MAX_SYMBOLS)
        self._set_trace(cot, filler)
        self.vocab = Vocab([*symbols(vocab_size), EQUALS, STEP, FILL])
        self.symbol0 = self.vocab.id("s0")

    def trace_length(self, length: int) -> int:
        return length * (length + 3) // 2

    def answer_length(self, length: int) -> int:
        return length

    def chance(self, length: int) -> float:
        """(1/V)^N in every mode: the answer (and the trace) spell out a uniform string."""
        self.validate_length(length)
        return self.vocab_size ** -length

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        self.validate_length(length)
        inputs = rng.integers(0, self.vocab_size, (batch_size, length), dtype=np.int64)
        inputs += self.symbol0
        if self.cot:
            index = stack_trace_indices(length)
            middle = np.where(index >= 0, inputs[:, index], self.vocab.id(STEP))
        else:
            middle = self._fillers(batch_size, length)
        prompts = np.concatenate([inputs, np.full((batch_size, 1), self.vocab.id(EQUALS))], axis=1)
        reversed_inputs = inputs[:, ::-1]
        answers = [self.vocab.text(row) for row in reversed_inputs]
        return Batch.from_arrays(prompts, np.concatenate([middle, reversed_inputs], 1), answers)

    def _solve(self, prompt: list[int]) -> tuple[list[int], list[int], int] | None:
        alphabet = set(self.vocab.ids(symbols(self.vocab_size)))
        body = prompt[:-1]
        if not body or prompt[-1] != self.vocab.id(EQUALS) or not alphabet.issuperset(body):
            return None
        stack: list[int] = []
        trace: list[int] = []
        for token in body:
            stack.insert(0, token)
            trace += [*stack, self.vocab.id(STEP)]
        return trace, stack, len(body)
