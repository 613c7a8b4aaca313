"""What every backend shares: the jobs it is given, the events it emits, one run's body.

A backend (:class:`Backend`) takes the runs a sweep still has to do as :class:`Job` s and
reports through one callback: :class:`Started` when a run is handed to a process,
:class:`Progressed` and :class:`Noticed` while it trains, and exactly one :class:`Ended` per job
with its :class:`Outcome`. A run that another process is training is retried later
(:class:`JobQueue`), then served from the store once that process has finished it. A stop
(:class:`~sepbench.runner.Interrupted`) is raised after every run in flight was stopped and
marked ``interrupted``; a store that cannot be written (:class:`~sepbench.store.StoreError`)
ends the sweep the same way. Any other error ends only its own run, as ``failed``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sepbench.config import Experiment
from sepbench.runner import Busy, RunResult, one_line
from sepbench.store import Store, StoreError
from sepbench.train import Notice, ProgressEvent, TrainEvent

BUSY_RETRY_S = 2.0
"""How long a run that another process is training waits before it is tried again."""


@dataclass(frozen=True)
class Job:
    """One run to execute: its index in the sweep, the experiment, whether to retrain."""

    index: int
    experiment: Experiment
    force: bool = False


@dataclass(frozen=True)
class Outcome:
    """How a run ended: ``status`` is a store status (``done``, ``diverged``, ``failed``,
    ``interrupted``) or ``busy`` (another process is training it: retried by the backend).
    ``fatal``: the store itself failed, so the sweep cannot go on."""

    status: str
    run_id: int | None = None
    result: RunResult | None = None
    error: str | None = None
    fatal: bool = False


@dataclass(frozen=True)
class Planned:
    """The sweep's runs (grid points with the same config hash counted once)."""

    labels: list[str]
    duplicates: int


@dataclass(frozen=True)
class Started:
    index: int


@dataclass(frozen=True)
class Progressed:
    index: int
    event: ProgressEvent


@dataclass(frozen=True)
class Noticed:
    index: int
    message: str


@dataclass(frozen=True)
class Waiting:
    """Another process is training this run (``run_id``); it is collected when that ends."""

    index: int
    run_id: int


@dataclass(frozen=True)
class Ended:
    index: int
    outcome: Outcome


SweepEvent = Planned | Started | Progressed | Noticed | Waiting | Ended
Emit = Callable[[SweepEvent], None]
Runner = Callable[..., RunResult]
""":func:`sepbench.runner.run` or a function with its signature (tests inject failures)."""


class Backend(Protocol):
    """Where runs execute: :class:`~sepbench.backends.inprocess.InProcess`,
    :class:`~sepbench.backends.pool.Pool` or :class:`~sepbench.backends.ray.Ray`."""

    def execute(self, jobs: list[Job], store_path: Path, emit: Emit) -> None:
        """Run every job, emitting one :class:`Ended` per job; raise
        :class:`~sepbench.runner.Interrupted` or :class:`StoreError` after stopping."""


def wrap(index: int, event: TrainEvent) -> SweepEvent:
    """A training event of run ``index`` as a sweep event."""
    if isinstance(event, Notice):
        return Noticed(index, event.message)
    return Progressed(index, event)


def run_job(job: Job, store: Store, emit: Callable[[TrainEvent], None], runner: Runner) -> Outcome:
    """One run, its errors caught: the body every backend executes for a job.

    Only a stop (:class:`~sepbench.runner.Interrupted`, ``KeyboardInterrupt``) escapes.
    """
    try:
        result = runner(job.experiment, store=store, force=job.force, on_event=emit, wait=False)
    except Busy as busy:
        return Outcome("busy", busy.run_id)
    except StoreError as error:
        return Outcome("failed", error=str(error), fatal=True)
    except Exception as error:
        return Outcome("failed", own_row(store, job, "failed"), error=one_line(error))
    return Outcome(result.status, result.run_id, result)


def own_row(store: Store, job: Job, status: str) -> int | None:
    """The row this process ended as ``status`` for the job's config (None: it ended before
    claiming one)."""
    try:
        record = store.latest(job.experiment.config_hash(), pid=os.getpid())
    except StoreError:
        return None
    return record.id if record is not None and record.status == status else None


class JobQueue:
    """Jobs in the order given; a busy job goes to the back, due again after
    :data:`BUSY_RETRY_S`."""

    def __init__(self, jobs: list[Job]) -> None:
        self.ready = deque(jobs)
        self.deferred: list[tuple[float, Job]] = []
        self.waiting: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self.ready or self.deferred)

    def take(self) -> Job | None:
        """The next job that may run now, or None (only deferred jobs, not yet due)."""
        now = time.monotonic()
        for due, job in [d for d in self.deferred if d[0] <= now]:
            self.deferred.remove((due, job))
            self.ready.append(job)
        return self.ready.popleft() if self.ready else None

    def defer(self, job: Job, outcome: Outcome, emit: Emit) -> None:
        """Try ``job`` again later; say so the first time (``outcome`` is its busy answer)."""
        self.deferred.append((time.monotonic() + BUSY_RETRY_S, job))
        if job.index not in self.waiting:
            self.waiting.add(job.index)
            emit(Waiting(job.index, outcome.run_id))

    def wait_s(self) -> float:
        """Seconds until the next deferred job is due (0 when one is ready)."""
        if self.ready or not self.deferred:
            return 0.0
        return max(0.0, min(due for due, _ in self.deferred) - time.monotonic())
