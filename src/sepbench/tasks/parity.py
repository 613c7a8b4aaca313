"""Parity (Zhang et al. §3): the simplest state-tracking task, with a running-parity CoT."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sepbench.tasks.base import Batch, Vocab, register
from sepbench.tasks.serial import EQUALS, FILL, SerialTask

TRUE, FALSE = "[TRUE]", "[FALSE]"


@register
class Parity(SerialTask):
    """Is the number of 1s among ``length`` = N bits odd? Label ``[TRUE]`` (odd) / ``[FALSE]``.

    Prompt: ``x_1 .. x_N =`` with bits i.i.d. uniform, so labels are balanced exactly.
    ``cot``: the running parity p_t = x_1 xor .. xor x_t after every bit (N tokens ``0``/``1``,
    no separators), then the label. ``filler``: N ``[FILL]`` tokens, then the label.
    ``cot="interleaved"``: ``x_1 p_1 x_2 p_2 .. x_N p_N =`` then the label, the bits given one
    at a time (``filler="interleaved"``: ``[FILL]`` in place of each p_t; see
    :mod:`sepbench.tasks.serial`).
    Training lengths ~ U{1..N}, test length N (papers.md §3). Free generation stops at the
    label.
    """

    name = "parity"
    paper = "Zhang et al. §3"
    summary = "parity of a bit string: a 2-state automaton, serial for fixed-depth attention"
    length_meaning = "bits in the input string"
    interleavable = True

    def __init__(self, *, cot: bool | str = False, filler: bool | str = False) -> None:
        self._set_trace(cot, filler)
        self.vocab = Vocab(["0", "1", EQUALS, FILL, TRUE, FALSE])
        self.zero, self.one = self.vocab.id("0"), self.vocab.id("1")
        self.labels = np.array(self.vocab.ids([FALSE, TRUE]), np.int64)
        self.stop_ids = frozenset(self.labels.tolist())

    def chance(self, length: int) -> float:
        """1/2 for the balanced label; with ``cot`` the running parities spell out the bits:
        2^-N."""
        self.validate_length(length)
        return 2.0**-length if self.cot else 0.5

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        self.validate_length(length)
        if self.interleaved:
            bits = rng.integers(0, 2, (batch_size, length), dtype=np.int64)
            odd = np.bitwise_xor.accumulate(bits, axis=1)
            labels = self.labels[odd[:, -1:]]
            texts = [(FALSE, TRUE)[o] for o in odd[:, -1]]
            return self._interleave(bits + self.zero, odd + self.zero, labels, texts)
        return self.generate_lengths(rng, np.full(batch_size, length, np.int64))

    def generate_lengths(self, rng: np.random.Generator, lengths: np.ndarray) -> Batch:
        """Examples of ``lengths[b]`` bits each, right-padded: ``bits = [trace] label``."""
        if self.interleaved:  # one generate per length
            return super().generate_lengths(rng, lengths)
        batch_size, longest = len(lengths), int(lengths.max())
        rows, size = np.arange(batch_size), lengths[:, None]
        bits = rng.integers(0, 2, (batch_size, longest), dtype=np.int64)
        running = np.bitwise_xor.accumulate(bits, axis=1)
        odd = running[rows, lengths - 1]
        traced = self.cot or self.filler
        end = size + 1 + (size if traced else 0)  # the label's column
        columns = np.arange(int(end.max()) + 1)
        tokens = np.zeros((batch_size, len(columns)), np.int64)
        tokens[:, :longest] = np.where(columns[:longest] < size, bits + self.zero, 0)
        tokens[rows, lengths] = self.vocab.id(EQUALS)
        trace = (columns > size) & (columns < end)
        if self.cot:
            steps = np.clip(columns - size - 1, 0, longest - 1)
            tokens[trace] = np.take_along_axis(running, steps, 1)[trace] + self.zero
        elif self.filler:
            tokens[trace] = self.vocab.id(FILL)
        tokens[rows, end[:, 0]] = self.labels[odd]
        return Batch(
            tokens,
            (columns > size) & (columns <= end),
            lengths + 1,
            end[:, 0] + 1,
            [(FALSE, TRUE)[o] for o in odd],
        )

    def final_answer(self, completion: Sequence[int]) -> str | None:
        """The first label of the completion (decoding stops there); None if it has none."""
        labels = [int(t) for t in completion if int(t) in self.stop_ids]
        return self.vocab.tokens[labels[0]] if labels else None

    def _solve(self, prompt: list[int]) -> tuple[list[int], list[int], int] | None:
        body = prompt[:-1]
        if not body or prompt[-1] != self.vocab.id(EQUALS):
            return None
        parity, trace = 0, []
        for token in body:
            if token not in (self.zero, self.one):
                return None
            parity ^= token == self.one
            trace.append(self.one if parity else self.zero)
        return trace, [self.vocab.id(TRUE if parity else FALSE)], len(body)
