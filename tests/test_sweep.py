"""Sweeps that survive failure: duplicates run once, a run that raises or whose worker is
killed ends as ``failed`` with its cause while the others finish, a rerun trains only what is
missing (resuming from checkpoints), and two sweeps on one store train each run once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from sepbench import sweep
from sepbench.backends.base import Waiting
from sepbench.config import experiment_from_dict
from sepbench.runner import run
from sepbench.store import Store
from sepbench.sweep_spec import expand, load
from tests.sweeps import BASE, failing_runner, killing_runner, sepbench, write_spec


def experiments(tmp_path: Path, grid: dict[str, Any], **train: Any) -> list[Any]:
    return expand(load(write_spec(tmp_path / "spec.yaml", grid, **train)))


GRID = {
    "variants": [{"model.width": 8}, {"model.width": 12, "name": "boom"}],
    "train.seed": [0, 1, 0],  # the third point repeats the first
}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_that_raises_fails_alone_and_a_rerun_trains_only_it(
    tmp_path: Path, workers: int
) -> None:
    store = Store(tmp_path / "s.sqlite")
    grid = experiments(tmp_path, GRID)
    events: list[Any] = []
    result = sweep.run_all(
        grid, store=store, workers=workers, runner=failing_runner, on_event=events.append
    )
    assert result.duplicates == 2 and len(result.outcomes) == 4 and result.stopped_by is None
    assert [o.status for o in result.outcomes] == ["done", "done", "failed", "failed"]
    for experiment, outcome in result.failures:
        assert experiment.name == "boom"
        assert outcome.error == "RuntimeError: boom: this run raises on purpose"
        assert store.get(outcome.run_id).error == outcome.error
    assert events[0].labels[0].startswith("lstm w8 L1 · index_lookup N=8 · seed 0")

    again = sweep.run_all(grid, store=store, workers=1)
    assert [o.status for o in again.outcomes] == ["done"] * 4 and not again.failures
    served = [o.result.cached for o in again.outcomes]
    assert served == [True, True, False, False]
    assert len(store.runs(status="done")) == 4 and len(store.runs(status="failed")) == 2


def test_a_killed_worker_fails_its_run_the_sweep_goes_on_and_a_rerun_resumes_it(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.sqlite")
    grid = experiments(
        tmp_path, {"variants": [{"model.width": 8, "name": "oom"}, {"model.width": 12}]},
        steps=40,
    )
    result = sweep.run_all(grid, store=store, workers=2, runner=killing_runner)
    (killed, finished) = result.outcomes
    assert killed.status == "failed" and killed.error == "worker killed by signal 9"
    assert store.get(killed.run_id).error == "worker killed by signal 9"
    assert finished.status == "done" and [e.name for e, _ in result.failures] == ["oom"]

    rerun = sweep.run_all(grid, store=store, workers=2)
    resumed = rerun.outcomes[0].result
    assert resumed.status == "done" and resumed.resumed_from_step == 20
    assert rerun.outcomes[1].result.cached
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // 2))  # as the pool's workers
    try:
        reference = run(grid[0], store=Store(tmp_path / "reference" / "s.sqlite"))
    finally:
        torch.set_num_threads(threads)
    assert resumed.metrics == reference.metrics


def test_a_run_another_process_is_training_is_skipped_then_collected(tmp_path: Path) -> None:
    """The claim is atomic: while a live process holds the ``running`` row, the sweep does the
    rest and comes back; once that process finishes, the result is served, not retrained."""
    store = Store(tmp_path / "s.sqlite")
    first, second = experiments(tmp_path, {"model.width": [8, 12]})
    held = store.claim(first.config_hash(), first.resolved(), {}).run_id  # "another process"
    order: list[str] = []

    def finish_later() -> None:
        while not store.runs(status="done"):
            time.sleep(0.1)
        order.append("other process finished")
        store.finish(held, "done", {"steps_run": 40, "test_accuracy": {"8": 0.5}}, {}, [])

    other = threading.Thread(target=finish_later)
    other.start()
    events: list[Any] = []
    result = sweep.run_all([first, second], store=store, workers=1, on_event=events.append)
    other.join()
    assert [e for e in events if isinstance(e, Waiting)] == [Waiting(0, held)]  # said once
    assert [o.status for o in result.outcomes] == ["done", "done"]
    assert result.outcomes[0].run_id == held and result.outcomes[0].result.cached
    assert result.outcomes[1].result is not None and not result.outcomes[1].result.cached
    assert order == ["other process finished"] and len(store.runs()) == 2


def test_two_sweeps_on_one_store_train_every_run_exactly_once(tmp_path: Path) -> None:
    store_path = tmp_path / "s.sqlite"
    Store(store_path)
    one = write_spec(tmp_path / "one.yaml", {"model.width": [8, 12, 16]}, steps=60)
    two = write_spec(tmp_path / "two.yaml", {"model.width": [8, 12, 20]}, steps=60)
    sweeps = [sepbench("sweep", str(spec), "--workers", "1", "--store", str(store_path))
              for spec in (one, two)]
    outputs = [process.communicate(timeout=300) for process in sweeps]
    assert [process.returncode for process in sweeps] == [0, 0], outputs
    runs = Store(store_path).runs()
    assert sorted(r.config["model"]["width"] for r in runs) == [8, 12, 16, 20]
    assert {r.status for r in runs} == {"done"}
    for stdout, _ in outputs:
        table = stdout.split("-----")[-1]
        assert table.count(" done ") == 3  # each sweep reports all of its runs


def test_workers_below_one_is_refused() -> None:
    grid = [experiment_from_dict(BASE)]
    with pytest.raises(ValueError, match="--workers must be an integer >= 1, got 0"):
        sweep.run_all(grid, store=None, workers=0)  # type: ignore[arg-type]
