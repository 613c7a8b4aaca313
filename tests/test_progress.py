"""The terminal renderers: a live table of runs on a TTY, plain log lines otherwise."""

from __future__ import annotations

import io
from pathlib import Path

from sepbench.backends.base import (
    Ended,
    Noticed,
    Outcome,
    Planned,
    Progressed,
    Started,
    Waiting,
)
from sepbench.progress import SweepView, console_progress, sweep_progress
from sepbench.runner import RunResult
from sepbench.train import Notice, ProgressEvent


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def progress(step: int, accuracy: float | None) -> ProgressEvent:
    return ProgressEvent(step, 100, 0.5, accuracy, 1000.0, 42.0, 1e-3)


RESULT = RunResult(7, "abc", "done", {"test_accuracy": {8: 0.75}}, False, Path("."), 50)
EVENTS = [
    Planned(["lstm w8", "mamba w8"], duplicates=1),
    Started(0),
    Progressed(0, progress(10, 0.25)),
    Progressed(0, progress(20, None)),
    Noticed(1, "resuming from the checkpoint at step 50"),
    Ended(0, Outcome("done", 7, RESULT)),
    Ended(1, Outcome("failed", None, error="RuntimeError: boom")),
]


def test_the_view_follows_the_events() -> None:
    view = SweepView()
    for event in EVENTS[:4]:
        view.update(event)
    row = view.rows[0]
    assert (row.status, row.step, row.steps, row.val_accuracy, row.eta_s) == (
        "training", 20, 100, 0.25, 42.0
    )
    assert view.rows[1].status == "queued"
    view.update(Waiting(1, run_id=3))
    assert view.rows[1].status == "waiting"
    for event in EVENTS[4:]:
        view.update(event)
    assert [r.status for r in view.rows] == ["done", "failed"]


def test_plain_log_lines_when_not_a_terminal() -> None:
    log, results = io.StringIO(), io.StringIO()
    with sweep_progress(log, results) as on_event:
        on_event(EVENTS[0])
        assert log.getvalue() == "sweep: 2 runs (1 duplicate grid points run once)\n"
        for event in EVENTS[1:]:
            on_event(event)
    # step 20 has no validation and comes within 30 s of the last line: left out
    assert log.getvalue().splitlines()[1:] == [
        "[1/2] lstm w8: started",
        "[1/2] step 10/100 loss 0.5000 val 0.250 1,000 tok/s eta 42s",
        "[2/2] mamba w8: resuming from the checkpoint at step 50",
        "[2/2] mamba w8: failed: RuntimeError: boom",
    ]
    assert results.getvalue() == (
        "run 7 (done, trained, resumed from step 50) config abc: test accuracy {8: 0.750}\n"
    )


def test_a_live_table_with_one_row_per_run_on_a_terminal() -> None:
    terminal = Terminal()
    with sweep_progress(terminal) as on_event:
        for event in EVENTS:
            on_event(event)
    screen = terminal.getvalue()
    for text in ("lstm w8", "mamba w8", "status", "val acc", "done", "failed", "20/100"):
        assert text in screen
    assert "resuming from the checkpoint at step 50" in screen


def test_one_run_logs_progress_and_notices() -> None:
    log = io.StringIO()
    with console_progress(log) as on_event:
        on_event(Notice("checkpoint x cannot be trusted (truncated); training restarts"))
        on_event(progress(10, 0.5))
    assert log.getvalue().splitlines() == [
        "checkpoint x cannot be trusted (truncated); training restarts",
        "step 10/100 loss 0.5000 val 0.500 1,000 tok/s eta 42s",
    ]
