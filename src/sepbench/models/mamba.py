"""The Mamba-1 selective state-space mixer (Wen et al.'s and Bhattamishra et al.'s Mamba).

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023), the block
of their §3.4. Wen et al. (papers.md §1) use it with d_state 16, conv 4, expand 2 and no MLP;
Bhattamishra et al. (papers.md §2) compare against it. Its state update is linear in the state,
so by papers.md §3 it is not recurrence-complete.

With ``inner = expand · width``, per token:

    x, z = in_proj(u)                                  (inner each; z is the gate)
    x = SiLU(causal depthwise conv1d of width conv_width over x)
    Δ_low, B, C = x_proj(x)                            (dt_rank, d_state, d_state)
    Δ = softplus(dt_proj(Δ_low))                       (inner, bias inside dt_proj)
    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t x_t           (h: inner × d_state, A = -exp(A_log))
    y_t = (h_t C_t + D ⊙ x_t) ⊙ SiLU(z_t),   output = out_proj(y)

The carried state is ``(conv, h)``: the last ``conv_width - 1`` conv inputs, (batch, inner,
conv_width - 1), and h, (batch, inner, d_state). A single token uses the recurrence above
(:func:`selective_step`, the reference); longer chunks use :func:`selective_scan`, which picks:

- on a CPU, in float32, the compiled C kernel of :mod:`sepbench.models.mamba_cpu`
  where a C compiler is found (it builds on first use, 0.3 s; the causal convolution from a
  zero history runs there too); measured in ``benchmarks/mamba_scan_speed.py``;
- otherwise on a CPU, from :data:`STEPWISE_MIN_BLOCK` state elements per step,
  :class:`StepwiseScan`, the recurrence step by step in torch with a hand-written backward (one
  batch × inner × d_state state stays in cache, so it trains faster than :func:`chunked_scan`
  through autograd at the demo's sizes: benchmarks/results/mamba_scan_speed_cpu.txt);
- otherwise (GPUs, small CPU batches) :func:`chunked_scan`, a two-level scan with few kernel
  launches.

None multiplies by anything larger than 1, so all are stable at any length and for any trained
Δ and A; all agree to fp32 round-off, and the tests hold the fast ones to the step recurrence.
The scan runs in float32 whatever the autocast dtype (Mamba's own kernels keep the state in fp32
too).

Init (Gu & Dao's defaults; the papers of papers.md leave it open): A_log = log(1..d_state) for
every channel (S4D-Real); D = 1; dt_proj.weight ~ U(±dt_rank^-½); dt_proj.bias = softplus⁻¹(Δ₀)
with Δ₀ log-uniform in [dt_min, dt_max], floored at dt_init_floor; every other weight keeps
PyTorch's default init. in_proj and out_proj have no bias, the conv has one (Mamba's
defaults). Mamba's whole-model rescaling of out_proj by 1/√layers is not applied (a mixer does
not know the depth). Parameter names match Hugging Face's ``MambaMixer``, so state dicts load
either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sepbench.errors import SepbenchError, check_int
from sepbench.models import mamba_cpu
from sepbench.models.base import Mixer, register_mixer

MambaState = tuple[Tensor, Tensor]
STEPWISE_MIN_BLOCK = 2**15
"""On a CPU, :class:`StepwiseScan` wins once one step's state (batch × inner × d_state) has
this many elements (the crossover measured by benchmarks/models_speed.py); below it the
per-step overhead dominates."""


def selective_step(
    x: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, h: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The exact recurrence for one token: x, dt (batch, inner); b, c (batch, d_state).

    Returns ``(C_t · h_t, h_t)`` with h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t (h_{-1} = 0).
    """
    h_new = (dt * x)[..., None] * b[:, None, :]
    if h is not None:
        h_new = h_new + torch.exp(dt[..., None] * a) * h
    return (h_new @ c[..., None]).squeeze(-1), h_new


