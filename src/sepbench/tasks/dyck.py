"""Dyck-(k, m) recognition (Bhattamishra et al. §2, appendix H), bounded or, for the bracket
pairing of Zhang et al. §3, unbounded in depth; with an optional chain of thought that writes
the stack (its contents, or its top and depth) after every bracket, or the filler control."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from sepbench.errors import SepbenchError, check_choice, check_int
from sepbench.tasks.base import Batch, Task, Vocab, register
from sepbench.tasks.serial import DIGITS, FILL, decimal_slots, pack

BRACKETS = ("(", ")", "[", "]", "{", "}", "<", ">")
EMPTY, STEP, TRUE, FALSE = "[EMPTY]", "|", "[TRUE]", "[FALSE]"
TRACES = ("stack", "depth")
TRAIN_LENGTHS = ("exact", "uniform")


class Run(NamedTuple):
    """Strings (B, N) read with a stack: after each bracket the stack (B, N, width), its top
    bracket type and its depth (B, N); and the step count (B,), the brackets read before the
    string leaves Dyck-(k, m) (N for a well-nested string that ends unbalanced, N + 1 for a
    member)."""

    stacks: np.ndarray
    tops: np.ndarray
    depths: np.ndarray
    steps: np.ndarray


@register
class Dyck(Task):
    """Is a string of ``length`` = N brackets in Dyck-(k, m)? Label ``[TRUE]``/``[FALSE]``.

    Bracket types are ``( )``, ``[ ]``, ``{ }``, ``< >`` (the first ``num_types`` = k of them);
    a string is in Dyck-(k, m) when it is well nested and never deeper than ``max_depth`` = m.
    ``max_depth: none`` (or null) lifts the bound: Dyck-k, a context-free language that needs
    an unbounded stack (Zhang et al.'s bracket pairing, papers.md §3), where a bounded m makes
    the language finite-state. N is even, >= 4.

    Training lengths (``train_lengths``): ``exact``, every example has N brackets (as in
    Bhattamishra et al.); ``uniform``, N' uniform on the even lengths 4..N (the
    length-generalisation protocol of papers.md §3). Test examples have exactly N.

    Positives follow papers.md §2: at each step, at depth m close the top bracket; on an empty
    stack open a uniform type; otherwise choose uniformly among the k opens and the matching
    close. Open choice: the paper runs N - 2 free steps and then closes "what remains open",
    which reaches length N only if the depth after N - 2 steps is 0 (append a uniform pair) or
    2. We force a close whenever the depth equals the number of positions left; for m <= 3
    this binds only in the last two steps and reproduces the paper's distribution exactly,
    and for m >= 4 (or none) it keeps every positive at length N and depth <= m.

    Negatives: a fresh positive corrupted at c ~ U{1..C} distinct positions (C =
    ``max_corruptions``, default max(1, N // 10), capped at N); each corruption swaps the
    bracket type (to a uniform other type, same direction) or flips open <-> close, 1/2 each
    (always a flip when k = 1). A result that is still in Dyck-(k, m) is redrawn from scratch
    (new positive, new corruptions). Each example is positive with probability 1/2.

    With ``cot``, the completion is, for each input bracket in turn, the stack after reading
    it, then the label. ``trace`` says how the stack is written:

    - ``stack``: its open-bracket tokens bottom to top, or ``[EMPTY]``, then ``|``
      (N · (depth + 1) tokens: quadratic in N when the depth is unbounded);
    - ``depth``: its top bracket (or ``[EMPTY]``) and its depth in decimal, then ``|``, e.g.
      ``( 1 | [ 2 | ( 1 | [EMPTY] 0 |``: linear in N. A close finds the new top by matching
      the depth it returns to against the earlier steps, so every step reads written state.

    For a string that leaves the language at bracket i (a close that does not match the top
    or meets an empty stack, or an open at depth m), the trace holds the i - 1 steps before it
    and then ``[FALSE]``; a string that stays well nested but ends unbalanced has all N steps.
    ``filler``: the control of papers.md §3, the trace replaced by ``[FILL]`` tokens as many as
    the longest trace at N (a function of N alone, so the count tells nothing of the label),
    then the label. The vocabulary is the same in every mode (digits and ``[FILL]`` included).
    """

    name = "dyck"
    paper = "Bhattamishra et al. §2"
    summary = "Dyck-(k, m) membership: finite-state when bounded, a stack when m is none"
    length_meaning = "brackets in the input string (even)"
    min_length = 4

    def __init__(
        self,
        *,
        num_types: int = 2,
        max_depth: int | str | None = 2,
        max_corruptions: int | None = None,
        cot: bool = False,
        filler: bool = False,
        trace: str = "stack",
        train_lengths: str = "exact",
    ) -> None:
        self.num_types = check_int(self.name, "num_types", num_types, 1, len(BRACKETS) // 2)
        unbounded = max_depth is None or max_depth == "none"
        self.max_depth = None if unbounded else check_int(self.name, "max_depth", max_depth, 1)
        if max_corruptions is not None:
            check_int(self.name, "max_corruptions", max_corruptions, 1)
        self.max_corruptions = max_corruptions
        self.cot = bool(check_choice(self.name, "cot", cot, (False, True)))
        self.filler = bool(check_choice(self.name, "filler", filler, (False, True)))
        if self.cot and self.filler:
            raise SepbenchError(f"{self.name}: cot and filler exclude each other; set at most one")
        self.trace = check_choice(self.name, "trace", trace, TRACES)
        self.length_sampling = check_choice(
            self.name, "train_lengths", train_lengths, TRAIN_LENGTHS
        )
        self.vocab = Vocab(
            [*BRACKETS[: 2 * self.num_types], EMPTY, STEP, TRUE, FALSE, FILL, *DIGITS]
        )
        self.bracket_offset = self.vocab.id(BRACKETS[0])  # bracket index b has id offset + b
        self.digit0 = self.vocab.id("0")
        self.stop_ids = frozenset(self.vocab.ids([TRUE, FALSE]))
        self.traced = self.cot or self.filler

    def validate_length(self, length: int) -> int:
        check_int(self.name, "length", length, self.min_length)
        if length % 2:
            raise SepbenchError(f"{self.name}: length must be an even integer >= 4, got {length}")
        return length

    def depth_bound(self, length: int) -> int:
        """The deepest a string of ``length`` brackets may go: m, or ``length`` if unbounded."""
        return length if self.max_depth is None else min(self.max_depth, length)

    def trace_length(self, length: int) -> int:
        """The longest trace at ``length``: every step as deep as it may be (filler's length)."""
        depths = np.minimum(np.arange(1, length + 1), self.depth_bound(length))
        if self.trace == "stack":
            return int((depths + 1).sum())
        return int((2 + np.floor(np.log10(depths)).astype(np.int64) + 1).sum())

    def completion_cap(self, length: int) -> int:
        return (self.trace_length(length) if self.cot or self.filler else 0) + 1

    def train_lengths(self, rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray:
        """``exact``: all N; ``uniform``: uniform on the even lengths 4..N."""
        if self.length_sampling == "exact":
            return np.full(batch_size, length, np.int64)
        return 4 + 2 * rng.integers(0, (length - 4) // 2 + 1, batch_size, dtype=np.int64)

    def chance(self, length: int) -> float:
        """1/2 without ``cot`` (balanced labels). With ``cot`` the likeliest completion is the
        larger of two: the trace of the likeliest positive string (1/2 times the generator's
        most probable path), or a lone ``[FALSE]``, the completion of every negative whose
        first bracket was corrupted into a close: 1/2 · E[c]/N · (1/2 when k > 1, else 1).
        That value is exact when C = 1 (N < 20 by default: every single corruption leaves the
        language, so nothing is redrawn); with C > 1 it is a lower bound, short by the share
        of corrupted strings that stay in the language and are redrawn (measured on 200,000
        corrupted positives of Dyck-(2,2): 0.97 % at N = 20, 0.23 % at N = 40)."""
        self.validate_length(length)
        if not self.cot:
            return 0.5
        bound = self._corruption_bound(length)
        flip = 0.5 if self.num_types > 1 else 1.0
        lone_false = 0.5 * flip * (bound + 1) / 2 / length
        return max(0.5 * self._likeliest_positive(length), lone_false)

    def _corruption_bound(self, length: int) -> int:
        """C: corruptions per negative are c ~ U{1..C}."""
        return min(self.max_corruptions or max(1, length // 10), length)

    def _likeliest_positive(self, length: int) -> float:
        """The probability of the generator's most likely positive string (max-product
        dynamic programming over depths; a string's probability depends on its depths only)."""
        k, m = self.num_types, self.max_depth
        best = np.full(min(m, length) + 2, -np.inf)
        best[0] = 0.0  # log-probabilities by depth
        for t in range(length):
            step = np.full_like(best, -np.inf)
            for depth in np.flatnonzero(np.isfinite(best)):
                forced = depth == m or depth == length - t
                choices = k if depth == 0 else k + 1
                if not forced:
                    step[depth + 1] = max(step[depth + 1], best[depth] - np.log(choices))
                if depth > 0:
                    close = best[depth] - (0.0 if forced else np.log(choices))
                    step[depth - 1] = max(step[depth - 1], close)
            best = step
        return float(np.exp(best[0]))

    # -- generation (vectorised over the batch; bracket index b = 2 * type + is_close) ----

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        self.validate_length(length)
        labels = rng.random(batch_size) < 0.5
        strings = self._positives(rng, batch_size, length)
        strings[~labels] = self._negatives(rng, int((~labels).sum()), length)
        prompts = strings + self.bracket_offset
        label_ids = np.where(labels, self.vocab.id(TRUE), self.vocab.id(FALSE))
        answers = [TRUE if label else FALSE for label in labels]
        if self.filler:
            fillers = np.full((batch_size, self.trace_length(length)), self.vocab.id(FILL))
            return Batch.from_arrays(prompts, np.c_[fillers, label_ids], answers)
        if not self.cot:
            return Batch.from_arrays(prompts, label_ids[:, None], answers)
        return self._with_trace(prompts, strings, label_ids, answers)

    def _positives(self, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
        k, m = self.num_types, self.depth_bound(length)
        rows = np.arange(batch)
        stack = np.zeros((batch, m + 1), np.int64)
        depth = np.zeros(batch, np.int64)
        out = np.empty((batch, length), np.int64)
        for t in range(length):
            forced = (depth == m) | (depth == length - t)
            free_close = (depth > 0) & (rng.integers(0, k + 1, batch) == k)
            close = forced | free_close
            opened = rng.integers(0, k, batch)
            top = stack[rows, np.maximum(depth - 1, 0)]
            out[:, t] = np.where(close, 2 * top + 1, 2 * opened)
            stack[rows, depth] = np.where(close, stack[rows, depth], opened)
            depth += np.where(close, -1, 1)
        return out

    def _corrupt(
        self, rng: np.random.Generator, strings: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Corrupt each row at c ~ U{1..C} distinct positions; returns (strings, c)."""
        batch, length = strings.shape
        bound = min(self.max_corruptions or max(1, length // 10), length)
        counts = rng.integers(1, bound + 1, batch)
        positions = np.argsort(rng.random((batch, length)), axis=1)[:, :bound]
        chosen = np.zeros((batch, length), bool)
        np.put_along_axis(chosen, positions, np.arange(bound) < counts[:, None], axis=1)
        kind, direction = strings // 2, strings % 2
        if self.num_types > 1:
            swap = rng.random((batch, length)) < 0.5
            other = (kind + rng.integers(1, self.num_types, (batch, length))) % self.num_types
        else:
            swap, other = np.zeros((batch, length), bool), kind
        corrupted = np.where(swap, 2 * other + direction, strings ^ 1)
        return np.where(chosen, corrupted, strings), counts

    def _negatives(self, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
        out = np.empty((batch, length), np.int64)
        todo = np.arange(batch)
        while len(todo):
            drawn, _ = self._corrupt(rng, self._positives(rng, len(todo), length))
            out[todo] = drawn
            todo = todo[self._run(drawn).steps == length + 1]
        return out

    def _run(self, strings: np.ndarray, *, keep_stacks: bool = False) -> Run:
        """Read every string with a stack; see :class:`Run` (stacks only with ``keep_stacks``:
        (B, N, depth bound) integers, quadratic in N when the depth is unbounded)."""
        batch, length = strings.shape
        m = width = self.depth_bound(length)
        rows = np.arange(batch)
        stack = np.zeros((batch, width + 1), np.int64)
        depth = np.zeros(batch, np.int64)
        steps = np.full(batch, length + 1, np.int64)
        stacks = np.zeros((batch, length, width) if keep_stacks else (0, 0, 0), np.int64)
        tops, depths = np.zeros((2, batch, length), np.int64)
        for t in range(length):
            kind, close = strings[:, t] // 2, strings[:, t] % 2 == 1
            top = stack[rows, np.maximum(depth - 1, 0)]
            bad = np.where(close, (depth == 0) | (top != kind), depth == m)
            steps = np.where(bad & (steps > length), t, steps)
            alive = steps > length
            stack[rows, np.minimum(depth, width)] = np.where(close, stack[rows, depth], kind)
            depth = np.where(alive, depth + np.where(close, -1, 1), depth)
            depths[:, t], tops[:, t] = depth, stack[rows, np.maximum(depth - 1, 0)]
            if keep_stacks:
                stacks[:, t] = stack[:, :width]
        steps = np.where((steps > length) & (depth > 0), length, steps)
        return Run(stacks, tops, depths, steps)

    def _with_trace(
        self, prompts: np.ndarray, strings: np.ndarray, label_ids: np.ndarray, answers: list[str]
    ) -> Batch:
        """Lay out the stack trace of :meth:`_run` as right-padded completions."""
        batch, length = strings.shape
        run = self._run(strings, keep_stacks=self.trace == "stack")
        slots, keep = (self._stack_steps if self.trace == "stack" else self._depth_steps)(run)
        keep &= (np.arange(length) < np.minimum(run.steps, length)[:, None])[..., None]
        slots = np.concatenate([slots.reshape(batch, -1), label_ids[:, None]], axis=1)
        keep = np.concatenate([keep.reshape(batch, -1), np.ones((batch, 1), bool)], axis=1)
        completions, counts = pack(slots, keep)
        tokens = np.concatenate([prompts, completions], axis=1)
        lengths = length + counts
        columns = np.arange(tokens.shape[1])
        loss_mask = (columns >= length) & (columns < lengths[:, None])
        return Batch(tokens, loss_mask, np.full(batch, length, np.int64), lengths, answers)

    def _stack_steps(self, run: Run) -> tuple[np.ndarray, np.ndarray]:
        """Slots and keep (B, N, width + 2): the open brackets bottom to top or ``[EMPTY]``,
        then ``|``."""
        stacks, depths = run.stacks, run.depths
        width = stacks.shape[2]
        slots = np.concatenate(
            [
                stacks * 2 + self.bracket_offset,
                np.full((*depths.shape, 1), self.vocab.id(EMPTY)),
                np.full((*depths.shape, 1), self.vocab.id(STEP)),
            ],
            axis=2,
        )
        keep = np.concatenate(
            [
                np.arange(width) < depths[..., None],
                (depths == 0)[..., None],
                np.ones_like(depths, bool)[..., None],
            ],
            axis=2,
        )
        return slots, keep

    def _depth_steps(self, run: Run) -> tuple[np.ndarray, np.ndarray]:
        """Slots and keep (B, N, digits + 2): the top bracket or ``[EMPTY]``, the depth in
        decimal, then ``|``."""
        depths = run.depths
        batch, length = depths.shape
        top = np.where(depths > 0, run.tops * 2 + self.bracket_offset, self.vocab.id(EMPTY))
        top = top[..., None]
        places = len(str(max(int(depths.max(initial=0)), 1)))
        digits, shown = decimal_slots(depths, places, self.digit0, self.vocab.id(STEP))
        slots = np.concatenate([top, digits.reshape(batch, length, -1)], axis=2)
        keep = np.concatenate(
            [np.ones((batch, length, 1), bool), shown.reshape(batch, length, -1)], axis=2
        )
        return slots, keep

    # -- independent checker (plain Python over one example) ----------------------------

    def check(self, prompt: Sequence[int], completion: Sequence[int]) -> bool:
        expected = self._expected_completion([int(t) for t in prompt])
        return expected is not None and [int(t) for t in completion] == expected

    def _expected_completion(self, prompt: list[int]) -> list[int] | None:
        """Re-derive the completion with a list stack; None if the prompt is not brackets."""
        opens = {self.vocab.id(o): i for i, o in enumerate(BRACKETS[0 : 2 * self.num_types : 2])}
        closes = {self.vocab.id(c): i for i, c in enumerate(BRACKETS[1 : 2 * self.num_types : 2])}
        if any(t not in opens and t not in closes for t in prompt):
            return None
        open_id = {i: t for t, i in opens.items()}
        stack: list[int] = []
        trace: list[int] = []
        member = True
        for token in prompt:
            if token in opens and (self.max_depth is None or len(stack) < self.max_depth):
                stack.append(opens[token])
            elif token in closes and stack and stack[-1] == closes[token]:
                stack.pop()
            else:
                member = False
                break
            if self.trace == "stack":
                trace += [open_id[i] for i in stack] or [self.vocab.id(EMPTY)]
            else:
                top = open_id[stack[-1]] if stack else self.vocab.id(EMPTY)
                trace += [top, *self.vocab.ids(str(len(stack)))]
            trace.append(self.vocab.id(STEP))
        member = member and not stack
        label = self.vocab.id(TRUE if member else FALSE)
        if self.filler:
            return [self.vocab.id(FILL)] * self.trace_length(len(prompt)) + [label]
        return [*trace, label] if self.cot else [label]

    # -- final answer --------------------------------------------------------------------

    def final_answer(self, completion: Sequence[int]) -> str | None:
        """The first label of the completion (decoding stops there); None if it has none."""
        labels = [int(t) for t in completion if int(t) in self.stop_ids]
        return self.vocab.tokens[labels[0]] if labels else None

    def solution(self, prompt: Sequence[int]) -> str | None:
        expected = self._expected_completion([int(t) for t in prompt])
        return None if expected is None else self.final_answer(expected)
