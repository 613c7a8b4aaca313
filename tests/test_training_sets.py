"""Fixed training sets (src/sepbench/training_sets.py): compact ragged storage, the derived loss
mask, determinism across worker processes, the on-disk cache, resumable epoch order."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sepbench import tasks, training_sets
from sepbench.errors import SepbenchError
from sepbench.tasks.base import Batch
from sepbench.training_sets import TrainingSetSpec


def spec_for(task: tasks.Task, length: int, size: int = 50) -> TrainingSetSpec:
    """Seed 0, the task's training lengths, chunks of 16 examples."""
    return TrainingSetSpec(task.name, task.params, length, True, 0, size, chunk=16)


CASES = [
    ("is_tree", {"mode": "retrieval"}, 7),  # retrieved tokens: the derived mask
    ("index_lookup", {"mode": "retrieval", "last_queries": 0.5, "max_length": 30}, 20),
    ("counting", {"cot": True}, 9),
]


@pytest.mark.parametrize(("name", "params", "length"), CASES, ids=[c[0] for c in CASES])
def test_the_stored_set_is_the_chunks_drawn_from_their_seeds(
    name: str, params: dict, length: int
) -> None:
    task = tasks.get(name, **params)
    spec = spec_for(task, length)
    dataset = training_sets.build(task, spec)
    assert len(dataset) == 50 and dataset.tokens.dtype == np.uint8 and dataset.tokens.ndim == 1
    stored = dataset.batch(np.arange(50))
    chunk_seeds = [np.random.SeedSequence(0, spawn_key=(0, 0, c)) for c in range(4)]
    drawn = Batch.concat(
        [
            task.sample(np.random.default_rng(seed), n, length, train=True)
            for seed, n in zip(chunk_seeds, [16, 16, 16, 2])
        ]
    )
    for i in range(50):
        end = drawn.lengths[i]
        np.testing.assert_array_equal(stored.tokens[i, :end], drawn.tokens[i, :end])
        np.testing.assert_array_equal(stored.loss_mask[i, :end], drawn.loss_mask[i, :end])
        assert not stored.loss_mask[i, end:].any() and not stored.tokens[i, end:].any()
    np.testing.assert_array_equal(stored.lengths, drawn.lengths)
    np.testing.assert_array_equal(stored.prompt_lengths, drawn.prompt_lengths)
    assert stored.answers == drawn.answers
    assert dataset.nbytes < 8 * drawn.tokens.size / 4  # ragged uint8, not padded int64


def test_token_type_is_the_smallest_that_holds_the_vocabulary() -> None:
    dtype = training_sets.token_dtype
    assert dtype(256) == np.uint8 and dtype(257) == np.uint16 and dtype(70_000) == np.uint32
    task = tasks.get("index_lookup", max_length=300)
    assert training_sets.build(task, spec_for(task, 12, 5)).tokens.dtype == np.uint16


@pytest.mark.slow  # two spawned processes import sepbench (and torch) before working
def test_seed_and_size_determine_the_set_whatever_the_workers() -> None:
    task = tasks.get("is_tree", mode="cot")
    spec = spec_for(task, 6)
    one, two = training_sets.build(task, spec), training_sets.build(task, spec, workers=2)
    np.testing.assert_array_equal(one.tokens, two.tokens)
    np.testing.assert_array_equal(one.offsets, two.offsets)
    assert one.answer_table == two.answer_table
    np.testing.assert_array_equal(one.answer_codes, two.answer_codes)
    other = training_sets.build(task, replace(spec, seed=1))
    assert not np.array_equal(one.tokens[:200], other.tokens[:200])


def test_epochs_are_permutations_fixed_by_seed_and_epoch_and_resume_at_any_step() -> None:
    task = tasks.get("dyck")
    dataset = training_sets.build(task, spec_for(task, 8, 20))
    order = [training_sets.epoch_order(3, e, 20) for e in range(3)]
    assert all(sorted(o) == list(range(20)) for o in order)
    assert not np.array_equal(order[0], order[1])
    np.testing.assert_array_equal(order[0], training_sets.epoch_order(3, 0, 20))
    stream = dataset.batches(7, seed=3)
    first = [next(stream) for _ in range(9)]  # 63 rows: three epochs and three rows
    expected = np.concatenate([*order, training_sets.epoch_order(3, 3, 20)])[:63].reshape(9, 7)
    for batch, rows in zip(first, expected):
        np.testing.assert_array_equal(batch.tokens, dataset.batch(rows).tokens)
    resumed = next(dataset.batches(7, seed=3, start_step=5))
    np.testing.assert_array_equal(resumed.tokens, first[5].tokens)
    assert resumed.answers == first[5].answers


def test_the_cache_shares_a_set_and_a_failed_build_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = tasks.get("is_tree", mode="retrieval")
    spec = spec_for(task, 6)
    stored = training_sets.load_or_build(task, spec, tmp_path)
    assert isinstance(stored.tokens, np.memmap)
    np.testing.assert_array_equal(stored.tokens, training_sets.build(task, spec).tokens)
    (folder,) = tmp_path.iterdir()
    assert folder.name == f"is_tree-{spec.key(task)}"

    def broken(*args: Any) -> None:
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(training_sets, "_chunk", broken)
    again = training_sets.load_or_build(task, spec, tmp_path)  # served: nothing is generated
    np.testing.assert_array_equal(again.tokens, stored.tokens)
    with pytest.raises(RuntimeError, match="killed mid-build"):
        training_sets.load_or_build(task, replace(spec, size=51), tmp_path)
    assert list(tmp_path.iterdir()) == [folder]


def test_the_key_covers_the_spec_and_the_generator() -> None:
    task = tasks.get("is_tree", mode="retrieval")
    spec = spec_for(task, 6)
    keys = {
        spec.key(task),
        replace(spec, seed=1).key(task),
        replace(spec, size=51).key(task),
        replace(spec, length=7).key(task),
        replace(spec, chunk=17).key(task),
        replace(spec, varied=False).key(task),
    }
    assert len(keys) == 6 and spec.key(task) == spec_for(task, 6).key(task)
    cot = tasks.get("is_tree", mode="cot")  # same spec fields, another generator
    assert replace(spec, params=cot.params).key(cot) not in keys
    changed = tasks.get("is_tree", mode="retrieval")
    changed.eos, changed.false = changed.false, changed.eos  # the same spec, other examples
    assert spec.key(changed) != spec.key(task)


def test_a_task_whose_mask_is_not_derivable_is_refused() -> None:
    task = tasks.get("dyck", cot=True)
    real = task.sample

    def partly_trained(*args: Any, **kwargs: Any) -> Batch:
        batch = real(*args, **kwargs)
        batch.loss_mask[:, batch.prompt_lengths[0]] = False  # the first trace token untrained
        return batch

    task.sample = partly_trained
    with pytest.raises(SepbenchError, match="loss mask") as error:
        training_sets.build(task, spec_for(task, 8, 5))
    assert "\n" not in str(error.value)