def selective_scan(
    x: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, h: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The recurrence of :func:`selective_step` over a chunk, in float32: x, dt (batch, time,
    inner); b, c (batch, time, d_state); a (inner, d_state); h the state before or None.
    Returns (C_t · h_t for every t, in x's dtype; the last h)."""
    dtype = x.dtype
    x, dt, b, c = (t.to(a.dtype) for t in (x, dt, b, c))
    h = None if h is None else h.to(a.dtype)
    y, h = _scan_for(x, a)(x, dt, a, b, c, h)
    return y.to(dtype), h


def _scan_for(x: Tensor, a: Tensor) -> Callable[..., tuple[Tensor, Tensor]]:
    """The compiled scan on a CPU where it loads (float32); else the stepwise scan on a CPU
    from :data:`STEPWISE_MIN_BLOCK` state elements; else the chunked scan."""
    if x.device.type != "cpu":
        return chunked_scan
    if a.dtype == torch.float32 and mamba_cpu.enabled():
        return mamba_cpu.CompiledScan.apply
    block = x.shape[0] * x.shape[2] * a.shape[1]
    return StepwiseScan.apply if block >= STEPWISE_MIN_BLOCK else chunked_scan


class StepwiseScan(torch.autograd.Function):
    """The recurrence one step at a time, with the adjoint recurrence as its backward.

    Forward keeps every h_t (batch × time × inner × d_state floats, written once) when a
    gradient is needed, and nothing else; backward walks time in reverse with g = ∂L/∂h_t:

        g += ∂L/∂y_t ⊗ C_t;   ∂C_t = ∂y_t · h_t;   ∂(Δx)_t = g B_t;   ∂B_t = (Δx)_t · g
        q = g ⊙ exp(Δ_t A) ⊙ h_{t-1};  ∂Δ_t += Σ_n q A;  ∂A += Σ_batch q Δ_t;  g ⊙= exp(Δ_t A)

    Each step touches one (batch, inner, d_state) block, which stays in cache; autograd through
    the same loop or through :func:`chunked_scan` streams a dozen such tensors per token.
    """

    @staticmethod
    def forward(ctx, x, dt, a, b, c, h0):
        batch, time, inner = x.shape
        u = dt * x
        keep = any(ctx.needs_input_grad)  # evaluation needs no state history
        states = x.new_empty(batch, time, inner, a.shape[1]) if keep else None
        y = x.new_empty(batch, time, inner)
        h = h0 if h0 is not None else x.new_zeros(batch, inner, a.shape[1])
        for t in range(time):
            increment = u[:, t, :, None] * b[:, t, None, :]
            decay = torch.exp(dt[:, t, :, None] * a)
            h = torch.addcmul(increment, decay, h, out=states[:, t] if keep else None)
            torch.sum(h * c[:, t, None, :], -1, out=y[:, t])
        if keep:
            ctx.save_for_backward(x, dt, a, b, c, h0, states)
        return y, h.clone()

    @staticmethod
    def backward(ctx, gy, gh):
        x, dt, a, b, c, h0, states = ctx.saved_tensors
        zero = x.new_zeros(states[:, 0].shape)
        u, g = dt * x, (gh.clone() if gh is not None else zero.clone())
        gu, gdt_decay, gb, gc = (torch.empty_like(t) for t in (x, x, b, c))
        ga = torch.zeros_like(g)
        gy = gy.contiguous()
        for t in reversed(range(x.shape[1])):
            g.addcmul_(gy[:, t, :, None], c[:, t, None, :])
            torch.sum(gy[:, t, :, None] * states[:, t], 1, out=gc[:, t])
            torch.sum(g * b[:, t, None, :], -1, out=gu[:, t])
            torch.sum(u[:, t, :, None] * g, 1, out=gb[:, t])
            previous = states[:, t - 1] if t else (h0 if h0 is not None else zero)
            decay = torch.exp(dt[:, t, :, None] * a)
            q = (g * decay).mul_(previous)
            torch.sum(q * a, -1, out=gdt_decay[:, t])
            ga.addcmul_(q, dt[:, t, :, None])
            g.mul_(decay)
        gh0 = g if h0 is not None else None
        return gu * dt, torch.addcmul(gdt_decay, gu, x), ga.sum(0), gb, gc, gh0


def chunked_scan(
    x: Tensor,
    dt: Tensor,
    a: Tensor,
    b: Tensor,
    c: Tensor,
    h: Tensor | None,
    chunk: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The recurrence of :func:`selective_step` over a chunk, in O(chunk + time/chunk) steps.

    x, dt (batch, time, inner); b, c (batch, time, d_state); a (inner, d_state); h the state
    before the chunk or None. Returns (C_t · h_t for every t, the last h).

    Time is cut into blocks of ``chunk`` steps (default ⌈√time⌉, which minimises the number of
    Python-level steps; the end is padded with Δ = 0, which leaves h unchanged):

    1. within every block at once, the state started from zero (``chunk`` vectorised steps
       over all blocks and channels);
    2. across blocks, the carried state at each block start (``time/chunk`` steps);
    3. h_t = local_t + exp(A · Σ_{s ≤ t in t's block} Δ_s) ⊙ carried (the decay as a
       cumulative sum in log space, exponent ≤ 0), and y_t = h_t C_t (a broadcast
       product and sum: faster on CPU than a batched matrix-vector product and its backward).

    Every factor is a decay in (0, 1], so nothing overflows, whatever Δ and A training reaches.
    """
    batch, time, inner = x.shape
    chunk = chunk or math.isqrt(time - 1) + 1
    blocks = -(-time // chunk)
    pad = blocks * chunk - time

    def blocked(t: Tensor) -> Tensor:
        """(batch, time, k) -> contiguous (chunk, batch, blocks, k), zero-padded at the end."""
        t = F.pad(t, (0, 0, 0, pad)).view(batch, blocks, chunk, -1)
        return t.permute(2, 0, 1, 3).contiguous()

    dt_blocked = blocked(dt)
    b_blocked, c_blocked = blocked(b), blocked(c)
    decay = torch.exp(dt_blocked[..., None] * a).unbind(0)
    increment = (blocked(dt * x)[..., None] * b_blocked[..., None, :]).unbind(0)
    local = [increment[0]]
    for t in range(1, chunk):
        local.append(torch.addcmul(increment[t], decay[t], local[-1]))
    states = torch.stack(local)
    block_decay = torch.exp(dt_blocked.sum(0)[..., None] * a).unbind(1)
    carried = [h if h is not None else torch.zeros_like(local[0][:, 0])]
    for k, block_end in enumerate(local[-1].unbind(1)):
        carried.append(torch.addcmul(block_end, block_decay[k], carried[-1]))
    starts = torch.stack(carried[:-1], dim=1)
    decay_in = torch.exp(torch.cumsum(dt_blocked, 0)[..., None] * a)
    states = torch.addcmul(states, decay_in, starts)
    y = (states * c_blocked[..., None, :]).sum(-1)
    y = y.permute(1, 2, 0, 3).reshape(batch, blocks * chunk, inner)
    return y[:, :time], carried[-1]


@register_mixer
class Mamba(Mixer):
    """Mamba-1 selective SSM: inner = expand · width channels, each with a d_state state.

    Recurrence ``linear`` (papers.md §3): h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t with Δ, B, x
    functions of the last ``conv_width`` inputs only (the conv buffer, a window of inputs).
    """

    name = "mamba"
    recurrence = "linear"
    default_feedforward = None

    def __init__(
        self,
        width: int,
        *,
        d_state: int = 16,
        expand: int = 2,
        conv_width: int = 4,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        check_int("mamba", "d_state", d_state, 1, 1024)
        check_int("mamba", "expand", expand, 1, 16)
        check_int("mamba", "conv_width", conv_width, 1, 64)
        if dt_rank == "auto":
            dt_rank = math.ceil(width / 16)
        if isinstance(dt_rank, str):
            raise SepbenchError(f"mamba: dt_rank must be 'auto' or an int >= 1, got {dt_rank!r}")
        check_int("mamba", "dt_rank", dt_rank, 1, 65536)
        if not 0 < dt_min <= dt_max:
            raise SepbenchError(f"mamba: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        if not 0 <= dt_init_floor <= dt_max:
            raise SepbenchError(
                f"mamba: dt_init_floor must be in [0, dt_max={dt_max}], got {dt_init_floor}"
            )
        inner = expand * width
        self.inner, self.d_state, self.dt_rank = inner, d_state, dt_rank
        self.conv_width = conv_width
        self.in_proj = nn.Linear(width, 2 * inner, bias=False)
        self.conv1d = nn.Conv1d(inner, inner, conv_width, groups=inner)
        self.x_proj = nn.Linear(inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, inner)
        self.A_log = nn.Parameter(torch.log(torch.arange(1.0, d_state + 1).repeat(inner, 1)))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, width, bias=False)
        self._init_dt(dt_min, dt_max, dt_init_floor)

    @torch.no_grad()
    def _init_dt(self, dt_min: float, dt_max: float, floor: float) -> None:
        """Δ₀ log-uniform in [dt_min, dt_max] (floored), stored as softplus⁻¹ in the bias."""
        bound = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        log_dt = torch.rand(self.inner) * math.log(dt_max / dt_min) + math.log(dt_min)
        dt = torch.exp(log_dt).clamp(min=floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, u: Tensor, state: MambaState | None = None) -> tuple[Tensor, MambaState]:
        conv_state, h = (None, None) if state is None else state
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x, conv_state = self._conv(x, conv_state)
        dt, b, c = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))
        a = -torch.exp(self.A_log)
        if u.shape[1] == 1:
            y, h = selective_step(x[:, 0], dt[:, 0], a, b[:, 0], c[:, 0], h)
            y = y[:, None]
        else:
            y, h = selective_scan(x, dt, a, b, c, h)
        y = (y + self.D * x) * F.silu(z)
        return self.out_proj(y), (conv_state, h)

    def _conv(self, x: Tensor, buffer: Tensor | None) -> tuple[Tensor, Tensor]:
        """SiLU(causal depthwise conv) of x (batch, time, inner), continuing from ``buffer``.

        From a zero history on a CPU in float32, the C kernel of :mod:`mamba_cpu` where it
        loads; otherwise ``F.conv1d`` (the reference)."""
        keep = self.conv_width - 1
        if buffer is None and x.device.type == "cpu" and x.dtype == torch.float32 and (
            mamba_cpu.enabled()
        ):
            recent = x[:, max(0, x.shape[1] - keep) :].transpose(1, 2)
            y = mamba_cpu.CausalConv.apply(x, self.conv1d.weight, self.conv1d.bias)
            return y, F.pad(recent, (keep - recent.shape[-1], 0))
        x = x.transpose(1, 2)
        if buffer is None:
            buffer = x.new_zeros(x.shape[0], self.inner, self.conv_width - 1)
        padded = torch.cat((buffer, x), dim=-1)
        y = F.conv1d(padded, self.conv1d.weight, self.conv1d.bias, groups=self.inner)
        return F.silu(y).transpose(1, 2), padded[..., padded.shape[-1] - buffer.shape[-1] :]

    def state_size(self, seq_len: int) -> int:
        return self.inner * (self.d_state + self.conv_width - 1)
