"""The Feedback Transformer: every layer attends to a memory of all layers' past outputs.

Fan, Lavril, Grave, Joulin & Sukhbaatar, "Addressing Some Limitations of Transformers with
Feedback Memory" (2020), one of the recurrent Transformers Zhang et al. revisit (papers.md §3).
With x^0_t the input at step t and x^l_t the output of layer l:

    z^l_t = x^{l-1}_t + Attn_l(x^{l-1}_t, [m_0, ..., m_{t-1}, x^{l-1}_t])
    x^l_t = z^l_t + MLP_l(z^l_t)
    m_t   = Σ_{l=0..L} softmax(w)_l · x^l_t           (w: one learned scalar per layer)

so the lowest layer at step t reads the highest layers' representations of every earlier step.
m_t depends on m_{<t} through the attention of every layer, a nonlinear function, and the
serial depth grows with t: ``recurrence = "complete"`` (Fan et al.'s point; Zhang et al.
count it recurrence-complete). Training runs one token at a time, batched over examples.

Keys and values of the memory come from one projection shared by all layers (sepbench's choice;
each layer could project the memory on its own), so each memory slot is projected once and the
state is one KV cache, ``2 · width · seq_len`` scalars after seq_len tokens, whatever the depth.

How it fits the mixer contract: all layers share the memory, so the whole stack is one mixer
(``Mixer.stack``); ``models.build("feedback_transformer", vocab, width, layers)`` builds one
block holding a ``layers``-deep stack. Choices the paper leaves open or sepbench makes:
the memory spans every earlier step (no window τ); a layer also attends to its own current
input (so the first step has something to read); the memory is layer-normed before the shared
key-value projection and each layer's input before its query and own key-value; w starts at
zero (a uniform average); layers are pre-norm with a GELU MLP of ratio 4; projections have bias
and N(0, 0.02²) init as in attention.py; positions by RoPE with ``rope`` (Fan et al. use
relative position embeddings), otherwise from the model; no dropout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sepbench.errors import SepbenchError, check_int
from sepbench.models.base import MLP, Mixer, register_mixer
from sepbench.models.stepwise import KV, GrowingCache, Rotation, projection


class FeedbackLayer(nn.Module):
    """Pre-norm attention over the feedback memory (plus the own input), then a GELU MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(width)
        self.query = projection(width, width)
        self.out = projection(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(
        self,
        x: Tensor,
        memory: GrowingCache,
        key_value: nn.Linear,
        rotation: Rotation | None,
        index: int,
    ) -> Tensor:
        """Token ``index`` of a chunk, x (batch, width); ``rotation``: RoPE, or None."""
        batch, width = x.shape
        normed = self.attention_norm(x)
        q = self.query(normed).view(batch, self.heads, 1, width // self.heads)
        k, v = key_value(normed).view(batch, 2, self.heads, 1, width // self.heads).unbind(1)
        if rotation is not None:
            q, k = rotation(q, index), rotation(k, index)
        x = x + self.out(memory.attend(q, extra=(k, v)).reshape(batch, width))
        return x + self.mlp(self.mlp_norm(x))[0]


@register_mixer
class FeedbackTransformer(Mixer):
    """A ``depth``-layer Feedback Transformer run token by token; state: the memory's KV cache."""

    name = "feedback_transformer"
    recurrence = "complete"
    default_feedforward = None
    needs_positions = True
    stack = True

    def __init__(self, width: int, *, depth: int, heads: int = 4, rope: bool = False) -> None:
        super().__init__()
        check_int(self.name, "depth", depth, 1, 256)
        check_int(self.name, "heads", heads, 1, width)
        if width % heads or (rope and (width // heads) % 2):
            raise SepbenchError(
                f"{self.name}: heads must divide width={width} (into an even head size with "
                f"rope), got heads={heads}"
            )
        self.width, self.depth, self.heads, self.rope = width, depth, heads, rope
        self.layers = nn.ModuleList(FeedbackLayer(width, heads) for _ in range(depth))
        self.layer_weights = nn.Parameter(torch.zeros(depth + 1))
        self.memory_norm = nn.LayerNorm(width)
        self.key_value = projection(width, 2 * width)

    def forward(self, x: Tensor, state: KV | None = None) -> tuple[Tensor, KV]:
        batch, time, _ = x.shape
        memory = GrowingCache(state)
        start = 0 if state is None else state[0].shape[2]
        weights = self.layer_weights.softmax(0)
        rotation = Rotation(start, time, self.width // self.heads, x.device) if self.rope else None
        outputs = []
        for t in range(time):
            h = x[:, t]
            m = weights[0] * h
            for layer, weight in zip(self.layers, weights[1:], strict=True):
                h = layer(h, memory, self.key_value, rotation, t)
                m = m + weight * h
            kv = self.key_value(self.memory_norm(m)).view(batch, 2, self.heads, 1, -1)
            k, v = kv.unbind(1)
            memory.append(rotation(k, t) if rotation else k, v)
            outputs.append(h)
        return torch.stack(outputs, 1), memory.tensors()

    def state_size(self, seq_len: int) -> int:
        return 2 * self.width * seq_len
