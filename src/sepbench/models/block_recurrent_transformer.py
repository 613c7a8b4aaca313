"""The Block-Recurrent Transformer: a Transformer layer used as a recurrent cell over blocks.

Hutchins, Schlag, Wu, Dyer & Neyshabur, "Block-Recurrent Transformers" (2022), one of the
recurrent Transformers Zhang et al. revisit (papers.md §3). Tokens are grouped in blocks of
``block``; every layer attends within a sliding window (a token sees its own block up to itself
and the whole previous block). One layer, the recurrent cell, also carries ``states`` state
vectors S from block to block:

- vertical (tokens): self-attention over the window and cross-attention to S (the state before
  the token's block), concatenated and projected, then a residual and a GELU MLP;
- horizontal (state), once a block is complete: S + learned state IDs, layer-normed, attends to
  itself and cross-attends to the block's tokens; the projected result enters an LSTM-style gate,

      z, i, f = W h + b,    S ← S ⊙ σ(f + 1) + tanh(z) ⊙ σ(i − 1),

  and a second such gate takes the state's own MLP output (Hutchins et al.'s "LSTM gate", forget
  bias +1, input bias −1). Keys and values are shared by both directions, queries are not.

The state update is an arbitrary nonlinear function of the previous S, applied once per block:
``recurrence = "block"`` (complete at block granularity, ``block_length = block``); inside a
block every token is processed in parallel, and a whole chunk's window attention is one call.
Only the state loop (``states`` vectors per block) runs in Python, once per block.

Chunk-and-state: the state is (tokens so far, each layer's keys and values from the start of the
previous block on, S), so a chunk may end anywhere in a block. After seq_len tokens it holds
``depth · 2 · width · min(seq_len, block + seq_len mod block) + states · width`` scalars: bounded
in the length, like an RNN's.

How it fits the mixer contract: the design is a stack in which one layer differs, so the whole
stack is one mixer (``Mixer.stack``); ``models.build("block_recurrent_transformer", vocab,
width, layers)`` builds one block holding a ``layers``-deep stack. Choices sepbench makes where
the paper's scale does not apply or it leaves them open: small defaults (block 4, 4 state
vectors; the paper uses 512 and 512); the recurrent layer is ``recurrent_layer`` (default the
second from the top, depth − 2, or 0 for one layer; the paper puts it at layer 10 of 12); a
learned initial state and learned state IDs (N(0, 0.02²)); positions by RoPE over the window
with ``rope`` (the paper uses T5 relative biases) or from the model, none for state vectors;
projections with bias and N(0, 0.02²) init as attention.py; pre-norm LayerNorms; no dropout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sepbench.errors import SepbenchError, check_int
from sepbench.models.attention import rope
from sepbench.models.base import MLP, Mixer, register_mixer
from sepbench.models.stepwise import KV, merge_heads, projection, split_heads

BlockState = tuple[int, list[KV | None], Tensor]


def window_attention(q: Tensor, k: Tensor, v: Tensor, first: int, start: int, block: int) -> Tensor:
    """Sliding-window causal attention, block by block.

    q (batch, heads, T, d) holds positions start .. start+T-1; k, v (batch, heads, K, d) hold
    positions first .. start+T-1, with ``first`` a multiple of ``block`` at or before the start
    of the previous block. A query sees its own block up to itself and the whole previous block.
    """
    batch, heads, length, d = k.shape
    blocks = -(-length // block)
    tail = blocks * block - length
    offset = start - first
    q = F.pad(q, (0, 0, offset, tail)).view(batch, heads, blocks, block, d)
    k, v = (F.pad(t, (0, 0, 0, tail)).view(batch, heads, blocks, block, d) for t in (k, v))
    k, v = (torch.cat((F.pad(t, (0, 0, 0, 0, 1, 0))[:, :, :-1], t), 3) for t in (k, v))
    row = torch.arange(block, device=q.device)
    column = torch.arange(2 * block, device=q.device)
    mask = (column[None, :] < block) | (column[None, :] - block <= row[:, None])
    mask = mask.expand(blocks, block, 2 * block).clone()
    mask[0, :, :block] = False  # the first block has no previous block here
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return y.reshape(batch, heads, blocks * block, d)[:, :, offset:length]


class WindowLayer(nn.Module):
    """Pre-norm sliding-window attention, then a GELU MLP."""

    def __init__(self, width: int, heads: int, rope: bool, block: int) -> None:
        super().__init__()
        self.heads, self.rope, self.block = heads, rope, block
        self.attention_norm = nn.LayerNorm(width)
        self.query = projection(width, width)
        self.key_value = projection(width, 2 * width)
        self.out = projection(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def window(self, normed: Tensor, start: int, cache: KV | None) -> tuple[Tensor, KV]:
        """The window attention's heads (batch, heads, T, d) and the keys and values from the
        cache's first position on (unrotated)."""
        q = split_heads(self.query(normed), self.heads)
        k, v = (split_heads(t, self.heads) for t in self.key_value(normed).chunk(2, -1))
        if cache is not None:
            k, v = torch.cat((cache[0], k), 2), torch.cat((cache[1], v), 2)
        first = start + normed.shape[1] - k.shape[2]
        if self.rope:
            q_rot, k_rot = rope(q, start), rope(k, first)
        else:
            q_rot, k_rot = q, k
        return window_attention(q_rot, k_rot, v, first, start, self.block), (k, v)

    def forward(self, x: Tensor, start: int, cache: KV | None) -> tuple[Tensor, KV]:
        attended, (k, v) = self.window(self.attention_norm(x), start, cache)
        x = x + self.out(merge_heads(attended))
        return x + self.mlp(self.mlp_norm(x))[0], trim(k, v, start + x.shape[1], self.block)


