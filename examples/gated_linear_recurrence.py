"""A gated linear recurrence, written outside sepbench: an example of bringing your own mixer.

    h_t = a_t * h_{t-1} + (1 - a_t) * v_t,    a_t = sigmoid(W_a x_t),  v_t = W_v x_t
    y_t = W_o (h_t * silu(W_g x_t))

The update is linear in the state (a diagonal, input-gated decay, like Mamba's or a GLA's), so
sequences are processed in chunks: inside a chunk every output is a decay-weighted sum of the
chunk's inputs (one matrix product), and the state carries the sum across chunks. Check it with

    sepbench check-mixer examples/gated_linear_recurrence.py:GatedLinearRecurrence
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GatedLinearRecurrence(nn.Module):
    """Diagonal gated linear recurrence of width ``width``; ``chunk`` tokens per matmul."""

    default_feedforward = "mlp"

    def __init__(self, width: int, *, chunk: int = 32) -> None:
        super().__init__()
        self.width, self.chunk = width, chunk
        self.gate_in = nn.Linear(width, 3 * width)  # decay logit, value, output gate
        self.out = nn.Linear(width, width)
        nn.init.constant_(self.gate_in.bias[:width], 1.0)  # start with a slow decay

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        decay_logit, value, gate = self.gate_in(x).chunk(3, dim=-1)
        log_a = nn.functional.logsigmoid(decay_logit)
        inputs = (1 - log_a.exp()) * value
        h = x.new_zeros(x.shape[0], self.width) if state is None else state
        outputs = []
        for start in range(0, x.shape[1], self.chunk):
            part = slice(start, start + self.chunk)
            hidden, h = self._chunk(log_a[:, part], inputs[:, part], h)
            outputs.append(hidden)
        hidden = torch.cat(outputs, 1)
        return self.out(hidden * nn.functional.silu(gate)), h

    @staticmethod
    def _chunk(log_a: Tensor, inputs: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """h_t = exp(L_t) h_0 + sum_{s<=t} exp(L_t - L_s) u_s, with L the cumulative log decay."""
        cumulative = log_a.cumsum(1)  # (B, T, D)
        steps = log_a.shape[1]
        lower = torch.ones(steps, steps, dtype=torch.bool, device=log_a.device).tril()
        gaps = cumulative[:, :, None, :] - cumulative[:, None, :, :]  # (B, t, s, D)
        weights = gaps.masked_fill(~lower[None, :, :, None], float("-inf")).exp()
        hidden = (weights * inputs[:, None, :, :]).sum(2) + cumulative.exp() * h[:, None, :]
        return hidden, hidden[:, -1]

    def state_size(self, seq_len: int) -> int:
        return self.width
