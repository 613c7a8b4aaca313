"""The report draws what was run: the HTML table row by row against the store, one line per
configuration, panels per task mode, chance from the task, claims first."""

from __future__ import annotations

import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sepbench.aggregate import group_runs
from sepbench.claims import parse_claims
from sepbench.errors import SepbenchError
from sepbench.labels import model_summary
from sepbench.report import accuracy_figure, figure_metric, write_report
from sepbench.store import Store
from tests.stored_runs import add_run

T95 = {1: 12.7062, 2: 4.3027, 3: 3.1824}  # Student t, two-sided 95 %, from the tables


class Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts (the header row first)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def parse_tables(page: str) -> list[list[dict[str, str]]]:
    parser = Tables()
    parser.feed(page)
    return [[dict(zip(table[0], row)) for row in table[1:]] for table in parser.tables]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "runs.sqlite")


def sweep_like(store: Store) -> None:
    """Two learning rates with 3 and 2 seeds at N = 8 and 16, an LSTM with one seed, one
    failed run."""
    for length in (8, 16):
        for seed, value in enumerate([0.9, 0.8, 1.0]):
            add_run(store, {length: value - length / 100}, train__seed=seed, task__length=length,
                    state_size=10 * length)
        for seed, value in enumerate([0.5, 0.7]):
            add_run(store, {length: value}, train__seed=seed, task__length=length,
                    train__lr=3e-4, state_size=10 * length)
        add_run(store, {length: 0.1}, task__length=length, model__name="lstm", state_size=16)
    add_run(store, None, status="failed", task__length=16, train__seed=9)


def test_every_table_row_matches_the_store(store: Store, tmp_path: Path) -> None:
    sweep_like(store)
    report = write_report(store, tmp_path / "out")
    (table,) = parse_tables(report.html.read_text())
    finished = [r for r in store.runs() if r.status == "done"]
    assert len(table) == len(group_runs(finished)) == 6
    listed = [int(i) for row in table for i in row["runs"].split(", ")]
    assert sorted(listed) == sorted(r.id for r in finished)
    for row in table:
        records = [store.get(int(i)) for i in row["runs"].split(", ")]
        configs = [r.config for r in records]
        assert {model_summary(c["model"]) for c in configs} == {row["model"]}
        assert {c["task"]["length"] for c in configs} == {int(row["train length"])}
        assert {str(c["train"]["lr"]) for c in configs} == {
            {"0.001": "0.001", "0.0003": "0.0003"}[row["train.lr"]]
        }
        assert len({c["train"]["seed"] for c in configs}) == int(row["seeds"])
        assert row["parameters"] == "1000"
        assert row["state size"] == str(records[0].state_size)
        (length,) = {c["task"]["length"] for c in configs}
        values = [r.metrics["test_accuracy"][str(length)] for r in records]
        mean = statistics.fmean(values)
        expected = f"{length}: {mean:.3f} (1 seed)"
        if len(values) > 1:
            half = T95[len(values) - 1] * statistics.stdev(values) / len(values) ** 0.5
            expected = f"{length}: {mean:.3f} ± {half:.3f}"
        assert row["test accuracy (mean ± 95% t interval)"] == expected


def test_runs_differing_only_in_lr_give_two_lines_and_two_rows(
    store: Store, tmp_path: Path
) -> None:
    for seed in (0, 1):
        add_run(store, {8: 0.9}, train__seed=seed)
        add_run(store, {8: 0.4}, train__seed=seed, train__lr=3e-4)
    groups = group_runs(store.runs())
    figure = accuracy_figure("index_lookup", groups)
    (axes,) = figure.axes
    labels = axes.get_legend_handles_labels()[1]
    assert labels == [
        "chance 0.125",
        "transformer w8 L1 · train.lr=0.001 (n=2)",
        "transformer w8 L1 · train.lr=0.0003 (n=2)",
    ]
    (table,) = parse_tables(write_report(store, tmp_path / "out").html.read_text())
    assert [row["train.lr"] for row in table] == ["0.0003", "0.001"]


def test_runs_differing_only_in_mode_get_a_panel_each_with_its_own_chance(
    store: Store, tmp_path: Path
) -> None:
    for cot in (False, True):
        add_run(store, {4: 0.5}, task__name="parity", task__length=4,
                task__params={"cot": cot})
    figure = accuracy_figure("parity", group_runs(store.runs()))
    assert [a.get_title() for a in figure.axes] == ["parity: cot=false", "parity: cot=true"]
    chance = [[line.get_ydata()[0] for line in a.get_lines() if line.get_linestyle() == "--"]
              for a in figure.axes]
    assert chance == [[0.5], [2.0**-4]]
    assert [len(a.get_legend_handles_labels()[1]) for a in figure.axes] == [2, 2]
    (table,) = parse_tables(write_report(store, tmp_path / "out").html.read_text())
    assert sorted(row["task.params.cot"] for row in table) == ["false", "true"]


