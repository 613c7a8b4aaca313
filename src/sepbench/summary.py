"""One rendering of a run summary: the row schema shared by the CLI (table, CSV) and the HTML
report.

A row summarises runs: one run (``sepbench runs``, :func:`run_rows`), or the seeds of one
configuration (the sweep's table and the report's table, :func:`configuration_rows`; see
:mod:`sepbench.aggregate`). The cells are the same in both: model, training length, status,
steps, wall time, parameters, state size and test accuracy, the last as the mean over seeds with
its 95 % Student-t half-interval (``0.912 ± 0.034``; one seed has none); runs that generated
freely add the ``answer`` accuracy (the final answer after any trace, papers.md §1).
"""

from __future__ import annotations

import csv
import html
import io
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sepbench.aggregate import Estimate, Group, Selection, estimate, group_runs, run_seed
from sepbench.claims import Claim, evaluate_claims
from sepbench.labels import (
    config_summary,
    field_texts,
    format_value,
    label,
    varying_fields,
)
from sepbench.store import RunRecord

if TYPE_CHECKING:
    from sepbench.runner import RunResult


@dataclass(frozen=True)
class Column:
    """A column: the key of its cell in a row (and CSV header), and its displayed header."""

    key: str
    header: str


RUN_COLUMNS = [
    Column("id", "run"),
    Column("task", "task"),
    Column("length", "length"),
    Column("model", "model"),
    Column("status", "status"),
    Column("seed", "seed"),
    Column("test_accuracy", "test accuracy"),
    Column("num_parameters", "params"),
    Column("state_size", "state"),
    Column("steps", "steps"),
    Column("wall_time_s", "wall s"),
    Column("config_hash", "config"),
]

CONFIGURATION_TAIL = [
    Column("length", "train length"),
    Column("seeds", "seeds"),
    Column("status", "status"),
    Column("steps", "steps"),
    Column("wall_time_s", "wall s (mean)"),
    Column("num_parameters", "parameters"),
    Column("state_size", "state size"),
    Column("test_accuracy", "test accuracy (mean ± 95% t interval)"),
    Column("runs", "runs"),
]

ANSWER_COLUMN = Column("test_answer_accuracy", "answer accuracy (final answer, mean ± 95% t)")
ACCURACIES = ("test_accuracy", ANSWER_COLUMN.key)

LINE_AXES = ("model", "task.length", "eval.lengths")


def summary_cells(records: Sequence[RunRecord], *, one_run: bool = False) -> dict[str, str]:
    """The cells every summary row has, over ``records``: a configuration's seeds, or with
    ``one_run`` a single run listed as such (its accuracy without the seed count)."""
    first = records[0]
    group = Group(first.config, list(records))
    statuses = Counter(r.status for r in records)
    return {
        "task": first.task,
        "length": str(first.config["task"]["length"]),
        "model": config_summary(first.config),
        "status": ", ".join(
            status if len(statuses) == 1 else f"{count} {status}"
            for status, count in statuses.items()
        ),
        "steps": _span([r.metrics.get("steps_run") for r in records]),
        "wall_time_s": _mean_text([r.wall_time_s for r in records]),
        "num_parameters": _span([r.num_parameters for r in records]),
        "state_size": _span([r.state_size for r in records]),
        **{
            metric: accuracy_text(group.metric(metric), len(records), one_run=one_run)
            for metric in ACCURACIES
            if metric == "test_accuracy" or group.values(metric)
        },
    }


def accuracy_text(by_length: dict[int, Estimate], seeds: int, *, one_run: bool = False) -> str:
    """``20: 1.000 ± 0.000; 50: 0.912 (1 seed)`` (``one_run``: ``20: 1.000``); a length that
    fewer seeds reached says how many."""
    parts = []
    for length, value in by_length.items():
        text = f"{value.mean:.3f}" if one_run else value.text()
        if value.n < seeds:
            text += f" (n={value.n})"
        parts.append(f"{length}: {text}")
    return "; ".join(parts)


def run_rows(records: Sequence[RunRecord]) -> list[dict[str, str]]:
    """One row per stored run, in :data:`RUN_COLUMNS`."""
    return [
        {
            **summary_cells([r], one_run=True),
            "id": str(r.id),
            "status": r.status,
            "seed": str(run_seed(r.config)),
            "config_hash": r.config_hash,
        }
        for r in records
    ]


