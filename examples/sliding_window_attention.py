"""Sliding-window causal attention, written outside sepbench: each token attends to itself and
the ``window - 1`` tokens before it. Its state is the last ``window`` keys and values, so it is a
recurrent model with a state that does not grow past the window. Check it with

    sepbench check-mixer examples/sliding_window_attention.py:SlidingWindowAttention
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SlidingWindowAttention(nn.Module):
    """Multi-head attention over the last ``window`` tokens; no sense of order of its own."""

    default_feedforward = "mlp"
    needs_positions = True

    def __init__(self, width: int, *, heads: int = 4, window: int = 16) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"heads must divide width={width}, got heads={heads}")
        self.width, self.heads, self.window = width, heads, window
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        batch, steps, _ = x.shape
        q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        if state is not None:
            k, v = torch.cat([state[0], k], 2), torch.cat([state[1], v], 2)
        cached = k.shape[2] - steps
        query_at = torch.arange(steps, device=x.device)[:, None] + cached
        key_at = torch.arange(k.shape[2], device=x.device)[None, :]
        visible = (key_at <= query_at) & (key_at > query_at - self.window)
        y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=visible)
        y = y.transpose(1, 2).reshape(batch, steps, self.width)
        keep = slice(max(0, k.shape[2] - self.window), None)
        return self.out(y), (k[:, :, keep], v[:, :, keep])

    def _heads(self, t: Tensor) -> Tensor:
        batch, steps, _ = t.shape
        return t.view(batch, steps, self.heads, -1).transpose(1, 2)

    def state_size(self, seq_len: int) -> int:
        return 2 * self.width * min(seq_len, self.window)
