"""The classic recurrent layers: LSTM, GRU and the Elman (tanh) RNN.

Hochreiter & Schmidhuber, "Long Short-Term Memory" (1997); Cho et al., "Learning Phrase
Representations using RNN Encoder-Decoder" (2014, the GRU); Elman, "Finding Structure in Time"
(1990). These are the recurrence-complete models of papers.md §3 (a nonlinear state update),
the LSTM baseline of Bhattamishra et al. (§2: depth ≤ 3, width 64-512) and the RNN side of
Wen et al.'s retrieval bound (§1: a state of O(width) scalars, constant in the length).

Each mixer is one fused ``torch.nn`` recurrent layer (batch_first) run over the whole chunk,
so training never loops over time steps in Python; the fused kernel's single step is the
recurrent reference. A model is a stack of these layers with no feed-forward between them
(``default_feedforward = None``), as in the papers. The state is the last hidden vector
(and the LSTM's cell), each of shape (batch, width). Init is PyTorch's default:
U(-1/√width, 1/√width) for every weight and bias (the LSTM forget-gate bias is not raised).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from sepbench.models.base import Mixer, register_mixer

LSTMState = tuple[Tensor, Tensor]


class _Recurrent(Mixer):
    """One fused recurrent layer of ``width`` units over chunks, carrying its last state.

    Recurrence ``complete`` (papers.md §3): the new state passes the old one through a
    tanh/sigmoid (gated) map, a nonlinear function of it.
    """

    recurrence = "complete"
    default_feedforward = None
    layer: ClassVar[type[nn.RNNBase]]

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.rnn = self.layer(width, width, batch_first=True)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, h = self.rnn(x, None if state is None else state.unsqueeze(0))
        return y, h.squeeze(0)

    def state_size(self, seq_len: int) -> int:
        return self.width


@register_mixer
class LSTM(_Recurrent):
    """LSTM layer; the state is (hidden, cell), 2 * width scalars."""

    name = "lstm"
    layer = nn.LSTM

    def forward(self, x: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        carried = None if state is None else (state[0].unsqueeze(0), state[1].unsqueeze(0))
        y, (h, c) = self.rnn(x, carried)
        return y, (h.squeeze(0), c.squeeze(0))

    def state_size(self, seq_len: int) -> int:
        return 2 * self.width


@register_mixer
class GRU(_Recurrent):
    """GRU layer; the state is the hidden vector, width scalars."""

    name = "gru"
    layer = nn.GRU


@register_mixer
class RNN(_Recurrent):
    """Elman RNN with tanh, h_t = tanh(W x_t + U h_{t-1} + b); width scalars of state."""

    name = "rnn"
    layer = nn.RNN
