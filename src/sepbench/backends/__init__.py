"""Where runs execute: this process (:class:`InProcess`, one worker) or a local pool of worker
processes (:class:`Pool`), behind one interface (:class:`~sepbench.backends.base.Backend`).

A backend receives :class:`~sepbench.backends.base.Job` s and reports through one event
callback; :func:`sepbench.sweep.run_all` picks the backend, skips what the store already has and
turns the events into a :class:`~sepbench.sweep.SweepResult`.
"""

from sepbench.backends.base import Backend, Job, Outcome
from sepbench.backends.inprocess import InProcess
from sepbench.backends.pool import Pool

__all__ = ["Backend", "InProcess", "Job", "Outcome", "Pool"]
