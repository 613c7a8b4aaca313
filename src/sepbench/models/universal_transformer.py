"""The Universal (looped) Transformer: one Transformer layer applied ``depth`` times.

Dehghani, Gouws, Vinyals, Uszkoreit & Kaiser, "Universal Transformers" (2019); the looped
Transformers Zhang et al. list as the control of their revisit (papers.md §3): they recur over
depth, not over time. Each loop applies the same pre-norm layer (causal attention, GELU MLP) to
the whole sequence, after adding a learned embedding of the loop index (Dehghani et al.'s
timestep signal):

    h^0 = x,    h^i = layer(h^{i-1} + e_i)  for i = 1..depth,    output h^depth

``recurrence = "none"``: nothing carried across time is ever rewritten; the state is each loop's
KV cache, which only grows by appending the new token's keys and values, and a position's
serial depth is ``depth`` whatever the length (Zhang et al.: not complete over time unless the
number of loops grows with N). State: ``depth · 2 · width · seq_len`` scalars.

How it fits the mixer contract: the loops share one layer's weights, so the whole loop is one
mixer (``Mixer.stack``); ``models.build("universal_transformer", vocab, width, layers)`` builds
one block whose single layer is applied ``layers`` times. Choices sepbench makes: a fixed
number of loops (no adaptive computation time), a learned loop embedding (init N(0, 0.02²))
instead of Dehghani et al.'s sinusoidal one, the layer of sepbench's ``transformer`` model
(attention.py, 4 heads, RoPE with ``rope``); no dropout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sepbench.errors import check_int
from sepbench.models.base import Mixer, register_mixer
from sepbench.models.stepwise import transformer_layer


@register_mixer
class UniversalTransformer(Mixer):
    """One shared Transformer layer looped ``depth`` times; state: one KV cache per loop."""

    name = "universal_transformer"
    recurrence = "none"
    default_feedforward = None
    needs_positions = True
    stack = True

    def __init__(self, width: int, *, depth: int, heads: int = 4, rope: bool = False) -> None:
        super().__init__()
        check_int(self.name, "depth", depth, 1, 256)
        self.width, self.depth = width, depth
        self.layer = transformer_layer(width, heads, rope)
        self.loop_embedding = nn.Parameter(torch.randn(depth, width) * 0.02)

    def forward(self, x: Tensor, state: list[Any] | None = None) -> tuple[Tensor, list[Any]]:
        loop_states = []
        for loop, loop_state in enumerate(state or [None] * self.depth):
            x, loop_state = self.layer(x + self.loop_embedding[loop], loop_state)
            loop_states.append(loop_state)
        return x, loop_states

    def state_size(self, seq_len: int) -> int:
        return self.depth * 2 * self.width * seq_len
