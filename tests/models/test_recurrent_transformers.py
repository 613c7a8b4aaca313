"""The recurrent Transformers of papers.md §3 (Zhang et al.'s revisit): how they are built, the
chunk-and-state contract across their blocks, segments and cache runs, and their references."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from sepbench import models
from sepbench.errors import SepbenchError
from sepbench.models.base import MIXERS
from sepbench.models.block_recurrent_transformer import window_attention
from sepbench.models.stepwise import MIN_RUN, GrowingCache
from tests.models.chunks import run_in_chunks

STACKS = sorted(name for name, cls in MIXERS.items() if cls.stack)
VOCAB = 13


def tokens(batch: int, length: int, seed: int = 0) -> Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def build(name: str, layers: int = 2, **params: Any) -> models.SequenceModel:
    torch.manual_seed(0)
    if name == "hybrid":
        return models.build(name, VOCAB, 16, mixers=["mamba", "attention"], **params).eval()
    return models.build(name, VOCAB, 16, layers, **params).eval()


def test_the_five_designs_are_registered_stacks() -> None:
    assert STACKS == [
        "block_recurrent_transformer", "feedback_transformer", "recurrent_memory_transformer",
        "recurrent_transformer", "universal_transformer",
    ]


@pytest.mark.parametrize("name", STACKS)
def test_layers_is_the_depth_of_one_stack(name: str) -> None:
    model = build(name, layers=3)
    assert len(model.blocks) == 1
    assert model.blocks[0].mixer.depth == 3
    assert model.blocks[0].feedforward is None


@pytest.mark.parametrize("name", STACKS)
def test_depth_comes_from_layers_not_from_params(name: str) -> None:
    with pytest.raises(SepbenchError, match="set its depth with layers"):
        models.build(name, VOCAB, 16, 2, depth=3)
    with pytest.raises(SepbenchError, match="needs depth="):
        models.build("hybrid", VOCAB, 16, mixers=["lstm", name])
    hybrid = models.build("hybrid", VOCAB, 16, mixers=["lstm", name], depth=2)
    assert hybrid.blocks[1].mixer.depth == 2


@pytest.mark.parametrize("name", STACKS)
@pytest.mark.parametrize("positional", ["rope", "none"])
def test_long_chunks_cross_blocks_segments_and_cache_runs(name: str, positional: str) -> None:
    """Chunks of uneven sizes across block (4), segment (10) and cache-run (32, 64) borders."""
    model = build(name, positional=positional)
    x = tokens(2, 3 * MIN_RUN + 11)
    with torch.no_grad():
        whole, _ = model(x)
        chunked, _ = run_in_chunks(model, x, [3, 37, 1, 6, 60])
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_growing_cache_attends_like_one_concatenated_cache() -> None:
    """Runs freeze at MIN_RUN steps and merge like a binary counter; attention over them equals
    attention over the concatenation, with or without an extra key."""
    generator = torch.Generator().manual_seed(0)
    past = [torch.randn(2, 3, 5, 4, generator=generator) for _ in "kv"]
    cache, keys, values = GrowingCache((past[0], past[1])), [past[0]], [past[1]]
    for _ in range(5 * MIN_RUN + 3):
        k, v, q, extra_k, extra_v = (torch.randn(2, 3, 1, 4, generator=generator) for _ in range(5))
        cache.append(k, v)
        keys.append(k)
        values.append(v)
        all_k, all_v = torch.cat(keys, 2), torch.cat(values, 2)
        expected = F.scaled_dot_product_attention(q, all_k, all_v)
        torch.testing.assert_close(cache.attend(q), expected, atol=1e-6, rtol=1e-5)
        with_extra = F.scaled_dot_product_attention(
            q, torch.cat((all_k, extra_k), 2), torch.cat((all_v, extra_v), 2)
        )
        torch.testing.assert_close(cache.attend(q, (extra_k, extra_v)), with_extra)
        assert len(cache.runs) <= 2 + math.log2(max(1, all_k.shape[2] / MIN_RUN)), "no merging"
        assert cache.recent is None or cache.recent[0].shape[2] < MIN_RUN
    torch.testing.assert_close(torch.cat(cache.tensors()), torch.cat((all_k, all_v)))


@pytest.mark.parametrize(("start", "length", "first"), [(0, 9, 0), (6, 5, 0), (13, 7, 8)])
def test_window_attention_sees_its_block_and_the_previous_one(
    start: int, length: int, first: int
) -> None:
    block = 4
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, length, 8, generator=generator)
    k, v = (torch.randn(1, 2, start + length - first, 8, generator=generator) for _ in "kv")
    query = torch.arange(start, start + length)[:, None]
    key = torch.arange(first, start + length)[None, :]
    mask = (key <= query) & (key // block >= query // block - 1)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = window_attention(q, k, v, first, start, block)
    torch.testing.assert_close(got, expected)


def test_recurrent_transformer_without_feedback_is_a_transformer() -> None:
    """Reference: with the fed-back map zeroed, stepping the layers one token at a time gives
    what the same layers (sepbench's transformer layers) compute in parallel."""
    model = build("recurrent_transformer", layers=3, positional="rope")
    stack = model.blocks[0].mixer
    torch.nn.init.zeros_(stack.feedback.weight)
    x = torch.randn(2, 40, 16, generator=torch.Generator().manual_seed(0))
    parallel = x
    with torch.no_grad():
        stepped, _ = stack(x)
        for layer in stack.layers:
            parallel, _ = layer(parallel)
    torch.testing.assert_close(stepped, parallel, atol=1e-5, rtol=1e-5)


def test_feedback_reaches_the_first_layer_at_the_next_step() -> None:
    """The recurrence: the top layer's output at step t changes the bottom layer at t + 1."""
    for name in ("recurrent_transformer", "feedback_transformer"):
        stack = build(name).blocks[0].mixer
        x = torch.randn(1, 2, 16, generator=torch.Generator().manual_seed(0))
        top = stack.layers[-1]
        with torch.no_grad():
            before, _ = stack(x)
            for parameter in top.parameters():
                parameter.add_(0.1)
            after, _ = stack(x)
        assert not torch.allclose(before[:, 0], after[:, 0])  # the top layer's own output
        changed_below = (before[:, 1] - after[:, 1]).abs().max()
        assert changed_below > 0


def test_universal_transformer_shares_one_layer_across_loops() -> None:
    small, large = build("universal_transformer", layers=2), build("universal_transformer", 5)
    assert large.num_parameters() - small.num_parameters() == 3 * 16  # three loop embeddings


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("block_recurrent_transformer", {"block": 0}, "block must be in"),
        ("block_recurrent_transformer", {"recurrent_layer": 2}, "recurrent_layer must be in"),
        ("block_recurrent_transformer", {"heads": 3}, "heads must divide"),
        ("recurrent_memory_transformer", {"segment": 0}, "segment must be in"),
        ("recurrent_memory_transformer", {"memory": 0}, "memory must be in"),
        ("feedback_transformer", {"heads": 3}, "heads must divide"),
        ("universal_transformer", {"heads": 3}, "heads must divide"),
    ],
)
def test_bad_parameters_fail_with_one_line(name: str, params: dict, message: str) -> None:
    with pytest.raises(SepbenchError, match=message) as error:
        models.build(name, VOCAB, 16, 2, **params)
    assert "\n" not in str(error.value)


def test_block_and_segment_lengths_are_the_recurrence_granularity() -> None:
    block = build("block_recurrent_transformer", block=5).blocks[0].mixer
    memory = build("recurrent_memory_transformer", segment=7).blocks[0].mixer
    assert (block.block_length, memory.block_length) == (5, 7)
    assert math.isclose(block.state_size(12), 2 * 2 * 16 * (5 + 2) + 4 * 16)
