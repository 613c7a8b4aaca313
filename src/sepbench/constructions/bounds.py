"""The lower bounds of papers.md §1-2, computed: how much state a recurrent model must carry
to solve a task at length N, and how large a one-layer Transformer must be for Dyck-(2, 2).

A recurrent model's state after the prompt is a message from the prompt to the answer, so it
must carry what the answer can depend on. Per task, in bits (a width m at precision p carries
mp bits, so m >= bits / p):

- index lookup: every one of the N symbols can be asked for, so the state determines the whole
  string: N log2|Σ| bits (Bhattamishra et al. Thm 1, the one-way communication complexity of
  INDEX; the paper's m >= N/p is the binary case). Associative recall (single query) likewise,
  N log2(values) bits (Wen et al. §1).
- string equality and disjointness: mp >= N/2 (papers.md §2); equality's copying variant must
  reproduce the N/2 symbols, (N/2) log2|Σ| bits.
- nearest neighbour: m >= N/(2p), i.e. N/2 bits (papers.md §2).
- Dyck-(k, m), parity: a language whose minimal DFA has n states needs mp >= log2 n (papers.md
  §2). Bounded Dyck's minimal automaton has one state per stack of depth <= m plus the dead
  state: n = 8 for Dyck-(2, 2) (the paper's 7 counts the live states only); parity has 2.
- counting: the count takes N + 1 values, so the state needs log2(N + 1) bits.
- one-layer Transformer on Dyck-(2, 2): mH >= (N - 1) / (3(p + log2 N)) (papers.md §2).

Accuracy below 1: the bounds for exact retrieval follow from Fano's inequality, so they hold on
sepbench's own test distribution (uniform symbols, uniform query) for a model that is right on
a fraction a of the examples: each retrieved symbol then still carries log2 q - H(ε) -
ε log2(q - 1) bits, ε = 1 - a. These are the bounds ``holds_on_test_data`` marks, and the only
ones :mod:`~sepbench.constructions.check` may use to call a stored result impossible. The
others are worst-case bounds: a model must be right on every input, and sepbench's random test
instances admit cheaper shortcuts (papers.md §2 notes them for equality), so a small state at
high test accuracy contradicts nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn

from sepbench import tasks
from sepbench.errors import SepbenchError, check_int
from sepbench.tasks.base import Task

ALPHABET_PARAM = {
    "index_lookup": "vocab_size",
    "associative_recall": "num_values",
    "string_equality": "vocab_size",
    "disjointness": "vocab_size",
    "counting": "vocab_size",
}
"""The task parameter that ``vocab`` (the alphabet size |Σ|) sets."""

CONSTRUCTION_FOR = {
    "index_lookup": "index_lookup_attention",
    "string_equality": "equality_attention",
    "nearest_neighbor": "nearest_neighbor_attention",
    "dyck": "dfa_elman",
    "parity": "dfa_elman",
    "counting": "dfa_elman",
}
"""The construction that is the upper bound for each task."""

INDEX = "Bhattamishra et al. Thm 1 (INDEX, one-way communication), papers.md §2"
DTYPE_BITS = {"float32": 32, "bfloat16": 16, "float16": 16, "float64": 64}


@dataclass(frozen=True)
class Bound:
    """The least state, in bits, any recurrent model needs (see the module docstring)."""

    task: str
    length: int
    precision: int
    bits: float
    statement: str
    theorem: str
    holds_on_test_data: bool

    @property
    def width(self) -> int:
        """The least width m at this precision: mp >= bits."""
        return math.ceil(self.bits / self.precision)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "width": self.width}


def entropy(p: float) -> float:
    """Binary entropy H(p) in bits."""
    return 0.0 if p <= 0 or p >= 1 else -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def symbol_bits(alphabet: int, accuracy: float) -> float:
    """Fano: the bits a guess right with probability ``accuracy`` carries about a uniform
    symbol of ``alphabet`` values, log2 q - H(ε) - ε log2(q - 1), at least 0."""
    error = min(max(1.0 - accuracy, 0.0), 1.0 - 1.0 / alphabet)
    return max(0.0, math.log2(alphabet) - entropy(error) - error * math.log2(alphabet - 1))


def task_for(name: str, length: int, vocab: int | None = None) -> Task:
    """Task ``name`` with its defaults, its alphabet set to ``vocab`` when given, and a
    position vocabulary (index lookup's ``max_length``) that covers ``length``."""
    params: dict[str, Any] = {}
    if vocab is not None:
        if name not in ALPHABET_PARAM:
            raise SepbenchError(f"bounds: {name} has no alphabet to set; drop --vocab")
        params[ALPHABET_PARAM[name]] = vocab
    default = tasks.base.allowed_params(tasks.base.task_class(name)).get("max_length")
    if isinstance(default, int) and length > default:
        params["max_length"] = length
    return tasks.get(name, **params)


def lower_bound(
    task: Task | str,
    length: int,
    *,
    precision: int = 32,
    vocab: int | None = None,
    accuracy: float = 1.0,
) -> Bound:
    """The least recurrent state for ``task`` (a Task, or a name built with its defaults and
    ``vocab``) at ``length`` for a model right on a fraction ``accuracy`` of its test data."""
    task = task_for(task, length, vocab) if isinstance(task, str) else task
    task.validate_length(length)
    check_int("bounds", "precision", precision, 1)
    n, name = length, task.name
    if name == "index_lookup":
        bits = n * symbol_bits(task.vocab_size, accuracy)
        return _bound(task, n, precision, bits, "m >= N log2|Σ| / p (|Σ| = 2: m >= N/p)", INDEX)
    if name == "associative_recall":
        bits = n * symbol_bits(task.num_values, accuracy)
        return _bound(
            task, n, precision, bits, "m >= N log2(values) / p",
            "Wen et al. §1 (associative recall, INDEX), papers.md §1-2",
        )
    if name == "string_equality" and task.variant == "copy":
        bits = n / 2 * symbol_bits(task.vocab_size, accuracy)
        return _bound(
            task, n, precision, bits, "m >= (N/2) log2|Σ| / p",
            "copying N/2 symbols (Fano; the INDEX argument of papers.md §2)",
        )
    if name in ("string_equality", "disjointness"):
        return _worst_case(
            task, n, precision, n / 2, "mp >= N/2",
            f"Bhattamishra et al. ({name.replace('_', ' ')}), papers.md §2",
        )
    if name == "nearest_neighbor":
        return _worst_case(
            task, n, precision, n / 2, "m >= N/(2p)",
            "Bhattamishra et al. (nearest neighbour), papers.md §2",
        )
    if name in ("dyck", "parity"):
        states = dyck_states(task) if name == "dyck" else 2
        return _worst_case(
            task, n, precision, math.log2(states), f"mp >= log2 n, n = {states} DFA states",
            "Bhattamishra et al. (minimal DFA of n states), papers.md §2",
        )
    if name == "counting":
        return _worst_case(
            task, n, precision, math.log2(n + 1), "mp >= log2(N + 1)",
            "the count's N + 1 values (the DFA bound, papers.md §2)",
        )
    raise SepbenchError(f"bounds: no lower bound for task {name!r}; known: {', '.join(KNOWN)}")


KNOWN = (
    "associative_recall", "counting", "disjointness", "dyck", "index_lookup",
    "nearest_neighbor", "parity", "string_equality",
)


def _bound(task: Task, n: int, p: int, bits: float, statement: str, theorem: str) -> Bound:
    return Bound(task.name, n, p, bits, statement, theorem, True)


def _worst_case(task: Task, n: int, p: int, bits: float, statement: str, theorem: str) -> Bound:
    return Bound(task.name, n, p, bits, statement, theorem, False)


def dyck_states(task: Task) -> int:
    """States of the minimal complete DFA of Dyck-(k, m): the stacks of depth <= m, and dead."""
    return sum(task.num_types**depth for depth in range(task.max_depth + 1)) + 1


def transformer_bound(task: Task, length: int, precision: int) -> dict[str, Any] | None:
    """One-layer Transformers on Dyck-(2, 2): mH >= (N - 1) / (3(p + log2 N)); None otherwise."""
    if task.name != "dyck" or (task.num_types, task.max_depth) != (2, 2):
        return None
    value = (length - 1) / (3 * (precision + math.log2(length)))
    return {
        "width_times_heads": value,
        "statement": "mH >= (N - 1) / (3 (p + log2 N))",
        "theorem": "Bhattamishra et al. (Dyck-(2, 2), one layer), papers.md §2",
    }


# -- what a model carries ------------------------------------------------------------------


def prompt_length(task: Task, length: int) -> int:
    """Tokens in a prompt at ``length`` (one example drawn with seed 0 stands for it)."""
    return int(task.sample(np.random.default_rng(0), 1, length).prompt_lengths[0])


def is_recurrent(model: nn.Module) -> bool:
    """A model whose state does not grow with the input (attention's does)."""
    return model.state_size(64) == model.state_size(128)


def state_bits(model: nn.Module, task: Task, length: int, bits_per_scalar: int) -> int:
    """The state after the prompt at ``length``, in bits."""
    return model.state_size(prompt_length(task, length)) * bits_per_scalar


def state_bound_metrics(
    model: nn.Module, task: Task, length: int, bits_per_scalar: int
) -> dict[str, Any]:
    """What a run stores beside its results, on a task with a bound: for a recurrent model its
    state in bits and the lower bound at its precision; ``recurrent: False`` for a model whose
    state grows. ``{}`` on a task without a bound."""
    if task.name not in KNOWN:
        return {}
    if not is_recurrent(model):
        return {"state_bound": {"recurrent": False}}
    bound = lower_bound(task, length, precision=bits_per_scalar)
    return {
        "state_bound": {
            "recurrent": True,
            "state_bits": state_bits(model, task, length, bits_per_scalar),
            "bits_per_scalar": bits_per_scalar,
            **bound.to_dict(),
        }
    }


def upper_bound(task: Task, length: int) -> dict[str, Any] | None:
    """The construction that solves ``task`` at ``length`` with its default knobs: its size,
    state after the prompt (scalars) and parameters; None where there is none."""
    from sepbench import constructions
    from sepbench.constructions.automaton import automaton_for
    from sepbench.constructions.rnn import transition_units

    name = CONSTRUCTION_FOR.get(task.name)
    if name is None or getattr(task, "variant", None) == "copy":
        return None
    cls = constructions.construction_class(name)
    if cls.any_length:
        width, vocab = len(transition_units(automaton_for(task, length))[0]), len(task.vocab)
        return {
            "construction": name, "theorem": cls.theorem, "layers": 1, "width": width,
            "state_scalars": width, "parameters": width * (width + 2 * vocab + 1) + vocab,
        }
    model = constructions.build(name, task, length)
    return {
        "construction": name, "theorem": cls.theorem, **model.size(),
        "state_scalars": model.state_size(prompt_length(task, length)),
        "parameters": model.num_parameters(),
    }


def describe(
    task_name: str, length: int, *, precision: int = 32, vocab: int | None = None
) -> list[str]:
    """The lines ``sepbench bounds`` prints: the lower bound with its theorem, the one-layer
    Transformer's where there is one, and the construction's size as the upper bound."""
    task = task_for(task_name, length, vocab)
    bound = lower_bound(task, length, precision=precision)
    alphabet = ALPHABET_PARAM.get(task.name)
    given = f", |Σ| = {getattr(task, alphabet)}" if alphabet else ""
    lines = [
        f"{task.name} at N = {length}, precision p = {precision} bits{given}",
        f"any recurrent model needs a state of at least {bound.bits:,.1f} bits: width "
        f"m >= {bound.width:,} at p = {precision}",
        f"  {bound.statement}; {bound.theorem}",
    ]
    if not bound.holds_on_test_data:
        lines.append("  (worst case over inputs: random test data may admit a smaller state)")
    transformer = transformer_bound(task, length, precision)
    if transformer is not None:
        lines += [
            f"a one-layer Transformer needs mH >= {transformer['width_times_heads']:,.1f}",
            f"  {transformer['statement']}; {transformer['theorem']}",
        ]
    upper = upper_bound(task, length)
    if upper is not None:
        lines += [
            f"upper bound: the construction {upper['construction']}: {upper['layers']} "
            f"layer{'s' if upper['layers'] > 1 else ''}, width {upper['width']:,}"
            + (f" (k = {upper['k']:,})" if "k" in upper else "")
            + ", state "
            f"after the prompt "
            f"{upper['state_scalars']:,} scalars, {upper['parameters']:,} parameters",
            f"  {upper['theorem']}",
        ]
    return lines
