"""The Mamba mixer: chunked scan against the exact step, Hugging Face reference, init, errors."""

from __future__ import annotations

import inspect
import math
import os
import shutil
from functools import partial

import pytest
import torch
from torch.nn import functional as F

from sepbench import models
from sepbench.errors import SepbenchError
from sepbench.models import mamba, mamba_cpu
from sepbench.models.mamba import (
    STEPWISE_MIN_BLOCK,
    Mamba,
    StepwiseScan,
    chunked_scan,
    selective_scan,
    selective_step,
)


def scan_inputs(batch: int, time: int, inner: int, d_state: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, time, inner, generator=generator)
    dt = F.softplus(torch.randn(batch, time, inner, generator=generator) - 1)
    a = -torch.rand(inner, d_state, generator=generator) * 4 - 0.1
    b = torch.randn(batch, time, d_state, generator=generator)
    c = torch.randn(batch, time, d_state, generator=generator)
    h = torch.randn(batch, inner, d_state, generator=generator)
    return x, dt, a, b, c, h


def stepped(x, dt, a, b, c, h):
    outputs = []
    for t in range(x.shape[1]):
        y, h = selective_step(x[:, t], dt[:, t], a, b[:, t], c[:, t], h)
        outputs.append(y)
    return torch.stack(outputs, dim=1), h


stepwise_scan = StepwiseScan.apply


def compiled_scan(*inputs):
    """The C kernel, or a skip saying why it is missing (it needs a C compiler)."""
    if mamba_cpu.library() is None:
        pytest.skip(f"compiled scan unavailable: {mamba_cpu.unavailable_reason()}")
    return mamba_cpu.CompiledScan.apply(*inputs)


SCANS = {"stepwise": stepwise_scan, "compiled": compiled_scan,
         **{f"chunked-{n}": partial(chunked_scan, chunk=n) for n in (None, 1, 3, 5, 7, 23, 40)}}


