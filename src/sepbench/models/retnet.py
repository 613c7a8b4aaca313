"""Multi-scale retention: the mixer of the ``retnet`` model.

Sun et al., "Retentive Network: A Successor to Transformer for Large Language Models" (2023),
§2.1-2.2. Per head h, with decay γ_h = 1 - 2^(-5-h) (h = 0 .. heads-1, §2.2) and queries and
keys rotated by their position (the e^{inθ} of §2.1, RoPE's real form), retention is

    S_n = γ S_{n-1} + k̃_nᵀ v_n,    o_n = q̃_n S_n,

i.e. o_n = Σ_{m≤n} γ^(n-m) q̃_n · k̃_m v_m, a recurrence linear in the state, so by papers.md §3
(Zhang et al.) RetNet is not recurrence-complete; it is a baseline of Bhattamishra et al. (§2).
The heads' outputs go through a group norm (one group per head) and a swish gate:
``out(silu(gate(x)) * GroupNorm(o))``.

The state is kept in the frame of the last token read: S_n = Σ_{m≤n} γ^(n-m) R((m-n)θ) k_mᵀ v_m,
so it has heads · d_k · d_v = 2 · width² / heads scalars and needs no position counter; one
step rotates it by -θ, decays it by γ, adds k_nᵀ v_n (unrotated), and reads it with the
unrotated q_n. This is the recurrent reference. A chunk of T tokens uses the chunkwise form of
§2.2: positions 1..T relative to the carried state, blocks of ``chunk`` tokens, the masked decay
matrix inside a block and the carried state across blocks (block-start states from one
decay-weighted sum over earlier blocks, so no Python loop).

Simplifications and choices the paper leaves open: xPos's length-extrapolation scale is dropped
(plain rotation, as in the authors' later torchscale code); θ_j = 10000^(-j/(d_k/2)) on the two
halves of each head (``rotary.py``, shared with attention); d_k = width / heads and
d_v = 2 d_k (the paper's parameter allocation, §3: the value and gate maps are
width -> 2·width, the output map 2·width -> width); keys scaled by d_k^(-1/2); the paper's
extra normalisations of the retention scores are omitted (per-token scalings that the group
norm cancels). Init as in torchscale: Xavier-uniform with gain
2^(-2.5) for the query, key, value and gate maps, 2^(-1) for the output map, no biases;
group-norm affine weights 1, biases 0; no dropout.

Positions: the rotations alone address recent tokens only coarsely at small head sizes (with
d_k = 8 only θ = 1 separates neighbours, and cos(6) ≈ cos(0) confuses offset 1 with offset 7;
a width-32 model learned "predict the previous token" to 0.985-0.991 only). So, like the linear
Transformer, a model with this mixer adds learned absolute positions by default
(``needs_positions``); ``positional="none"`` gives the paper's pure form.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sepbench.errors import SepbenchError, check_int
from sepbench.models.base import Mixer, register_mixer
from sepbench.models.rotary import frequencies, rotate


def decay_powers(log_gamma: Tensor, exponents: Tensor) -> Tensor:
    """γ_h^e for every head h and exponent e: shape (heads, *exponents.shape)."""
    shape = (-1,) + (1,) * exponents.dim()
    return torch.exp(log_gamma.view(shape) * exponents)


@register_mixer
class RetNet(Mixer):
    """Multi-scale retention with ``heads`` heads, trained in blocks of ``chunk`` tokens.

    The state has shape (batch, heads, d_k, 2·d_k). Recurrence ``linear`` (papers.md §3): the
    state is rotated, decayed and added to, S_n = γ R(-θ) S_{n-1} + k_nᵀ v_n.
    """

    name = "retnet"
    recurrence = "linear"
    default_feedforward = "mlp"
    needs_positions = True

    def __init__(self, width: int, *, heads: int = 4, chunk: int = 64) -> None:
        super().__init__()
        check_int("retnet", "heads", heads, 1, width)
        if width % heads or (width // heads) % 2:
            raise SepbenchError(
                f"retnet: heads must divide width={width} into even head sizes, got {heads}"
            )
        check_int("retnet", "chunk", chunk, 1, 65536)
        self.width, self.heads, self.chunk = width, heads, chunk
        self.qk = nn.Linear(width, 2 * width, bias=False)
        self.value = nn.Linear(width, 2 * width, bias=False)
        self.gate = nn.Linear(width, 2 * width, bias=False)
        self.out = nn.Linear(2 * width, width, bias=False)
        self.norm = nn.GroupNorm(heads, 2 * width)
        for linear in (self.qk, self.value, self.gate):
            nn.init.xavier_uniform_(linear.weight, gain=2**-2.5)
        nn.init.xavier_uniform_(self.out.weight, gain=2**-1)
        gamma = 1 - 2.0 ** (-5 - torch.arange(heads, dtype=torch.float32))
        self.register_buffer("log_gamma", torch.log(gamma), persistent=False)
        self.register_buffer("theta", frequencies(width // heads // 2), persistent=False)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch, time, _ = x.shape
        q, k = self.qk(x).view(batch, time, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        v = self.value(x).view(batch, time, self.heads, -1).transpose(1, 2)
        k = k * k.shape[-1] ** -0.5
        if state is None:
            d = self.width // self.heads
            state = x.new_zeros(batch, self.heads, d, 2 * d)
        o, state = (self.step if time == 1 else self.chunked)(q, k, v, state)
        o = self.norm(o.transpose(1, 2).reshape(batch * time, 2 * self.width))
        y = F.silu(self.gate(x)) * o.view(batch, time, 2 * self.width)
        return self.out(y), state

    def rotate_keys(self, s: Tensor, steps: int) -> Tensor:
        """Rotate the key axis of a state (…, d_k, d_v) by ``steps`` · θ."""
        angle = steps * self.theta.float()
        return rotate(s.transpose(-1, -2), angle).transpose(-1, -2)

    def step(self, q: Tensor, k: Tensor, v: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """The recurrent reference for one token: q, k, v of shape (batch, heads, 1, d)."""
        gamma = self.log_gamma.exp().to(s.dtype)[:, None, None]
        s = gamma * self.rotate_keys(s, -1) + k.transpose(-1, -2) @ v
        return q @ s, s

    def chunked(self, q: Tensor, k: Tensor, v: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """q, k, v of shape (batch, heads, T, d) by the chunkwise form (Sun et al., §2.2).

        Tokens sit at positions 1..T relative to the carried state, whose frame is position 0.
        T is zero-padded to whole blocks (a zero key adds nothing; padded outputs are dropped);
        the returned state is summed over the real tokens directly, then turned to frame T.
        """
        batch, heads, time, _ = q.shape
        size = min(self.chunk, time)
        blocks = -(-time // size)
        pad = blocks * size - time
        angle = torch.arange(1, time + 1, device=q.device, dtype=torch.float32)[:, None]
        q, k = rotate(q, angle * self.theta), rotate(k, angle * self.theta)
        log_gamma = self.log_gamma.float()
        tail = decay_powers(log_gamma, time - angle[:, 0]).to(k.dtype)[:, :, None]
        final = decay_powers(log_gamma, torch.tensor(float(time))).to(s.dtype)[:, None, None]
        s_end = final * s + (k * tail).transpose(-1, -2) @ v
        q, k, v = (F.pad(t, (0, 0, 0, pad)).view(batch, heads, blocks, size, -1) for t in (q, k, v))
        o = self.intra_block(q, k, v, log_gamma) + self.inter_block(q, k, v, s, log_gamma)
        o = o.view(batch, heads, blocks * size, -1)[:, :, :time]
        return o, self.rotate_keys(s_end, -time)

    @staticmethod
    def intra_block(q: Tensor, k: Tensor, v: Tensor, log_gamma: Tensor) -> Tensor:
        """Σ over earlier tokens of the same block: (q kᵀ ⊙ D) v with D[i, j] = γ^(i-j), i ≥ j."""
        size = q.shape[-2]
        position = torch.arange(size, device=q.device, dtype=torch.float32)
        distance = position[:, None] - position[None, :]
        mask = decay_powers(log_gamma, distance.clamp(min=0)) * (distance >= 0)
        return ((q @ k.transpose(-1, -2)) * mask.to(q.dtype)[:, None]) @ v

    @staticmethod
    def inter_block(q: Tensor, k: Tensor, v: Tensor, s: Tensor, log_gamma: Tensor) -> Tensor:
        """Each token's read of the state before its block, decayed γ^(i+1) to it.

        The state before block c is γ^(C·c) s + Σ_{j<c} γ^(C·(c-1-j)) B_j, with B_j the block's
        own Σ_i γ^(C-1-i) k_iᵀ v_i; the sum over j is one matmul with a masked decay matrix.
        """
        batch, heads, blocks, size, _ = q.shape
        position = torch.arange(size, device=q.device, dtype=torch.float32)
        to_end = decay_powers(log_gamma, size - 1 - position).to(k.dtype)[:, None, :, None]
        own = ((k * to_end).transpose(-1, -2) @ v).view(batch, heads, blocks, -1)
        block = torch.arange(blocks, device=q.device, dtype=torch.float32)
        gap = block[:, None] - block[None, :] - 1
        across = decay_powers(log_gamma, size * gap.clamp(min=0)) * (gap >= 0)
        start = decay_powers(log_gamma, size * block).to(s.dtype)[:, :, None, None]
        before = (across.to(own.dtype) @ own).view(*s.shape[:2], blocks, *s.shape[2:])
        before = before + start * s[:, :, None]
        from_start = decay_powers(log_gamma, position + 1).to(q.dtype)[:, None, :, None]
        return (q * from_start) @ before

    def state_size(self, seq_len: int) -> int:
        d = self.width // self.heads
        return self.heads * d * 2 * d
