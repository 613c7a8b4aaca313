"""RetNet: the chunkwise form against the recurrent step and the parallel form, decays, errors."""

from __future__ import annotations

import math

import pytest
import torch

from sepbench import models
from sepbench.errors import SepbenchError
from sepbench.models.retnet import RetNet
from sepbench.models.rotary import rotate
from tests.models.chunks import run_in_chunks

WIDTH, HEADS = 12, 3


def layer(**params) -> RetNet:
    torch.manual_seed(0)
    return RetNet(WIDTH, heads=HEADS, **params)


def inputs(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, length, WIDTH, generator=torch.Generator().manual_seed(seed))




def parallel_retention(mixer: RetNet, x: torch.Tensor) -> torch.Tensor:
    """Sun et al. §2.1's parallel form: (Q Θ)(K Θ̄)ᵀ ⊙ D, D[n, m] = γ^(n-m) for n ≥ m, times V."""
    batch, time, _ = x.shape
    q, k = mixer.qk(x).view(batch, time, 2, HEADS, -1).permute(2, 0, 3, 1, 4)
    v = mixer.value(x).view(batch, time, HEADS, -1).transpose(1, 2)
    k = k / math.sqrt(k.shape[-1])
    angle = torch.arange(time, dtype=torch.float32)[:, None] * mixer.theta
    q, k = rotate(q, angle), rotate(k, angle)
    gamma = 1 - 2.0 ** (-5 - torch.arange(HEADS, dtype=torch.float32))
    n = torch.arange(time)
    distance = (n[:, None] - n[None, :]).clamp(min=0)
    decay = gamma[:, None, None] ** distance * (n[:, None] >= n[None, :])
    return (q @ k.transpose(-1, -2) * decay) @ v


def test_recurrent_step_equals_the_parallel_form() -> None:
    mixer = layer()
    x = inputs(2, 17)
    retention = {}
    mixer.norm.register_forward_hook(lambda _m, args, _o: retention.setdefault("o", args[0]))
    state = None
    with torch.no_grad():
        for t in range(x.shape[1]):
            retention.clear()
            _, state = mixer(x[:, t : t + 1], state)
            step_output = retention["o"].view(2, HEADS, -1)
            expected = parallel_retention(mixer, x[:, : t + 1])[:, :, t]
            torch.testing.assert_close(step_output, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 8, 64])
def test_chunkwise_matches_steps_at_odd_chunks(chunk: int) -> None:
    mixer = layer(chunk=chunk)
    x = inputs(2, 31)
    with torch.no_grad():
        steps, step_state = run_in_chunks(mixer, x, [1] * 31)
        for sizes in ([31], [10, 1, 3, 17], [7, 24]):
            y, state = run_in_chunks(mixer, x, sizes)
            torch.testing.assert_close(y, steps, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(state, step_state, atol=1e-5, rtol=1e-5)
    assert step_state.shape == (2, HEADS, 4, 8)
    assert step_state[0].numel() == mixer.state_size(31)


def test_decays_and_relative_positions() -> None:
    mixer = layer()
    expected = torch.tensor([1 - 2**-5, 1 - 2**-6, 1 - 2**-7])
    torch.testing.assert_close(mixer.log_gamma.exp(), expected)
    x = inputs(1, 12)
    shifted = torch.cat((inputs(1, 5, seed=3), x), 1)
    with torch.no_grad():
        y, state = mixer(x)
        after_prefix, _ = mixer(x, torch.zeros_like(state))
    torch.testing.assert_close(after_prefix, y)
    assert not torch.allclose(mixer(shifted)[0][:, 5:], y)


@pytest.mark.parametrize(
    ("params", "match"),
    [({"heads": 0}, "heads"), ({"heads": 5}, "even head sizes"), ({"heads": 4}, "even head"),
     ({"heads": HEADS, "chunk": 0}, "chunk")],
)
def test_bad_parameters_fail_with_one_line(params: dict, match: str) -> None:
    with pytest.raises(SepbenchError, match=match) as error:
        models.build("retnet", 7, WIDTH, 1, **params)
    assert "\n" not in str(error.value)
