"""train.log: tensorboard writes the training scalars per run, beside the checkpoints, and the
run's record names the folder; the events read back equal the stored curve."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest

import sepbench
from sepbench.config import experiment_from_dict
from sepbench.extras import MissingExtra
from sepbench.store import Store


def experiment(log: str) -> Any:
    """Six steps, cosine decay after two warm-up steps, an event every two steps."""
    return experiment_from_dict({
        "task": {"name": "parity", "length": 6},
        "model": {"name": "lstm", "width": 8, "layers": 1},
        "train": {"steps": 6, "batch_size": 4, "lr": 0.01, "warmup_steps": 2, "val_interval": 2,
                  "val_examples": 8, "log": log},
        "eval": {"examples": 8},
        "device": "cpu",
    })


def read_scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard comes with .[dev] (the tensorboard extra)",
    ).EventAccumulator(folder)
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_the_scalars_read_back_as_the_stored_curve(tmp_path: Any) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard comes with .[dev]; install it")
    store = Store(tmp_path / "runs.sqlite")
    result = sepbench.run(experiment("tensorboard"), store=store)
    record = store.get(result.run_id)
    folder = record.metrics["log_dir"]
    assert folder == str((result.run_dir / "tensorboard" / f"run-{result.run_id}").resolve())
    scalars = read_scalars(folder)
    curve = store.curve(result.run_id)
    assert [step for step, _ in scalars["train/loss"]] == [2, 4, 6] == [p["step"] for p in curve]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([p["loss"] for p in curve])
    assert [v for _, v in scalars["validation/accuracy"]] == pytest.approx(
        [p["val_accuracy"] for p in curve]
    )
    # lr after step s: 0.01 x cosine factor 0.5 (1 + cos(pi (s - 2) / 4)), warm-up over by s = 2
    expected_lr = [0.01 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 4)) for s in (2, 4, 6)]
    assert [v for _, v in scalars["train/learning_rate"]] == pytest.approx(expected_lr, abs=1e-7)
    speeds = scalars["train/tokens_per_s"]
    assert [s for s, _ in speeds] == [2, 4, 6] and all(v > 0 for _, v in speeds)


def test_the_log_leaves_the_hash_and_the_result_alone(tmp_path: Any) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard comes with .[dev]; install it")
    assert experiment("tensorboard").config_hash() == experiment("none").config_hash()
    plain = sepbench.run(experiment("none"), store=Store(tmp_path / "a" / "runs.sqlite"))
    logged = sepbench.run(experiment("tensorboard"), store=Store(tmp_path / "b" / "runs.sqlite"))
    assert "log_dir" not in plain.metrics and not (plain.run_dir / "tensorboard").exists()
    assert logged.metrics.pop("log_dir") and logged.metrics == plain.metrics


def test_without_tensorboard_the_error_names_the_extra(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    store = Store(tmp_path / "runs.sqlite")
    with pytest.raises(MissingExtra, match=r"pip install 'sepbench\[tensorboard\]'"):
        sepbench.run(experiment("tensorboard"), store=store)
    assert [r.status for r in store.runs()] == ["failed"]
