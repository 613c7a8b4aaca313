"""The Recurrent Memory Transformer: segments in turn, memory tokens carried between them.

Bulatov, Kuratov & Burtsev, "Recurrent Memory Transformer" (2022), the memory-token design of
Zhang et al.'s revisit (papers.md §3), in its decoder-only form. The sequence is cut into
segments of ``segment`` tokens; a segment is processed by a causal Transformer as

    [ M (read: ``memory`` tokens) ;  the segment's tokens ;  M (write: the same vectors) ]

so every token reads the memory and the write tokens, last, see the whole segment. The write
tokens' outputs, layer-normed, are the memory M of the next segment; the first segment's M is
learned. Inside a segment the model is parallel; across segments M is updated once per segment
by a full Transformer pass, a nonlinear function of the old M: ``recurrence = "block"``
(complete at segment granularity, ``block_length = segment``).

Chunk-and-state: a chunk may end inside a segment. The state is (M, each layer's KV cache of
the read tokens and of the segment's tokens so far, the count of those tokens); when a segment
fills, the write pass runs at once and the caches restart from the next segment's read tokens,
so whole, chunked and token-by-token runs agree. State after seq_len tokens:
``memory · width + depth · 2 · width · (memory + seq_len mod segment)`` scalars.

How it fits the mixer contract: the memory passes through the whole stack, so the stack is one
mixer (``Mixer.stack``); ``models.build("recurrent_memory_transformer", vocab, width, layers)``
builds one block holding a ``layers``-deep stack. Choices the paper leaves open or sepbench
makes: the layers of sepbench's ``transformer`` model (attention.py: pre-norm, 4 heads, GELU
MLP; RoPE with ``rope``, positions counted from the start of each segment's read tokens, so
they never exceed 2·memory + segment); the next memory is the write outputs after a LayerNorm
(the last hidden state of a pre-norm backbone); initial memory from N(0, 0.02²); gradients
flow through every segment (full backpropagation through time); no dropout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sepbench.errors import check_int
from sepbench.models.base import Mixer, register_mixer
from sepbench.models.stepwise import transformer_layer

MemoryState = tuple[Tensor, list[Any], int]


@register_mixer
class RecurrentMemoryTransformer(Mixer):
    """A ``depth``-layer Transformer over segments with ``memory`` read/write memory tokens."""

    name = "recurrent_memory_transformer"
    recurrence = "block"
    default_feedforward = None
    needs_positions = True
    stack = True

    def __init__(
        self,
        width: int,
        *,
        depth: int,
        heads: int = 4,
        rope: bool = False,
        segment: int = 10,
        memory: int = 4,
    ) -> None:
        super().__init__()
        check_int(self.name, "depth", depth, 1, 256)
        check_int(self.name, "segment", segment, 1, 65536)
        check_int(self.name, "memory", memory, 1, 4096)
        self.width, self.depth, self.segment, self.memory = width, depth, segment, memory
        self.layers = nn.ModuleList(transformer_layer(width, heads, rope) for _ in range(depth))
        self.initial_memory = nn.Parameter(torch.randn(memory, width) * 0.02)
        self.memory_norm = nn.LayerNorm(width)

    @property
    def block_length(self) -> int:
        return self.segment

    def forward(self, x: Tensor, state: MemoryState | None = None) -> tuple[Tensor, MemoryState]:
        if state is None:
            memory = self.initial_memory.to(x.dtype).expand(x.shape[0], -1, -1)
            caches, filled = self.read(memory), 0
        else:
            memory, caches, filled = state
        outputs, start = [], 0
        while start < x.shape[1]:
            end = min(x.shape[1], start + self.segment - filled)
            y, caches = self.run(x[:, start:end], caches)
            outputs.append(y)
            filled += end - start
            start = end
            if filled == self.segment:
                written, _ = self.run(memory, caches)
                memory = self.memory_norm(written)
                caches, filled = self.read(memory), 0
        return torch.cat(outputs, 1), (memory, caches, filled)

    def run(self, x: Tensor, caches: list[Any]) -> tuple[Tensor, list[Any]]:
        """``x`` through every layer, continuing each layer's KV cache."""
        new_caches = []
        for layer, cache in zip(self.layers, caches, strict=True):
            x, cache = layer(x, cache)
            new_caches.append(cache)
        return x, new_caches

    def read(self, memory: Tensor) -> list[Any]:
        """Fresh caches holding a segment's read tokens."""
        return self.run(memory, [None] * self.depth)[1]

    def state_size(self, seq_len: int) -> int:
        cached = self.memory + seq_len % self.segment
        return self.memory * self.width + self.depth * 2 * self.width * cached
