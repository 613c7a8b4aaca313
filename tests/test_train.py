"""The training loop: streams, determinism, divergence, early stopping, checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sepbench import checkpoint, training_sets
from sepbench import train as train_module
from sepbench.config import Experiment, experiment_from_dict
from sepbench.errors import SepbenchError
from sepbench.tasks.base import Batch
from sepbench.train import (
    Notice,
    ProgressEvent,
    TrainingBatches,
    TrainResult,
    _lr_factor,
    _validation_accuracy,
    _validation_set,
    data_streams,
    seed_everything,
    train,
)


def experiment(**train_fields: Any) -> Experiment:
    """A tiny Dyck run: 1-layer LSTM of width 8, 30 steps, validation every 10."""
    fields = {"steps": 30, "batch_size": 16, "lr": 3e-3, "val_interval": 10, "val_examples": 64}
    return experiment_from_dict(
        {
            "task": {"name": "dyck", "length": 8},
            "model": {"name": "lstm", "width": 8, "layers": 1},
            "train": {**fields, **train_fields},
            "eval": {"examples": 64, "batch_size": 32},
        }
    )


def fit(config: Experiment, run_dir: Path, **kwargs: Any) -> tuple[TrainResult, torch.nn.Module]:
    seed_everything(config.train.seed, torch.device("cpu"))
    task = config.build_task()
    model = config.build_model(task)
    return train(config, task, model, run_dir=run_dir, **kwargs), model


def test_streams_are_disjoint_and_fixed_by_the_seed() -> None:
    task = experiment().build_task()
    draws = [task.sample(rng, 32, 8).tokens for rng in data_streams(0)]
    assert not np.array_equal(draws[1], draws[2])  # validation is not test
    assert not np.array_equal(draws[0], draws[1])
    assert np.array_equal(task.sample(data_streams(0).test, 32, 8).tokens, draws[2])
    assert not np.array_equal(task.sample(data_streams(1).test, 32, 8).tokens, draws[2])


def test_same_seed_gives_identical_results(tmp_path: Path) -> None:
    first, _ = fit(experiment(), tmp_path / "a")
    second, _ = fit(experiment(), tmp_path / "b")
    assert first.curve == second.curve
    assert first.best_val_accuracy == second.best_val_accuracy
    other, _ = fit(experiment(seed=1), tmp_path / "c")
    assert other.curve != first.curve


def test_progress_checkpoints_and_best_weights_restored(tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    fitted = experiment(steps=60, lr=2e-2)
    result, model = fit(fitted, tmp_path, on_event=events.append)
    assert result.status == "done" and result.steps_run == 60
    assert [p["step"] for p in result.curve] == [10, 20, 30, 40, 50, 60]
    assert [e.step for e in events] == [10, 20, 30, 40, 50, 60]
    assert all(e.val_accuracy is not None and e.steps == 60 for e in events)
    assert events[-1].eta_s == 0 and result.tokens_per_s > 0
    assert result.best_val_accuracy == max(p["val_accuracy"] for p in result.curve)
    assert result.final_val_accuracy == result.curve[-1]["val_accuracy"]
    assert {p.name for p in tmp_path.iterdir()} == {"best.pt", "last.pt"}
    config = experiment()
    validation = _validation_set(config, config.build_task(), data_streams(0).validation)
    restored = _validation_accuracy(config, config.build_task(), model, validation)
    assert restored == result.best_val_accuracy
    best = checkpoint.load(tmp_path / "best.pt", fitted.config_hash())
    assert best["val_accuracy"] == result.best_val_accuracy


def test_early_stop_at_the_first_validation_reaching_the_threshold(tmp_path: Path) -> None:
    result, _ = fit(experiment(early_stop=0.01), tmp_path)
    assert result.steps_to_threshold == 10 and result.steps_run == 10
    assert len(result.curve) == 1


def test_a_nan_loss_stops_the_run_as_diverged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_loss, calls = train_module._loss, []

    def poisoned(*args: Any) -> torch.Tensor:
        calls.append(1)
        return real_loss(*args) * (float("nan") if len(calls) >= 15 else 1.0)

    monkeypatch.setattr(train_module, "_loss", poisoned)
    config = experiment(steps=100)
    result, model = fit(config, tmp_path)
    assert result.status == "diverged" and result.steps_run == 20 and len(calls) == 20
    assert result.diverged_at_step == 15  # the first non-finite loss, not the log point
    assert np.isnan(result.curve[-1]["loss"]) and result.curve[-1]["val_accuracy"] is None
    assert all(torch.isfinite(p).all() for p in model.parameters())  # best weights restored
    kept = checkpoint.load(tmp_path / "last.pt", config.config_hash())
    assert kept["result"]["steps_run"] == 10  # the diverged state is never checkpointed


def test_non_finite_weights_with_a_finite_loss_are_divergence_not_a_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update that makes a weight infinite at a validation step: the loss of that step was
    still finite, but validating those weights would score garbage."""
    real_optimise, calls = train_module._optimise, []

    def breaking(experiment: Experiment, model: torch.nn.Module, *args: Any) -> torch.Tensor:
        loss = real_optimise(experiment, model, *args)
        calls.append(1)
        if len(calls) == 20:
            with torch.no_grad():
                next(model.parameters()).fill_(float("inf"))
        return loss

    monkeypatch.setattr(train_module, "_optimise", breaking)
    result, model = fit(experiment(steps=100), tmp_path)
    assert result.status == "diverged" and result.diverged_at_step == 20
    assert [p["val_accuracy"] is None for p in result.curve] == [False, True]
    assert result.best_val_accuracy == result.curve[0]["val_accuracy"]
    assert all(torch.isfinite(p).all() for p in model.parameters())


