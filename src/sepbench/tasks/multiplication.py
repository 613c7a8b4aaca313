"""Binary multiplication (Zhang et al. §3), with a partial-products-and-running-sum CoT."""

from __future__ import annotations

import numpy as np

from sepbench.tasks.base import Batch, Vocab, register
from sepbench.tasks.serial import EQUALS, FILL, STEP, SerialTask

TIMES, THEN = "*", ";"


def propagate_carries(columns: np.ndarray) -> np.ndarray:
    """Bits of numbers given as little-endian column counts (..., W) -> bits (..., W).

    The carry chain is serial, so this loops over the W columns, vectorised over the rest;
    the caller sizes W so that no carry leaves the last column.
    """
    bits = np.empty(columns.shape, np.uint8)
    carry = np.zeros(columns.shape[:-1], columns.dtype)
    for k in range(columns.shape[-1]):
        total = columns[..., k] + carry
        bits[..., k] = total & 1
        carry = total >> 1
    return bits


@register
class Multiplication(SerialTask):
    """Multiply two ``length`` = N bit numbers, binary, little-endian (least significant first).

    Prompt: ``a_0 .. a_(N-1) * b_0 .. b_(N-1) =``, every bit i.i.d. uniform (leading zeros
    allowed: the operands are uniform on [0, 2^N)). Answer: the product in exactly 2N bits.
    ``cot``: for each bit b_i of the second operand, i = 0 .. N-1, the partial product
    p_i = b_i a 2^i in N + i bits, ``;``, the running sum s_i = s_(i-1) + p_i in N + i + 1
    bits (enough for a (b mod 2^(i+1))), and ``|``; then the product. Widths are fixed by N
    and i, so the trace has 3N^2 + 2N tokens (quadratic: keep N modest with ``cot``), and
    ``filler`` writes exactly that many ``[FILL]`` tokens, then the product. Training lengths
    ~ U{1..N}, test length N (papers.md §3).
    """

    name = "multiplication"
    paper = "Zhang et al. §3"
    summary = "binary multiplication: long carry chains, serial for a fixed-depth model"
    length_meaning = "bits per operand"

    def __init__(self, *, cot: bool = False, filler: bool = False) -> None:
        self._set_trace(cot, filler)
        self.vocab = Vocab(["0", "1", TIMES, EQUALS, THEN, STEP, FILL])
        self.zero, self.one = self.vocab.id("0"), self.vocab.id("1")

    def trace_length(self, length: int) -> int:
        return 3 * length * length + 2 * length

    def answer_length(self, length: int) -> int:
        return 2 * length

    def chance(self, length: int) -> float:
        """P(a = 0 or b = 0) = 2 · 2^-N - 4^-N in every mode: the likeliest product is 0, and
        its trace (all partial products and sums zero) is the same whichever operand is 0;
        any other trace spells out both operands (probability 4^-N)."""
        self.validate_length(length)
        return 2 * 2.0**-length - 4.0**-length

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        self.validate_length(length)
        a, b = rng.integers(0, 2, (2, batch_size, length), dtype=np.int64)
        shift = np.arange(2 * length) - np.arange(length)[:, None]  # row i reads a[k - i]
        inside = (shift >= 0) & (shift < length)
        partial = np.where(inside, a[:, np.clip(shift, 0, length - 1)], 0) * b[:, :, None]
        if self.cot:
            sums = propagate_carries(np.cumsum(partial, axis=1))
            middle = self._trace(partial.astype(np.uint8), sums)
        else:
            sums = propagate_carries(partial.sum(axis=1, keepdims=True))
            middle = self._fillers(batch_size, length)
        product = sums[:, -1].astype(np.int64) + self.zero
        column = np.ones((batch_size, 1), np.int64)
        prompts = np.concatenate(
            [
                a + self.zero,
                self.vocab.id(TIMES) * column,
                b + self.zero,
                self.vocab.id(EQUALS) * column,
            ],
            axis=1,
        )
        answers = [self.vocab.text(row) for row in product]
        return Batch.from_arrays(prompts, np.concatenate([middle, product], axis=1), answers)

    def _trace(self, partial: np.ndarray, sums: np.ndarray) -> np.ndarray:
        """Lay out rows ``p_i ; s_i |`` at their widths from bits (B, N, 2N) of p_i and s_i."""
        batch, length, width = partial.shape
        codes = np.concatenate(  # 0, 1: bits; 2: ``;``; 3: ``|``
            [
                partial,
                np.full((batch, length, 1), 2, np.uint8),
                sums,
                np.full((batch, length, 1), 3, np.uint8),
            ],
            axis=2,
        )
        bit, row = np.arange(width), np.arange(length)[:, None]
        keep = np.concatenate(
            [
                bit < length + row,
                np.ones((length, 1), bool),
                bit <= length + row,
                np.ones((length, 1), bool),
            ],
            axis=1,
        )
        ids = np.array(self.vocab.ids(["0", "1", THEN, STEP]), np.int64)
        return ids[codes[:, keep]]

    def _solve(self, prompt: list[int]) -> tuple[list[int], list[int], int] | None:
        length = (len(prompt) - 2) // 2
        if length < 1 or len(prompt) != 2 * length + 2:
            return None
        a_bits, b_bits = prompt[:length], prompt[length + 1 : -1]
        markers = [prompt[length], prompt[-1]]
        if markers != self.vocab.ids([TIMES, EQUALS]):
            return None
        if not {self.zero, self.one}.issuperset(a_bits + b_bits):
            return None
        a = sum(1 << i for i, bit in enumerate(a_bits) if bit == self.one)
        total, trace = 0, []
        for i, bit in enumerate(b_bits):
            row = a << i if bit == self.one else 0
            total += row
            trace += [*self._bits(row, length + i), self.vocab.id(THEN)]
            trace += [*self._bits(total, length + i + 1), self.vocab.id(STEP)]
        return trace, self._bits(total, 2 * length), length

    def _bits(self, value: int, width: int) -> list[int]:
        """``value`` in ``width`` bits, least significant first."""
        return [self.one if value >> k & 1 else self.zero for k in range(width)]