@pytest.mark.parametrize("scan", SCANS.values(), ids=SCANS.keys())
@pytest.mark.parametrize("carried", [False, True])
def test_scans_equal_the_step_recurrence(scan, carried: bool) -> None:
    x, dt, a, b, c, h = scan_inputs(2, 23, 6, 5)
    h = h if carried else None
    expected_y, expected_h = stepped(x, dt, a, b, c, h)
    y, last = scan(x, dt, a, b, c, h)
    torch.testing.assert_close(y, expected_y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, expected_h, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scan", [stepwise_scan, compiled_scan, partial(chunked_scan, chunk=4)])
@pytest.mark.parametrize("carried", [False, True])
def test_scan_gradients_equal_the_step_gradients(scan, carried: bool) -> None:
    inputs = [t.requires_grad_() for t in scan_inputs(2, 17, 4, 3)]
    if not carried:
        inputs[-1] = None
    live = [t for t in inputs if t is not None]
    weights = torch.randn(2, 17, 4, generator=torch.Generator().manual_seed(1))
    y, h = scan(*inputs)
    mine = torch.autograd.grad((y * weights).sum() + h.square().sum(), live)
    y, h = stepped(*inputs)
    reference = torch.autograd.grad((y * weights).sum() + h.square().sum(), live)
    for ours, theirs in zip(mine, reference):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_stepwise_scan_passes_torch_gradcheck_in_float64() -> None:
    inputs = [t.double().requires_grad_() for t in scan_inputs(2, 5, 3, 2)]
    assert torch.autograd.gradcheck(StepwiseScan.apply, inputs)


@pytest.mark.parametrize("batch", [1, 16])  # 16 x 128 x 16 states: the stepwise scan
def test_selective_scan_equals_the_step_recurrence_on_either_side_of_the_switch(
    batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(mamba_cpu.DISABLE_VARIABLE, "0")
    x, dt, a, b, c, h = scan_inputs(batch, 7, 128, 16)
    assert (batch * 128 * 16 >= STEPWISE_MIN_BLOCK) == (batch == 16)
    chunked_calls = []
    monkeypatch.setattr(mamba, "chunked_scan", lambda *args: chunked_calls.append(1) or
                        chunked_scan(*args))
    y, last = selective_scan(x, dt, a, b, c, h)
    assert len(chunked_calls) == (batch == 1)
    expected_y, expected_h = stepped(x, dt, a, b, c, h)
    torch.testing.assert_close(y, expected_y, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(last, expected_h, atol=1e-4, rtol=1e-4)


def test_selective_scan_runs_in_float32_and_returns_the_input_dtype() -> None:
    x, dt, a, b, c, _ = scan_inputs(2, 9, 4, 3)
    y, last = selective_scan(x.bfloat16(), dt.bfloat16(), a, b.bfloat16(), c.bfloat16(), None)
    expected_y, expected_h = stepped(*(t.bfloat16().float() for t in (x, dt)), a,
                                     *(t.bfloat16().float() for t in (b, c)), None)
    assert y.dtype == torch.bfloat16 and last.dtype == torch.float32
    torch.testing.assert_close(last, expected_h, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(y.float(), expected_y, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("scan", [stepwise_scan, compiled_scan, chunked_scan])
def test_scan_stays_finite_and_exact_with_very_large_steps(scan) -> None:
    """Δ·|A| up to ~100 per step would overflow an exp(-A·cumsum Δ) factorisation."""
    x, dt, a, b, c, h = scan_inputs(1, 200, 4, 16)
    dt = dt * 20 + 1
    a = a * 4
    y, last = scan(x, dt, a, b, c, h)
    expected_y, expected_h = stepped(x, dt, a, b, c, h)
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    torch.testing.assert_close(y, expected_y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, expected_h, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("conv_width", [1, 2, 4])
def test_mixer_chunks_continue_exactly(conv_width: int) -> None:
    torch.manual_seed(0)
    mixer = Mamba(8, d_state=4, conv_width=conv_width).eval()
    x = torch.randn(2, 19, 8)
    with torch.no_grad():
        whole, (conv, h) = mixer(x)
        pieces, state, start = [], None, 0
        for size in (2, 1, 7, 3, 1, 5):
            y, state = mixer(x[:, start : start + size], state)
            pieces.append(y)
            start += size
    torch.testing.assert_close(torch.cat(pieces, 1), whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state[1], h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state[0], conv)
    assert conv.shape == (2, 16, conv_width - 1) and h.shape == (2, 16, 4)
    assert mixer.state_size(19) == conv[0].numel() + h[0].numel() == 16 * (4 + conv_width - 1)


def test_default_init() -> None:
    torch.manual_seed(0)
    mixer = Mamba(40, d_state=6, dt_min=0.01, dt_max=0.05)
    assert mixer.dt_rank == math.ceil(40 / 16) == 3
    assert mixer.x_proj.out_features == 3 + 2 * 6
    torch.testing.assert_close(-torch.exp(mixer.A_log), -torch.arange(1.0, 7).expand(80, 6))
    torch.testing.assert_close(mixer.D, torch.ones(80))
    dt = F.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 0.01 - 1e-6 and dt.max() <= 0.05 + 1e-6
    assert dt.std() > 0.005
    assert mixer.in_proj.bias is None and mixer.out_proj.bias is None
    assert mixer.conv1d.bias is not None
    assert models.build("mamba", 5, 16, 1).blocks[0].feedforward is None


def test_dt_init_floor_takes_effect() -> None:
    torch.manual_seed(0)
    mixer = Mamba(16, dt_min=1e-4, dt_max=1e-3, dt_init_floor=5e-4)
    assert F.softplus(mixer.dt_proj.bias).min() >= 5e-4 - 1e-7


def test_matches_hugging_face_pure_torch_mixer(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers", reason="optional test dependency: transformers")
    from transformers import MambaConfig
    from transformers.models.mamba import modeling_mamba

    # Replace the kernel hooks by the torch code they wrap, so no mamba_ssm/causal_conv1d runs.
    for hooked in ("causal_conv1d_fn", "causal_conv1d_update", "mamba_selective_scan"):
        monkeypatch.setattr(modeling_mamba, hooked, inspect.unwrap(getattr(modeling_mamba, hooked)))
    torch.manual_seed(0)
    ours = Mamba(24, d_state=5, expand=2, conv_width=3, dt_rank=4)
    with torch.no_grad():
        for parameter in (ours.in_proj.weight, ours.conv1d.bias, ours.x_proj.weight):
            parameter.mul_(2)
    config = MambaConfig(
        hidden_size=24,
        state_size=5,
        expand=2,
        conv_kernel=3,
        time_step_rank=4,
        use_bias=False,
        use_conv_bias=True,
        use_mambapy=False,
    )
    theirs = modeling_mamba.MambaMixer(config, layer_idx=0).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 37, 24)
    with torch.no_grad():
        reference = theirs(x)
        mine, _ = ours(x)
        first, state = ours(x[:, :20])
        rest, _ = ours(x[:, 20:], state)
    assert reference.abs().mean() > 1e-2
    torch.testing.assert_close(mine, reference, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cat((first, rest), 1), reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"d_state": 0}, r"d_state must be in \[1, 1024\]"),
        ({"expand": 1.5}, r"expand must be an integer \[1, 16\]"),
        ({"conv_width": 0}, r"conv_width must be in \[1, 64\]"),
        ({"dt_rank": "full"}, "dt_rank must be 'auto' or an int"),
        ({"dt_rank": 0}, "dt_rank must be in"),
        ({"dt_min": 0.0}, "0 < dt_min <= dt_max"),
        ({"dt_min": 0.5, "dt_max": 0.1}, "0 < dt_min <= dt_max"),
        ({"dt_init_floor": -1.0}, r"dt_init_floor must be in \[0, dt_max"),
    ],
)
def test_bad_parameters_raise_one_line(params: dict, message: str) -> None:
    with pytest.raises(SepbenchError, match=message) as error:
        models.build("mamba", 5, 16, 1, **params)
    assert "\n" not in str(error.value)


def test_stepwise_scan_without_gradients_equals_the_step_recurrence() -> None:
    inputs = scan_inputs(2, 9, 4, 3)
    with torch.no_grad():
        y, last = StepwiseScan.apply(*inputs)
    expected_y, expected_h = stepped(*inputs)
    torch.testing.assert_close(y, expected_y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, expected_h, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize(("batch", "time", "d_state"), [(1, 40, 16), (5, 13, 7), (4, 1, 1)])
def test_compiled_scan_equals_the_chunked_scan_in_values_and_gradients(
    threads: int, batch: int, time: int, d_state: int
) -> None:
    """Row slices on several threads, state sizes off the vector width, a single step."""
    inputs = [t.requires_grad_() for t in scan_inputs(batch, time, 6, d_state, seed=3)]
    generator = torch.Generator().manual_seed(4)
    weights = torch.randn(batch, time, 6, generator=generator)
    last_weights = torch.randn(batch, 6, d_state, generator=generator)

    def run(scan):
        y, last = scan(*inputs)
        loss = (y * weights).sum() + (last * last_weights).sum()
        return y, last, torch.autograd.grad(loss, inputs)

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        mine = run(compiled_scan)
    finally:
        torch.set_num_threads(before)
    reference = run(chunked_scan)
    torch.testing.assert_close(mine[0], reference[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine[1], reference[1], atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(mine[2], reference[2]):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_compiled_scan_gradient_of_y_alone_or_the_last_state_alone() -> None:
    """Autograd hands the backward zeros for the unused result."""
    inputs = [t.requires_grad_() for t in scan_inputs(3, 11, 4, 5)]
    for pick in (0, 1):
        mine = torch.autograd.grad(compiled_scan(*inputs)[pick].sum(), inputs)
        theirs = torch.autograd.grad(stepped(*inputs)[pick].sum(), inputs, allow_unused=True,
                                     materialize_grads=True)  # the last state alone leaves C unused
        for ours, reference in zip(mine, theirs):
            torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_compiled_scan_is_deterministic_across_calls() -> None:
    inputs = [t.requires_grad_() for t in scan_inputs(8, 30, 16, 16)]
    first, second = (torch.autograd.grad(compiled_scan(*inputs)[0].square().sum(), inputs)
                     for _ in range(2))
    for one, two in zip(first, second):
        assert torch.equal(one, two)


def test_a_cpu_mixer_uses_the_compiled_scan_unless_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if mamba_cpu.library() is None:
        pytest.skip(f"compiled scan unavailable: {mamba_cpu.unavailable_reason()}")
    calls = []
    monkeypatch.setattr(mamba_cpu.CompiledScan, "apply",
                        lambda *args: calls.append(1) or StepwiseScan.apply(*args))
    mixer = Mamba(8, d_state=4)
    x = torch.randn(2, 9, 8)
    mixer(x)
    assert len(calls) == 1
    monkeypatch.setenv(mamba_cpu.DISABLE_VARIABLE, "0")
    mixer(x)
    assert len(calls) == 1
    mixer.double()(x.double())  # float64 runs the torch scans
    assert len(calls) == 1


def test_without_a_compiler_the_kernel_says_why_and_mamba_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CC", "no-such-compiler-sepbench")
    mamba_cpu._build.cache_clear()
    try:
        assert not mamba_cpu.enabled()
        assert "no C compiler found (no-such-compiler-sepbench)" in (
            mamba_cpu.unavailable_reason())
        x, dt, a, b, c, h = scan_inputs(2, 9, 4, 3)
        y, last = selective_scan(x, dt, a, b, c, h)
        expected_y, expected_h = stepped(x, dt, a, b, c, h)
        torch.testing.assert_close(y, expected_y, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(last, expected_h, atol=1e-5, rtol=1e-5)
    finally:
        mamba_cpu._build.cache_clear()


def test_a_failing_compile_reports_the_compiler_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(mamba_cpu, "SOURCE", broken)
    mamba_cpu._build.cache_clear()
    try:
        if shutil.which(os.environ.get("CC", "cc")) is None:
            pytest.skip("no C compiler to fail")
        assert mamba_cpu.library() is None
        assert "failed: " in mamba_cpu.unavailable_reason()
    finally:
        mamba_cpu._build.cache_clear()


def reference_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    width = weight.shape[-1]
    padded = F.pad(x.transpose(1, 2), (width - 1, 0))
    return F.silu(F.conv1d(padded, weight, bias, groups=x.shape[2])).transpose(1, 2)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize(("batch", "time", "width"), [(4, 19, 4), (3, 2, 4), (2, 7, 1), (5, 6, 3)])
def test_compiled_conv_equals_torch_conv1d_in_values_and_gradients(
    threads: int, batch: int, time: int, width: int
) -> None:
    """Read in place from a slice of a wider tensor, as from in_proj; shorter than the taps."""
    if mamba_cpu.library() is None:
        pytest.skip(f"compiled kernels unavailable: {mamba_cpu.unavailable_reason()}")
    generator = torch.Generator().manual_seed(5)
    wide = torch.randn(batch, time, 2 * 6, generator=generator).requires_grad_()
    weight = torch.randn(6, 1, width, generator=generator).requires_grad_()
    bias = torch.randn(6, generator=generator).requires_grad_()
    upstream = torch.randn(batch, time, 6, generator=generator)
    leaves = (wide, weight, bias)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        mine = mamba_cpu.CausalConv.apply(wide[..., :6], weight, bias)
        mine_grads = torch.autograd.grad((mine * upstream).sum(), leaves)
    finally:
        torch.set_num_threads(before)
    reference = reference_conv(wide[..., :6], weight, bias)
    reference_grads = torch.autograd.grad((reference * upstream).sum(), leaves)
    torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(mine_grads, reference_grads):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("time", [2, 11])
@pytest.mark.parametrize("conv_width", [1, 4])
def test_mixer_with_the_kernels_equals_the_mixer_without(
    conv_width: int, time: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs, carried state and every parameter gradient, kernels on against off."""
    if mamba_cpu.library() is None:
        pytest.skip(f"compiled kernels unavailable: {mamba_cpu.unavailable_reason()}")
    torch.manual_seed(0)
    mixer = Mamba(8, d_state=4, conv_width=conv_width)
    x = torch.randn(3, time, 8)
    results = []
    for setting in ("1", "0"):
        monkeypatch.setenv(mamba_cpu.DISABLE_VARIABLE, setting)
        mixer.zero_grad()
        y, (conv, h) = mixer(x)
        (y.square().sum() + h.sum()).backward()
        results.append([y, conv, h, *(p.grad.clone() for p in mixer.parameters())])
    assert results[0][1].shape == (3, 16, conv_width - 1)
    for mine, reference in zip(*results):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-4)


def test_compiled_scan_refuses_a_second_derivative_instead_of_a_wrong_one() -> None:
    inputs = [t.requires_grad_() for t in scan_inputs(2, 5, 3, 2)]
    y, _ = compiled_scan(*inputs)
    (gradient,) = torch.autograd.grad(y.square().sum(), inputs[0], create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gradient.sum().backward()
