"""The Ray backend: each run is a Ray task, on a local Ray instance or on a cluster.

The sweep's process (the driver) is the only writer of the store. For each run it claims the
row (:func:`~sepbench.runner.claim_run`), sends the experiment to a task that trains and
evaluates it without the store (:func:`~sepbench.runner.train_and_evaluate`), and records what
the task returns: status, metrics, info and curve (:func:`~sepbench.runner.record`). The task
keeps its checkpoints in a folder every node must be able to read and write: by default the
store's own (:meth:`~sepbench.store.Store.run_dir`, beside the store file), or
``CHECKPOINTS/<config hash>`` when a folder is given (a shared file system on a cluster).

- Resources: a task asks for ``cpus`` CPUs, and computes with that many torch threads; and for
  one GPU when the experiment's device is ``cuda``, or ``auto`` on a cluster that has GPUs.
  Only as many runs are claimed and submitted as the cluster has CPUs for (counted again as it
  grows), so a ``running`` row is a run that Ray can start now.
- A worker or a node that dies mid-run: Ray runs the task again, up to ``max_retries`` times,
  and it continues from its last checkpoint; after the last, the run is ``failed`` with the
  cause. A run that raises an exception of its own is ``failed`` at once with its one-line
  cause and never retried (the same config would raise again).
- Progress: tasks send their training events to a small actor (:class:`Mailbox`) that the
  driver empties while it waits; the driver beats the heartbeat of the rows in flight.
- A stop (:class:`~sepbench.runner.Interrupted`) or a store that cannot be written: every task
  in flight is cancelled, its run marked ``interrupted`` (the next sweep resumes it from its
  checkpoint), and the Ray instance shut down if this backend started it. A Ray already
  initialised in this process (a notebook, the tests) is used as it is and left running.

Ray is an optional extra (``pip install 'sepbench[ray]'``), imported only when this backend is
built.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepbench.backends.base import (
    Emit,
    Ended,
    Job,
    JobQueue,
    Outcome,
    Started,
    wrap,
)
from sepbench.backends.signals import ignore_stop_signals
from sepbench.config import Experiment
from sepbench.errors import SepbenchError, check_int
from sepbench.extras import require
from sepbench.runner import (
    Busy,
    Interrupted,
    Trained,
    claim_run,
    log_dir,
    one_line,
    record,
    result_from_record,
    train_and_evaluate,
)
from sepbench.store import Store, StoreError
from sepbench.train import TrainEvent, clear_checkpoints

POLL_S = 1.0
"""How long the driver waits for a task to end before it relays progress and looks again."""
HEARTBEAT_S = 60.0
"""How often the driver beats the heartbeat of the rows in flight (their owner is alive)."""


class Mailbox:
    """Training events from the tasks, for the driver to collect (run as a Ray actor)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, TrainEvent]] = []

    def put(self, index: int, event: TrainEvent) -> None:
        self.events.append((index, event))

    def take(self) -> list[tuple[int, TrainEvent]]:
        taken, self.events = self.events, []
        return taken


def attempt(
    trainer: Any,
    experiment: Experiment,
    run_dir: Path,
    log_folder: Path,
    threads: int,
    index: int,
    mailbox: Any,
) -> Trained:
    """One attempt at a run, in a Ray worker: ``trainer`` (default
    :func:`~sepbench.runner.train_and_evaluate`) with ``threads`` torch threads, its events
    sent to the driver's mailbox. It returns only once the mailbox holds every event (an
    actor runs one caller's calls in order, so the last put is enough): the driver drops a
    run's events that arrive after its result."""
    import ray
    import torch

    torch.set_num_threads(threads)
    last_put = None

    def send(event: TrainEvent) -> None:
        nonlocal last_put
        last_put = mailbox.put.remote(index, event)

    trained = trainer(experiment, run_dir=run_dir, log_dir=log_folder, on_event=send)
    if last_put is not None:
        ray.get(last_put)
    return trained


