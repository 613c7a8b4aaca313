"""Comparison tasks (src/sepbench/tasks/comparison.py): string equality and disjointness.
Labels are re-derived here from the decoded halves."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepbench import tasks
from sepbench.errors import SepbenchError


def halves(task: tasks.Task, batch: tasks.Batch, i: int) -> tuple[list[str], list[str]]:
    prompt = task.vocab.decode(batch.prompt(i))
    middle = len(prompt) // 2
    assert prompt[middle] == "[SEP]"
    return prompt[:middle], prompt[middle + 1 :]


def true_fraction(batch: tasks.Batch) -> float:
    return float(np.mean([a == "[TRUE]" for a in batch.answers]))


# -- string equality -------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(
    variant=st.sampled_from(["random", "one_off"]),
    vocab_size=st.integers(2, 50),
    half=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_equality_labels_match_the_halves(
    variant: str, vocab_size: int, half: int, seed: int
) -> None:
    task = tasks.get("string_equality", variant=variant, vocab_size=vocab_size)
    batch = task.sample(np.random.default_rng(seed), 16, 2 * half)
    for i in range(len(batch)):
        first, second = halves(task, batch, i)
        assert len(first) == len(second) == half
        assert all(int(s[1:]) < vocab_size for s in first + second)
        differences = sum(a != b for a, b in zip(first, second))
        assert batch.answers[i] == ("[TRUE]" if differences == 0 else "[FALSE]")
        if variant == "one_off":
            assert differences in (0, 1)
        assert task.check(batch.prompt(i), batch.completion(i))


@pytest.mark.parametrize("variant", ["random", "one_off"])
def test_equality_labels_are_balanced(variant: str) -> None:
    batch = tasks.get("string_equality", variant=variant).sample(np.random.default_rng(0), 2000, 8)
    assert 0.45 <= true_fraction(batch) <= 0.55


def test_random_negatives_differ_even_when_collisions_are_likely() -> None:
    task = tasks.get("string_equality")
    batch = task.sample(np.random.default_rng(1), 400, 2)
    negatives = [i for i, a in enumerate(batch.answers) if a == "[FALSE]"]
    assert negatives and all(
        halves(task, batch, i)[0] != halves(task, batch, i)[1] for i in negatives
    )


@settings(max_examples=15, deadline=None)
@given(half=st.integers(1, 60), seed=st.integers(0, 2**32 - 1))
def test_copy_completion_is_the_first_half(half: int, seed: int) -> None:
    task = tasks.get("string_equality", variant="copy", vocab_size=30)
    batch = task.sample(np.random.default_rng(seed), 4, 2 * half)
    assert task.completion_cap(2 * half) == half
    for i in range(len(batch)):
        *word, sep = task.vocab.decode(batch.prompt(i))
        assert sep == "[SEP]" and len(word) == half
        assert task.vocab.decode(batch.completion(i)) == word == batch.answers[i].split()
        assert task.check(batch.prompt(i), batch.completion(i))


def test_equality_alphabet_defaults_to_the_papers_and_can_be_set() -> None:
    symbols = {"random": 2, "one_off": 1024, "copy": 1024}
    for variant, size in symbols.items():
        assert tasks.get("string_equality", variant=variant).vocab_size == size
    task = tasks.get("string_equality", variant="one_off", vocab_size=3)
    words = set(task.vocab.decode(task.sample(np.random.default_rng(0), 200, 10).tokens.ravel()))
    assert words == {"a0", "a1", "a2", "[SEP]", "[TRUE]", "[FALSE]"}
    with pytest.raises(SepbenchError, match="vocab_size"):
        tasks.get("string_equality", vocab_size=1)
    with pytest.raises(SepbenchError, match="variant"):
        tasks.get("string_equality", variant="reverse")
    with pytest.raises(SepbenchError, match="even"):
        task.sample(np.random.default_rng(0), 2, 11)


@pytest.mark.parametrize(("length", "low"), [(200, 20), (50, 6), (4, 2), (2, 2)])
def test_equality_trains_on_even_lengths_from_n_over_10(length: int, low: int) -> None:
    task = tasks.get("string_equality")
    drawn = task.train_lengths(np.random.default_rng(0), 3000, length)
    assert set(drawn.tolist()) == set(range(low, length + 1, 2))
    batch = task.sample(np.random.default_rng(0), 64, length, train=True)
    symbols = batch.prompt_lengths - 1
    assert (symbols % 2 == 0).all() and symbols.min() >= low and symbols.max() <= length


# -- disjointness ----------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(vocab_size=st.integers(2, 80), fraction=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_disjointness_labels_agree_with_set_intersection(
    vocab_size: int, fraction: float, seed: int
) -> None:
    task = tasks.get("disjointness", vocab_size=vocab_size)
    half = 1 + int(fraction * (vocab_size // 2 - 1))
    batch = task.sample(np.random.default_rng(seed), 16, 2 * half)
    for i in range(len(batch)):
        first, second = halves(task, batch, i)
        a, b = set(first), set(second)
        assert len(a) == len(b) == half
        assert all(int(s[1:]) < vocab_size for s in a | b)
        assert len(a & b) <= 1
        assert batch.answers[i] == ("[TRUE]" if not a & b else "[FALSE]")
        assert task.check(batch.prompt(i), batch.completion(i))


def test_disjointness_is_balanced_and_written_unsorted() -> None:
    task = tasks.get("disjointness")
    batch = task.sample(np.random.default_rng(0), 2000, 20)
    assert 0.45 <= true_fraction(batch) <= 0.55
    first_sets = batch.tokens[:, :10]
    assert (np.diff(first_sets, axis=1) < 0).any(axis=1).mean() > 0.9


def test_disjointness_alphabet_bounds_the_length() -> None:
    task = tasks.get("disjointness", vocab_size=9)
    assert task.max_length() == 8
    with pytest.raises(SepbenchError, match="alphabet too small for two disjoint sets"):
        task.sample(np.random.default_rng(0), 2, 10)
    with pytest.raises(SepbenchError, match="even"):
        task.sample(np.random.default_rng(0), 2, 7)
    words = set(task.vocab.decode(task.sample(np.random.default_rng(0), 300, 8).tokens.ravel()))
    assert {w for w in words if w.startswith("a")} == {f"a{i}" for i in range(9)}


def test_disjointness_check_refuses_repeated_elements() -> None:
    task = tasks.get("disjointness")
    a0, a1, a2, a3, sep, true = task.vocab.ids(["a0", "a1", "a2", "a3", "[SEP]", "[TRUE]"])
    assert task.check([a1, a2, sep, a3, a0], [true])
    assert not task.check([a1, a1, sep, a2, a3], [true])
