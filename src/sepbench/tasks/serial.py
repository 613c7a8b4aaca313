"""Shared machinery of the inherently serial tasks (Zhang et al. §3): counting, reversal,
multiplication, parity and S5 state tracking, each with and without a state-writing CoT.

papers.md §3 leaves the formats to sepbench; the choices common to the five tasks are made
here, once:

- The prompt is the input followed by ``=`` (the "now answer" marker, so a model reading a
  prompt of unknown length knows where the input ends).
- ``cot=True``: the completion first writes the task's running state after every input step
  (the trace), then the answer. ``filler=True``: the fair control of §3, the trace replaced by
  ``trace_length(N)`` copies of ``[FILL]`` (exactly the CoT's length wherever that is a
  function of N; see each task for the exception). ``cot`` and ``filler`` exclude each other.
- ``cot="interleaved"`` / ``filler="interleaved"`` (parity and S5): the input streams in one
  token at a time and the model writes the state (or ``[FILL]``) right after each input token,
  ``x_1 s_1 x_2 s_2 .. x_N s_N = answer``; the inputs and ``=`` are given, not trained. This is
  the recurrence of "Transformer + CoT ≃ RNN" read literally: each state token is a function
  of the previous one and the input just read, so no step has to find its input far back in
  the context (with ``cot=True`` step t must fetch x_t from the prompt, an index lookup whose
  offset grows with N). Only teacher forcing can score it (the input arrives inside the
  completion), so :attr:`~sepbench.tasks.base.Task.generates` is False.
- The vocabulary is the same in every mode, so models trained with and without a trace have
  the same shape and can be compared one to one.
- Length generalisation (§3, Delétang et al.): training lengths are uniform on
  {``min_length`` .. N} (:meth:`SerialTask.train_lengths`); test examples have exactly N.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np

from sepbench.errors import SepbenchError, check_choice
from sepbench.tasks.base import Batch, Task

EQUALS, STEP, FILL, EOS = "=", "|", "[FILL]", "[EOS]"
INTERLEAVED = "interleaved"
DIGITS = [str(d) for d in range(10)]
MAX_SYMBOLS = 1024  # the largest alphabet of papers.md (string equality, §2)


def symbols(count: int) -> list[str]:
    """Alphabet tokens ``s0`` .. ``s{count-1}`` (distinct from the digit tokens)."""
    return [f"s{i}" for i in range(count)]


def total_width(top: int) -> int:
    """Sum of the decimal widths of 1 .. ``top``, by runs of equal width."""
    total, low, width = 0, 1, 1
    while low <= top:
        total += width * (min(top, 10 * low - 1) - low + 1)
        low, width = 10 * low, width + 1
    return total


def decimal_slots(
    values: np.ndarray, width: int, digit0: int, end: int
) -> tuple[np.ndarray, np.ndarray]:
    """Slots and keep mask (B, M * (width + 1)) for values (B, M) >= 0: each value right-aligned
    in ``width`` digit slots (ids ``digit0`` + digit), most significant first, then the token
    ``end``; leading zeros are not kept (0 is "0")."""
    powers = 10 ** np.arange(width - 1, -1, -1)
    digits = values[..., None] // powers % 10 + digit0
    keep = values[..., None] >= np.r_[powers[:-1], 0]
    slots = np.concatenate([digits, np.full((*values.shape, 1), end)], axis=2)
    keep = np.concatenate([keep, np.ones((*values.shape, 1), bool)], axis=2)
    return slots.reshape(len(values), -1), keep.reshape(len(values), -1)


class SerialTask(Task):
    """A serial task of Zhang et al. §3 with optional state trace (``cot``) or filler control.

    Subclasses call :meth:`_set_trace` in ``__init__`` and implement :meth:`trace_length`,
    :meth:`answer_length` and :meth:`_solve` (the independent plain-Python solver behind
    :meth:`check`).
    """

    min_length = 1
    interleavable = False
    """Whether the task offers the ``interleaved`` layout (one state token per input token)."""
    cot: bool | str
    filler: bool | str

    def _set_trace(self, cot: bool | str, filler: bool | str) -> None:
        layouts = (False, True, INTERLEAVED) if self.interleavable else (False, True)
        self.cot = check_choice(self.name, "cot", cot, layouts)
        self.filler = check_choice(self.name, "filler", filler, layouts)
        if self.cot and self.filler:
            raise SepbenchError(f"{self.name}: cot and filler exclude each other; set at most one")
        self.cot, self.filler = _layout(self.cot), _layout(self.filler)
        self.traced = bool(self.cot or self.filler)
        self.interleaved = INTERLEAVED in (self.cot, self.filler)
        self.generates = not self.interleaved

    def trace_length(self, length: int) -> int:
        """Tokens of the filler trace at ``length`` (the CoT's length, or its maximum).
        Default: one state token per input step."""
        return length

    def answer_length(self, length: int) -> int:
        """The most answer tokens (after the trace) at ``length``. Default: one."""
        return 1

    @abstractmethod
    def _solve(self, prompt: list[int]) -> tuple[list[int], list[int], int] | None:
        """(CoT trace ids, answer ids, input length) by plain Python; None for a bad prompt."""

    def train_lengths(self, rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray:
        """Uniform on {``min_length`` .. ``length``} (the protocol of papers.md §3)."""
        return rng.integers(self.min_length, length + 1, batch_size, dtype=np.int64)

    def completion_cap(self, length: int) -> int:
        if self.interleaved:  # x_2 s_2 .. x_N s_N after s_1, then "=" and the answer
            return 2 * length + self.answer_length(length)
        traced = self.cot or self.filler
        return (self.trace_length(length) if traced else 0) + self.answer_length(length)

    def check(self, prompt: Sequence[int], completion: Sequence[int]) -> bool:
        if self.interleaved:
            return self._check_interleaved([int(t) for t in (*prompt, *completion)])
        solved = self._solve([int(t) for t in prompt])
        if solved is None:
            return False
        trace, answer, length = solved
        if self.filler:
            trace = [self.vocab.id(FILL)] * self.trace_length(length)
        elif not self.cot:
            trace = []
        return [int(t) for t in completion] == trace + answer

    def answer_check(self, prompt: Sequence[int], completion: Sequence[int]) -> bool:
        if not self.interleaved:
            return super().answer_check(prompt, completion)
        solved = self._solve_interleaved([int(t) for t in (*prompt, *completion)])
        answer = self.final_answer(completion)
        return solved is not None and answer == self.final_answer(solved[1])

    def _solve_interleaved(self, sequence: list[int]) -> tuple[list[int], list[int], int] | None:
        """:meth:`_solve` of an interleaved example's inputs (every other token up to ``=``)."""
        equals = self.vocab.id(EQUALS)
        end = sequence.index(equals) if equals in sequence else len(sequence)
        return None if end % 2 else self._solve([*sequence[0:end:2], equals])

    def _check_interleaved(self, sequence: list[int]) -> bool:
        """The whole interleaved example: its inputs solved from scratch, their states (or
        fillers) and the answer compared with it."""
        solved = self._solve_interleaved(sequence)
        if solved is None:
            return False
        trace, answer, length = solved
        written = trace if self.cot else [self.vocab.id(FILL)] * length
        inputs = sequence[0 : 2 * length : 2]
        interleaved = [t for pair in zip(inputs, written) for t in pair]
        return sequence == [*interleaved, self.vocab.id(EQUALS), *answer]

    def _interleave(
        self, inputs: np.ndarray, states: np.ndarray, answers: np.ndarray, texts: list[str]
    ) -> Batch:
        """``x_1 s_1 .. x_N s_N = answer`` from ids (B, N), (B, N), (B, A): the prompt is x_1,
        the states (fillers without ``cot``) and the answer are trained, the rest given."""
        batch, length = inputs.shape
        written = states if self.cot else np.full_like(states, self.vocab.id(FILL))
        pairs = np.stack([inputs, written], axis=2).reshape(batch, 2 * length)
        equals = np.full((batch, 1), self.vocab.id(EQUALS), np.int64)
        tokens = np.concatenate([pairs, equals, answers], axis=1).astype(np.int64)
        loss_mask = np.zeros(tokens.shape, bool)
        loss_mask[:, 1 : 2 * length : 2] = True
        loss_mask[:, 2 * length + 1 :] = True
        ones = np.ones(batch, np.int64)
        return Batch(tokens, loss_mask, ones, np.full(batch, tokens.shape[1], np.int64), texts)

    def final_answer(self, completion: Sequence[int]) -> str | None:
        """The tokens after the trace, i.e. after its last ``|`` or ``[FILL]``; tasks whose
        trace has no end mark, or whose answer has one, override it."""
        ids = [int(t) for t in completion]
        if not all(0 < t < len(self.vocab) for t in ids):
            return None
        marks = {self.vocab.id(t) for t in (STEP, FILL) if t in self.vocab}
        start = max((j + 1 for j, t in enumerate(ids) if t in marks), default=0)
        return self.vocab.text(ids[start:]) or None

    def solution(self, prompt: Sequence[int]) -> str | None:
        """The final answer of the solver's own completion (:meth:`_solve`)."""
        solved = self._solve([int(t) for t in prompt])
        return None if solved is None else self.final_answer(solved[0] + solved[1])

    def _fillers(self, batch_size: int, length: int) -> np.ndarray:
        """The filler block (B, ``trace_length``), or (B, 0) without ``filler``."""
        width = self.trace_length(length) if self.filler else 0
        return np.full((batch_size, width), self.vocab.id(FILL), np.int64)


def _layout(value: bool | str) -> bool | str:
    """``True``/``False`` as bools (1 and 0 are accepted for them), ``interleaved`` as is."""
    return value if value == INTERLEAVED else bool(value)


def pack(slots: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left-compact the kept slots of each row: (B, S) -> right-padded (B, max kept), counts."""
    counts = keep.sum(axis=1)
    out = np.zeros((len(slots), int(counts.max(initial=0))), np.int64)
    rows, cols = np.nonzero(keep)
    out[rows, np.cumsum(keep, axis=1)[rows, cols] - 1] = slots[rows, cols]
    return out, counts


def ragged_batch(
    prompts: np.ndarray, completions: np.ndarray, counts: np.ndarray, answers: list[str]
) -> Batch:
    """Equal-length prompts (B, P) then right-padded completions of ``counts`` tokens."""
    batch, prompt_len = prompts.shape
    tokens = np.concatenate([prompts, completions], axis=1)
    lengths = prompt_len + counts.astype(np.int64)
    columns = np.arange(tokens.shape[1])
    loss_mask = (columns >= prompt_len) & (columns < lengths[:, None])
    return Batch(tokens, loss_mask, np.full(batch, prompt_len, np.int64), lengths, answers)
