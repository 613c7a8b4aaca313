"""Deterministic finite automata over a task's tokens, with a read-out per state (a Moore
machine), and the instances the automaton compiler builds RNNs for (papers.md §2 and §3).

An automaton reads the token stream (prompt, then during decoding the tokens it emitted) and
predicts, in each state, the next token. That is the read-out convention a DFA needs on
sepbench's causal-LM tasks: the model's prediction after token t is the output of the state
after token t. Where the task's answer comes right after the input (Dyck) the state's output
is the membership label; where the prompt ends with ``=`` (parity, counting) the states
reached on ``=`` output the answer, and for a multi-token answer (counting's decimal count
then ``[EOS]``) a chain of emission states outputs one token each, advancing on the token fed
back (teacher forcing feeds the true token, generation the emitted one). Transitions left out
go to the dead state, which is not stored: it outputs ``dead_output`` and never leaves.

Instances:

- :func:`dyck_automaton`: bounded Dyck-(k, m), one state per stack of depth <= m; Dyck-(2, 2)
  has the 7 live states of papers.md §2 (plus the dead state), Dyck-(1, m) is a counter bounded
  by m ("bounded counting"). The answer follows the last bracket.
- :func:`parity_automaton`: 2 states, even and odd; ``=`` keeps the state.
- :func:`counting_automaton`: the count of the query symbol, saturating at ``bound``, written
  in decimal after ``=``. It is exact when every count is <= bound; since the count reaches N,
  an exact counter needs N + 1 count values (the DFA bound mp >= log n of papers.md §2 grows
  with N), so its size is not independent of N, unlike the two above.

The automata read only the no-CoT formats: a CoT trace writes the state after every input
step, after the whole input, which needs the input remembered. The automaton's state sequence
is exactly what such a trace writes (Zhang et al. §3): :meth:`Automaton.trace` returns it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from sepbench.errors import SepbenchError
from sepbench.tasks.base import Task

State = Hashable


@dataclass(frozen=True)
class Automaton:
    """A DFA over token ids with an output token per state.

    ``classes[a]``: the token ids of input class a (tokens with identical transitions share a
    class; every token id is in exactly one). ``delta[q][a]``: the next state's index, or None
    for the dead state. ``outputs[q]``: the token predicted in state q.
    """

    names: tuple[State, ...]
    start: int
    classes: tuple[tuple[int, ...], ...]
    delta: tuple[tuple[int | None, ...], ...]
    outputs: tuple[int, ...]
    dead_output: int

    @property
    def token_class(self) -> dict[int, int]:
        return {token: a for a, tokens in enumerate(self.classes) for token in tokens}

    def trace(self, tokens: Sequence[int]) -> list[State | None]:
        """The state after each token (None: dead), by table look-up: the reference."""
        classes, state, states = self.token_class, self.start, []
        for token in tokens:
            state = None if state is None else self.delta[state][classes[int(token)]]
            states.append(None if state is None else self.names[state])
        return states

    def predictions(self, tokens: Sequence[int]) -> list[int]:
        """The token predicted after each token of ``tokens``."""
        index = {name: q for q, name in enumerate(self.names)}
        return [
            self.dead_output if name is None else self.outputs[index[name]]
            for name in self.trace(tokens)
        ]


def tabulate(
    start: State,
    vocab_size: int,
    step: Callable[[State, int], State | None],
    output: Callable[[State], int],
    dead_output: int,
) -> Automaton:
    """The automaton of every state reachable from ``start`` under ``step`` (None: dead),
    with tokens of identical columns merged into one class."""
    names, index, frontier, rows = [start], {start: 0}, [start], {}
    while frontier:
        state = frontier.pop()
        row = []
        for token in range(vocab_size):
            after = step(state, token)
            if after is not None and after not in index:
                index[after] = len(names)
                names.append(after)
                frontier.append(after)
            row.append(None if after is None else index[after])
        rows[index[state]] = row
    columns: dict[tuple[int | None, ...], list[int]] = {}
    for token in range(vocab_size):
        columns.setdefault(tuple(rows[q][token] for q in range(len(names))), []).append(token)
    classes = tuple(tuple(tokens) for tokens in columns.values())
    delta = tuple(tuple(column[q] for column in columns) for q in range(len(names)))
    return Automaton(
        tuple(names), 0, classes, delta, tuple(output(s) for s in names), dead_output
    )


def automaton_for(task: Task, length: int, bound: int | None = None) -> Automaton:
    """The automaton of ``task`` (dyck, parity or counting) at ``length``."""
    builders = {"dyck": dyck_automaton, "parity": parity_automaton}
    if getattr(task, "cot", False) or getattr(task, "filler", False):
        raise SepbenchError(
            f"automaton: {task.name} with cot or filler writes its trace after the whole input, "
            "which no finite automaton reading the prompt once can do; build for cot=false"
        )
    if task.name == "counting":
        return counting_automaton(task, length if bound is None else bound)
    if bound is not None:
        raise SepbenchError(f"automaton: bound applies to counting only, not {task.name}")
    if task.name not in builders:
        raise SepbenchError(
            f"automaton: no automaton for task {task.name!r}; known: counting, dyck, parity"
        )
    return builders[task.name](task)


def dyck_automaton(task: Task) -> Automaton:
    """Bounded Dyck-(k, m): the state is the stack of open bracket types (depth <= m)."""
    opens = {task.bracket_offset + 2 * t: t for t in range(task.num_types)}
    closes = {task.bracket_offset + 2 * t + 1: t for t in range(task.num_types)}
    true, false = task.vocab.ids(["[TRUE]", "[FALSE]"])

    def step(stack: tuple[int, ...], token: int) -> tuple[int, ...] | None:
        if token in opens and len(stack) < task.max_depth:
            return (*stack, opens[token])
        if token in closes and stack and stack[-1] == closes[token]:
            return stack[:-1]
        return None

    return tabulate((), len(task.vocab), step, lambda s: false if s else true, false)


def parity_automaton(task: Task) -> Automaton:
    """Parity: the state is the parity of the 1s so far; ``=`` keeps it."""
    zero, one, equals = task.vocab.ids(["0", "1", "="])
    true, false = task.vocab.ids(["[TRUE]", "[FALSE]"])

    def step(odd: bool, token: int) -> bool | None:
        if token in (zero, equals):
            return odd
        return (not odd) if token == one else None

    return tabulate(False, len(task.vocab), step, lambda odd: true if odd else false, false)


def counting_automaton(task: Task, bound: int) -> Automaton:
    """Counting up to ``bound``: read ``q :``, count q among the symbols (saturating at
    ``bound``), and on ``=`` emit the count's decimal digits and ``[EOS]``."""
    if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
        raise SepbenchError(f"automaton: bound must be an integer >= 1, got {bound!r}")
    symbols = range(task.symbol0, task.symbol0 + task.vocab_size)
    colon, equals, eos = task.vocab.ids([":", "=", "[EOS]"])

    def answer(count: int) -> list[int]:
        return [*task.vocab.ids(list(str(count))), eos]

    def step(state: tuple, token: int) -> tuple | None:
        kind = state[0]
        if kind == "start":
            return ("query", token) if token in symbols else None
        if kind == "query":
            return ("count", state[1], 0) if token == colon else None
        if kind == "count":
            if token == equals:
                return ("emit", state[2], 0)
            if token in symbols:
                return ("count", state[1], min(bound, state[2] + (token == state[1])))
            return None
        if kind == "emit" and token == answer(state[1])[state[2]]:
            return ("emit", state[1], state[2] + 1) if token != eos else ("done",)
        return None

    def output(state: tuple) -> int:
        return answer(state[1])[state[2]] if state[0] == "emit" else eos

    return tabulate(("start",), len(task.vocab), step, output, eos)
