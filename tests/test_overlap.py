"""The measured overlap of a run's test prompts with its training prompts (README claim:
the streams share no randomness; where the content space is small they share examples, and
each run states how many)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sepbench.config import experiment_from_dict
from sepbench.evaluate import sample_test_set
from sepbench.overlap import measured_overlap
from sepbench.runner import run
from sepbench.store import Store
from sepbench.train import TrainingBatches, data_streams


def parity(length: int, steps: int = 30) -> dict:
    return {
        "task": {"name": "parity", "length": length},
        "model": {"name": "lstm", "width": 8, "layers": 1},
        "train": {"steps": steps, "batch_size": 32, "lr": 1e-2, "val_interval": 10,
                  "val_examples": 16, "train_lengths": "fixed"},
        "eval": {"examples": 200},
        "device": "cpu",
    }


def brute_force(experiment: object, task: object, steps: int) -> float:
    streams = data_streams(experiment.train.seed)
    batches = TrainingBatches(experiment, task, streams.train)
    seen = set()
    for _ in range(steps):
        batch = next(batches)
        seen |= {tuple(batch.prompt(i)) for i in range(len(batch))}
    test = [
        tuple(batch.prompt(i))
        for _, batch in sample_test_set(task, experiment.eval_lengths, 200, streams.test, 256)
        for i in range(len(batch))
    ]
    return sum(p in seen for p in test) / len(test)


@pytest.mark.parametrize(("length", "small"), [(4, True), (40, False)])
def test_the_overlap_is_what_a_brute_force_comparison_finds(length: int, small: bool) -> None:
    experiment = experiment_from_dict(parity(length))
    task = experiment.build_task()
    measured = measured_overlap(experiment, task, 30)[length]
    assert measured == pytest.approx(brute_force(experiment, task, 30))
    assert (measured > 0.9) if small else (measured == 0.0)  # 2^4 strings vs 2^40


def test_every_run_stores_its_overlap(tmp_path: Path) -> None:
    result = run(experiment_from_dict(parity(4, steps=10)), store=Store(tmp_path / "s.sqlite"))
    assert set(result.metrics["test_overlap"]) == {4}
    assert 0 < result.metrics["test_overlap"][4] <= 1
