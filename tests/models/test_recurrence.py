"""Recurrence-completeness as data (papers.md §3): every mixer's declared class is what its
state updates show (tests/models/recurrence.py says what is measured and how)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from sepbench.models.base import MIXERS, RECURRENCE, Mixer
from tests.models.recurrence import CHARTS, PREFIX, Probe, build, measured_class, nonlinearity


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_declared_recurrence_is_measured(name: str) -> None:
    declared = MIXERS[name].recurrence
    assert declared in RECURRENCE
    measured, ratio = measured_class(build(name), CHARTS.get(name, lambda s: s))
    assert measured == declared, f"{name}: declared {declared}, measured {measured} ({ratio:.2e})"


class Toy(Mixer):
    """A one-vector recurrence h_t = update(h_{t-1}, x_t), output h_t."""

    def __init__(self, update: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.update = update

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = x.new_zeros(x.shape[0], x.shape[2]) if state is None else state
        outputs = []
        for t in range(x.shape[1]):
            h = self.update(h, x[:, t])
            outputs.append(h)
        return torch.stack(outputs, 1), h


class ToyCache(Mixer):
    """Appends one row per token, tanh(x_t + reads · mean of the old rows); state: the rows."""

    def __init__(self, reads: float) -> None:
        super().__init__()
        self.reads = reads

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        rows = x[:, :0] if state is None else state
        for t in range(x.shape[1]):
            past = rows.mean(1) if rows.shape[1] else torch.zeros_like(x[:, t])
            row = torch.tanh(x[:, t] + self.reads * past)
            rows = torch.cat((rows, row[:, None]), 1)
        return rows[:, -x.shape[1] :], rows


@pytest.mark.parametrize(
    ("toy", "expected"),
    [
        (Toy(lambda h, x: 0.9 * h + torch.sin(x)), "linear"),
        (Toy(lambda h, x: torch.tanh(h + x)), "complete"),
        (Toy(lambda h, x: h * torch.sigmoid(x) + x), "linear"),
        (ToyCache(reads=0.0), "none"),
        (ToyCache(reads=1.0), "complete"),
    ],
)
def test_the_measurement_tells_the_classes_apart(toy: Mixer, expected: str) -> None:
    """The checker itself: known updates get their class, so a wrong declaration fails."""
    assert measured_class(toy)[0] == expected


def test_rwkv_is_affine_only_in_its_true_sums() -> None:
    """Stored as (num, den) · e^m with a running max m, RWKV's state is not affine in the
    stored numbers; in the true sums it is: what "the state" is must be chosen with care."""
    assert nonlinearity(Probe(build("rwkv")), PREFIX, 1) > 1e-6
    assert nonlinearity(Probe(build("rwkv"), CHARTS["rwkv"]), PREFIX, 1) < 1e-9
