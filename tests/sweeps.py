"""Test helpers for sweeps: tiny specs, runners and Ray trainers that fail on purpose
(module-level, so that pool and Ray workers can import them), the processes of a sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from sepbench.runner import RunResult, Trained, run, train_and_evaluate
from sepbench.store import Store
from sepbench.train import ProgressEvent

BASE = {
    "task": {"name": "index_lookup", "length": 8, "params": {"vocab_size": 8, "max_length": 12}},
    "model": {"name": "lstm", "width": 8, "layers": 1},
    "train": {"steps": 20, "batch_size": 16, "lr": 0.003, "val_interval": 10,
              "val_examples": 32},
    "eval": {"examples": 64},
    "device": "cpu",
}


def write_spec(path: Path, grid: dict[str, Any], **train: Any) -> Path:
    """A sweep spec of tiny LSTM runs on index lookup (seconds each) with this grid."""
    base = {**BASE, "train": {**BASE["train"], **train}}
    path.write_text(yaml.safe_dump({"base": base, "grid": grid}, sort_keys=False))
    return path


def raising_relay(experiment: Any, on_event: Any) -> Any:
    """Events to ``on_event``, except that the experiment named ``boom`` raises at the first."""

    def relay(event: Any) -> None:
        if experiment.name == "boom":
            raise RuntimeError("boom: this run raises on purpose\nsecond line of the message")
        on_event(event)

    return relay


def killing_relay(experiment: Any, on_event: Any, marker: Path) -> Any:
    """Events to ``on_event``; the process training the experiment named ``oom`` SIGKILLs
    itself once (``marker`` remembers it) after step 20."""

    def relay(event: Any) -> None:
        on_event(event)
        late = isinstance(event, ProgressEvent) and event.step >= 20
        if experiment.name == "oom" and late and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    return relay


def failing_runner(experiment: Any, *, on_event: Any, **kwargs: Any) -> RunResult:
    """:func:`sepbench.runner.run`, except that the experiment named ``boom`` raises at its
    first log point."""
    return run(experiment, on_event=raising_relay(experiment, on_event), **kwargs)


def killing_runner(experiment: Any, *, store: Store, on_event: Any, **kwargs: Any) -> RunResult:
    """:func:`sepbench.runner.run`, except that the worker running the experiment named
    ``oom`` SIGKILLs itself (as the kernel's OOM killer would) once, after step 20."""
    relay = killing_relay(experiment, on_event, store.path.parent / "killed-once")
    return run(experiment, store=store, on_event=relay, **kwargs)


def failing_trainer(experiment: Any, *, run_dir: Path, on_event: Any, **kwargs: Any) -> Trained:
    """:func:`sepbench.runner.train_and_evaluate`, except that the experiment named ``boom``
    raises at its first log point; each attempt adds its experiment's name to the file
    ``attempts`` beside the run's folder."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with (run_dir.parent / "attempts").open("a") as attempts:
        attempts.write(f"{experiment.name or 'unnamed'}\n")
    relay = raising_relay(experiment, on_event)
    return train_and_evaluate(experiment, run_dir=run_dir, on_event=relay, **kwargs)


def killing_trainer(experiment: Any, *, run_dir: Path, on_event: Any, **kwargs: Any) -> Trained:
    """:func:`sepbench.runner.train_and_evaluate`, except that the Ray worker training the
    experiment named ``oom`` SIGKILLs itself once, after step 20 (marker file ``killed-once``
    beside the run's folder)."""
    relay = killing_relay(experiment, on_event, run_dir.parent / "killed-once")
    return train_and_evaluate(experiment, run_dir=run_dir, on_event=relay, **kwargs)


PAUSED_OUT = "paused-out"
"""The file :func:`stalling_trainer` leaves in a run's folder when its pause was not cut short."""


def stalling_trainer(experiment: Any, *, on_event: Any, **kwargs: Any) -> Trained:
    """:func:`sepbench.runner.train_and_evaluate`, pausing (at most 20 s) once step 50 is
    reported, so that a test can stop a sweep while every run is mid-way; a pause that ran
    its whole length leaves :data:`PAUSED_OUT` in the run's folder."""

    def relay(event: Any) -> None:
        on_event(event)
        if isinstance(event, ProgressEvent) and event.step == 50:
            for _ in range(200):  # short sleeps: a cancel's KeyboardInterrupt lands between them
                time.sleep(0.1)
            (Path(kwargs["run_dir"]) / PAUSED_OUT).touch()

    return train_and_evaluate(experiment, on_event=relay, **kwargs)


def sepbench(*args: str, **popen: Any) -> subprocess.Popen:
    """``python -m sepbench ARGS`` in a new process, one torch thread, output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "sepbench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        **popen,
    )


def wait_for_line(stream: Any, text: str) -> str:
    for line in stream:
        if text in line:
            return line
    raise AssertionError(f"the stream ended without a line containing {text!r}")


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    """The processes of ``pids`` that still exist (zombies of our own children count as gone)."""
    living = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.add(pid)
    return living


def wait_until_gone(pids: set[int], timeout_s: float) -> set[int]:
    """Wait up to ``timeout_s`` for ``pids`` to exit; the ones still alive."""
    deadline = time.monotonic() + timeout_s
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(pids)
