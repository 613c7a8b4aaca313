"""Causal multi-head self-attention: the mixer of the ``transformer`` model.

Vaswani et al., "Attention Is All You Need" (2017), as used by every paper in papers.md: the
GPT-2-style Transformer of Bhattamishra et al. (§2, absolute positions, added by SequenceModel)
and the LLaMA-style Transformer of Wen et al. (§1, RoPE: Su et al., "RoFormer", 2021).

The state is the KV cache: the keys (after RoPE) and values of every token so far, so a chunk
continues a sequence exactly; its size grows with the sequence, ``2 * width * seq_len``
scalars, the quantity the papers' lower bounds are about.

Choices the papers leave open: queries, keys and values come from one fused linear map with
bias, the output projection has bias (GPT-2); weights are drawn from N(0, 0.02²) and biases
start at zero (GPT-2's init, without its depth-scaled residual init); RoPE rotates the two
halves of each head (GPT-NeoX layout) with base 10,000 (``rotary.py``, shared with RetNet); no
dropout. Without RoPE and without a position table (``positional="none"``, NoPE) the causal mask
alone carries order; RoPE and NoPE run at any length, a learned table only up to the lengths it
was trained at (papers.md §3, the length-generalisation protocol).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sepbench.errors import SepbenchError, check_int
from sepbench.models.base import Mixer, register_mixer
from sepbench.models.rotary import position_angles, rotate

KVCache = tuple[Tensor, Tensor]


def rope(x: Tensor, start: int) -> Tensor:
    """RoPE on ``x`` (batch, heads, time, head_dim) at positions ``start, start+1, ...``."""
    return rotate(x, position_angles(start, x.shape[-2], x.shape[-1] // 2, x.device))


def causal_mask(queries: int, keys: int, device: torch.device) -> Tensor:
    """Boolean (queries, keys) mask: the last ``queries`` of ``keys`` positions see their past."""
    past = keys - queries
    query_position = torch.arange(past, keys, device=device)[:, None]
    return torch.arange(keys, device=device)[None, :] <= query_position


@register_mixer
class Attention(Mixer):
    """Causal multi-head self-attention over a KV cache (papers.md §1, §2).

    ``heads`` must divide ``width``; ``rope`` rotates queries and keys by their absolute
    position (``models.build(..., positional="rope")`` sets it), which needs an even head size.
    Recurrence ``none`` (papers.md §3): the KV cache only grows by appending each token's keys
    and values, nothing carried is rewritten, and a position's serial depth is the layer count.
    """

    name = "attention"
    recurrence = "none"
    default_feedforward = "mlp"
    needs_positions = True

    def __init__(self, width: int, *, heads: int = 4, rope: bool = False) -> None:
        super().__init__()
        check_int("attention", "heads", heads, 1, width)
        if width % heads:
            raise SepbenchError(f"attention: heads must divide width={width}, got heads={heads}")
        if rope and (width // heads) % 2:
            raise SepbenchError(
                f"attention: rope needs an even head size width/heads, got {width // heads}"
            )
        self.width, self.heads, self.rope = width, heads, rope
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        for linear in (self.qkv, self.out):
            nn.init.normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, x: Tensor, state: KVCache | None = None) -> tuple[Tensor, KVCache]:
        batch, time, _ = x.shape
        qkv = self.qkv(x).view(batch, time, 3, self.heads, self.width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        past = 0 if state is None else state[0].shape[-2]
        if self.rope:
            q, k = rope(q, past), rope(k, past)
        if state is not None:
            k = torch.cat((state[0], k), dim=-2)
            v = torch.cat((state[1], v), dim=-2)
        if past == 0 or time == 1:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=past == 0 and time > 1)
        else:
            mask = causal_mask(time, past + time, x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(batch, time, self.width)
        return self.out(y), (k, v)

    def state_size(self, seq_len: int) -> int:
        return 2 * self.width * seq_len
