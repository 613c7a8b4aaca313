"""String reversal (Zhang et al. §3), with a CoT that writes the stack as it is pushed and
popped: its top and depth at each step (linear in N), or all of it (quadratic)."""

from __future__ import annotations

import numpy as np

from sepbench.errors import check_choice, check_int
from sepbench.tasks.base import Batch, Vocab, register
from sepbench.tasks.serial import (
    DIGITS,
    EQUALS,
    FILL,
    MAX_SYMBOLS,
    STEP,
    SerialTask,
    symbols,
    total_width,
)

TRACES = ("linear", "full")


def stack_trace_indices(length: int) -> np.ndarray:
    """Input positions read by the full stack trace at ``length``: t, t-1, .., 0, then -1
    (``|``) for t = 0 .. length - 1."""
    step = np.repeat(np.arange(length), np.arange(2, length + 2))
    starts = np.cumsum(np.r_[0, np.arange(2, length + 1)])
    offset = np.arange(len(step)) - starts[step]
    return np.where(offset <= step, step - offset, -1)


@register
class Reversal(SerialTask):
    """Reverse a string of ``length`` = N symbols over ``vocab_size`` symbols ``s0`` ...

    Prompt: ``x_1 .. x_N =``, symbols i.i.d. uniform (default binary, as in Delétang et al.).
    Answer: ``x_N .. x_1`` (exactly N tokens, so no end token is needed).

    ``cot``: the state a recurrent reverser carries is a stack: it pushes x_1 .. x_N, then pops
    them. ``trace`` says how the trace writes that state after every step:

    - ``linear`` (default): the depth and the top. After pushing x_t it writes ``t x_t |`` (t in
      decimal), then after every pop the depth it popped from and the symbol, ``N x_N |`` ..
      ``1 x_1 |``. Each depth is the previous one plus or minus one, and a pop finds its symbol
      by matching its depth against the push entries, so every step reads written state. The
      trace has 2 (2N + Σ_{t≤N} digits(t)) tokens (784 at N = 100).
    - ``full``: the whole stack after every push, top first, ``x_t .. x_1 |``; each step
      prepends one symbol to the previous one, and the last already is the answer.
      N (N + 3) / 2 tokens (5,150 at N = 100): keep N modest.

    The answer is written again after the trace, as in every serial task. ``filler``: as many
    ``[FILL]`` tokens as the chosen trace has, then the answer. The vocabulary holds the digits
    whatever the mode, so every mode has the same. Training lengths ~ U{1..N}, test length N
    (papers.md §3).
    """

    name = "reversal"
    paper = "Zhang et al. §3"
    summary = "reverse a string: a stack (last in, first out), serial for a fixed-depth model"
    length_meaning = "symbols in the input string"

    def __init__(
        self,
        *,
        vocab_size: int = 2,
        cot: bool = False,
        filler: bool = False,
        trace: str = "linear",
    ) -> None:
        self.vocab_size = check_int(self.name, "vocab_size", vocab_size, 2, MAX_SYMBOLS)
        self._set_trace(cot, filler)
        self.trace = check_choice(self.name, "trace", trace, TRACES)
        self.vocab = Vocab([*symbols(vocab_size), EQUALS, STEP, FILL, *DIGITS])
        self.symbol0, self.digit0 = self.vocab.id("s0"), self.vocab.id("0")

    def trace_length(self, length: int) -> int:
        if self.trace == "full":
            return length * (length + 3) // 2
        return 2 * (2 * length + total_width(length))

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
        if not self.cot:
            middle = self._fillers(batch_size, length)
        elif self.trace == "full":
            index = stack_trace_indices(length)
            middle = np.where(index >= 0, inputs[:, index], self.vocab.id(STEP))
        else:
            fixed, source = self._depth_trace_template(length)
            middle = np.where(source >= 0, inputs[:, np.maximum(source, 0)], fixed)
        prompts = np.concatenate([inputs, np.full((batch_size, 1), self.vocab.id(EQUALS))], axis=1)
        reversed_inputs = inputs[:, ::-1]
        answers = [self.vocab.text(row) for row in reversed_inputs]
        return Batch.from_arrays(prompts, np.concatenate([middle, reversed_inputs], 1), answers)

    def _depth_trace_template(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """The linear trace at ``length`` as fixed token ids and, where a symbol goes, the
        input position it copies (-1 elsewhere)."""
        fixed: list[int] = []
        source: list[int] = []
        for depth in [*range(1, length + 1), *range(length, 0, -1)]:
            digits = [self.digit0 + int(d) for d in str(depth)]
            fixed += [*digits, 0, self.vocab.id(STEP)]
            source += [-1] * len(digits) + [depth - 1, -1]
        return np.array(fixed, np.int64), np.array(source, np.int64)

    def _solve(self, prompt: list[int]) -> tuple[list[int], list[int], int] | None:
        alphabet = set(self.vocab.ids(symbols(self.vocab_size)))
        body = prompt[:-1]
        if not body or prompt[-1] != self.vocab.id(EQUALS) or not alphabet.issuperset(body):
            return None
        stack: list[int] = []
        trace: list[int] = []
        for token in body:
            stack.append(token)
            if self.trace == "full":
                trace += [*stack[::-1], self.vocab.id(STEP)]
            else:
                trace += [*self.vocab.ids(str(len(stack))), token, self.vocab.id(STEP)]
        answer: list[int] = []
        while stack:
            if self.trace == "linear":
                trace += [*self.vocab.ids(str(len(stack))), stack[-1], self.vocab.id(STEP)]
            answer.append(stack.pop())
        return trace, answer, len(body)
