"""Sweeps on Ray (src/sepbench/backends/ray.py): the same metrics as the local pool, a worker
killed mid-run is retried from its checkpoint with nothing lost and no second row, a run that
raises fails once and is not retried. One local Ray instance of two CPUs serves every test."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sepbench import sweep
from sepbench.backends.base import Noticed, Progressed
from sepbench.backends.ray import Ray
from sepbench.runner import run
from sepbench.store import Store
from sepbench.sweep_spec import expand, load
from tests.sweeps import (
    PAUSED_OUT,
    failing_trainer,
    killing_trainer,
    stalling_trainer,
    write_spec,
)

ray = pytest.importorskip("ray", reason="the Ray backend needs Ray: pip install 'sepbench[ray]'")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray instance for this module; the backend uses it and leaves it running."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def experiments(tmp_path: Path, grid: dict[str, Any], **train: Any) -> list[Any]:
    return expand(load(write_spec(tmp_path / "spec.yaml", grid, **train)))


def stored(store: Store) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each run's metrics and curve, by config hash."""
    return {r.config_hash: (r.metrics, store.curve(r.id)) for r in store.runs()}


def test_a_grid_on_ray_stores_the_same_metrics_as_on_the_local_pool(
    tmp_path: Path, local_ray: None
) -> None:
    grid = experiments(tmp_path, {"model.width": [8, 12], "train.seed": [0, 1]}, steps=20)
    pool, on_ray = Store(tmp_path / "pool" / "s.sqlite"), Store(tmp_path / "ray" / "s.sqlite")
    assert not sweep.run_all(grid, store=pool, workers=2).failures
    events: list[Any] = []
    result = sweep.run_all(grid, store=on_ray, backend=Ray(), on_event=events.append)
    assert [o.status for o in result.outcomes] == ["done"] * 4 and result.stopped_by is None
    assert all(not o.result.cached for o in result.outcomes)
    assert stored(on_ray) == stored(pool)
    assert len(on_ray.runs()) == 4 and {r.device for r in on_ray.runs()} == {"cpu"}
    assert {e.index for e in events if isinstance(e, Progressed)} == {0, 1, 2, 3}

    again = sweep.run_all(grid, store=on_ray, backend=Ray())  # served, not retrained
    assert all(o.result.cached for o in again.outcomes) and len(on_ray.runs()) == 4


def test_a_killed_worker_is_retried_and_resumes_from_its_checkpoint_without_a_second_row(
    tmp_path: Path, local_ray: None
) -> None:
    store, shared = Store(tmp_path / "store" / "s.sqlite"), tmp_path / "shared"
    grid = experiments(tmp_path, {"variants": [{"name": "oom"}]}, steps=40)
    events: list[Any] = []
    backend = Ray(trainer=killing_trainer, checkpoints=shared, max_retries=1)
    result = sweep.run_all(grid, store=store, backend=backend, on_event=events.append)
    (outcome,) = result.outcomes
    assert (shared / "killed-once").exists()  # the first attempt's worker was killed
    assert outcome.status == "done" and outcome.result.resumed_from_step == 20
    assert Noticed(0, "resuming from the checkpoint at step 20") in events
    (row,) = store.runs()
    assert row.id == outcome.run_id and row.status == "done" and row.error is None
    assert (shared / row.config_hash / "last.pt").is_file()
    assert [point["step"] for point in store.curve(row.id)] == [10, 20, 30, 40]

    reference = Store(tmp_path / "reference" / "s.sqlite")
    run(grid[0], store=reference)
    assert row.metrics == reference.runs()[0].metrics


def test_a_run_that_raises_fails_once_and_the_sweep_goes_on(
    tmp_path: Path, local_ray: None
) -> None:
    store = Store(tmp_path / "s.sqlite")
    grid = experiments(
        tmp_path, {"variants": [{"model.width": 8}, {"model.width": 12, "name": "boom"}]}
    )
    backend = Ray(trainer=failing_trainer, max_retries=2)
    result = sweep.run_all(grid, store=store, backend=backend)
    assert [o.status for o in result.outcomes] == ["done", "failed"]
    ((experiment, failed),) = result.failures
    assert experiment.name == "boom"
    assert failed.error == "RuntimeError: boom: this run raises on purpose"
    assert store.get(failed.run_id).error == failed.error
    attempts = (tmp_path / "checkpoints" / "attempts").read_text().split()
    assert sorted(attempts) == ["boom", "unnamed"]  # one attempt each: not retried


def test_a_stop_marks_the_runs_in_flight_interrupted_and_the_next_sweep_resumes_them(
    tmp_path: Path, local_ray: None
) -> None:
    store = Store(tmp_path / "s.sqlite")
    grid = experiments(tmp_path, {"model.width": [8, 12]}, steps=100)
    paused: set[int] = set()

    def stop_once_both_paused(event: Any) -> None:  # as SIGTERM from a job scheduler would
        if isinstance(event, Progressed) and event.event.step == 50:
            paused.add(event.index)
            if paused == {0, 1}:
                os.kill(os.getpid(), signal.SIGTERM)

    stopping = Ray(trainer=stalling_trainer)
    stopped = sweep.run_all(grid, store=store, backend=stopping, on_event=stop_once_both_paused)
    assert not list(tmp_path.rglob(PAUSED_OUT))  # the stop cut both pauses short
    assert stopped.stopped_by == signal.SIGTERM
    assert [(o.status, o.error) for o in stopped.outcomes] == [
        ("interrupted", "interrupted by SIGTERM")
    ] * 2
    assert {r.status for r in store.runs()} == {"interrupted"}

    # each resumes from its own checkpoint: the one at the pause (step 50), or a later one
    # where the worker went on a few steps before the cancel reached it
    resumed = sweep.run_all(grid, store=store, backend=Ray())
    assert [o.status for o in resumed.outcomes] == ["done"] * 2
    assert all(50 <= o.result.resumed_from_step <= 100 for o in resumed.outcomes)
    assert len(store.runs(status="done")) == 2
