"""Stopping on a signal: SIGINT (Ctrl-C), SIGTERM (``kill``, job schedulers) and SIGHUP (the
terminal went away) stop a sweep cleanly instead of killing it mid-write.

In the sweep's own process, :func:`stop_on_signals` turns the first of them into
:class:`~sepbench.runner.Interrupted` (later ones are ignored while the sweep stops its
workers and marks their runs). A pool worker (:func:`worker_signals`) ignores SIGINT and SIGHUP,
which a terminal sends to the whole process group, and stops on the SIGTERM its parent sends;
on Linux it also gets that SIGTERM from the kernel when the parent dies, even by SIGKILL
(:mod:`sepbench.backends.worker`), so no worker outlives its sweep.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from sepbench.runner import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number."""
    return 128 + signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    ignore_stop_signals()
    raise Interrupted(signum)


def ignore_stop_signals() -> None:
    """While a sweep stops its workers, further stop signals must not cut that short."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, the first stop signal raises :class:`Interrupted` in the main thread.

    Outside the main thread (where Python cannot handle signals) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def worker_signals() -> None:
    """A pool worker: the parent decides when to stop (SIGTERM); terminal signals are its."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_interrupted)
