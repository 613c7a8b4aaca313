"""``state_size`` is what a model carries: the scalars per example in its state after a prefix,
counted from the state itself (../shared/design.md, "Contracts"), for every registered model."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from sepbench import models

VOCAB = 13


def build(name: str) -> models.SequenceModel:
    torch.manual_seed(0)
    if name == "hybrid":
        return models.build(name, VOCAB, 16, mixers=["mamba", "attention"]).eval()
    return models.build(name, VOCAB, 16, 2).eval()


def count_scalars(state: Any) -> int:
    """Scalars per example in a nested state (the contract's ``state_size``)."""
    if isinstance(state, Tensor):
        return state[0].numel()  # per example: every state tensor has batch first
    if isinstance(state, (tuple, list)):
        return sum(count_scalars(item) for item in state)
    return 0


@pytest.mark.parametrize("name", models.names())
@pytest.mark.parametrize("length", [1, 7, 12, 40])
def test_state_size_counts_the_scalars_carried(name: str, length: int) -> None:
    model = build(name)
    x = torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, state = model(x)
    assert count_scalars(state.blocks) == model.state_size(length)
