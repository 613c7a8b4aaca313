"""Causal linear attention: the mixer of the ``linear_attention`` model (a linear Transformer).

Katharopoulos, Vyas, Pappas & Fleuret, "Transformers are RNNs: Fast Autoregressive Transformers
with Linear Attention" (2020). Softmax attention is replaced by a kernel with the feature map
φ(x) = elu(x) + 1, which turns causal attention into a recurrence over a matrix state:

    S_t = S_{t-1} + φ(k_t) v_tᵀ,    z_t = z_{t-1} + φ(k_t),
    y_t = φ(q_t)ᵀ S_t / (φ(q_t)ᵀ z_t + ε)

per head. The update is linear in the state, so by papers.md §3 (Zhang et al.) the model is not
recurrence-complete; it is the "linear Transformer" baseline of Bhattamishra et al. (§2). The
state (S, z) has ``heads · (d_k·d_v + d_k)`` scalars whatever the length.

Training a chunk of T tokens uses the chunked form: the time axis is cut into blocks of
``chunk`` tokens; inside a block the output is the quadratic form with a causal mask, across
blocks it reads the state accumulated before the block (an exclusive prefix sum of the blocks'
φ(K)ᵀV). A single token uses the exact recurrence above, the reference the tests compare with.

Choices the paper leaves open (as in sepbench's softmax attention, ``attention.py``): queries,
keys and values come from one fused linear map with bias, the output projection has bias, the
weights are drawn from N(0, 0.02²) and biases start at zero; d_k = d_v = width / heads; ε = 1e-6
(the paper's code); no dropout. Like the paper's Transformer, the mixer has no sense of order of
its own: the model adds learned absolute positions (``Mixer.needs_positions``).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from sepbench.errors import SepbenchError, check_int
from sepbench.models.base import Mixer, register_mixer

EPS = 1e-6
LinearState = tuple[Tensor, Tensor]


def feature_map(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1, positive everywhere (Katharopoulos et al., §3.2.1)."""
    return F.elu(x) + 1


@register_mixer
class LinearAttention(Mixer):
    """Causal, normalised linear attention with ``heads`` heads, trained in blocks of ``chunk``.

    The state is (S, z) of shapes (batch, heads, d_k, d_v) and (batch, heads, d_k).
    Recurrence ``linear`` (papers.md §3): S and z are updated by adding terms of the input only.
    """

    name = "linear_attention"
    recurrence = "linear"
    default_feedforward = "mlp"
    needs_positions = True

    def __init__(self, width: int, *, heads: int = 4, chunk: int = 64) -> None:
        super().__init__()
        check_int("linear_attention", "heads", heads, 1, width)
        if width % heads:
            raise SepbenchError(f"linear_attention: heads must divide width={width}, got {heads}")
        check_int("linear_attention", "chunk", chunk, 1, 65536)
        self.width, self.heads, self.chunk = width, heads, chunk
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        for linear in (self.qkv, self.out):
            nn.init.normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, x: Tensor, state: LinearState | None = None) -> tuple[Tensor, LinearState]:
        batch, time, _ = x.shape
        q, k, v = self.qkv(x).view(batch, time, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = feature_map(q), feature_map(k)
        if state is None:
            d = self.width // self.heads
            state = (x.new_zeros(batch, self.heads, d, d), x.new_zeros(batch, self.heads, d))
        y, state = (self.step if time == 1 else self.chunked)(q, k, v, *state)
        return self.out(y.transpose(1, 2).reshape(batch, time, self.width)), state

    @staticmethod
    def step(q: Tensor, k: Tensor, v: Tensor, s: Tensor, z: Tensor) -> tuple[Tensor, LinearState]:
        """The recurrent reference for one token: q, k, v of shape (batch, heads, 1, d)."""
        s = s + k.transpose(-1, -2) @ v
        z = z + k[..., 0, :]
        numerator = q @ s
        denominator = q @ z[..., None]
        return numerator / (denominator + EPS), (s, z)

    def chunked(
        self, q: Tensor, k: Tensor, v: Tensor, s: Tensor, z: Tensor
    ) -> tuple[Tensor, LinearState]:
        """q, k, v of shape (batch, heads, T, d) in blocks: masked quadratic + carried state.

        T is zero-padded to a whole number of blocks; a padded key has φ(k) = 0, so it adds
        nothing to any sum, and the padded outputs are dropped.
        """
        batch, heads, time, d = q.shape
        size = min(self.chunk, time)
        blocks = -(-time // size)
        pad = blocks * size - time
        q, k, v = (F.pad(t, (0, 0, 0, pad)).view(batch, heads, blocks, size, d) for t in (q, k, v))
        kv = k.transpose(-1, -2) @ v
        k_sum = k.sum(-2)
        s_before = s[:, :, None] + kv.cumsum(2) - kv
        z_before = z[:, :, None] + k_sum.cumsum(2) - k_sum
        scores = (q @ k.transpose(-1, -2)).tril()
        numerator = scores @ v + q @ s_before
        denominator = scores.sum(-1, keepdim=True) + q @ z_before[..., None]
        y = (numerator / (denominator + EPS)).view(batch, heads, blocks * size, d)[:, :, :time]
        return y, (s + kv.sum(2), z + k_sum.sum(2))

    def state_size(self, seq_len: int) -> int:
        d = self.width // self.heads
        return self.heads * (d * d + d)
