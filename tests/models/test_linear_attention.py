"""Linear attention: chunked form against the recurrent step and the explicit sum, errors."""

from __future__ import annotations

import pytest
import torch

from sepbench import models
from sepbench.errors import SepbenchError
from sepbench.models.linear_attention import EPS, LinearAttention, feature_map
from tests.models.chunks import run_in_chunks

WIDTH, HEADS = 12, 3


def layer(**params) -> LinearAttention:
    torch.manual_seed(0)
    mixer = LinearAttention(WIDTH, heads=HEADS, **params)
    torch.nn.init.normal_(mixer.qkv.weight, std=0.5)
    return mixer


def inputs(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, length, WIDTH, generator=torch.Generator().manual_seed(seed))




def explicit(mixer: LinearAttention, x: torch.Tensor) -> torch.Tensor:
    """y_t = Σ_{s≤t} φ(q_t)·φ(k_s) v_s / (Σ_{s≤t} φ(q_t)·φ(k_s) + ε), written out per t."""
    batch, time, _ = x.shape
    q, k, v = mixer.qkv(x).view(batch, time, 3, HEADS, -1).unbind(2)
    q, k = feature_map(q), feature_map(k)
    rows = []
    for t in range(time):
        weights = torch.einsum("bhd,bshd->bsh", q[:, t], k[:, : t + 1])
        numerator = torch.einsum("bsh,bshd->bhd", weights, v[:, : t + 1])
        rows.append(numerator / (weights.sum(1)[..., None] + EPS))
    return mixer.out(torch.stack(rows, 1).reshape(batch, time, WIDTH))


@pytest.mark.parametrize("chunk", [1, 4, 7, 64])
def test_chunked_matches_steps_and_explicit_sum(chunk: int) -> None:
    mixer = layer(chunk=chunk)
    x = inputs(2, 23)
    with torch.no_grad():
        steps, step_state = run_in_chunks(mixer, x, [1] * 23)
        torch.testing.assert_close(steps, explicit(mixer, x), atol=1e-5, rtol=1e-5)
        for sizes in ([23], [9, 1, 2, 11], [5, 13, 5]):
            y, state = run_in_chunks(mixer, x, sizes)
            torch.testing.assert_close(y, steps, atol=1e-5, rtol=1e-5)
            for got, expected in zip(state, step_state):
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_state_holds_the_sums_of_features_and_values() -> None:
    mixer = layer()
    x = inputs(2, 10)
    with torch.no_grad():
        _, (s, z) = mixer(x)
        _, k, v = mixer.qkv(x).view(2, 10, 3, HEADS, -1).unbind(2)
    k = feature_map(k)
    torch.testing.assert_close(z, k.sum(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s, torch.einsum("bthk,bthv->bhkv", k, v), atol=1e-5, rtol=1e-5)
    assert s[0].numel() + z[0].numel() == mixer.state_size(10) == HEADS * (4 * 4 + 4)


def test_model_adds_learned_positions_by_default() -> None:
    assert models.build("linear_attention", 7, 8, 1).positions is not None
    assert models.build("linear_attention", 7, 8, 1, positional="none").positions is None


@pytest.mark.parametrize(
    ("params", "match"),
    [({"heads": 0}, "heads"), ({"heads": 5}, "heads must divide"), ({"chunk": 0}, "chunk")],
)
def test_bad_parameters_fail_with_one_line(params: dict, match: str) -> None:
    with pytest.raises(SepbenchError, match=match) as error:
        models.build("linear_attention", 7, WIDTH, 1, **params)
    assert "\n" not in str(error.value)