class Ray:
    """Runs as Ray tasks: on the cluster at ``address`` (``auto``: the one this machine
    belongs to), or, without one, on a local Ray instance of ``num_cpus`` CPUs (default: every
    core).

    ``cpus``: CPUs each run asks for (and its torch threads); ``max_retries``: how many times
    a run whose worker or node died is started again; ``checkpoints``: the folder every node
    reads and writes checkpoints in (default: beside the store). ``trainer`` is
    :func:`~sepbench.runner.train_and_evaluate` or a module-level function with its signature
    (tests inject failures).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        cpus: int = 1,
        max_retries: int = 2,
        checkpoints: Path | None = None,
        trainer: Any = train_and_evaluate,
    ) -> None:
        self.ray = require("ray", "ray", "--backend ray")
        if address is not None and num_cpus is not None:
            raise SepbenchError(
                "sweep: --workers sizes a local Ray instance; with --address the cluster's "
                "CPUs decide"
            )
        if num_cpus is not None:
            check_int("sweep", "--workers", num_cpus, 1)
        self.address, self.num_cpus = address, num_cpus
        self.cpus = check_int("sweep", "cpus per run", cpus, 1)
        self.max_retries = check_int("sweep", "--max-retries", max_retries, 0)
        self.checkpoints, self.trainer = checkpoints, trainer

    def execute(self, jobs: list[Job], store_path: Path, emit: Emit) -> None:
        if not jobs:  # everything was served from the store
            return
        started = self._connect()
        try:
            _Driver(self, Store(store_path), emit).run(jobs)
        finally:
            if started:
                self.ray.shutdown()

    def run_dir(self, store: Store, config_hash: str) -> Path:
        """Where a run keeps its checkpoints: a path the driver and every node agree on."""
        folder = store.run_dir(config_hash) if self.checkpoints is None else (
            Path(self.checkpoints) / config_hash
        )
        return folder.resolve()

    def _connect(self) -> bool:
        """Join the cluster or start a local instance; True when this started one."""
        if self.ray.is_initialized():
            return False
        options: dict[str, Any] = {"logging_level": logging.WARNING}
        if self.address is None:  # "local": never join a cluster found by chance
            options.update(address="local", num_cpus=self.num_cpus, include_dashboard=False)
        else:
            options.update(address=self.address)
        in_main = threading.current_thread() is threading.main_thread()
        handler = signal.getsignal(signal.SIGTERM) if in_main else None
        try:
            self.ray.init(**options)
        except Exception as error:  # ConnectionError, ValueError, RuntimeError, timeouts
            what = f"join the Ray cluster at {self.address}" if self.address else "start Ray"
            raise SepbenchError(f"sweep: cannot {what}: {one_line(error)}") from error
        finally:
            if in_main:  # ray.init replaces it; a SIGTERM must stop the sweep cleanly
                signal.signal(signal.SIGTERM, handler)
        return self.address is None

    def gpus(self, experiment: Experiment) -> int:
        """GPUs a run asks for: one for ``cuda``, one for ``auto`` where the cluster has any."""
        if experiment.device == "cuda":
            return 1
        has_gpus = self.ray.cluster_resources().get("GPU", 0) > 0
        return 1 if experiment.device == "auto" and has_gpus else 0


@dataclass(frozen=True)
class _InFlight:
    job: Job
    run_id: int
    run_dir: Path


class _Driver:
    """One sweep on Ray: claims, submits, relays progress, records, stops."""

    def __init__(self, backend: Ray, store: Store, emit: Emit) -> None:
        ray = backend.ray
        self.backend, self.ray, self.store, self.emit = backend, ray, store, emit
        self.mailbox = ray.remote(num_cpus=0)(Mailbox).remote()
        self.task = ray.remote(attempt)
        self.flight: dict[Any, _InFlight] = {}
        self.beaten = time.monotonic()

    def run(self, jobs: list[Job]) -> None:
        queue = JobQueue(jobs)
        try:
            while queue or self.flight:
                capacity = self._capacity()
                while len(self.flight) < capacity and (job := queue.take()) is not None:
                    self._submit(job, queue)
                self._wait(queue)
        except BaseException as error:
            ignore_stop_signals()
            stop = _stop_signal(error)
            self._stop(str(stop) if isinstance(stop, Interrupted) else "the sweep stopped")
            if stop is not error:
                raise stop from None
            raise

    def _capacity(self) -> int:
        """Runs the cluster can train at once."""
        cpus = self.ray.cluster_resources().get("CPU", 0)
        return max(1, int(cpus // self.backend.cpus))

    def _submit(self, job: Job, queue: JobQueue) -> None:
        """Claim the run; submit it as a task, or serve it, or try it again later (busy)."""
        self.emit(Started(job.index))
        experiment = job.experiment
        config_hash = experiment.config_hash()
        run_dir = self.backend.run_dir(self.store, config_hash)
        try:
            claim = claim_run(
                self.store, experiment, experiment.device, force=job.force, wait=False
            )
        except Busy as busy:
            queue.defer(job, Outcome("busy", busy.run_id), self.emit)
            return
        if claim.record is not None:  # another sweep finished it meanwhile
            served = result_from_record(claim.record, run_dir)
            self.emit(Ended(job.index, Outcome(served.status, served.run_id, served)))
            return
        if job.force:
            clear_checkpoints(run_dir)
        ref = self.task.options(
            num_cpus=self.backend.cpus,
            num_gpus=self.backend.gpus(experiment),
            max_retries=self.backend.max_retries,
            retry_exceptions=False,
            name=f"sepbench run {claim.run_id}",
        ).remote(
            self.backend.trainer, experiment, run_dir, log_dir(run_dir, claim.run_id),
            self.backend.cpus, job.index, self.mailbox,
        )
        self.flight[ref] = _InFlight(job, claim.run_id, run_dir)

    def _wait(self, queue: JobQueue) -> None:
        """Wait a little for a task to end; relay progress; record the runs that ended."""
        timeout = min(POLL_S, queue.wait_s()) if queue.deferred else POLL_S
        if self.flight:
            ready, _ = self.ray.wait(list(self.flight), num_returns=1, timeout=timeout)
        else:  # only runs that another process is training: wait until one is due
            time.sleep(timeout)
            ready = []
        live = {running.job.index for running in self.flight.values()}
        for index, event in self.ray.get(self.mailbox.take.remote()):
            if index in live:  # a task's last events may come after its result
                self.emit(wrap(index, event))
        if time.monotonic() - self.beaten > HEARTBEAT_S:
            for running in self.flight.values():
                self.store.heartbeat(running.run_id)
            self.beaten = time.monotonic()
        for ref in ready:
            self._record(ref, self.flight.pop(ref))

    def _record(self, ref: Any, running: _InFlight) -> None:
        """Write how the task ended to the store; a failed checkpoint write ends the sweep."""
        exceptions = self.ray.exceptions
        try:
            trained = self.ray.get(ref)
        except exceptions.RayTaskError as error:  # the run raised: its own failure
            cause = error.cause if error.cause is not None else error
            if isinstance(cause, StoreError):
                raise StoreError(str(cause)) from None
            self._end(running, "failed", one_line(cause))
            return
        except exceptions.RayError as error:  # its worker or node died on every attempt
            attempts = self.backend.max_retries + 1
            self._end(running, "failed", f"{one_line(error)} (tried {attempts} times)")
            return
        self._done(running, trained)

    def _done(self, running: _InFlight, trained: Trained) -> None:
        result = record(
            self.store, running.run_id, running.job.experiment, trained, running.run_dir
        )
        self.emit(Ended(running.job.index, Outcome(result.status, result.run_id, result)))

    def _end(self, running: _InFlight, status: str, cause: str) -> None:
        self.store.end(running.run_id, status, cause)
        self.emit(Ended(running.job.index, Outcome(status, running.run_id, error=cause)))

    def _stop(self, cause: str) -> None:
        """Cancel every task in flight (a KeyboardInterrupt in its worker); record the ones
        that had finished, mark the others ``interrupted`` (as far as the store can still be
        written). Never a forced cancel: killing the worker of a task Ray has already counted
        as cancelled can crash Ray's own bookkeeping; a task that does not stop is ended by
        the shutdown of a local instance, and its result ignored on a cluster."""
        for ref, running in self.flight.items():
            trained = self._finished(ref)
            if trained is None:
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref)
            with contextlib.suppress(StoreError):
                if trained is not None:
                    self._done(running, trained)
                    continue
                self.store.end(running.run_id, "interrupted", cause)
            self.emit(Ended(running.job.index, Outcome("interrupted", running.run_id, error=cause)))
        self.flight.clear()

    def _finished(self, ref: Any) -> Trained | None:
        """What a task returned, if it finished before it could be cancelled."""
        try:
            return self.ray.get(ref, timeout=0)
        except Exception:
            return None


def _stop_signal(error: BaseException) -> BaseException:
    """The stop a signal raised, also where it came through Ray's own code: a signal handler
    that raises while Ray waits (``ray.wait``, ``ray.get``) surfaces as a ``SystemError``
    caused by it."""
    cause = error.__cause__
    if isinstance(error, SystemError) and isinstance(cause, (Interrupted, KeyboardInterrupt)):
        return cause
    return error
