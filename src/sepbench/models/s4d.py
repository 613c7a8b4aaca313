"""A diagonal, input-independent (LTI) state-space layer: the DSS baseline of papers.md §2.

Gupta, Gu & Berant, "Diagonal State Spaces are as Effective as Structured State Spaces" (DSS,
2022) and Gu, Gupta, Goel & Ré, "On the Parameterization and Initialization of Diagonal State
Space Models" (S4D, 2022). Bhattamishra et al. (§2) compare against DSS; its state update is
linear, so by papers.md §3 it is not recurrence-complete.

Per channel h (``width`` of them, no mixing across channels inside the SSM) a complex diagonal
state s ∈ ℂ^(d_state/2) follows the zero-order-hold discretisation of x' = A x + B u:

    s_t = exp(Δ A) ⊙ s_{t-1} + (exp(Δ A) - 1) / A · u_t,     y_t = 2 Re(C · s_t) + D u_t

(the conjugate half of the spectrum is implied by the 2 Re, so ``d_state`` counts real
scalars: the default 64 is 32 complex modes). B is fixed to 1 (only C · B enters the output, as
S4D notes), C is learnable and complex, D is a learnable skip. The layer output is
``Linear(width, 2·width)`` then GLU applied to GELU(y), as in the S4D reference layer.

Training a chunk of length L materialises the kernel K_l = 2 Re(C · dB · dA^l) and convolves
(a direct depthwise convolution for L ≤ ``FFT_FROM``, an FFT above), then adds the carried
state's contribution 2 Re(C · dA^(t+1) s_0) and returns s_L; a single token uses the exact
recurrence above. Both agree to fp32 round-off.

Init (choices the papers leave to the user, configurable): ``init="lin"`` (S4D-Lin,
A_n = -1/2 + iπn) or ``"inv"`` (S4D-Inv, A_n = -1/2 + i(N/π)(N/(2n+1) - 1)); A's real part is
kept negative through its log; C ~ CN(0, 1); D ~ N(0, 1); the step Δ is learnable through its
log, initialised log-uniform in [``dt_min``, ``dt_max``] = [1e-3, 1e-1] per channel. Every
parameter is trained at the same learning rate (S4D lowers it for A and Δ; sepbench does not).
The state is stored as real numbers, shape (batch, width, d_state/2, 2), in the input's dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sepbench.errors import SepbenchError, check_choice, check_int
from sepbench.models.base import Mixer, register_mixer

FFT_FROM = 64
INITS = ("lin", "inv")


def s4d_eigenvalues(init: str, modes: int) -> Tensor:
    """The S4D-Lin or S4D-Inv diagonal of A for ``modes`` complex modes."""
    n = torch.arange(modes, dtype=torch.float32)
    inverse = modes / math.pi * (modes / (2 * n + 1) - 1)
    imag = math.pi * n if init == "lin" else inverse
    return torch.complex(torch.full_like(n, -0.5), imag)


def causal_convolution(u: Tensor, kernel: Tensor) -> Tensor:
    """y[..., h, t] = Σ_{l ≤ t} kernel[h, l] u[..., h, t - l] for u of shape (batch, h, L)."""
    length = u.shape[-1]
    if length <= FFT_FROM:
        weight = kernel.flip(-1).unsqueeze(1)
        return F.conv1d(F.pad(u, (length - 1, 0)), weight, groups=u.shape[1])
    n = 2 * length
    spectrum = torch.fft.rfft(u, n=n) * torch.fft.rfft(kernel, n=n)
    return torch.fft.irfft(spectrum, n=n)[..., :length]


def vandermonde(dt_a: Tensor, count: int) -> Tensor:
    """exp(ΔA)^l for l < count as real numbers: (width, 2·modes, count), real parts first."""
    steps = torch.arange(count, device=dt_a.device, dtype=dt_a.real.dtype)
    magnitude = torch.exp(dt_a.real[..., None] * steps)
    phase = dt_a.imag[..., None] * steps
    return torch.cat((magnitude * torch.cos(phase), magnitude * torch.sin(phase)), dim=1)


@register_mixer
class S4D(Mixer):
    """Diagonal LTI state-space layer (DSS / S4D), ``d_state`` real scalars per channel.

    Recurrence ``linear`` (papers.md §3): s_t = dA s_{t-1} + dB u_t, the same dA at every step.
    """

    name = "s4d"
    recurrence = "linear"
    default_feedforward = "mlp"

    def __init__(
        self,
        width: int,
        *,
        d_state: int = 64,
        init: str = "lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ) -> None:
        super().__init__()
        check_int("s4d", "d_state", d_state, 2, 4096)
        if d_state % 2:
            raise SepbenchError(f"s4d: d_state must be even (complex pairs), got {d_state}")
        check_choice("s4d", "init", init, INITS)
        if not 0 < dt_min <= dt_max:
            raise SepbenchError(f"s4d: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.width, self.d_state = width, d_state
        modes = d_state // 2
        eigenvalues = s4d_eigenvalues(init, modes).repeat(width, 1)
        self.log_neg_a_real = nn.Parameter(torch.log(-eigenvalues.real))
        self.a_imag = nn.Parameter(eigenvalues.imag.clone())
        self.c = nn.Parameter(torch.randn(width, modes, 2) * math.sqrt(0.5))
        self.d = nn.Parameter(torch.randn(width))
        log_dt = torch.rand(width) * math.log(dt_max / dt_min) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.out = nn.Linear(width, 2 * width)

    def discretised(self) -> tuple[Tensor, Tensor, Tensor]:
        """(Δ A, dB, C) of shape (width, modes): ZOH with B = 1, so dB = (exp(ΔA) - 1) / A."""
        a = torch.complex(-torch.exp(self.log_neg_a_real), self.a_imag)
        dt_a = torch.exp(self.log_dt)[:, None] * a
        return dt_a, torch.expm1(dt_a) / a, torch.view_as_complex(self.c)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        u = x.transpose(1, 2)
        carried = None if state is None else torch.view_as_complex(state.contiguous())
        if x.shape[1] == 1:
            y, carried = self.step(u[..., 0], carried)
            y = y[..., None]
        else:
            y, carried = self.chunk(u, carried)
        y = F.glu(self.out(F.gelu(y.transpose(1, 2))), dim=-1)
        return y, torch.view_as_real(carried).to(x.dtype)

    def step(self, u: Tensor, carried: Tensor | None) -> tuple[Tensor, Tensor]:
        """The recurrent reference: one token u (batch, width) -> (y, new complex state)."""
        dt_a, db, c = self.discretised()
        decayed = 0 if carried is None else torch.exp(dt_a) * carried
        carried = decayed + db * u[..., None]
        y = 2 * (c * carried).sum(-1).real + self.d * u
        return y, carried

    def chunk(self, u: Tensor, carried: Tensor | None) -> tuple[Tensor, Tensor]:
        """A chunk u (batch, width, L) by convolution with the materialised kernel.

        Real arithmetic and batched matmuls over channels on contiguous operands (complex exp,
        einsum and strided batched matmuls are many times slower on CPU).
        """
        length, modes = u.shape[-1], self.d_state // 2
        dt_a, db, c = self.discretised()
        powers = vandermonde(dt_a, length)
        cb = c * db
        kernel = torch.cat((cb.real, -cb.imag), -1)[:, None, :] @ powers
        y = causal_convolution(u, 2 * kernel.squeeze(1)) + self.d[:, None] * u
        summed = u.flip(-1).transpose(0, 1).contiguous() @ powers.transpose(1, 2)
        new = db * torch.complex(*summed.transpose(0, 1).split(modes, dim=-1))
        if carried is not None:
            weights = carried * c * torch.exp(dt_a)
            weights = torch.cat((weights.real, -weights.imag), -1).transpose(0, 1).contiguous()
            y = y + 2 * (weights @ powers).transpose(0, 1)
            new = new + carried * torch.exp(dt_a * length)
        return y, new

    def state_size(self, seq_len: int) -> int:
        return self.width * self.d_state
