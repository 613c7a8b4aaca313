"""Pieces shared by the recurrent Transformers of papers.md §3 (the Recurrent, Feedback,
Block-Recurrent and memory-token Transformers, and the looped control).

- :func:`projection`: a linear map with the Transformer's init (attention.py: weights from
  N(0, 0.02²), biases zero).
- :func:`split_heads` / :func:`merge_heads`: (batch, time, width) <-> (batch, heads, time, d).
- :func:`transformer_layer`: one pre-norm layer of sepbench's own ``transformer`` model
  (LayerNorm, causal attention over a KV cache, GELU MLP of ratio 4).
- :class:`Rotation`: that layer's RoPE, tabulated once per chunk for models stepping a token at
  a time.
- :class:`GrowingCache`: the keys and values of the steps so far, for the models that must run
  one token at a time. A step appends one key and value and attends over all of them without
  copying the past, so a sequence of T steps copies and keeps O(T log T) scalars, not the
  O(T²) that concatenating the whole cache at every step would cost (at T = 2,048, width 32:
  tens of MB against 0.5 GB kept for the backward pass).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sepbench.models.attention import Attention, rope
from sepbench.models.base import MLP, Block

KV = tuple[Tensor, Tensor]
MIN_RUN = 32
"""Steps gathered before they are frozen into a run (runs then merge like a binary counter)."""


def projection(width_in: int, width_out: int) -> nn.Linear:
    """``nn.Linear`` with weights from N(0, 0.02²) and zero bias (attention.py's init)."""
    linear = nn.Linear(width_in, width_out)
    nn.init.normal_(linear.weight, std=0.02)
    nn.init.zeros_(linear.bias)
    return linear


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(batch, time, width) -> (batch, heads, time, width / heads)."""
    batch, time, width = x.shape
    return x.view(batch, time, heads, width // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(batch, heads, time, d) -> (batch, time, heads · d)."""
    batch, heads, time, d = x.shape
    return x.transpose(1, 2).reshape(batch, time, heads * d)


class Rotation:
    """attention.py's RoPE for models that step one token at a time: the cos and sin of every
    position of a chunk, computed once, then applied to one position's queries or keys.

    The tables come from attention.py's own ``rope`` applied to the unit vector of each pair's
    first coordinate, so the two can never disagree.
    """

    def __init__(self, start: int, count: int, head_dim: int, device: torch.device) -> None:
        half = head_dim // 2
        unit = torch.cat((torch.ones(half, device=device), torch.zeros(half, device=device)))
        table = rope(unit.expand(1, 1, count, head_dim), start)[0, 0]
        self.cos, self.sin = table[:, :half], table[:, half:]

    def __call__(self, x: Tensor, index: int) -> Tensor:
        """``x`` (..., 1, head_dim) rotated to the chunk's position ``index``."""
        first, second = x.chunk(2, -1)
        cos, sin = self.cos[index], self.sin[index]
        return torch.cat((first * cos - second * sin, first * sin + second * cos), -1)


def transformer_layer(width: int, heads: int, rope: bool) -> Block:
    """A pre-norm layer of the ``transformer`` model: attention then a GELU MLP (ratio 4)."""
    return Block(Attention(width, heads=heads, rope=rope), MLP(width), width, "layernorm")


class GrowingCache:
    """Keys and values, (batch, heads, time, d), that grow by one step at a time.

    The past is held as runs: a run from an earlier chunk as given, then runs of ``MIN_RUN``
    steps that merge with the run before them once it is no longer (so there are O(log T) of
    them, as in a binary counter), then the recent steps not yet frozen, one tensor grown by a
    row per step (so a step copies at most ``MIN_RUN`` rows). While there is no run (the first
    ``MIN_RUN`` steps of a sequence) a step's attention is one fused call; afterwards the scores
    of every run are put together before one softmax. Either way it equals attention over the
    whole concatenated cache.
    """

    def __init__(self, past: KV | None = None) -> None:
        self.runs: list[KV] = [] if past is None else [past]
        self.recent: KV | None = None

    def append(self, k: Tensor, v: Tensor) -> None:
        """Add one step's key and value, each (batch, heads, 1, d)."""
        self.recent = (k, v) if self.recent is None else self._concatenated([self.recent, (k, v)])
        if self.recent[0].shape[2] < MIN_RUN:
            return
        run, self.recent = self.recent, None
        while self.runs and self.runs[-1][0].shape[2] <= run[0].shape[2]:
            run = self._concatenated([self.runs.pop(), run])
        self.runs.append(run)

    def attend(self, q: Tensor, extra: KV | None = None) -> Tensor:
        """Softmax attention of ``q`` (batch, heads, 1, d) over the cache and ``extra``."""
        tail = [kv for kv in (self.recent, extra) if kv is not None]
        parts = self.runs + ([self._concatenated(tail)] if len(tail) > 1 else tail)
        if len(parts) == 1:
            return F.scaled_dot_product_attention(q, *parts[0])
        scores = torch.cat([q @ k.transpose(-1, -2) for k, _ in parts], -1)
        weights = (scores / math.sqrt(q.shape[-1])).softmax(-1)
        pieces = weights.split([k.shape[2] for k, _ in parts], -1)
        return sum(w @ v for w, (_, v) in zip(pieces, parts, strict=True))

    def tensors(self) -> KV:
        """The whole cache as one (keys, values) pair, to carry to the next chunk."""
        return self._concatenated(self.runs + ([self.recent] if self.recent else []))

    @staticmethod
    def _concatenated(parts: list[KV]) -> KV:
        return torch.cat([k for k, _ in parts], 2), torch.cat([v for _, v in parts], 2)
