"""``sepbench.run``: end-to-end learning, the store life cycle, determinism, failures."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import sepbench
from sepbench import train as train_module
from sepbench.config import Experiment, experiment_from_dict, load_experiment
from sepbench.errors import SepbenchError
from sepbench.runner import Busy, resolve_device
from sepbench.store import Store
from sepbench.train import Notice
from tests.test_config import EXAMPLE

TINY = {
    "task": {"name": "dyck", "length": 8},
    "model": {"name": "lstm", "width": 8, "layers": 1},
    "train": {"steps": 20, "batch_size": 16, "lr": 3e-3, "val_interval": 10, "val_examples": 64},
    "eval": {"examples": 64, "lengths": [8, 12]},
    "device": "cpu",
}


def tiny(**train_fields: Any) -> Experiment:
    return experiment_from_dict({**TINY, "train": {**TINY["train"], **train_fields}})


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "runs.sqlite")


@pytest.mark.slow
def test_documented_example_solves_index_lookup(tmp_path: Path, store: Store) -> None:
    """papers.md §2: a one-layer Transformer learns index lookup (here N = 16, |Σ| = 16)."""
    path = tmp_path / "experiment.yaml"
    path.write_text(EXAMPLE)
    # As written it trains 3000 steps (~30 CPU s); it is solved by ~1000, so stop there.
    overrides = ["device=cpu", "train.early_stop=0.99", "train.val_interval=100"]
    result = sepbench.run(load_experiment(path, overrides), store=store)
    assert result.status == "done"
    assert result.metrics["test_accuracy"][16] >= 0.99, result.metrics
    assert result.metrics["steps_to_threshold"] is not None


@pytest.mark.slow
def test_a_narrow_lstm_fails_index_lookup_at_length_64(store: Store) -> None:
    """papers.md §2: a recurrent state of O(width) cannot hold 64 symbols; width 8 stays low."""
    experiment = experiment_from_dict(
        {
            "task": {"name": "index_lookup", "length": 64, "params": {"vocab_size": 16}},
            "model": {"name": "lstm", "width": 8, "layers": 1},
            "train": {"steps": 200, "batch_size": 32, "lr": 3e-3, "val_interval": 100,
                      "val_examples": 200},
            "eval": {"examples": 300},
            "device": "cpu",
        }
    )
    result = sepbench.run(experiment, store=store)
    assert result.metrics["test_accuracy"][64] < 0.5, result.metrics


def test_a_finished_run_is_stored_and_served(store: Store) -> None:
    events: list[Any] = []
    first = sepbench.run(tiny(), store=store, on_event=events.append)
    assert (first.status, first.cached) == ("done", False)
    assert set(first.metrics["test_accuracy"]) == {8, 12}
    assert first.metrics["steps_run"] == 20 and events
    record = store.get(first.run_id)
    assert record.status == "done" and record.device == "cpu"
    assert record.num_parameters and record.state_size == 16  # LSTM: hidden + cell
    assert record.config == tiny().resolved() and record.config_hash == first.config_hash
    assert [p["step"] for p in store.curve(first.run_id)] == [10, 20]
    assert (first.run_dir / "best.pt").is_file()
    again = sepbench.run(tiny(), store=store)
    assert (again.run_id, again.cached, again.metrics) == (first.run_id, True, first.metrics)


def test_generation_stores_the_answer_metric_beside_exact(store: Store) -> None:
    """Dyck with its stack CoT, judged by generation: ``answer`` scores the label alone."""
    task, judged = {**TINY["task"], "params": {"cot": True}}, {**TINY["eval"], "mode": "generate"}
    traced = experiment_from_dict({**TINY, "task": task, "eval": judged})
    result = sepbench.run(traced, store=store)
    exact, answer = result.metrics["test_accuracy"], result.metrics["test_answer_accuracy"]
    assert set(exact) == set(answer) == {8, 12}
    assert all(answer[n] >= exact[n] for n in exact)
    assert sepbench.run(traced, store=store).metrics == result.metrics  # served with int keys
    assert "test_answer_accuracy" not in sepbench.run(tiny(), store=store).metrics


def test_identical_runs_give_identical_metrics(store: Store) -> None:
    first = sepbench.run(tiny(), store=store)
    second = sepbench.run(tiny(), store=store, force=True)
    assert second.run_id != first.run_id and not second.cached
    assert second.metrics == first.metrics
    assert store.curve(second.run_id) == store.curve(first.run_id)


def test_divergence_is_recorded(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    real_loss = train_module._loss
    monkeypatch.setattr(train_module, "_loss", lambda *a: real_loss(*a) * float("nan"))
    result = sepbench.run(tiny(), store=store)
    assert result.status == "diverged" and "test_accuracy" not in result.metrics
    assert result.metrics["diverged_at_step"] == 1
    assert store.get(result.run_id).status == "diverged"
    assert store.lookup_done(result.config_hash) is None
    again = sepbench.run(tiny(), store=store)  # the same config diverges again: served
    assert again.cached and again.status == "diverged" and again.run_id == result.run_id


def test_training_beats_the_heartbeat_of_its_row(store: Store) -> None:
    beats: list[float] = []

    def look(event: Any) -> None:
        (running,) = store.runs(status="running")
        beats.append(running.heartbeat_at)

    sepbench.run(tiny(), store=store, on_event=look)
    assert len(beats) == 2 and beats[0] < beats[1]
    assert beats[0] > time.time() - 60


def test_an_exception_marks_the_run_failed_and_is_raised(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr("sepbench.runner.train", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        sepbench.run(tiny(), store=store)
    (record,) = store.runs()
    assert record.status == "failed" and record.error == "RuntimeError: out of memory"


def test_device_resolution() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(SepbenchError, match="device: cuda"):
            resolve_device("cuda")


def test_a_run_served_from_another_commit_says_so_in_one_line(store: Store) -> None:
    import sqlite3

    from sepbench.summary import result_line

    first = sepbench.run(tiny(steps=10), store=store)
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET git_sha = 'feedc0ffee00aa' WHERE id = ?", (first.run_id,))
    served = sepbench.run(tiny(steps=10), store=store)
    assert served.cached and served.produced_by == "feedc0ffee00aa"
    line = result_line(served)
    assert "produced by commit feedc0ffee00, not this one" in line and "\n" not in line
    assert sepbench.run(tiny(steps=10), store=store).metrics == served.metrics


def test_a_config_another_process_is_training_is_waited_for_then_served(store: Store) -> None:
    experiment = tiny()
    held = store.claim(experiment.config_hash(), experiment.resolved(), {}).run_id
    events: list[Any] = []
    finisher = threading.Timer(
        1.5, store.finish, (held, "done", {"steps_run": 20}, {}, [])
    )
    finisher.start()
    result = sepbench.run(experiment, store=store, on_event=events.append)
    finisher.join()
    assert (result.run_id, result.cached, result.metrics) == (held, True, {"steps_run": 20})
    assert events == [Notice(f"another process is training this config (run {held}); "
                             "waiting for its result")]
    other = tiny(seed=1)
    store.claim(other.config_hash(), other.resolved(), {})
    with pytest.raises(Busy, match="being trained by another process"):
        sepbench.run(other, store=store, wait=False)
