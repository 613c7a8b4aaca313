"""Counting (Zhang et al. §3): how often a query symbol occurs, with a running-count CoT."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sepbench.errors import check_int
from sepbench.tasks.base import Batch, Vocab, register
from sepbench.tasks.serial import (
    DIGITS,
    EOS,
    EQUALS,
    FILL,
    MAX_SYMBOLS,
    STEP,
    SerialTask,
    decimal_slots,
    pack,
    ragged_batch,
    symbols,
    total_width,
)

QUERY = ":"


def binomial_pmf(n: int, p: float, k: int) -> float:
    """P(X = k) for X ~ Binomial(n, p), in log space (no overflow at large n)."""
    log_choose = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return math.exp(log_choose + k * math.log(p) + (n - k) * math.log1p(-p))


@register
class Counting(SerialTask):
    """How many times does the query symbol occur among ``length`` = N symbols?

    Prompt: ``q : x_1 .. x_N =``, the query q and the x_t i.i.d. uniform over ``vocab_size``
    symbols ``s0`` .. (so the count is Binomial(N, 1/vocab_size) and can be 0). Answer: the
    count in decimal digits, most significant first, then ``[EOS]`` (free generation stops
    there). ``cot``: after every input symbol the running count c_t in decimal and ``|``,
    then the answer. The CoT's length depends on the counts, so ``filler`` writes its maximum
    at N (every symbol a match: N separators plus the widths of 1..N), then the answer: a
    function of N alone, which hides nothing of the count in the number of fillers and gives
    the control at least as many positions as the CoT. Training lengths ~ U{1..N}, test
    length N (papers.md §3).
    """

    name = "counting"
    paper = "Zhang et al. §3"
    summary = "count a query symbol's occurrences: an unbounded counter, serial for fixed depth"
    length_meaning = "symbols in the input sequence"

    def __init__(self, *, vocab_size: int = 4, cot: bool = False, filler: bool = False) -> None:
        self.vocab_size = check_int(self.name, "vocab_size", vocab_size, 2, MAX_SYMBOLS)
        self._set_trace(cot, filler)
        self.vocab = Vocab([*symbols(vocab_size), *DIGITS, QUERY, EQUALS, STEP, FILL, EOS])
        self.symbol0, self.digit0 = self.vocab.id("s0"), self.vocab.id("0")
        self.stop_ids = frozenset({self.vocab.id(EOS)})

    def trace_length(self, length: int) -> int:
        return length + total_width(length)

    def answer_length(self, length: int) -> int:
        return len(str(length)) + 1

    def chance(self, length: int) -> float:
        """The count is Binomial(N, 1/V); without a trace the best guess is its mode. With
        ``cot`` the trace fixes which symbols matched, and the likeliest is "none matched":
        ((V - 1)/V)^N. The filler trace is constant, so ``filler`` leaves the answer's chance.
        """
        self.validate_length(length)
        p = 1 / self.vocab_size
        if self.cot:
            return (1 - p) ** length
        return binomial_pmf(length, p, int((length + 1) * p))  # floor((N+1)p) is a mode

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        self.validate_length(length)
        query = rng.integers(0, self.vocab_size, (batch_size, 1), dtype=np.int64)
        inputs = rng.integers(0, self.vocab_size, (batch_size, length), dtype=np.int64)
        running = np.cumsum(inputs == query, axis=1)
        count = running[:, -1:]
        width = len(str(length))
        column = np.ones((batch_size, 1), np.int64)
        prompts = np.concatenate(
            [
                query + self.symbol0,
                self.vocab.id(QUERY) * column,
                inputs + self.symbol0,
                self.vocab.id(EQUALS) * column,
            ],
            axis=1,
        )
        if self.cot:
            trace, trace_keep = decimal_slots(running, width, self.digit0, self.vocab.id(STEP))
        else:
            trace = self._fillers(batch_size, length)
            trace_keep = np.ones(trace.shape, bool)
        answer, answer_keep = decimal_slots(count, width, self.digit0, self.vocab.id(EOS))
        completions, counts = pack(
            np.concatenate([trace, answer], axis=1),
            np.concatenate([trace_keep, answer_keep], axis=1),
        )
        return ragged_batch(prompts, completions, counts, [" ".join(str(c)) for c in count[:, 0]])

    def final_answer(self, completion: Sequence[int]) -> str | None:
        """The count's digits: after the trace, before the first ``[EOS]`` (None without it)."""
        ids = [int(t) for t in completion]
        eos = self.vocab.id(EOS)
        return super().final_answer(ids[: ids.index(eos)]) if eos in ids else None

    def _solve(self, prompt: list[int]) -> tuple[list[int], list[int], int] | None:
        alphabet = set(self.vocab.ids(symbols(self.vocab_size)))
        query, body = prompt[:1], prompt[2:-1]
        markers = prompt[1:2] + prompt[-1:]
        if not body or markers != self.vocab.ids([QUERY, EQUALS]):
            return None
        if not alphabet.issuperset(query + body):
            return None
        count, trace = 0, []
        for token in body:
            count += token == query[0]
            trace += [*self._digits(count), self.vocab.id(STEP)]
        return trace, [*self._digits(count), self.vocab.id(EOS)], len(body)

    def _digits(self, value: int) -> list[int]:
        return self.vocab.ids(str(value))
