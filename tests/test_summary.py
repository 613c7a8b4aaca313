"""One run-summary schema: the CLI's run list (table, CSV), the sweep's table and its claims."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from sepbench.aggregate import Selection, group_runs
from sepbench.claims import parse_claims
from sepbench.runner import RunResult
from sepbench.store import Store
from sepbench.summary import (
    RUN_COLUMNS,
    configuration_rows,
    csv_text,
    html_table,
    result_line,
    run_rows,
    sweep_summary,
    text_table,
)
from tests.stored_runs import add_run


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "runs.sqlite")


def test_a_run_row_lists_one_run(store: Store) -> None:
    record = add_run(store, {8: 0.75}, train__seed=4, state_size=123, steps=7)
    (row,) = run_rows([record])
    assert row == {
        "id": str(record.id), "task": "index_lookup", "length": "8",
        "model": "transformer w8 L1", "status": "done", "seed": "4", "test_accuracy": "8: 0.750",
        "num_parameters": "1000", "state_size": "123", "steps": "7", "wall_time_s": "2.0",
        "config_hash": record.config_hash,
    }


def test_a_failed_run_is_listed_with_blank_results(store: Store) -> None:
    (row,) = run_rows([add_run(store, None, status="failed")])
    assert row["status"] == "failed" and row["test_accuracy"] == "" and row["steps"] == ""


def test_configuration_rows_aggregate_seeds_and_show_what_varies(store: Store) -> None:
    for seed, steps in enumerate([10, 30]):
        add_run(store, {8: 0.5 + seed / 10}, train__seed=seed, steps=steps)
    add_run(store, {8: 0.2}, train__lr=3e-4, status="diverged")
    columns, rows = configuration_rows(group_runs(store.runs()))
    assert [c.key for c in columns][:2] == ["model", "train.lr"]
    assert [(r["train.lr"], r["seeds"], r["status"], r["steps"]) for r in rows] == [
        ("0.0003", "1", "diverged", "10"),
        ("0.001", "2", "done", "10–30"),
    ]
    assert rows[1]["test_accuracy"] == "8: 0.550 ± 0.635"
    assert rows[0]["test_accuracy"] == "8: 0.200 (1 seed)"


def test_the_three_renderings_share_one_schema(store: Store) -> None:
    rows = run_rows([add_run(store, {8: 0.5}), add_run(store, {8: 0.25}, train__seed=1)])
    text = text_table(RUN_COLUMNS, rows).splitlines()
    assert text[0].split()[:3] == ["run", "task", "length"] and len(text) == 4
    parsed = list(csv.DictReader(io.StringIO(csv_text(RUN_COLUMNS, rows))))
    assert parsed == rows
    page = html_table(RUN_COLUMNS, rows)
    assert page.count("<tr>") == 3 and "<td>8: 0.250</td>" in page


def test_the_result_line_says_whether_trained_or_served(tmp_path: Path) -> None:
    result = RunResult(3, "abc", "done", {"test_accuracy": {8: 0.5, 16: 0.25}}, True, tmp_path)
    assert result_line(result) == (
        "run 3 (done, served from the store) config abc: test accuracy {8: 0.500; 16: 0.250}"
    )


def test_the_sweep_summary_ends_with_a_verdict_per_claim(store: Store) -> None:
    records = [add_run(store, {8: 0.9}, train__seed=s) for s in (0, 1)]
    declared = parse_claims([
        {"text": "high", "paper": "§2", "op": ">=", "value": 0.8},
        {"text": "low", "paper": "§2", "op": "<", "value": 0.5},
    ])
    lines = sweep_summary(records, declared).splitlines()
    assert lines[-2].startswith("claim held: high (§2; test_accuracy mean >= 0.8 at every")
    assert lines[-1].startswith("claim not held: low")
    assert "8: 0.900 ± 0.000 (n=2)" in lines[-2]


def test_the_table_lists_the_chosen_value_and_every_value_tried(store: Store) -> None:
    for seed in (0, 1):
        add_run(store, {8: 0.9}, val=0.4, train__lr=1e-3, train__seed=seed)
        add_run(store, {8: 0.2}, val=0.6, train__lr=3e-3, train__seed=seed)
    text = sweep_summary(store.runs(), selection=Selection(("train.lr",)))
    header, _, row = text.splitlines()
    assert "train.lr (chosen on validation, of)" in header
    assert "0.003 (of 0.001, 0.003)" in row and "8: 0.200 ± 0.000" in row
