"""Hybrids (papers.md §1: recurrent layers then one attention layer): routing, errors, chunks."""

from __future__ import annotations

import pytest
import torch

from sepbench import models
from sepbench.errors import SepbenchError
from sepbench.models.base import MIXERS

RECURRENT = [name for name in ("mamba", "lstm", "s4d") if name in MIXERS]


@pytest.mark.parametrize("recurrent", RECURRENT)
def test_recurrent_layers_then_attention_continue_across_chunks(recurrent: str) -> None:
    torch.manual_seed(0)
    model = models.build("hybrid", 9, 16, mixers=[recurrent] * 2 + ["attention"]).eval()
    assert [block.mixer.name for block in model.blocks] == [recurrent, recurrent, "attention"]
    x = torch.randint(0, 9, (2, 19), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole, _ = model(x)
        first, state = model(x[:, :6])
        second, state = model(x[:, 6:], state)
    torch.testing.assert_close(torch.cat((first, second), 1), whole, atol=1e-5, rtol=1e-5)
    recurrent_size = model.blocks[0].state_size(1)
    assert model.state_size(19) == 2 * recurrent_size + 2 * 16 * 19


def test_parameters_route_to_the_mixers_that_take_them() -> None:
    model = models.build(
        "hybrid",
        9,
        16,
        mixers=["s4d", "lstm", "attention"],
        heads=2,
        d_state=8,
        positional="rope",
    )
    s4d, _, attention = (block.mixer for block in model.blocks)
    assert (s4d.d_state, attention.heads, attention.rope) == (8, 2, True)
    assert model.blocks[1].feedforward is None and model.blocks[2].feedforward is not None
    assert model.positions is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"no_such_param": 1}, "hybrid: unknown parameter 'no_such_param'; allowed: .*heads"),
        ({"d_state": 8}, "hybrid: unknown parameter 'd_state'"),
        ({"mixers": ["lstm", "nope"]}, "unknown mixer 'nope'; known: .*attention"),
        ({"mixers": ["lstm", "attention"], "layers": 3}, "hybrid: layers=3 but 2 mixers"),
        ({"mixers": []}, "hybrid: give mixers"),
    ],
)
def test_bad_hybrids_fail_with_one_line(params: dict, message: str) -> None:
    params = {"mixers": ["lstm", "attention"], **params}
    with pytest.raises(SepbenchError, match=message) as error:
        models.build("hybrid", 9, 16, **params)
    assert "\n" not in str(error.value)
