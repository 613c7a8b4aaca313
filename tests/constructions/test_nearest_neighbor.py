"""Nearest neighbour: a gathering layer and the theorem's two layers (papers.md §2)."""

from __future__ import annotations

from sepbench import constructions, tasks
from tests.constructions.helpers import chunked_matches_whole, prompt_tokens, test_accuracy


def test_solves_64_points_in_8_dimensions_at_the_theorems_size() -> None:
    task = tasks.get("nearest_neighbor", dim=8)
    model = constructions.build("nearest_neighbor_attention", task, 64)
    assert test_accuracy(model, task, 64, 300) == 1.0
    assert test_accuracy(model, task, 64, 100, mode="generate") == 1.0


def test_too_small_a_code_fails() -> None:
    task = tasks.get("nearest_neighbor", dim=8)
    model = constructions.build("nearest_neighbor_attention", task, 64, k=4)
    assert test_accuracy(model, task, 64, 300) < 0.9


def test_chunks_agree() -> None:
    task = tasks.get("nearest_neighbor", dim=4)
    model = constructions.build("nearest_neighbor_attention", task, 6, k=32)
    chunked_matches_whole(model, prompt_tokens(task, 6, 3), [9, 1, 24])
