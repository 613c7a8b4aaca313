"""The local pool: worker processes on this machine, one run at a time each.

A small pool of our own rather than ``concurrent.futures.ProcessPoolExecutor``, which breaks
as a whole when one worker dies. Each worker is a fresh Python process
(:mod:`sepbench.backends.worker`) with its own pipe to the parent: jobs go down it, and events
come back (progress, notices, the run's end). There is no queue shared between workers, so a
worker killed in the middle of a message corrupts nothing but its own pipe, and a closed pipe
is how the parent learns that a worker is gone.

- A worker that dies (SIGKILL, the kernel's OOM killer) ends its run as ``failed``, "worker
  killed by signal 9"; a new worker takes its place and the sweep goes on.
- A stop (:class:`~sepbench.runner.Interrupted` in the parent, see
  :mod:`sepbench.backends.signals`): every worker gets SIGTERM, marks its run ``interrupted``
  and exits; one still alive after :data:`STOP_GRACE_S` is killed, and its run marked
  ``interrupted`` by the parent.
- The parent dies (even by SIGKILL): on Linux the kernel sends each worker SIGTERM, from the
  worker's first instant on, and it stops as above; elsewhere a worker notices at its next log
  point that its parent changed.

Each worker computes with the same number of torch threads (the sweep divides torch's threads
equally among the workers asked for), so a run resumed by a sweep with as many workers computes
with the thread count it started with.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing import connection
from pathlib import Path
from typing import Any

from sepbench.backends import worker as worker_script
from sepbench.backends.base import (
    Emit,
    Ended,
    Job,
    JobQueue,
    Outcome,
    Runner,
    Started,
    own_row,
    run_job,
    wrap,
)
from sepbench.backends.signals import ignore_stop_signals, worker_signals
from sepbench.runner import Interrupted, run
from sepbench.store import Store, StoreError
from sepbench.train import TrainEvent

STOP_GRACE_S = 5.0
"""How long stopped workers get to mark their runs and exit before they are killed."""


@dataclass
class _Worker:
    process: subprocess.Popen
    conn: connection.Connection
    job: Job | None = None


class Pool:
    """``workers`` processes with ``threads`` torch threads each, running ``runner`` (a
    module-level function, imported by name in the workers)."""

    def __init__(self, workers: int, threads: int, runner: Runner = run) -> None:
        self.size, self.threads, self.runner = workers, threads, runner

    def execute(self, jobs: list[Job], store_path: Path, emit: Emit) -> None:
        queue, workers = JobQueue(jobs), []
        store = Store(store_path)
        try:
            while queue or any(w.job for w in workers):
                self._assign(queue, workers, store_path, emit)
                self._receive(queue, workers, store, emit)
        except BaseException as stop:
            ignore_stop_signals()
            cause = str(stop) if isinstance(stop, Interrupted) else "the sweep stopped"
            _stop(workers, store, cause, emit)
            raise
        _close(workers)

    def _assign(
        self, queue: JobQueue, workers: list[_Worker], store_path: Path, emit: Emit
    ) -> None:
        """Hand ready jobs to idle workers, starting workers up to the pool's size."""
        while self._has_room(workers) and (job := queue.take()) is not None:
            idle = next((w for w in workers if w.job is None), None)
            if idle is None:
                idle = self._start(store_path)
                workers.append(idle)
            idle.conn.send(job)
            idle.job = job
            emit(Started(job.index))

    def _has_room(self, workers: list[_Worker]) -> bool:
        return len(workers) < self.size or any(w.job is None for w in workers)

    def _start(self, store_path: Path) -> _Worker:
        """A worker process, told where the store is, how many threads, which runner."""
        ours, theirs = connection.Pipe()
        process = subprocess.Popen(
            [sys.executable, worker_script.__file__, str(os.getpid()), str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        ours.send(sys.path)  # first, so that the runner's module is found
        ours.send((str(store_path), self.threads, _name(self.runner)))
        return _Worker(process, ours)

    def _receive(
        self, queue: JobQueue, workers: list[_Worker], store: Store, emit: Emit
    ) -> None:
        """Wait for messages or a worker's exit (at most until a deferred job is due)."""
        timeout = queue.wait_s() if queue.deferred and self._has_room(workers) else None
        pipes = {w.conn: w for w in workers}
        for ready in connection.wait(list(pipes), timeout=timeout):
            if not _read(pipes[ready], queue, emit):
                _bury(pipes[ready], workers, store, emit)


def _name(runner: Runner) -> str:
    return f"{runner.__module__}:{runner.__qualname__}"


def _read(worker: _Worker, queue: JobQueue, emit: Emit) -> bool:
    """Handle every message waiting on the worker's pipe; False once the pipe is closed."""
    try:
        while worker.conn.poll():
            kind, payload = worker.conn.recv()
            if kind == "event":
                emit(wrap(worker.job.index, payload))
                continue
            job, worker.job = worker.job, None
            if payload.status == "busy":
                queue.defer(job, payload, emit)
            elif payload.fatal:
                raise StoreError(payload.error)
            else:
                emit(Ended(job.index, payload))
    except (EOFError, OSError):
        return False
    return True


def _bury(worker: _Worker, workers: list[_Worker], store: Store, emit: Emit) -> None:
    """A worker's pipe closed: it exited; its run, if it had one, failed with the cause."""
    _reap(worker.process)
    workers.remove(worker)
    worker.conn.close()
    if worker.job is None:
        return
    code = worker.process.returncode or 0
    cause = f"worker killed by signal {-code}" if code < 0 else f"worker exited with code {code}"
    closed = _abandon(store, worker.process.pid, "failed", cause)
    emit(Ended(worker.job.index, Outcome("failed", closed[-1] if closed else None, error=cause)))


def _reap(process: subprocess.Popen) -> None:
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _abandon(store: Store, pid: int, status: str, cause: str) -> list[int]:
    """Close a gone worker's rows; when the store itself cannot be written, leave them (the
    next claim of their configs finds their process dead)."""
    try:
        return store.abandon(pid, status, cause)
    except StoreError:
        return []


def _stop(workers: list[_Worker], store: Store, cause: str, emit: Emit) -> None:
    """SIGTERM every worker; collect how their runs ended; kill the ones that do not exit."""
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while any(w.process.poll() is None for w in workers) and time.monotonic() < deadline:
        pipes = {w.conn: w for w in workers if not w.conn.closed}
        for ready in connection.wait(list(pipes), timeout=0.1):
            _drain_ends(pipes[ready], emit)
    for worker in workers:
        _drain_ends(worker, emit)
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait()
        if worker.job is not None:
            closed = _abandon(store, worker.process.pid, "interrupted", cause)
            outcome = Outcome("interrupted", closed[-1] if closed else None, error=cause)
            emit(Ended(worker.job.index, outcome))
        if not worker.conn.closed:
            worker.conn.close()
    workers.clear()


def _drain_ends(worker: _Worker, emit: Emit) -> None:
    """Read what a stopping worker sent; pass on how its run ended."""
    try:
        while not worker.conn.closed and worker.conn.poll():
            kind, payload = worker.conn.recv()
            if kind == "ended" and worker.job is not None:
                emit(Ended(worker.job.index, payload))
                worker.job = None
    except Exception:  # a pipe cut mid-message by the stop: what is left is not readable
        worker.conn.close()


def _close(workers: list[_Worker]) -> None:
    """Ask idle workers to exit; they have nothing left to do."""
    for worker in workers:
        with contextlib.suppress(OSError):
            worker.conn.send(None)
    for worker in workers:
        _reap(worker.process)
        worker.conn.close()


# -- the worker process --------------------------------------------------------------------


def serve(fd: int, parent: int) -> None:
    """A worker's life after :mod:`sepbench.backends.worker`: run the jobs the parent sends
    on pipe ``fd`` until it sends None or stops us.

    It ends with ``os._exit``: the interpreter's own shutdown (collecting torch's objects)
    takes seconds, and a stopped worker must be gone at once.
    """
    worker_signals()
    conn = connection.Connection(fd)
    code = 1  # the parent reports "worker exited with code 1" for its run
    try:
        _serve(conn, parent)
        code = 0
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve(conn: connection.Connection, parent: int) -> None:
    job = store = None
    try:
        sys.path[:] = conn.recv()
        store_path, threads, runner_name = conn.recv()
        import torch

        torch.set_num_threads(threads)
        module, _, name = runner_name.partition(":")
        runner = getattr(importlib.import_module(module), name)
        store = Store(store_path)
        while (job := conn.recv()) is not None:
            conn.send(("ended", run_job(job, store, _relay(conn, parent), runner)))
            job = None
    except Interrupted as stop:
        if job is not None:
            run_id = own_row(store, job, "interrupted")
            _send(conn, ("ended", Outcome("interrupted", run_id, error=str(stop))))
    except StoreError as error:
        _send(conn, ("ended", Outcome("failed", error=str(error), fatal=True)))
    except (EOFError, OSError):
        return


def _send(conn: connection.Connection, message: tuple[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.send(message)


def _relay(conn: connection.Connection, parent: int) -> Any:
    """Training events to the parent; a parent gone (outside Linux) stops the run."""

    def send(event: TrainEvent) -> None:
        if os.getppid() != parent:
            raise Interrupted(signal.SIGHUP)
        conn.send(("event", event))

    return send
