"""RWKV-4: time mixing (the ``rwkv`` mixer) and channel mixing (its feed-forward).

Peng et al., "RWKV: Reinventing RNNs for the Transformer Era" (2023), §3 (version 4). Papers.md
§3 (Zhang et al.) names RWKV as not recurrence-complete: its WKV state is a pair of decaying
weighted sums, linear in the state.

**Time mixing.** Each token is mixed with the previous one (token shift): for z ∈ {k, v, r},
z_t = W_z (μ_z ⊙ x_t + (1 - μ_z) ⊙ x_{t-1}). Per channel, with decay w = exp(time_decay) > 0
and bonus u = time_first,

    wkv_t = (Σ_{i<t} e^{-(t-1-i)w + k_i} v_i + e^{u + k_t} v_t)
            / (Σ_{i<t} e^{-(t-1-i)w + k_i} + e^{u + k_t}),

and the output is W_o (σ(r_t) ⊙ wkv_t). The numerically stable recurrence (the official code's)
keeps (num, den, m) with the true sums equal to (num, den) · e^m, m the running max exponent;
one step of it is the reference. A chunk of T tokens is cut into blocks of ``chunk`` tokens:
inside a block every (t, i) pair's exponent is formed explicitly and the sums are taken against
their per-row max; across blocks a loop over blocks (not over tokens) carries (num, den, m).
The state is (x_{t-1}, num, den, m), each (batch, width): ``4 · width`` scalars.

**Channel mixing** (``register_feedforward("rwkv_channel_mix")``, the mixer's default
feed-forward): with token shift as above, σ(W_r r_t) ⊙ W_v relu(W_k k_t)², hidden width
``ratio · width`` (4 in the paper); its state is x_{t-1}, ``width`` scalars.

Init, following the official RWKV-4 code, whose per-layer values depend on the depth ratio
ℓ/(L-1); a mixer does not know its depth, so sepbench evaluates them at the middle ratio 0.5
(r0 = 0.5 for "0 to 1", r1 = 0.5 for "1 to almost 0"): with c = channel / width,
time_decay = -5 + 8 (channel/(width-1))^(0.7 + 1.3 r0), time_first = ln 0.3 + 0.5·zigzag(channel)
(zigzag cycles 0, 1, -1), μ_k = c^r1, μ_v = c^r1 + 0.3 r0, μ_r = c^(r1/2) in time mixing and
μ_k = μ_r = c^r1 in channel mixing. Linear maps have no bias and PyTorch's default init (the
official code's zero and orthogonal inits of some maps are not used). A fresh state has
num = den = 0 and m = the dtype's lowest value.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sepbench.errors import check_int
from sepbench.models.base import Mixer, register_feedforward, register_mixer

WKVState = tuple[Tensor, Tensor, Tensor]
RWKVState = tuple[Tensor, Tensor, Tensor, Tensor]
DEPTH_RATIO = 0.5


def token_shift(x: Tensor, previous: Tensor | None) -> Tensor:
    """x_{t-1} for every t of the chunk x (batch, time, width); zeros before the sequence."""
    first = x.new_zeros(x[:, :1].shape) if previous is None else previous[:, None]
    return torch.cat((first, x[:, :-1]), dim=1)


def mix(x: Tensor, shifted: Tensor, mu: Tensor) -> Tensor:
    return shifted + mu * (x - shifted)


def channel_fraction(width: int, power: float) -> Tensor:
    return (torch.arange(width, dtype=torch.float32) / width) ** power


def wkv_step(
    w: Tensor, u: Tensor, k: Tensor, v: Tensor, state: WKVState
) -> tuple[Tensor, WKVState]:
    """The stable recurrence for one token: k, v and each state entry of shape (batch, width)."""
    num, den, m = state
    top = torch.maximum(m, u + k)
    old, new = torch.exp(m - top), torch.exp(u + k - top)
    y = (old * num + new * v) / (old * den + new)
    top = torch.maximum(m - w, k)
    old, new = torch.exp(m - w - top), torch.exp(k - top)
    return y, (old * num + new * v, old * den + new, top)


def wkv_blocks(
    w: Tensor, u: Tensor, k: Tensor, v: Tensor, state: WKVState
) -> tuple[Tensor, WKVState]:
    """WKV over k, v of shape (batch, blocks, size, width): stable pairwise sums in each block.

    Token t of a block (0-based) reads the state before the block decayed by e^{-t w}; the
    state after a block is the state before it decayed by e^{-size·w} plus the block's own
    sum Σ_i e^{-(size-1-i) w + k_i} (v_i, 1), all held against running max exponents. The
    pairwise exponents are laid out (batch, blocks, width, t, i), so that one batched matmul
    with [v, 1] gives numerator and denominator together.
    """
    size = k.shape[2]
    k, v = k.transpose(2, 3), v.transpose(2, 3)
    position = torch.arange(size, device=k.device, dtype=k.dtype)
    gap = position[:, None] - position[None, :] - 1
    decay = torch.where(gap >= 0, -gap * w[:, None, None], u[:, None, None])
    exponent = decay.masked_fill(gap < -1, -math.inf) + k[..., None, :]
    own_exponent = k - (size - 1 - position) * w[:, None]
    own_top = own_exponent.amax(-1)
    own_weight = torch.exp(own_exponent - own_top[..., None])
    own_num, own_den = (own_weight * v).sum(-1), own_weight.sum(-1)
    befores = []
    for block in range(k.shape[1]):
        befores.append(state)
        num, den, m = state
        top = torch.maximum(m - size * w, own_top[:, block])
        old, new = torch.exp(m - size * w - top), torch.exp(own_top[:, block] - top)
        state = (old * num + new * own_num[:, block], old * den + new * own_den[:, block], top)
    num, den, m = (torch.stack(part, 1)[..., None] for part in zip(*befores))
    carried_exponent = m - position * w[:, None]
    top = torch.maximum(exponent.amax(-1), carried_exponent)
    weight = torch.exp(exponent - top[..., None])
    summed = weight @ torch.stack((v, torch.ones_like(v)), -1)
    carried = torch.exp(carried_exponent - top)
    numerator = summed[..., 0] + carried * num
    denominator = summed[..., 1] + carried * den
    return (numerator / denominator).transpose(2, 3), state


@register_feedforward("rwkv_channel_mix")
class ChannelMix(nn.Module):
    """RWKV-4 channel mixing: token shift, squared ReLU, receptance gate; state x_{t-1}."""

    def __init__(self, width: int, ratio: int = 4) -> None:
        super().__init__()
        self.width = width
        self.mix_key = nn.Parameter(channel_fraction(width, 1 - DEPTH_RATIO))
        self.mix_receptance = nn.Parameter(channel_fraction(width, 1 - DEPTH_RATIO))
        self.key = nn.Linear(width, ratio * width, bias=False)
        self.receptance = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(ratio * width, width, bias=False)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shifted = token_shift(x, state)
        k = torch.relu(self.key(mix(x, shifted, self.mix_key))).square()
        r = torch.sigmoid(self.receptance(mix(x, shifted, self.mix_receptance)))
        return r * self.value(k), x[:, -1]

    def state_size(self, seq_len: int) -> int:
        return self.width


@register_mixer
class TimeMix(Mixer):
    """RWKV-4 time mixing with the stable WKV, trained in blocks of ``chunk`` tokens.

    Recurrence ``linear`` (papers.md §3 names RWKV): the true sums (num, den) · e^m decay and
    add input terms; x_{t-1} is a window of the input, not a recurrence.
    """

    name = "rwkv"
    recurrence = "linear"
    default_feedforward = "rwkv_channel_mix"

    def __init__(self, width: int, *, chunk: int = 8) -> None:
        super().__init__()
        check_int("rwkv", "chunk", chunk, 1, 4096)
        self.width, self.chunk = width, chunk
        channel = torch.arange(width, dtype=torch.float32)
        power = 0.7 + 1.3 * DEPTH_RATIO
        self.time_decay = nn.Parameter(-5 + 8 * (channel / max(width - 1, 1)) ** power)
        zigzag = ((channel + 1) % 3 - 1) * 0.5
        self.time_first = nn.Parameter(math.log(0.3) + zigzag)
        fraction = 1 - DEPTH_RATIO
        self.mix_key = nn.Parameter(channel_fraction(width, fraction))
        self.mix_value = nn.Parameter(channel_fraction(width, fraction) + 0.3 * DEPTH_RATIO)
        self.mix_receptance = nn.Parameter(channel_fraction(width, fraction / 2))
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width, bias=False)
        self.receptance = nn.Linear(width, width, bias=False)
        self.output = nn.Linear(width, width, bias=False)

    def forward(self, x: Tensor, state: RWKVState | None = None) -> tuple[Tensor, RWKVState]:
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.width)
            state = (None, zeros, zeros, torch.full_like(zeros, torch.finfo(x.dtype).min))
        previous, *wkv_state = state
        shifted = token_shift(x, previous)
        k = self.key(mix(x, shifted, self.mix_key))
        v = self.value(mix(x, shifted, self.mix_value))
        r = torch.sigmoid(self.receptance(mix(x, shifted, self.mix_receptance)))
        wkv, wkv_state = self.wkv(k, v, tuple(wkv_state))
        return self.output(r * wkv), (x[:, -1], *wkv_state)

    def wkv(self, k: Tensor, v: Tensor, state: WKVState) -> tuple[Tensor, WKVState]:
        """WKV over (batch, time, width): the step for one token, else whole blocks + the rest."""
        w, u = torch.exp(self.time_decay), self.time_first
        batch, time, width = k.shape
        if time == 1:
            y, state = wkv_step(w, u, k[:, 0], v[:, 0], state)
            return y[:, None], state
        size = min(self.chunk, time)
        whole = time - time % size
        pieces = []
        for start, end, block in ((0, whole, size), (whole, time, time - whole)):
            if end > start:
                shape = (batch, (end - start) // block, block, width)
                blocks = (k[:, start:end].view(shape), v[:, start:end].view(shape))
                y, state = wkv_blocks(w, u, *blocks, state)
                pieces.append(y.reshape(batch, end - start, width))
        return torch.cat(pieces, 1), state

    def state_size(self, seq_len: int) -> int:
        return 4 * self.width
