"""The one-worker path: every run in the sweep's own process, one after another.

No process to start (a sweep served from the store returns at once), and a stop signal
reaches the training loop directly: the run in flight is marked ``interrupted`` by
:func:`sepbench.runner.run` itself.
"""

from __future__ import annotations

import time
from pathlib import Path

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
)
from sepbench.backends.base import wrap as wrap_event
from sepbench.runner import Interrupted, run
from sepbench.store import Store, StoreError


class InProcess:
    """Run jobs in this process, with its torch threads as they are set."""

    def __init__(self, runner: Runner = run) -> None:
        self.runner = runner

    def execute(self, jobs: list[Job], store_path: Path, emit: Emit) -> None:
        store, queue = Store(store_path), JobQueue(jobs)
        while queue:
            job = queue.take()
            if job is None:
                time.sleep(queue.wait_s())
                continue
            emit(Started(job.index))
            try:
                outcome = run_job(
                    job, store, lambda event, i=job.index: emit(wrap_event(i, event)), self.runner
                )
            except (Interrupted, KeyboardInterrupt) as stop:
                run_id = own_row(store, job, "interrupted")
                emit(Ended(job.index, Outcome("interrupted", run_id, error=str(stop) or "stopped")))
                raise
            if outcome.status == "busy":
                queue.defer(job, outcome, emit)
            elif outcome.fatal:
                raise StoreError(outcome.error)
            else:
                emit(Ended(job.index, outcome))
