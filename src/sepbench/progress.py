"""Training progress on the terminal, for the CLI: a rich progress bar on a TTY, plain log
lines otherwise (CI logs, pipes). Both go to stderr, so stdout keeps only the results.

The library itself never prints; it calls ``on_progress(event)`` (:mod:`sepbench.train`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sepbench.train import ProgressCallback, ProgressEvent


def describe(event: ProgressEvent) -> str:
    """One line: loss, last validation accuracy (when this is a validation point), throughput."""
    accuracy = "" if event.val_accuracy is None else f" val {event.val_accuracy:.3f}"
    return f"loss {event.loss:.4f}{accuracy} {event.tokens_per_s:,.0f} tok/s"


def log_line(event: ProgressEvent) -> str:
    return f"step {event.step}/{event.steps} {describe(event)} eta {event.eta_s:.0f}s"


@contextmanager
def console_progress(stream: TextIO | None = None) -> Iterator[ProgressCallback]:
    """Yield an ``on_progress`` callback that renders to ``stream`` (default stderr)."""
    stream = stream or sys.stderr
    if not stream.isatty():
        yield lambda event: print(log_line(event), file=stream, flush=True)
        return
    columns = (
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(file=stream), transient=False) as bar:
        bar_id = bar.add_task("training", total=None, status="")

        def update(event: ProgressEvent) -> None:
            bar.update(bar_id, total=event.steps, completed=event.step, status=describe(event))

        yield update
