"""Binary multiplication (Zhang et al. §3), with a CoT that writes the running sum one column
at a time (linear in N) or the partial products and running sums in full (quadratic)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sepbench.errors import check_choice
from sepbench.tasks.base import Batch, Vocab, register
from sepbench.tasks.serial import EOS, EQUALS, FILL, STEP, SerialTask, pack, ragged_batch

TIMES, THEN = "*", ";"
TRACES = ("linear", "full")


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


def column_totals(columns: np.ndarray) -> np.ndarray:
    """Column k's count plus the carry into it, (..., W) -> (..., W): the totals whose low
    bits are the number's bits and whose high bits are the carries out."""
    totals = np.empty_like(columns)
    carry = np.zeros(columns.shape[:-1], columns.dtype)
    for k in range(columns.shape[-1]):
        totals[..., k] = columns[..., k] + carry
        carry = totals[..., k] >> 1
    return totals


def bit_length(values: np.ndarray) -> np.ndarray:
    """Binary digits of each value, at least 1 (0 is written "0")."""
    return np.maximum(np.floor(np.log2(np.maximum(values, 1))).astype(np.int64) + 1, 1)


@register
class Multiplication(SerialTask):
    """Multiply two ``length`` = N bit numbers, binary, little-endian (least significant first).

    Prompt: ``a_0 .. a_(N-1) * b_0 .. b_(N-1) =``, every bit i.i.d. uniform (leading zeros
    allowed: the operands are uniform on [0, 2^N)). Answer: the product in exactly 2N bits,
    then ``[EOS]``.

    ``cot``, in the form ``trace`` names:

    - ``linear`` (default): schoolbook multiplication by columns, the running sum written one
      column per step. For k = 0 .. 2N-1 the step writes the column total
      t_k = Σ_{i+j=k} a_i b_j + ⌊t_(k-1) / 2⌋ in binary, least significant bit first, no
      leading zeros, then ``|``: its first bit is product bit k, the rest is the carry, the
      state the next step reads. t_k < 2N, so a step has at most ⌊log2(2N-1)⌋ + 2 tokens and
      the trace O(N log N) (at most 1,546 tokens at N = 100, 218 at N = 20).
    - ``full``: for each bit b_i of the second operand, i = 0 .. N-1, the partial product
      p_i = b_i a 2^i in N + i bits, ``;``, the running sum s_i = s_(i-1) + p_i in N + i + 1
      bits (enough for a (b mod 2^(i+1))), and ``|``: 3N^2 + 2N tokens, quadratic.

    Then the product and ``[EOS]`` (free generation stops there: the linear trace's length
    varies). ``filler``: as many ``[FILL]`` tokens as the longest trace at N (the full trace's
    length is fixed; the linear one's is longest when every bit is 1, which makes every column
    total largest), then the product. Training lengths ~ U{1..N}, test length N (papers.md §3).
    """

    name = "multiplication"
    paper = "Zhang et al. §3"
    summary = "binary multiplication: long carry chains, serial for a fixed-depth model"
    length_meaning = "bits per operand"

    def __init__(self, *, cot: bool = False, filler: bool = False, trace: str = "linear") -> None:
        self._set_trace(cot, filler)
        self.trace = check_choice(self.name, "trace", trace, TRACES)
        self.vocab = Vocab(["0", "1", TIMES, EQUALS, THEN, STEP, FILL, EOS])
        self.zero, self.one = self.vocab.id("0"), self.vocab.id("1")
        self.stop_ids = frozenset({self.vocab.id(EOS)})

    def trace_length(self, length: int) -> int:
        if self.trace == "full":
            return 3 * length * length + 2 * length
        ones = np.ones((1, length), np.int64)
        totals = column_totals(self._columns(ones, ones))
        return int((bit_length(totals) + 1).sum())

    def answer_length(self, length: int) -> int:
        return 2 * length + 1

    def chance(self, length: int) -> float:
        """P(a = 0 or b = 0) = 2 · 2^-N - 4^-N in every mode: the likeliest product is 0, and
        its trace (all partial products and sums zero) is the same whichever operand is 0;
        any other trace spells out both operands (probability 4^-N)."""
        self.validate_length(length)
        return 2 * 2.0**-length - 4.0**-length

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        self.validate_length(length)
        a, b = rng.integers(0, 2, (2, batch_size, length), dtype=np.int64)
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
        if self.cot and self.trace == "full":
            partial = self._partial_products(a, b)
            sums = propagate_carries(np.cumsum(partial, axis=1))
            product = sums[:, -1].astype(np.int64) + self.zero
            answers = [self.vocab.text(row) for row in product]
            product = np.c_[product, np.full(batch_size, self.vocab.id(EOS))]
            middle = self._trace(partial.astype(np.uint8), sums)
            return Batch.from_arrays(prompts, np.concatenate([middle, product], axis=1), answers)
        totals = column_totals(self._columns(a, b))
        product = (totals & 1) + self.zero
        answers = [self.vocab.text(row) for row in product]
        product = np.c_[product, np.full(batch_size, self.vocab.id(EOS))]
        if not self.cot:
            middle = self._fillers(batch_size, length)
            return Batch.from_arrays(prompts, np.concatenate([middle, product], axis=1), answers)
        slots, keep = self._column_trace(totals)
        completions, counts = pack(
            np.concatenate([slots, product], axis=1),
            np.concatenate([keep, np.ones(product.shape, bool)], axis=1),
        )
        return ragged_batch(prompts, completions, counts, answers)

    def final_answer(self, completion: Sequence[int]) -> str | None:
        """The product's bits: after the trace, before the first ``[EOS]`` (None without it)."""
        ids = [int(t) for t in completion]
        eos = self.vocab.id(EOS)
        return super().final_answer(ids[: ids.index(eos)]) if eos in ids else None

    @staticmethod
    def _partial_products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Bits (B, N, 2N) of p_i = b_i a 2^i: row i reads a[k - i]."""
        length = a.shape[1]
        shift = np.arange(2 * length) - np.arange(length)[:, None]
        inside = (shift >= 0) & (shift < length)
        return np.where(inside, a[:, np.clip(shift, 0, length - 1)], 0) * b[:, :, None]

    def _columns(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Column counts Σ_{i+j=k} a_i b_j, (B, 2N)."""
        return self._partial_products(a, b).sum(axis=1)

    def _column_trace(self, totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots and keep mask (B, 2N · (places + 1)) of the linear trace of column totals."""
        batch, width = totals.shape
        places = int(bit_length(totals).max())
        bits = totals[..., None] >> np.arange(places) & 1
        keep = np.arange(places) < bit_length(totals)[..., None]
        step = np.full((batch, width, 1), self.vocab.id(STEP))
        slots = np.concatenate([bits + self.zero, step], axis=2)
        keep = np.concatenate([keep, np.ones((batch, width, 1), bool)], axis=2)
        return slots.reshape(batch, -1), keep.reshape(batch, -1)

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
        b = sum(1 << i for i, bit in enumerate(b_bits) if bit == self.one)
        solve = self._full_trace if self.trace == "full" else self._column_steps
        return solve(a, b, length), [*self._bits(a * b, 2 * length), self.vocab.id(EOS)], length

    def _full_trace(self, a: int, b: int, length: int) -> list[int]:
        total, trace = 0, []
        for i in range(length):
            row = a << i if b >> i & 1 else 0
            total += row
            trace += [*self._bits(row, length + i), self.vocab.id(THEN)]
            trace += [*self._bits(total, length + i + 1), self.vocab.id(STEP)]
        return trace

    def _column_steps(self, a: int, b: int, length: int) -> list[int]:
        """Column by column: the count of bit pairs in the column plus the carry."""
        carry, trace = 0, []
        for k in range(2 * length):
            pairs = sum(a >> i & b >> (k - i) & 1 for i in range(max(0, k - length + 1), k + 1))
            total = pairs + carry
            trace += [*self._bits(total, max(total.bit_length(), 1)), self.vocab.id(STEP)]
            carry = total >> 1
        return trace

    def _bits(self, value: int, width: int) -> list[int]:
        """``value`` in ``width`` bits, least significant first."""
        return [self.one if value >> k & 1 else self.zero for k in range(width)]
