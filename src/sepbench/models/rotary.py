"""Rotary position embedding (RoPE; Su et al., "RoFormer", 2021), shared by the attention and
the retention mixers.

A head of size d is split into two halves; pair j (coordinate j of each half) is rotated by the
angle p·θ_j at position p, with θ_j = ``ROPE_BASE``^(-j/(d/2)) (the GPT-NeoX layout). A query at
position p and a key at position q then score by their offset p - q alone, so nothing in the
model is tied to an absolute position: RoPE can run at any length, which is why the
length-generalisation runs of papers.md §3 use it (or no positional encoding at all).

Angles are computed in float32 whatever the activations' dtype: under bfloat16 a position of a
few hundred would lose its low bits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

ROPE_BASE = 10_000.0


def frequencies(half: int, device: torch.device | None = None) -> Tensor:
    """θ_j = ``ROPE_BASE``^(-j/half) for j = 0 .. half-1, float32."""
    return torch.exp(-math.log(ROPE_BASE) / half * torch.arange(half, device=device).float())


def position_angles(start: int, count: int, half: int, device: torch.device) -> Tensor:
    """Angles (count, half) of positions ``start .. start+count-1``, float32."""
    position = torch.arange(start, start + count, device=device).float()
    return position[:, None] * frequencies(half, device)[None, :]


def rotate(x: Tensor, angle: Tensor) -> Tensor:
    """Rotate the two halves of the last dim of ``x`` by ``angle`` (…, d/2), broadcast."""
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    first, second = x.chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)
