"""S4D: the convolution path (direct and FFT) against the exact recurrent step, init, errors."""

from __future__ import annotations

import math

import pytest
import torch

from sepbench.errors import SepbenchError
from sepbench.models.s4d import FFT_FROM, S4D, causal_convolution, s4d_eigenvalues
from tests.models.chunks import run_in_chunks

WIDTH = 8


def layer(**params) -> S4D:
    torch.manual_seed(0)
    return S4D(WIDTH, d_state=16, **params)


def inputs(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, length, WIDTH, generator=torch.Generator().manual_seed(seed))




@pytest.mark.parametrize("init", ["lin", "inv"])
def test_chunks_of_both_convolution_paths_match_the_step(init: str) -> None:
    mixer = layer(init=init, dt_min=0.01, dt_max=0.2)
    length = 3 * FFT_FROM + 4
    x = inputs(2, length)
    steps, step_state = run_in_chunks(mixer, x, [1] * length)
    odd = [FFT_FROM + 3, 1, 5, FFT_FROM - 1, length - 2 * FFT_FROM - 8]
    for sizes in ([length], odd):
        y, state = run_in_chunks(mixer, x, sizes)
        torch.testing.assert_close(y, steps, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state, step_state, atol=1e-5, rtol=1e-5)
    assert step_state.shape == (2, WIDTH, 8, 2)
    assert step_state[0].numel() == mixer.state_size(length) == WIDTH * 16


@pytest.mark.parametrize("length", [FFT_FROM - 5, 2 * FFT_FROM + 7])
def test_causal_convolution_matches_the_sum(length: int) -> None:
    generator = torch.Generator().manual_seed(2)
    u = torch.randn(2, 3, length, generator=generator)
    kernel = torch.randn(3, length, generator=generator)
    expected = torch.zeros_like(u)
    for t in range(length):
        expected[..., t] = (kernel[:, : t + 1].flip(-1) * u[..., : t + 1]).sum(-1)
    torch.testing.assert_close(causal_convolution(u, kernel), expected, atol=1e-4, rtol=1e-5)


def test_kernel_is_the_impulse_response_of_the_recurrence() -> None:
    mixer = layer()
    dt_a, db, c = mixer.discretised()
    impulse = torch.zeros(1, WIDTH, 6)
    impulse[..., 0] = 1
    y, _ = mixer.chunk(impulse, None)
    for t in range(6):
        expected = 2 * (c * db * torch.exp(dt_a * t)).sum(-1).real + mixer.d * (t == 0)
        torch.testing.assert_close(y[0, :, t], expected, atol=1e-6, rtol=1e-5)


def test_init_follows_s4d_lin_and_inv() -> None:
    lin, inv = s4d_eigenvalues("lin", 4), s4d_eigenvalues("inv", 4)
    assert torch.allclose(lin.real, torch.full((4,), -0.5))
    assert torch.allclose(lin.imag, math.pi * torch.arange(4.0))
    assert torch.allclose(inv.imag, 4 / math.pi * (4 / (2 * torch.arange(4.0) + 1) - 1))
    dt = torch.exp(layer(dt_min=1e-3, dt_max=1e-1).log_dt)
    assert ((dt >= 1e-3 - 1e-9) & (dt <= 1e-1 + 1e-9)).all() and dt.max() / dt.min() > 2


def test_long_sequence_has_finite_gradients_in_every_parameter() -> None:
    mixer = layer()
    y, state = mixer(inputs(1, 1024))
    (y.square().mean() + state.square().mean()).backward()
    for name, parameter in mixer.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_runs_in_float64() -> None:
    mixer = layer().double()
    x = inputs(1, 9).double()
    y, state = mixer(x)
    steps, step_state = run_in_chunks(mixer, x, [4, 1, 4])
    assert y.dtype == state.dtype == torch.float64
    torch.testing.assert_close(steps, y, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(step_state, state, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"d_state": 7}, "s4d: d_state must be even"),
        ({"d_state": 0}, r"s4d: d_state must be in \[2, 4096\], got 0"),
        ({"init": "legs"}, "s4d: init must be one of lin, inv; got 'legs'"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "s4d: need 0 < dt_min <= dt_max"),
    ],
)
def test_bad_parameters_fail_with_one_line(params: dict, message: str) -> None:
    with pytest.raises(SepbenchError, match=message) as error:
        S4D(WIDTH, **params)
    assert "\n" not in str(error.value)
