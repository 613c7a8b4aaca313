"""The attention mixer against a naive softmax reference, its KV cache, RoPE and its errors."""

from __future__ import annotations

import math

import pytest
import torch

from sepbench import models
from sepbench.errors import SepbenchError
from sepbench.models.attention import Attention, causal_mask, rope


def naive_attention(mixer: Attention, x: torch.Tensor) -> torch.Tensor:
    """Softmax(QKᵀ/√d + causal mask) V written out, one head at a time, no cache."""
    _, time, width = x.shape
    head = width // mixer.heads
    q, k, v = mixer.qkv(x).split(width, dim=-1)
    outputs = []
    for h in range(mixer.heads):
        qh, kh, vh = (t[..., h * head : (h + 1) * head] for t in (q, k, v))
        if mixer.rope:
            qh, kh = rope(qh, 0), rope(kh, 0)
        scores = qh @ kh.transpose(-1, -2) / math.sqrt(head)
        future = torch.triu(torch.ones(time, time, dtype=torch.bool), diagonal=1)
        outputs.append(scores.masked_fill(future, -math.inf).softmax(-1) @ vh)
    return mixer.out(torch.cat(outputs, dim=-1))


def mixer(width: int = 24, **params) -> Attention:
    torch.manual_seed(0)
    layer = Attention(width, **params)
    for parameter in layer.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    return layer


@pytest.mark.parametrize("rope", [False, True])
def test_matches_naive_reference(rope: bool) -> None:
    layer = mixer(heads=3, rope=rope)
    x = torch.randn(2, 13, 24, generator=torch.Generator().manual_seed(1))
    y, _ = layer(x)
    torch.testing.assert_close(y, naive_attention(layer, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rope", [False, True])
def test_cache_continues_at_odd_chunk_sizes(rope: bool) -> None:
    layer = mixer(heads=2, rope=rope)
    x = torch.randn(3, 31, 24, generator=torch.Generator().manual_seed(2))
    whole, (keys, values) = layer(x)
    pieces, state, start = [], None, 0
    for size in (7, 1, 3, 11, 1, 8):
        y, state = layer(x[:, start : start + size], state)
        pieces.append(y)
        start += size
    torch.testing.assert_close(torch.cat(pieces, 1), whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state[0], keys, atol=1e-5, rtol=1e-5)
    assert keys.shape == values.shape == (3, 2, 31, 12)
    assert layer.state_size(31) == 2 * 24 * 31 == keys[0].numel() + values[0].numel()


def test_causal_mask_lets_new_queries_see_cache_and_past_of_chunk() -> None:
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(3, 5, torch.device("cpu")), expected)


def test_rope_scores_depend_only_on_relative_position() -> None:
    generator = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 1, 1, 1, 8, generator=generator)
    score = (rope(q, 9) * rope(k, 4)).sum()
    shifted = (rope(q, 109) * rope(k, 104)).sum()
    torch.testing.assert_close(score, shifted, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score, (rope(q, 9) * rope(k, 5)).sum())


def test_build_with_rope_uses_no_absolute_positions() -> None:
    model = models.build("transformer", 10, 16, 2, positional="rope", heads=2)
    assert model.positions is None
    assert all(block.mixer.rope and block.mixer.heads == 2 for block in model.blocks)
    assert models.build("transformer", 10, 16, 1).positions is not None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"heads": 5}, "attention: heads must divide width=24, got heads=5"),
        ({"heads": 0}, r"attention: heads must be in \[1, 24\], got 0"),
        ({"heads": 8, "rope": True}, "attention: rope needs an even head size"),
    ],
)
def test_bad_parameters_fail_with_one_line(params: dict, message: str) -> None:
    with pytest.raises(SepbenchError, match=message) as error:
        Attention(24, **params)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("positional", ["rope", "none"])
def test_rope_and_nope_run_past_any_table_size(positional: str) -> None:
    """papers.md §3: RoPE and NoPE carry no table, so a model built with max_length 16 decodes
    at 60 tokens, chunked as a whole; a learned table refuses to."""
    torch.manual_seed(0)
    model = models.build("transformer", 10, 16, 2, positional=positional, max_length=16).eval()
    x = torch.randint(1, 10, (2, 60), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        whole, _ = model(x)
        head, state = model(x[:, :45])
        tail, _ = model(x[:, 45:], state)
    torch.testing.assert_close(torch.cat((head, tail), 1), whole, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(whole).all()
    learned = models.build("transformer", 10, 16, 2, max_length=16)
    with pytest.raises(SepbenchError, match="exceeds max_length=16"):
        learned(x)


def test_nope_still_sees_order_through_the_causal_mask() -> None:
    """Without positions, swapping two earlier tokens changes a later output (a prefix is a
    set for one layer, but two layers read the prefix sums of prefix sums)."""
    torch.manual_seed(0)
    model = models.build("transformer", 10, 16, 2, positional="none").eval()
    x = torch.tensor([[1, 2, 3, 4, 5]])
    swapped = torch.tensor([[2, 1, 3, 4, 5]])
    with torch.no_grad():
        assert not torch.allclose(model(x)[0][0, -1], model(swapped)[0][0, -1], atol=1e-6)


def test_rope_angles_stay_exact_in_bfloat16() -> None:
    """Angles are float32 whatever the activations: at position 1,000 bfloat16 angles would
    be off by up to 4 radians."""
    x = torch.randn(1, 1, 3, 8, generator=torch.Generator().manual_seed(5))
    reference = rope(x, 1000).to(torch.bfloat16).float()
    low = rope(x.to(torch.bfloat16), 1000).float()
    torch.testing.assert_close(low, reference, atol=0.05, rtol=0.02)
