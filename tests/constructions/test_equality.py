"""String equality with two attention layers (papers.md §2)."""

from __future__ import annotations

import math

import pytest

from sepbench import constructions, tasks
from sepbench.errors import SepbenchError
from tests.constructions.helpers import chunked_matches_whole, prompt_tokens, test_accuracy


def test_length_1000_with_a_width_of_order_log_n() -> None:
    task = tasks.get("string_equality")
    model = constructions.build("equality_attention", task, 1000, k=32)
    assert test_accuracy(model, task, 1000, 300) == 1.0
    assert model.certificate()["certified"]
    assert model.size()["width"] == 2 * 1 + 2 * 32 + 1 < 8 * math.log2(1000)


def test_one_off_negatives_over_1024_symbols() -> None:
    task = tasks.get("string_equality", variant="one_off")
    model = constructions.build("equality_attention", task, 200, k=32)
    assert test_accuracy(model, task, 200, 300) == 1.0


def test_averaging_needs_log2_n_bits_of_precision() -> None:
    """The second layer averages over N + 1 positions: 1/(N+1) must not round to 0."""
    task = tasks.get("string_equality")
    short = constructions.build("equality_attention", task, 500, k=32, precision=6)
    enough = constructions.build("equality_attention", task, 500, k=32, precision=12)
    assert test_accuracy(short, task, 500, 300) < 0.6
    assert test_accuracy(enough, task, 500, 300) == 1.0
    assert short.certificate() == {"certified": None}


def test_small_codes_are_caught_by_the_certificate() -> None:
    task = tasks.get("string_equality")
    model = constructions.build("equality_attention", task, 1000, k=8)
    assert not model.certificate()["certified"]
    assert test_accuracy(model, task, 1000, 200) < 0.9


def test_chunks_agree_and_the_copy_variant_is_refused() -> None:
    task = tasks.get("string_equality")
    model = constructions.build("equality_attention", task, 20, k=16)
    chunked_matches_whole(model, prompt_tokens(task, 20, 5), [7, 7, 7])
    with pytest.raises(SepbenchError, match="copy is next-token prediction"):
        constructions.build("equality_attention", tasks.get("string_equality", variant="copy"), 8)