class Stop(Exception):
    pass


def fit_interrupted(config: Experiment, run_dir: Path, at_step: int) -> None:
    """Train until ``at_step`` and stop there with an exception, as a killed process would."""
    real_optimise, calls = train_module._optimise, []

    def stopping(*args: Any) -> torch.Tensor:
        calls.append(1)
        if len(calls) == at_step:
            raise Stop
        return real_optimise(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "_optimise", stopping)
        with pytest.raises(Stop):
            fit(config, run_dir)


@pytest.mark.parametrize("dataset_size", [None, 40])
def test_a_resumed_run_ends_exactly_as_an_uninterrupted_one(
    tmp_path: Path, dataset_size: int | None
) -> None:
    """Stopped at step 25 (last checkpoint: step 20), resumed: the same curve, accuracies and
    weights, bit for bit; a fixed dataset resumes mid-epoch."""
    config = experiment(steps=40, dataset_size=dataset_size, batch_size=16)
    reference, reference_model = fit(config, tmp_path / "reference")
    fit_interrupted(config, tmp_path / "resumed", at_step=25)
    events: list[Any] = []
    resumed, resumed_model = fit(config, tmp_path / "resumed", on_event=events.append)
    assert resumed.resumed_from_step == 20
    assert events[0] == Notice("resuming from the checkpoint at step 20")
    assert [e.step for e in events[1:]] == [30, 40]
    assert resumed.curve == reference.curve
    fields = ("status", "steps_run", "best_val_accuracy", "final_val_accuracy")
    assert [getattr(resumed, f) for f in fields] == [getattr(reference, f) for f in fields]
    for ours, theirs in zip(resumed_model.parameters(), reference_model.parameters()):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        ("truncate", "truncated"),
        ("other_config", "written for config"),
        ("older_format", "older"),
    ],
)
def test_an_untrustworthy_checkpoint_is_reported_and_training_starts_over(
    tmp_path: Path, spoil: str, reason: str
) -> None:
    config = experiment(steps=20)
    reference, _ = fit(config, tmp_path / "reference")
    run_dir = tmp_path / "run"
    fit_interrupted(config, run_dir, at_step=15)
    last = run_dir / "last.pt"
    if spoil == "truncate":
        last.write_bytes(last.read_bytes()[:-100])
    elif spoil == "other_config":
        fit_interrupted(experiment(steps=20, seed=3), tmp_path / "other", at_step=15)
        last.write_bytes((tmp_path / "other" / "last.pt").read_bytes())
    else:
        torch.save({"step": 10, "model": {}, "optimizer": {}}, last)
    events: list[Any] = []
    result, _ = fit(config, run_dir, on_event=events.append)
    (notice,) = [e for e in events if isinstance(e, Notice)]
    assert reason in notice.message and "restarts from step 0" in notice.message
    assert str(last) in notice.message and "\n" not in notice.message
    assert result.resumed_from_step is None and result.curve == reference.curve


