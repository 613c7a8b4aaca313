"""Where runs execute: this process (:class:`InProcess`, one worker), a local pool of worker
processes (:class:`Pool`) or Ray tasks on a local instance or a cluster
(:class:`sepbench.backends.ray.Ray`), behind one interface
(:class:`~sepbench.backends.base.Backend`).

A backend receives :class:`~sepbench.backends.base.Job` s and reports through one event
callback; :func:`sepbench.sweep.run_all` picks the backend, skips what the store already has and
turns the events into a :class:`~sepbench.sweep.SweepResult`.
"""

from __future__ import annotations

from pathlib import Path

from sepbench.backends.base import Backend, Job, Outcome
from sepbench.backends.inprocess import InProcess
from sepbench.backends.pool import Pool
from sepbench.errors import SepbenchError, check_choice

__all__ = ["BACKENDS", "Backend", "InProcess", "Job", "Outcome", "Pool", "choose"]

BACKENDS = ("local", "ray")


def choose(
    name: str,
    *,
    workers: int | None = None,
    address: str | None = None,
    max_retries: int | None = None,
    checkpoints: Path | None = None,
) -> Backend | None:
    """The backend ``--backend NAME`` asks for, its options checked: None for ``local``
    (:func:`~sepbench.sweep.run_all` runs ``workers`` processes), a
    :class:`~sepbench.backends.ray.Ray` for ``ray`` (Ray is imported only then)."""
    check_choice("sweep", "--backend", name, BACKENDS)
    if name == "local":
        given = [flag for flag, value in (("--address", address), ("--max-retries", max_retries),
                                          ("--checkpoints", checkpoints)) if value is not None]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise SepbenchError(f"sweep: {' and '.join(given)} {verb} only to --backend ray")
        return None
    from sepbench.backends.ray import Ray

    return Ray(
        address,
        num_cpus=workers,
        max_retries=2 if max_retries is None else max_retries,
        checkpoints=checkpoints,
    )