def configuration_rows(groups: Sequence[Group]) -> tuple[list[Column], list[dict[str, str]]]:
    """One row per configuration (seeds aggregated): the model, exactly the config fields
    that vary among ``groups``, then :data:`CONFIGURATION_TAIL`."""
    fields = varying_fields([g.config for g in groups], skip=LINE_AXES)
    chosen = sorted({path for g in groups for path in g.chosen})
    columns = [
        Column("model", "model"),
        *[Column(f, f) for f in fields],
        *[Column(f"chosen {path}", f"{path} (chosen on validation, of)") for path in chosen],
        *CONFIGURATION_TAIL,
    ]
    if any(g.values(ANSWER_COLUMN.key) for g in groups):
        columns.insert(-1, ANSWER_COLUMN)
    rows = []
    for group in sorted(groups, key=lambda g: (g.task, label(g.config, fields), g.train_length)):
        rows.append(
            {
                **summary_cells(group.records),
                **field_texts(group.config, fields),
                **chosen_texts(group, chosen),
                "seeds": str(len(group.records)),
                "runs": ", ".join(str(r.id) for r in group.records),
            }
        )
    return columns, rows


def chosen_texts(group: Group, paths: Sequence[str]) -> dict[str, str]:
    """Per chosen field, ``0.003 (of 0.001, 0.003)``: the value chosen on validation and
    every value tried."""
    texts = {}
    for path in paths:
        if path in group.chosen:
            tried = ", ".join(format_value(values[path]) for values, _ in group.candidates)
            texts[f"chosen {path}"] = f"{format_value(group.chosen[path])} (of {tried})"
    return texts


def _span(values: Sequence[Any]) -> str:
    """One value, or ``low–high`` where the runs differ; blank where none has it."""
    present = [v for v in values if v is not None]
    if not present:
        return ""
    low, high = min(present), max(present)
    return format_value(low) if low == high else f"{format_value(low)}–{format_value(high)}"


def _mean_text(values: Sequence[float | None]) -> str:
    present = [v for v in values if v is not None]
    return f"{statistics.fmean(present):.1f}" if present else ""


# -- renderings --------------------------------------------------------------------------------


def text_table(columns: Sequence[Column], rows: Sequence[dict[str, str]]) -> str:
    """A plain aligned text table (pipes and terminals alike)."""
    cells = [[c.header for c in columns]] + [[row.get(c.key, "") for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def csv_text(columns: Sequence[Column], rows: Sequence[dict[str, str]]) -> str:
    """CSV with the column keys as header."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[c.key for c in columns], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def html_table(columns: Sequence[Column], rows: Sequence[dict[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(c.header)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(row.get(c.key, ''))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def sweep_summary(
    records: Sequence[RunRecord],
    claims: Sequence[Claim] = (),
    selection: Selection | None = None,
) -> str:
    """What ``sweep`` prints at the end: the table of configurations (seeds aggregated; with a
    ``selection``, the chosen ones) over the finished ``records``, then one verdict line per
    claim."""
    groups = group_runs(records, selection)
    table = text_table(*configuration_rows(groups)) if groups else "no finished runs"
    verdicts = [result.line() for result in evaluate_claims(claims, records, selection)]
    return "\n".join([table, *verdicts])


def failure_lines(
    failures: Sequence[tuple[dict[str, Any], str, str, str]], configs: Sequence[dict[str, Any]]
) -> list[str]:
    """``failed: lstm w64 L1 · train.lr=0.003 · parity N=50 · seed 2 · 1addccdc: Error: …``
    per (resolved config, config hash, status, cause): labelled by the fields that vary among
    the sweep's ``configs``, the length and the seed."""
    fields = varying_fields(configs, skip=(*LINE_AXES, "train.seed"))
    lines = []
    for config, config_hash, status, cause in failures:
        task = config["task"]
        where = f"{task['name']} N={task['length']} · seed {run_seed(config)} · {config_hash[:8]}"
        lines.append(f"{status}: {label(config, fields)} · {where}: {cause}")
    return lines


def result_line(result: RunResult) -> str:
    """One line for a run as it finishes: id, status, whether trained (a construction: built)
    or served, accuracy."""
    made = "built" if "construction" in result.metrics else "trained"
    source = "served from the store" if result.cached else made
    if result.resumed_from_step:
        source += f", resumed from step {result.resumed_from_step}"
    if result.produced_by:
        source += f", produced by commit {result.produced_by[:12]}, not this one"
    by_length = {int(k): v for k, v in result.metrics.get("test_accuracy", {}).items()}
    by_length = {n: estimate([v]) for n, v in sorted(by_length.items())}
    accuracy = accuracy_text(by_length, 1, one_run=True)
    return (
        f"run {result.run_id} ({result.status}, {source}) config {result.config_hash}: "
        f"test accuracy {{{accuracy}}}"
    )
