"""The Recurrent Transformer in its simplest form (Zhang et al., papers.md §3): a Transformer
whose previous step's top-layer hidden state is fed into its first layer at the next step.

At step t, with h_{t-1} the top layer's output stream at the previous step (h_{-1} = 0):

    u_t = x_t + W_f · LayerNorm(h_{t-1}) + b_f
    h_t = layer_L(... layer_1(u_t) ...),   output h_t

where each layer is a layer of sepbench's ``transformer`` (pre-norm causal attention over the
layer's KV cache, then a GELU MLP). h_t depends on h_{t-1} through layer norms, softmaxes and
GELUs, an arbitrary nonlinear function, so the serial depth grows with the length:
``recurrence = "complete"`` (Zhang et al. sort this design as recurrence-complete). The price
is that training runs one token at a time (a Python loop over time, batched over examples; the
keys and values of past steps are read in place, :class:`~sepbench.models.stepwise.GrowingCache`).

The state is (h_{t-1}, the KV cache of every layer): ``width + depth · 2 · width · seq_len``
scalars after seq_len tokens.

How it fits the mixer contract: the design couples its layers (the top feeds the bottom), so
the whole stack is one mixer (``Mixer.stack``); ``models.build("recurrent_transformer", vocab,
width, layers)`` builds one block holding a ``layers``-deep stack. Choices the paper leaves
open: the fed-back state is layer-normed and mapped by a learned linear map (init N(0, 0.02²),
zero bias) and added to the input embedding; h_{-1} is zero; layers as in attention.py
(4 heads, fused QKV with bias, N(0, 0.02²) init, RoPE with ``rope``); no dropout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sepbench.errors import check_int
from sepbench.models.attention import Attention
from sepbench.models.base import Mixer, register_mixer
from sepbench.models.stepwise import KV, GrowingCache, Rotation, projection, transformer_layer

RecurrentState = tuple[Tensor, list[KV]]


@register_mixer
class RecurrentTransformer(Mixer):
    """A ``depth``-layer Transformer run token by token, its top output fed back to its input."""

    name = "recurrent_transformer"
    recurrence = "complete"
    default_feedforward = None
    needs_positions = True
    stack = True

    def __init__(self, width: int, *, depth: int, heads: int = 4, rope: bool = False) -> None:
        super().__init__()
        check_int(self.name, "depth", depth, 1, 256)
        self.width, self.depth, self.rope = width, depth, rope
        self.layers = nn.ModuleList(transformer_layer(width, heads, rope) for _ in range(depth))
        self.feedback_norm = nn.LayerNorm(width)
        self.feedback = projection(width, width)

    def forward(
        self, x: Tensor, state: RecurrentState | None = None
    ) -> tuple[Tensor, RecurrentState]:
        if state is None:
            top, start = x.new_zeros(x.shape[0], self.width), 0
            caches = [GrowingCache() for _ in self.layers]
        else:
            top, past = state
            start = past[0][0].shape[2]
            caches = [GrowingCache(kv) for kv in past]
        head_dim = self.width // self.layers[0].mixer.heads
        rotation = Rotation(start, x.shape[1], head_dim, x.device) if self.rope else None
        outputs = []
        for t in range(x.shape[1]):
            h = x[:, t] + self.feedback(self.feedback_norm(top))
            for layer, cache in zip(self.layers, caches, strict=True):
                h = step(layer, h, cache, rotation, t)
            outputs.append(h)
            top = h
        return torch.stack(outputs, 1), (top, [cache.tensors() for cache in caches])

    def state_size(self, seq_len: int) -> int:
        return self.width + self.depth * 2 * self.width * seq_len


def step(
    layer: nn.Module, h: Tensor, cache: GrowingCache, rotation: Rotation | None, index: int
) -> Tensor:
    """Token ``index`` of a chunk, h (batch, width), through a ``transformer_layer``, appending
    its key and value to ``cache``: the layer's attention one step at a time."""
    attention: Attention = layer.mixer
    batch, width = h.shape
    head_dim = width // attention.heads
    qkv = attention.qkv(layer.mixer_norm(h)).view(batch, 3, attention.heads, 1, head_dim)
    q, k, v = qkv.unbind(1)
    if rotation is not None:
        q, k = rotation(q, index), rotation(k, index)
    cache.append(k, v)
    h = h + attention.out(cache.attend(q).reshape(batch, width))
    return h + layer.feedforward(layer.feedforward_norm(h))[0]