def test_generating_runs_draw_the_answer_metric_in_one_colour_per_model_across_panels(
    store: Store, tmp_path: Path
) -> None:
    """Wen et al.'s picture (papers.md §1): the label after the trace against N, one panel per
    mode, chance 1/2 in each, a model's line the same colour in every panel; the table gives
    the whole-trace exact match beside it."""
    for mode in ("cot", "retrieval"):
        for model, answer in (("transformer", 0.9), ("lstm", 0.6)):
            for seed in (0, 1):
                add_run(store, {6: 0.1}, answer={6: answer}, task__name="is_tree",
                        task__length=6, task__params={"mode": mode}, model__name=model,
                        train__seed=seed)
    groups = group_runs(store.runs())
    assert figure_metric(groups) == "test_answer_accuracy"
    figure = accuracy_figure("is_tree", groups, metric="test_answer_accuracy")
    assert "answer accuracy" in figure.axes[0].get_ylabel()
    colours = []
    for axes in figure.axes:
        drawn = [line for line in axes.get_lines() if line.get_marker() == "o"]
        chance = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
        assert [line.get_ydata()[0] for line in chance] == [0.5]
        assert sorted(line.get_ydata()[0] for line in drawn) == [0.6, 0.9]
        colours.append({line.get_ydata()[0]: line.get_color() for line in drawn})
    assert colours[0] == colours[1] and len(set(colours[0].values())) == 2
    report = write_report(store, tmp_path / "out")
    (table,) = parse_tables(report.html.read_text())
    assert {row["answer accuracy (final answer, mean ± 95% t)"] for row in table} == {
        "6: 0.900 ± 0.000", "6: 0.600 ± 0.000"
    }
    assert {row["test accuracy (mean ± 95% t interval)"] for row in table} == {"6: 0.100 ± 0.000"}
    add_run(store, {6: 0.1}, task__name="is_tree", task__length=6, task__params={"mode": "cot"})
    assert figure_metric(group_runs(store.runs())) == "test_accuracy"  # one teacher-forced run


def test_the_report_opens_with_the_claims_and_draws_state_size_for_lookup(
    store: Store, tmp_path: Path
) -> None:
    sweep_like(store)
    declared = parse_claims([
        {"text": "Transformer at lr 1e-3 near-perfect", "paper": "§2",
         "where": {"model": "transformer", "train.lr": 1e-3}, "op": ">=", "value": 0.7},
        {"text": "LSTM low", "paper": "§2", "where": {"model": "lstm"}, "at": "max",
         "op": "<=", "value": 0.3},
    ])
    report = write_report(store, tmp_path / "out", claims=declared)
    page = report.html.read_text()
    assert page.index("<h2>Claims</h2>") < page.index("<h2>index_lookup</h2>")
    claims_table, _ = parse_tables(page)
    assert [row["verdict"] for row in claims_table] == ["held", "not enough runs"]
    assert claims_table[0]["paper"] == "Bhattamishra et al. 2024 §2"
    assert "8: 0.820 ± 0.248 (n=3)" in claims_table[0]["measured"]
    assert 'href="https://arxiv.org/abs/2406.09347"' in page
    stems = {p.stem for p in report.figures}
    assert stems == {"index_lookup_accuracy", "index_lookup_state_size", "index_lookup_curves"}


def test_a_task_only_run_selection_without_finished_runs_is_an_error(
    store: Store, tmp_path: Path
) -> None:
    add_run(store, None, status="failed")
    with pytest.raises(SepbenchError, match="no finished runs"):
        write_report(store, tmp_path / "out")


def test_runs_scored_beyond_training_add_the_heatmap_and_the_probe(
    store: Store, tmp_path: Path
) -> None:
    """papers.md §3: the OOD heat-map over every (task, mode) and model, and the probe (every
    model answering directly); a report without such runs has neither."""
    for seed in (0, 1):
        for model in ("lstm", "gru"):
            for cot in (False, True):
                ood = 0.9 if model == "lstm" else 0.5
                add_run(store, {4: 1.0, 8: ood}, extra={"ood_accuracy": ood}, train__seed=seed,
                        model__name=model, task__name="parity", task__length=4,
                        task__params={"cot": cot})
    report = write_report(store, tmp_path / "out")
    names = {path.name for path in report.figures}
    assert {"length_generalisation_ood_heatmap.png",
            "length_generalisation_recurrence_probe.svg"} <= names
    assert "Length generalisation" in report.html.read_text()
    plain = Store(tmp_path / "plain.sqlite")
    sweep_like(plain)
    page = write_report(plain, tmp_path / "plain").html.read_text()
    assert "Length generalisation" not in page
