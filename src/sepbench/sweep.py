"""Sweeps: the experiments of a spec (:mod:`sepbench.sweep_spec`), each run once, on a backend
(:mod:`sepbench.backends`).

Every run goes through the results store, so a sweep that is started again serves its finished
runs from the store and trains only what is missing, failed or was interrupted (from its last
checkpoint). Grid points with the same config hash are one run. A run that fails is recorded
with its cause and the others go on; a stop signal stops every run in flight
(``stopped_by``); a store that cannot be written ends the sweep with
:class:`~sepbench.store.StoreError`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sepbench.aggregate import run_seed
from sepbench.backends import Backend, InProcess, Pool
from sepbench.backends.base import Emit, Ended, Job, Outcome, Planned, Runner, SweepEvent
from sepbench.backends.signals import stop_on_signals
from sepbench.config import Experiment
from sepbench.errors import SepbenchError
from sepbench.labels import config_summary
from sepbench.runner import Interrupted, result_from_record, run
from sepbench.store import Store


@dataclass
class SweepResult:
    """One entry per distinct run (grid order): its experiment and outcome (None: the sweep
    was stopped before it started)."""

    experiments: list[Experiment]
    outcomes: list[Outcome | None]
    duplicates: int
    stopped_by: int | None = None

    @property
    def failures(self) -> list[tuple[Experiment, Outcome]]:
        """The runs that failed or were interrupted, with their outcomes."""
        return [
            (experiment, outcome)
            for experiment, outcome in zip(self.experiments, self.outcomes)
            if outcome is not None and outcome.status in ("failed", "interrupted")
        ]


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def check_workers(workers: object) -> int:
    """``workers`` if it is an integer >= 1, else a one-line error."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SepbenchError(f"--workers must be an integer >= 1, got {workers!r}")
    return workers


def label(experiment: Experiment) -> str:
    """A short name for a run in progress displays: the resolved model's summary (a hybrid's
    layers, a matched size) or the construction's, the task, the seed and the hash."""
    resolved, task = experiment.resolved(), experiment.task
    name = f"{experiment.name} · " if experiment.name else ""
    built = config_summary(resolved)
    if experiment.construction is not None:
        built = f"construction {built}"
    return (
        f"{name}{built} · {task.name} N={task.length} "
        f"· seed {run_seed(resolved)} · {experiment.config_hash()[:8]}"
    )


def run_all(
    experiments: list[Experiment],
    *,
    store: Store,
    workers: int | None = None,
    force: bool = False,
    on_event: Callable[[SweepEvent], None] | None = None,
    runner: Runner = run,
    backend: Backend | None = None,
) -> SweepResult:
    """Run every distinct experiment once (longest tasks first) on ``backend``, by default
    on ``workers`` local processes.

    One worker runs in this process, with torch's threads as set; more run as a
    :class:`~sepbench.backends.Pool`, each with an equal share of those threads (torch's
    default is one per core, ``OMP_NUM_THREADS`` overrides it); ``runner`` runs one
    experiment there (default :func:`sepbench.runner.run`). A ``backend`` given (Ray, see
    :func:`sepbench.backends.choose`) replaces both. SIGINT, SIGTERM and SIGHUP stop the sweep
    (``stopped_by``). ``on_event`` receives a :class:`~sepbench.backends.base.Planned` event,
    then the runs' events.
    """
    if backend is None:
        workers = default_workers() if workers is None else check_workers(workers)
        threads = max(1, torch.get_num_threads() // workers)
        backend = InProcess(runner) if workers == 1 else Pool(workers, threads, runner)
    emit: Emit = on_event or (lambda event: None)
    distinct: dict[str, Experiment] = {}
    for experiment in experiments:
        distinct.setdefault(experiment.config_hash(), experiment)
    unique = list(distinct.values())
    result = SweepResult(unique, [None] * len(unique), len(experiments) - len(unique))
    emit(Planned([label(e) for e in unique], result.duplicates))

    def collect(event: SweepEvent) -> None:
        if isinstance(event, Ended):
            result.outcomes[event.index] = event.outcome
        emit(event)

    jobs = _jobs_to_run(unique, store, force, collect)
    with stop_on_signals():
        try:
            backend.execute(jobs, store.path, collect)
        except (Interrupted, KeyboardInterrupt) as stop:
            result.stopped_by = getattr(stop, "signum", int(signal.SIGINT))
    return result


def _jobs_to_run(
    experiments: list[Experiment], store: Store, force: bool, emit: Emit
) -> list[Job]:
    """The runs the store cannot serve, longest task first; the served ones are ended here."""
    jobs = []
    for index, experiment in enumerate(experiments):
        config_hash = experiment.config_hash()
        record = None if force else store.lookup_finished(config_hash)
        if record is None:
            jobs.append(Job(index, experiment, force))
            continue
        served = result_from_record(record, store.run_dir(config_hash))
        emit(Ended(index, Outcome(record.status, record.id, served)))
    return sorted(jobs, key=lambda job: -job.experiment.task.length)
