"""LSTM, GRU and Elman RNN mixers against their update equations written out step by step."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from sepbench import models
from sepbench.errors import SepbenchError
from sepbench.models.rnn import GRU, LSTM, RNN

WIDTH = 6


def lstm_step(layer: LSTM, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple]:
    h, c = state
    gates = x @ layer.rnn.weight_ih_l0.T + layer.rnn.bias_ih_l0
    gates = gates + h @ layer.rnn.weight_hh_l0.T + layer.rnn.bias_hh_l0
    i, f, g, o = gates.chunk(4, dim=-1)
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    h = o.sigmoid() * c.tanh()
    return h, (h, c)


def gru_step(layer: GRU, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    xr, xz, xn = (x @ layer.rnn.weight_ih_l0.T + layer.rnn.bias_ih_l0).chunk(3, dim=-1)
    hr, hz, hn = (h @ layer.rnn.weight_hh_l0.T + layer.rnn.bias_hh_l0).chunk(3, dim=-1)
    r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
    n = (xn + r * hn).tanh()
    h = (1 - z) * n + z * h
    return h, h


def elman_step(layer: RNN, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    h = (
        x @ layer.rnn.weight_ih_l0.T
        + layer.rnn.bias_ih_l0
        + h @ layer.rnn.weight_hh_l0.T
        + layer.rnn.bias_hh_l0
    ).tanh()
    return h, h


REFERENCES = {LSTM: lstm_step, GRU: gru_step, RNN: elman_step}


def initial_state(cls: type, batch: int) -> Tensor | tuple[Tensor, Tensor]:
    zeros = torch.zeros(batch, WIDTH)
    return (zeros, zeros) if cls is LSTM else zeros


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_fused_chunks_match_the_written_out_recurrence(cls: type) -> None:
    torch.manual_seed(0)
    layer = cls(WIDTH)
    x = torch.randn(2, 17, WIDTH, generator=torch.Generator().manual_seed(1))
    state, expected = initial_state(cls, 2), []
    for t in range(x.shape[1]):
        y, state = REFERENCES[cls](layer, x[:, t], state)
        expected.append(y)
    pieces, carried, start = [], None, 0
    for size in (5, 1, 3, 8):
        y, carried = layer(x[:, start : start + size], carried)
        pieces.append(y)
        start += size
    torch.testing.assert_close(torch.cat(pieces, 1), torch.stack(expected, 1), atol=1e-5, rtol=0)
    flat = (lambda s: torch.cat(s, -1)) if cls is LSTM else (lambda s: s)
    torch.testing.assert_close(flat(carried), flat(state), atol=1e-5, rtol=0)
    assert flat(carried).shape == (2, layer.state_size(17))


@pytest.mark.parametrize(
    ("name", "state_size"), [("lstm", 2 * WIDTH), ("gru", WIDTH), ("rnn", WIDTH)]
)
def test_models_stack_recurrent_layers_without_feedforward(name: str, state_size: int) -> None:
    model = models.build(name, 10, WIDTH, 3)
    assert all(block.feedforward is None for block in model.blocks)
    assert model.state_size(1) == model.state_size(1000) == 3 * state_size
    assert models.build(name, 10, WIDTH, 1, mlp=True).blocks[0].feedforward is not None


def test_recurrent_mixers_take_no_parameters() -> None:
    with pytest.raises(SepbenchError, match="lstm: unknown parameter 'heads'"):
        models.build("lstm", 10, WIDTH, 1, heads=2)