def test_fixed_dataset_is_visited_in_shuffled_epochs(tmp_path: Path) -> None:
    config = experiment(dataset_size=24, batch_size=8)
    task = config.build_task()
    batches = TrainingBatches(config, task, data_streams(0).train)
    epochs = [[next(batches) for _ in range(3)] for _ in range(2)]
    spec = training_sets.TrainingSetSpec("dyck", task.params, 8, True, 0, 24)
    everything = training_sets.build(task, spec).batch(np.arange(24))
    examples = sorted(rows(everything))
    seen = [rows(b) for b in epochs[0]], [rows(b) for b in epochs[1]]
    for epoch in seen:
        assert sorted(r for batch in epoch for r in batch) == examples
    assert seen[0] != seen[1] and len(set(examples)) > 12  # reshuffled; not one example
    cached = TrainingBatches(config, task, data_streams(1).train, cache=tmp_path)
    assert [rows(next(cached)) for _ in range(3)] == seen[0]  # the seed decides, not the stream
    assert len(list(tmp_path.iterdir())) == 1


def rows(batch: Batch) -> list[tuple[int, ...]]:
    return [tuple(r[:n].tolist()) for r, n in zip(batch.tokens, batch.lengths)]


def test_warmup_then_cosine_to_zero_or_constant() -> None:
    factor = _lr_factor(experiment(steps=110, warmup_steps=10))
    assert [factor(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert factor(10) == pytest.approx(1.0) and factor(60) == pytest.approx(0.5)
    assert factor(110) == pytest.approx(0.0, abs=1e-12)
    constant = _lr_factor(experiment(steps=110, warmup_steps=10, schedule="constant"))
    assert constant(100) == 1.0


def index_lookup(train_lengths: str, **train_fields: Any) -> Experiment:
    return experiment_from_dict({
        "task": {"name": "index_lookup", "length": 30},
        "model": {"name": "lstm", "width": 8, "layers": 1},
        "train": {"steps": 4, "batch_size": 64, "lr": 1e-3, "train_lengths": train_lengths,
                  **train_fields},
        "eval": {"examples": 8},
    })


def test_per_batch_lengths_follow_the_task_distribution_without_padding() -> None:
    """``train_lengths: batch``: one k ~ U{10..N} per batch (papers.md §2's sampling), so a
    batch is never padded, and over many batches the lengths are those of ``task``."""
    config = index_lookup("batch")
    task = config.build_task()
    stream = TrainingBatches(config, task, np.random.default_rng(0))
    per_batch = []
    for _ in range(300):
        batch = next(stream)
        assert len(set(batch.lengths.tolist())) == 1 and batch.tokens.shape[1] == batch.lengths[0]
        per_batch.append(int(batch.lengths[0]))
    mixed = next(TrainingBatches(index_lookup("task"), task, np.random.default_rng(0)))
    assert len(set(mixed.lengths.tolist())) > 1
    assert set(mixed.lengths.tolist()) <= set(range(min(per_batch), max(per_batch) + 1))
    assert abs(np.mean(per_batch) - np.mean(mixed.lengths)) < 2.5


def test_per_batch_lengths_refuse_a_fixed_training_set() -> None:
    with pytest.raises(SepbenchError, match=r"train\.train_lengths: batch draws fresh batches"):
        index_lookup("batch", dataset_size=100)


@pytest.mark.parametrize(
    ("val_mode", "judged"), [(None, "generate"), ("teacher_forced", "teacher_forced")]
)
def test_validation_scores_in_val_mode_else_the_evaluation_mode(
    val_mode: str | None, judged: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    monkeypatch.setattr(
        train_module.evaluate,
        "accuracy",
        lambda model, task, batch, mode, **_: seen.append(mode) or 1.0,
    )
    run = experiment(val_mode=val_mode).model_copy(
        update={"eval": experiment().eval.model_copy(update={"mode": "generate"})}
    )
    task = run.build_task()
    batches = _validation_set(run, task, np.random.default_rng(0))
    assert _validation_accuracy(run, task, run.build_model(task), batches) == 1.0
    assert set(seen) == {judged}


def test_val_mode_set_changes_the_hash_and_a_bad_one_is_refused() -> None:
    """(Left out, the hash is as before the field existed: test_config's pinned hash.)"""
    assert experiment(val_mode="teacher_forced").config_hash() != experiment().config_hash()
    with pytest.raises(SepbenchError, match="val_mode"):
        experiment(val_mode="greedy")
