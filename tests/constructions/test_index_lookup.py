"""Index lookup with one attention layer (Bhattamishra et al. Thm 1, papers.md §2)."""

from __future__ import annotations

import math

import pytest

from sepbench import constructions, tasks
from sepbench.errors import SepbenchError
from tests.constructions.helpers import chunked_matches_whole, prompt_tokens, test_accuracy


def build(length: int, **size: object) -> tuple[constructions.Construction, tasks.Task]:
    task = tasks.get("index_lookup", vocab_size=64, max_length=length)
    return constructions.build("index_lookup_attention", task, length, **size), task


def test_solves_length_400_with_k_128_on_5000_examples() -> None:
    """The paper's measured size: N = 400, |Σ| = 64, k = 128 is solved exactly."""
    model, task = build(400, k=128)
    assert test_accuracy(model, task, 400, 5000) == 1.0
    assert model.certificate()["certified"]
    assert model.size()["width"] == 6 + 2 * 128 and model.size()["layers"] == 1


def test_too_small_a_code_fails_and_is_not_certified() -> None:
    model, task = build(400, k=6)
    assert not model.certificate()["certified"]
    assert test_accuracy(model, task, 400, 500) < 0.9


def test_defaults_are_the_theorems_size_and_free_generation_agrees() -> None:
    model, task = build(100)
    assert model.k == math.ceil(128 * math.log(200))
    assert model.eta == pytest.approx(2 * math.log(303))
    assert test_accuracy(model, task, 100, 300, mode="generate") == 1.0


def test_chunks_and_single_tokens_give_the_same_logits() -> None:
    model, task = build(24, k=16)
    tokens = prompt_tokens(task, 24, 4)
    chunked_matches_whole(model, tokens, [10, 1, 14])


def test_precision_below_the_code_resolution_fails_and_above_it_works() -> None:
    """Fixed point with p = 2 rounds the codes ±1/√128 to 0; p = 6 keeps them."""
    low, task = build(100, k=128, precision=2)
    high, _ = build(100, k=128, precision=6)
    assert test_accuracy(low, task, 100, 300) < 0.1
    assert test_accuracy(high, task, 100, 300) == 1.0


def test_state_is_the_key_value_cache_and_bad_knobs_are_one_line() -> None:
    model, task = build(50, k=16)
    assert model.state_size(51) == 51 * (16 + 6)
    assert model.num_parameters() > 0 and model.num_parameters(trainable_only=True) == 0
    with pytest.raises(SepbenchError, match="k must be"):
        build(50, k=0)
    with pytest.raises(SepbenchError, match="eta must be a number > 0"):
        build(50, eta=-1)
    with pytest.raises(SepbenchError, match="builds for task index_lookup, not 'parity'"):
        constructions.build("index_lookup_attention", tasks.get("parity"), 10)
    with pytest.raises(SepbenchError, match="unknown parameter 'width'; allowed: k, eta"):
        constructions.build("index_lookup_attention", task, 50, width=3)
