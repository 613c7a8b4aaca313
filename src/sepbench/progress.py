"""Progress on the terminal, for the CLI: live views on a TTY (rich), plain log lines
otherwise (CI logs, pipes). Both go to stderr, so stdout keeps only the results.

The library never prints: training calls ``on_event`` with :class:`~sepbench.train.ProgressEvent`
and :class:`~sepbench.train.Notice` (:func:`console_progress` renders one run), a sweep with the
events of :mod:`sepbench.backends.base` (:func:`sweep_progress` renders one row per run).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from sepbench.backends.base import (
    Ended,
    Noticed,
    Planned,
    Progressed,
    Started,
    SweepEvent,
    Waiting,
)
from sepbench.summary import result_line
from sepbench.train import EventCallback, Notice, ProgressEvent, TrainEvent

LOG_EVERY_S = 30.0
"""Between validation points, at most one log line per run this often (non-TTY)."""


def describe(event: ProgressEvent) -> str:
    """One line: loss, last validation accuracy (when this is a validation point), throughput."""
    accuracy = "" if event.val_accuracy is None else f" val {event.val_accuracy:.3f}"
    return f"loss {event.loss:.4f}{accuracy} {event.tokens_per_s:,.0f} tok/s"


def log_line(event: ProgressEvent) -> str:
    return f"step {event.step}/{event.steps} {describe(event)} eta {event.eta_s:.0f}s"


@contextmanager
def console_progress(stream: TextIO | None = None) -> Iterator[EventCallback]:
    """Yield an ``on_event`` callback for one run that renders to ``stream`` (default stderr)."""
    stream = stream or sys.stderr
    if not stream.isatty():

        def log(event: TrainEvent) -> None:
            text = event.message if isinstance(event, Notice) else log_line(event)
            print(text, file=stream, flush=True)

        yield log
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

        def update(event: TrainEvent) -> None:
            if isinstance(event, Notice):
                bar.console.print(event.message, markup=False, highlight=False)
                return
            bar.update(bar_id, total=event.steps, completed=event.step, status=describe(event))

        yield update


# -- sweeps --------------------------------------------------------------------------------


@dataclass
class _Row:
    label: str
    status: str = "queued"
    step: int = 0
    steps: int | None = None
    val_accuracy: float | None = None
    eta_s: float | None = None
    logged_at: float = 0.0


class SweepView:
    """The state of every run of a sweep, as the events report it."""

    def __init__(self) -> None:
        self.rows: list[_Row] = []

    def update(self, event: SweepEvent) -> None:
        if isinstance(event, Planned):
            self.rows = [_Row(label) for label in event.labels]
        elif isinstance(event, Started):
            self.rows[event.index].status = "starting"
        elif isinstance(event, Progressed):
            row, progress = self.rows[event.index], event.event
            row.status, row.step, row.steps = "training", progress.step, progress.steps
            row.eta_s = progress.eta_s
            if progress.val_accuracy is not None:
                row.val_accuracy = progress.val_accuracy
        elif isinstance(event, Waiting):
            self.rows[event.index].status = "waiting"
        elif isinstance(event, Ended):
            self.rows[event.index].status = _ended_status(event)
            self.rows[event.index].eta_s = None

    def table(self) -> Table:
        table = Table(box=None, pad_edge=False)
        for header in ("#", "run", "status", "step", "val acc", "eta"):
            table.add_column(header, justify="right" if header != "run" else "left")
        for index, row in enumerate(self.rows, 1):
            table.add_row(
                str(index),
                Text(row.label),
                Text(row.status),
                f"{row.step}/{row.steps}" if row.steps else "",
                "" if row.val_accuracy is None else f"{row.val_accuracy:.3f}",
                "" if row.eta_s is None else f"{row.eta_s:.0f}s",
            )
        return table

    def __rich__(self) -> Table:
        return self.table()


def _ended_status(event: Ended) -> str:
    result = event.outcome.result
    return "served" if result is not None and result.cached else event.outcome.status


@contextmanager
def sweep_progress(
    stream: TextIO | None = None, results: TextIO | None = None
) -> Iterator[Callable[[SweepEvent], None]]:
    """Yield an ``on_event`` callback for a sweep: a live table on a TTY ``stream`` (default
    stderr), else log lines there and one line per finished run on ``results`` (stdout)."""
    stream = stream or sys.stderr
    view = SweepView()
    if stream.isatty():
        with Live(view, console=Console(file=stream), refresh_per_second=4) as live:

            def update(event: SweepEvent) -> None:
                view.update(event)
                if isinstance(event, Noticed):
                    live.console.print(
                        f"[{event.index + 1}] {event.message}", markup=False, highlight=False
                    )

            yield update
        return

    def logged(event: SweepEvent) -> None:
        view.update(event)
        for line, is_result in _log_lines(view, event):
            print(line, file=(results or sys.stdout) if is_result else stream, flush=True)

    yield logged


def _log_lines(view: SweepView, event: SweepEvent) -> list[tuple[str, bool]]:
    """The lines an event adds to a plain log: (text, whether it is a result line)."""
    if isinstance(event, Planned):
        twins = f" ({event.duplicates} duplicate grid points run once)" if event.duplicates else ""
        return [(f"sweep: {len(event.labels)} runs{twins}", False)]
    row = view.rows[event.index]
    prefix = f"[{event.index + 1}/{len(view.rows)}]"
    if isinstance(event, Started):
        return [(f"{prefix} {row.label}: started", False)]
    if isinstance(event, Noticed):
        return [(f"{prefix} {row.label}: {event.message}", False)]
    if isinstance(event, Waiting):
        return [(f"{prefix} {row.label}: another process is training it (run "
                 f"{event.run_id}); its result is collected when it ends", False)]
    if isinstance(event, Progressed):
        now = time.monotonic()
        if event.event.val_accuracy is None and now - row.logged_at < LOG_EVERY_S:
            return []
        row.logged_at = now
        return [(f"{prefix} {log_line(event.event)}", False)]
    outcome = event.outcome
    if outcome.result is not None:
        return [(result_line(outcome.result), True)]
    return [(f"{prefix} {row.label}: {outcome.status}: {outcome.error}", False)]