def trim(k: Tensor, v: Tensor, end: int, block: int) -> KV:
    """Keep the keys and values from the start of the previous block of position ``end`` on."""
    first = max(0, (end // block - 1) * block)
    keep = end - first
    return k[:, :, -keep:], v[:, :, -keep:]


class LSTMGate(nn.Module):
    """Hutchins et al.'s LSTM gate: S ← S ⊙ σ(f + 1) + tanh(z) ⊙ σ(i − 1), z, i, f = W h + b."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = projection(width, 3 * width)

    def forward(self, state: Tensor, h: Tensor) -> Tensor:
        z, i, f = self.linear(h).chunk(3, -1)
        return state * torch.sigmoid(f + 1) + torch.tanh(z) * torch.sigmoid(i - 1)


class RecurrentCell(WindowLayer):
    """The recurrent layer: window attention and cross-attention to S; S updated per block."""

    def __init__(self, width: int, heads: int, rope: bool, block: int, states: int) -> None:
        super().__init__(width, heads, rope, block)
        self.out = projection(2 * width, width)
        self.cross_query = projection(width, width)
        self.initial_state = nn.Parameter(torch.randn(states, width) * 0.02)
        self.state_ids = nn.Parameter(torch.randn(states, width) * 0.02)
        self.state_norm = nn.LayerNorm(width)
        self.state_key_value = projection(width, 2 * width)
        self.state_query = projection(width, width)
        self.state_cross_query = projection(width, width)
        self.state_out = projection(2 * width, width)
        self.attention_gate = LSTMGate(width)
        self.state_mlp_norm = nn.LayerNorm(width)
        self.state_mlp = MLP(width)
        self.mlp_gate = LSTMGate(width)

    def forward(
        self, x: Tensor, start: int, cache: KV | None, state: Tensor
    ) -> tuple[Tensor, KV, Tensor]:
        normed = self.attention_norm(x)
        attended, (k, v) = self.window(normed, start, cache)
        cross_q = split_heads(self.cross_query(normed), self.heads)
        first, end = start + x.shape[1] - k.shape[2], start + x.shape[1]
        crossed, position = [], start
        while position < end:
            stop = min(end, (position // self.block + 1) * self.block)
            normed_state = self.state_norm(state + self.state_ids)
            state_k, state_v = self.state_kv(normed_state)
            piece = cross_q[:, :, position - start : stop - start]
            crossed.append(F.scaled_dot_product_attention(piece, state_k, state_v))
            if stop % self.block == 0:
                own = slice(stop - self.block - first, stop - first)
                read = (state_k, state_v, k[:, :, own], v[:, :, own])
                state = self.update(state, normed_state, *read)
            position = stop
        both = torch.cat((merge_heads(attended), merge_heads(torch.cat(crossed, 2))), -1)
        x = x + self.out(both)
        x = x + self.mlp(self.mlp_norm(x))[0]
        return x, trim(k, v, end, self.block), state

    def state_kv(self, normed_state: Tensor) -> KV:
        """The state vectors' keys and values, each (batch, heads, states, d)."""
        k, v = self.state_key_value(normed_state).chunk(2, -1)
        return split_heads(k, self.heads), split_heads(v, self.heads)

    def update(
        self, state: Tensor, normed: Tensor, k: Tensor, v: Tensor, block_k: Tensor, block_v: Tensor
    ) -> Tensor:
        """The state after a block: ``normed`` = LayerNorm(state + IDs), (k, v) its keys and
        values; ``block_k, block_v`` the block's (unrotated) keys and values."""
        q = split_heads(self.state_query(normed), self.heads)
        cross_q = split_heads(self.state_cross_query(normed), self.heads)
        own = F.scaled_dot_product_attention(q, k, v)
        read = F.scaled_dot_product_attention(cross_q, block_k, block_v)
        h = self.state_out(torch.cat((merge_heads(own), merge_heads(read)), -1))
        state = self.attention_gate(state, h)
        return self.mlp_gate(state, self.state_mlp(self.state_mlp_norm(state))[0])


@register_mixer
class BlockRecurrentTransformer(Mixer):
    """``depth`` sliding-window layers over blocks of ``block`` tokens, one of them recurrent."""

    name = "block_recurrent_transformer"
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
        block: int = 4,
        states: int = 4,
        recurrent_layer: int | None = None,
    ) -> None:
        super().__init__()
        check_int(self.name, "depth", depth, 1, 256)
        check_int(self.name, "heads", heads, 1, width)
        check_int(self.name, "block", block, 1, 65536)
        check_int(self.name, "states", states, 1, 4096)
        if width % heads or (rope and (width // heads) % 2):
            raise SepbenchError(
                f"{self.name}: heads must divide width={width} (into an even head size with "
                f"rope), got heads={heads}"
            )
        default = max(0, depth - 2)
        self.recurrent_layer = default if recurrent_layer is None else recurrent_layer
        check_int(self.name, "recurrent_layer", self.recurrent_layer, 0, depth - 1)
        self.width, self.depth, self.block, self.states = width, depth, block, states
        self.layers = nn.ModuleList(
            RecurrentCell(width, heads, rope, block, states)
            if index == self.recurrent_layer
            else WindowLayer(width, heads, rope, block)
            for index in range(depth)
        )

    @property
    def block_length(self) -> int:
        return self.block

    def forward(self, x: Tensor, state: BlockState | None = None) -> tuple[Tensor, BlockState]:
        cell: RecurrentCell = self.layers[self.recurrent_layer]
        if state is None:
            start, caches = 0, [None] * self.depth
            carried = cell.initial_state.to(x.dtype).expand(x.shape[0], -1, -1)
        else:
            start, caches, carried = state
        new_caches: list[KV | None] = []
        for layer, cache in zip(self.layers, caches, strict=True):
            if layer is cell:
                x, cache, carried = cell(x, start, cache, carried)
            else:
                x, cache = layer(x, start, cache)
            new_caches.append(cache)
        return x, (start + x.shape[1], new_caches, carried)

    def state_size(self, seq_len: int) -> int:
        cached = min(seq_len, self.block + seq_len % self.block)
        return self.depth * 2 * self.width * cached + self.states * self.width
