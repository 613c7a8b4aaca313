"""Stopping a sweep from outside, as a user, a job scheduler or the kernel would: no process
outlives the sweep, stopped runs are ``interrupted`` with their checkpoints kept, a killed
worker fails only its own run, and the next sweep resumes them all."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from sepbench import checkpoint
from sepbench.store import Store
from tests.files import read_only
from tests.sweeps import descendants, sepbench, wait_for_line, wait_until_gone, write_spec

GRID = {"model.width": [8, 12]}


def start_sweep(tmp_path: Path, workers: int) -> tuple[Any, Path, Path]:
    """A sweep of two runs in its own session (a terminal's process group), once every
    worker is training."""
    # long enough that neither run ends while the other worker is still starting
    spec = write_spec(tmp_path / "spec.yaml", GRID, steps=1500)
    store = tmp_path / "s.sqlite"
    process = sepbench(
        "sweep", str(spec), "--workers", str(workers), "--store", str(store),
        start_new_session=True,
    )
    for run in range(1, workers + 1):  # every worker is training
        wait_for_line(process.stderr, f"[{run}/2] step ")
    return process, spec, store


def resume(spec: Path, store: Path) -> str:
    again = sepbench("sweep", str(spec), "--workers", "1", "--store", str(store))
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    return out


@pytest.mark.parametrize(
    ("signum", "workers", "to_group"),
    [
        (signal.SIGINT, 2, True),  # Ctrl-C: the terminal signals every process of the group
        (signal.SIGTERM, 2, False),  # kill, a job scheduler
        (signal.SIGTERM, 1, False),
        (signal.SIGHUP, 1, True),  # the terminal went away
    ],
)
def test_a_stop_signal_interrupts_every_run_leaves_no_process_and_the_next_sweep_resumes(
    tmp_path: Path, signum: int, workers: int, to_group: bool
) -> None:
    process, spec, store = start_sweep(tmp_path, workers)
    family = descendants(process.pid) | {process.pid}
    pool = workers if workers > 1 else 0  # one worker runs in the sweep's own process
    assert len(family) >= 1 + pool  # the pool's workers (and its resource tracker)
    if to_group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err
    assert not wait_until_gone(family, timeout_s=10)
    assert f"stopped by {signal.Signals(signum).name}" in err and "Traceback" not in err

    runs = Store(store).runs()
    assert len(runs) == workers and {r.status for r in runs} == {"interrupted"}
    for record in runs:
        assert (store.parent / "checkpoints" / record.config_hash / "last.pt").is_file()
        assert f"interrupted: lstm w{record.config['model']['width']} L1" in out
    resumed = resume(spec, store)
    assert resumed.count("resumed from step") == workers
    assert {r.status for r in Store(store).runs()} == {"interrupted", "done"}


def test_a_worker_killed_by_the_kernel_fails_only_its_run_and_is_resumed(tmp_path: Path) -> None:
    process, spec, store = start_sweep(tmp_path, workers=2)
    workers = [pid for pid in descendants(process.pid) if b"backends/worker.py" in _cmdline(pid)]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)  # what the OOM killer does
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1, err
    (failed,) = Store(store).runs(status="failed")
    assert failed.error == "worker killed by signal 9" and failed.pid == workers[0]
    assert out.count("worker killed by signal 9") == 1  # the summary lists it
    assert len(Store(store).runs(status="done")) == 1
    assert "resumed from step" in resume(spec, store)
    assert len(Store(store).runs(status="done")) == 2


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("workers", [1, 2])
def test_a_store_folder_made_read_only_mid_sweep_ends_it_with_one_line_and_loses_nothing(
    tmp_path: Path, workers: int
) -> None:
    folder = tmp_path / "store"
    store = folder / "s.sqlite"
    spec = write_spec(
        tmp_path / "spec.yaml",
        {"variants": [{"task.length": 10}, {"task.length": 8, "train.steps": 600}]},
    )
    process = sepbench("sweep", str(spec), "--workers", str(workers), "--store", str(store))
    finished_line = wait_for_line(process.stdout, "(done, trained)")
    wait_for_line(process.stderr, "[2/2] step ")
    with read_only(folder):
        _, err = process.communicate(timeout=120)
        assert process.returncode == 2, err
        (line,) = [line for line in err.splitlines() if line.startswith("error:")]
        assert str(folder) in line and "cannot write" in line and "Traceback" not in err

    runs = Store(store).runs()
    finished = next(r for r in runs if r.status == "done")
    assert f"run {finished.id} (done" in finished_line and finished.metrics["test_accuracy"]
    assert {r.status for r in runs} == {"done", "running"}  # nothing half-written
    (cut,) = [r for r in runs if r.status == "running"]
    run_dir = folder / "checkpoints" / cut.config_hash
    assert not list(run_dir.glob("*.partial"))
    kept = checkpoint.load(run_dir / "last.pt", cut.config_hash)  # whole, or not there at all
    assert 0 < kept["result"]["steps_run"] < 600
    resumed = resume(spec, store)
    assert f"resumed from step {kept['result']['steps_run']}" in resumed
    assert [r.status for r in Store(store).runs()].count("done") == 2
