"""Constructions: hand-built models that realise the theorems of papers.md §2, evaluated,
stored and reported like trained models (../shared/design.md, "Construction").

``build(name, task, length, seed=0, **size)`` returns a model with the SequenceModel interface
(``logits, state = model(tokens, state)``, ``state_size``, ``num_parameters``), its weights
set from the theorem; ``names()`` lists the constructions and ``defaults(name)`` their size
and precision knobs (None: the theorem's value at the length).

=============================  ==================  ==========================================
construction                   task                theorem (papers.md §2)
=============================  ==================  ==========================================
index_lookup_attention         index_lookup        1 layer, m, p = O(log N)
equality_attention             string_equality     2 layers, m, p = O(log N)
nearest_neighbor_attention     nearest_neighbor    2 layers (after a gathering layer)
dfa_elman, dfa_lstm            dyck, parity,       a DFA's RNN: width independent of N
                               counting
=============================  ==================  ==========================================

:mod:`~sepbench.constructions.bounds` computes the lower bounds the constructions are set
against, and :mod:`~sepbench.constructions.check` flags stored results that beat them.
"""

from __future__ import annotations

from typing import Any

from sepbench.constructions.base import Construction
from sepbench.constructions.equality import EqualityAttention
from sepbench.constructions.index_lookup import IndexLookupAttention
from sepbench.constructions.nearest_neighbor import NearestNeighborAttention
from sepbench.constructions.rnn import AutomatonElman, AutomatonLSTM
from sepbench.errors import SepbenchError, check_int, unknown_name
from sepbench.tasks.base import Task

REGISTRY: dict[str, type[Construction]] = {
    cls.name: cls
    for cls in (
        IndexLookupAttention,
        EqualityAttention,
        NearestNeighborAttention,
        AutomatonElman,
        AutomatonLSTM,
    )
}


def names() -> list[str]:
    return sorted(REGISTRY)


def construction_class(name: str) -> type[Construction]:
    if name not in REGISTRY:
        raise unknown_name("construction", name, REGISTRY)
    return REGISTRY[name]


def defaults(name: str) -> dict[str, Any]:
    """The knobs of construction ``name`` and their defaults (None: the theorem's value)."""
    return dict(construction_class(name).knobs)


def build(name: str, task: Task, length: int, *, seed: int = 0, **size: Any) -> Construction:
    """Construction ``name`` for ``task`` at ``length``; ``size`` sets its knobs."""
    cls = construction_class(name)
    check_int(name, "seed", seed, 0)
    for key in size:
        if key not in cls.knobs:
            raise SepbenchError(
                f"{name}: unknown parameter {key!r}; allowed: {', '.join(cls.knobs)}"
            )
    return cls(task, length, seed=seed, **size)


__all__ = ["Construction", "build", "construction_class", "defaults", "names"]
