"""sepbench critical (src/sepbench/critical.py, critical_report.py): the search on a fake
trainer, the fit's choice, the search through the store, the command end to end, the presets."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sepbench import critical
from sepbench.config import experiment_from_dict, set_dotted
from sepbench.critical import CriticalResult, Search, fit
from sepbench.critical_report import write_report
from sepbench.errors import SepbenchError
from sepbench.runner import RunResult, result_from_record, run
from sepbench.store import Store
from tests.test_cli import sepbench

# -- the search on a fake trainer (a function width -> accuracy) -------------------------------


def searched(accuracy: Callable[[int], float], **options: Any) -> tuple[Search, list[int]]:
    """Run a search to its end against ``accuracy``; the search and the widths in probe order."""
    options = {"ladder": [4, 8, 16, 32, 64], "target": 0.9, "step": 4, **options}
    search, order = Search(**options), []
    while (width := search.next_width()) is not None:
        assert width not in order, "a width is measured twice"
        order.append(width)
        search.record(width, accuracy(width))
    return search, order


def threshold(at: int) -> Callable[[int], float]:
    return lambda width: 0.95 if width >= at else 0.5


def test_brackets_on_the_ladder_then_bisects_between_the_rungs() -> None:
    search, order = searched(threshold(21))
    assert order == [4, 8, 16, 32, 64, 24, 20]  # rungs, the check above, bisection of 20..28
    assert (search.critical, search.lower, search.non_monotone) == (24, 20, [])


def test_without_a_step_the_ladder_is_the_resolution() -> None:
    search, order = searched(threshold(21), step=None, confirm=False)
    assert order == [4, 8, 16, 32]
    assert (search.critical, search.lower) == (32, 16)


def test_the_smallest_rung_passing_is_an_upper_bound_only() -> None:
    search, order = searched(threshold(1))
    assert order == [4, 8]
    assert (search.critical, search.lower) == (4, 0)
    assert critical.critical_text(cell_of(search)) == "≤ 4"


def test_no_rung_passing_is_not_reached() -> None:
    search, order = searched(threshold(1000))
    assert order == [4, 8, 16, 32, 64]
    assert search.done and search.critical is None


def test_a_larger_width_failing_after_a_smaller_one_passed_is_recorded() -> None:
    def bumpy(width: int) -> float:
        return 0.2 if width < 8 else 0.5 if width == 16 else 0.95

    search, order = searched(bumpy, step=2)
    assert order[:3] == [4, 8, 16]  # 8 passes, the check at 16 fails
    assert search.non_monotone == [(8, 16)]
    assert search.critical == 8 and search.lower == 6
    row = critical.rows(result_of([cell_of(search)]))[0]
    assert "NON-MONOTONE: 8 passes, 16 fails" in row["note"]


def test_widths_below_the_shorter_lengths_critical_width_are_not_trained() -> None:
    search, order = searched(threshold(14), step=2, fails_below=12)
    assert order == [16, 32, 14, 12]
    assert (search.critical, search.lower) == (14, 12)


def test_the_probes_grow_with_the_log_of_the_bracket() -> None:
    ladder = [4, 8, 16, 32, 64, 128, 256]
    search, order = searched(threshold(100), ladder=ladder, step=1)
    assert search.critical == 100
    assert len(order) <= len(ladder) + 1 + math.ceil(math.log2(64))


@settings(max_examples=200, deadline=None)
@given(
    at=st.integers(1, 300),
    step=st.sampled_from([None, 1, 2, 4, 8]),
    confirm=st.booleans(),
)
def test_a_monotone_trainer_gets_the_smallest_passing_width(
    at: int, step: int | None, confirm: bool
) -> None:
    """Under monotonicity the answer is the smallest width the search may try that passes:
    a rung, or a multiple of the step below the top rung."""
    ladder = [4, 8, 16, 32, 64, 128, 256]
    search, _ = searched(threshold(at), ladder=ladder, step=step, confirm=confirm)
    allowed = set(ladder) | (set(range(step, ladder[-1], step)) if step else set())
    passing = [w for w in allowed if w >= at]
    assert search.critical == (min(passing) if passing else None)
    assert search.non_monotone == []


def cell_of(search: Search, family: str = "lstm L1", length: int = 10) -> critical.Cell:
    probes = [
        critical.Probe(w, a, [a, a], [1, 2], 2 * w) for w, a in sorted(search.measured.items())
    ]
    outcome = "found" if search.critical else "not reached"
    state = 2 * search.critical if search.critical else None
    return critical.Cell(
        family, length, outcome, search.critical, search.lower, state, probes,
        search.non_monotone,
    )


def result_of(cells: list[critical.Cell], **options: Any) -> CriticalResult:
    spec = critical.CriticalSpec(widths=[4, 8, 16, 32, 64], step=4, **options)
    return CriticalResult("fake", spec, cells)


# -- the fit -----------------------------------------------------------------------------------

LENGTHS = [10, 20, 50, 100, 200, 400]


def test_log_shaped_critical_widths_choose_the_log_fit() -> None:
    noise = np.random.default_rng(0).normal(0, 0.3, len(LENGTHS))
    found = fit(LENGTHS, 6 * np.log2(LENGTHS) - 5 + noise)
    assert found is not None and found.form == "log"
    assert found.a == pytest.approx(6, abs=0.3) and found.b == pytest.approx(-5, abs=2)
    assert found.loo_rmse["log"] < found.loo_rmse["linear"]
    assert found.text().startswith("6") and "log2 N" in found.text()


def test_linear_shaped_critical_widths_choose_the_linear_fit() -> None:
    noise = np.random.default_rng(1).normal(0, 1.0, len(LENGTHS))
    found = fit(LENGTHS, 0.6 * np.asarray(LENGTHS) + 8 + noise)
    assert found is not None and found.form == "linear"
    assert found.a == pytest.approx(0.6, abs=0.02)
    assert found(np.array([1000]))[0] == pytest.approx(608, rel=0.05)


def test_fewer_than_three_lengths_are_not_fitted() -> None:
    assert fit([10, 20], [4, 8]) is None
    assert fit([10, 10, 20], [4, 5, 8]) is None


# -- the search through the store, with a fake runner ------------------------------------------

SPEC = {
    "base": {
        "task": {"name": "index_lookup", "params": {"vocab_size": 8, "max_length": 32}},
        "train": {"steps": 10, "batch_size": 8, "lr": 0.001, "val_interval": 5},
        "eval": {"examples": 16},
        "device": "cpu",
    },
    "grid": {
        "variants": [
            {"model": {"name": "transformer", "width": 8, "layers": 1}},
            {"model": {"name": "lstm", "width": 8, "layers": 1}},
        ],
        "task.length": [8, 16, 32],
    },
    "critical": {"widths": [4, 8, 16, 32], "step": 4, "seeds": 2},
}


def truth(experiment: Any) -> float:
    """The fake trainer: the Transformer's critical width grows with log N (8 at N = 8, 12 at
    16, 16 at 32), the LSTM's with N (12, 20, 28); seed 1 a little better than seed 0."""
    width, n, seed = experiment.model.width, experiment.task.length, experiment.train.seed
    needed = 4 * math.log2(n) - 4 if experiment.model.name == "transformer" else n / 2 + 4
    return (0.95 if width >= needed else 0.3) + 0.02 * seed


def fake_runner(calls: list[Any]) -> Callable[..., RunResult]:
    """Stores a finished run with ``truth`` as its validation accuracy, without training."""

    def runner(experiment: Any, *, store: Store, **_: Any) -> RunResult:
        calls.append(experiment)
        config_hash = experiment.config_hash()
        run_id = store.start(config_hash, experiment.resolved(), {"device": "cpu"})
        width, n = experiment.model.width, experiment.task.length
        state = 2 * width * (n + 1) if experiment.model.name == "transformer" else 2 * width
        metrics = {"best_val_accuracy": truth(experiment), "steps_run": 1}
        info = {"num_parameters": 1, "state_size": state}  # KV cache; an LSTM's h and c
        store.finish(run_id, "done", metrics, info, [])
        return result_from_record(store.get(run_id), store.run_dir(config_hash))

    return runner


@pytest.fixture(scope="module")
def searched_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Store, list[Any]]:
    folder = tmp_path_factory.mktemp("critical")
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    store, calls = Store(folder / "s.sqlite"), []
    planned = critical.plan(path)
    result = critical.search(planned, store=store, workers=1, runner=fake_runner(calls))
    return result, store, calls


def test_the_search_finds_each_familys_critical_width_through_the_store(
    searched_store: tuple[CriticalResult, Store, list[Any]],
) -> None:
    result, store, calls = searched_store
    found = {(c.family, c.length): c.critical for c in result.cells}
    assert found == {
        ("transformer L1", 8): 8, ("transformer L1", 16): 12, ("transformer L1", 32): 16,
        ("lstm L1", 8): 8, ("lstm L1", 16): 12, ("lstm L1", 32): 20,
    }
    assert {e.train.seed for e in calls} == {0, 1}
    assert {e.train.early_stop for e in calls} == {0.9}
    for cell in result.cells:
        assert all(len(p.run_ids) == 2 for p in cell.probes)
        run_id = next(p for p in cell.probes if p.width == cell.critical).run_ids[0]
        assert cell.state_size == store.get(run_id).state_size
    lstm = next(c for c in result.cells if c.family == "lstm L1" and c.length == 32)
    assert lstm.state_size == 2 * 20  # an LSTM carries h and c
    assert lstm.bound is not None and lstm.bound.kind == "lower"
    assert lstm.bound.width == pytest.approx(lstm.bound.state / 2)
    transformer = next(c for c in result.cells if c.family == "transformer L1")
    assert transformer.bound is not None and transformer.bound.kind == "upper"


def test_a_second_search_is_served_from_the_store(
    searched_store: tuple[CriticalResult, Store, list[Any]], tmp_path: Path
) -> None:
    result, store, _ = searched_store
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    again: list[Any] = []
    second = critical.search(critical.plan(path), store=store, workers=1,
                             runner=fake_runner(again))
    assert again == []
    assert critical.rows(second) == critical.rows(result)


def test_the_report_draws_the_figure_and_names_the_better_fit(
    searched_store: tuple[CriticalResult, Store, list[Any]], tmp_path: Path
) -> None:
    result = searched_store[0]
    written = write_report(result, tmp_path / "report")
    assert sorted(p.name for p in written.figures) == ["critical.png", "critical.svg"]
    page = written.html.read_text()
    assert "monotone in width" in page and "lower bound" in page and "upper bound" in page
    data = json.loads(written.json.read_text())
    assert len(data["cells"]) == 6 and data["metric"] == "best_val_accuracy"
    fits = critical.fits(result)
    assert fits["lstm L1"] is not None and fits["lstm L1"].form == "linear"
    assert fits["transformer L1"] is not None and fits["transformer L1"].form == "log"


# -- the command ------------------------------------------------------------------------------


def test_the_smoke_search_prints_the_table_and_writes_the_figure(tmp_path: Path) -> None:
    args = ["critical", "bhattamishra-critical", "--smoke", "--workers", "1",
            "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "report")]
    result = sepbench(*args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("family"))
    assert "critical width" in lines[header] and "state size at it" in lines[header]
    table = lines[header + 2 : header + 8]
    assert [line.split()[0] for line in table] == ["transformer"] * 2 + ["lstm"] * 2 + ["mamba"] * 2
    assert (tmp_path / "report" / "critical.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "report" / "critical.svg").is_file()
    assert "critical.json" in (tmp_path / "report" / "report.html").read_text()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--target", "1.5"], "error: --target must be a number in (0, 1], got 1.5"),
        (["--target", "0"], "error: --target must be a number in (0, 1], got 0.0"),
        (["--target", "-0.2"], "error: --target must be a number in (0, 1], got -0.2"),
        (["--seeds", "1"], "error: --seeds must be an integer >= 2"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(option: list[str], message: str) -> None:
    result = sepbench("critical", "bhattamishra-critical", "--smoke", *option)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("critical_section", "message"),
    [
        (None, "the spec has no 'critical' section"),
        ({"widths": [8, 4]}, "critical: widths: Value error, must be strictly ascending"),
        ({"widths": [4], "colour": 1}, "critical: colour: unknown field"),
        ({"widths": [6]}, "critical: transformer L1 at width 6: "),
    ],
)
def test_a_bad_critical_section_is_one_line(
    critical_section: dict[str, Any] | None, message: str, tmp_path: Path
) -> None:
    spec = {k: v for k, v in SPEC.items() if k != "critical"}
    if critical_section is not None:
        spec["critical"] = critical_section
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SepbenchError) as caught:
        critical.plan(path)
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


# -- the presets -------------------------------------------------------------------------------


def test_the_cpu_preset_searches_three_families_on_index_lookup() -> None:
    planned = critical.plan("bhattamishra-critical")
    assert [f.label.split()[0] for f in planned.families] == ["transformer", "lstm", "mamba"]
    assert planned.lengths == [10, 20, 50, 100]
    settings_ = planned.settings
    assert (settings_.target, settings_.seeds, settings_.step) == (0.9, 2, 4)
    assert all(w % 4 == 0 for w in settings_.widths)  # attention's 4 heads divide each width
    smoke = critical.plan("bhattamishra-critical", smoke=True)
    assert smoke.settings.widths == [4, 12] and smoke.lengths == [8, 12]


@pytest.mark.slow
def test_the_paper_preset_validates_and_runs_a_step_of_its_largest_config(
    tmp_path: Path,
) -> None:
    """The plan builds every family at every rung up to width 1024; one training step of the
    largest model (two-layer Mamba, width 1024, N = 400) runs through the store. (The
    Transformer and LSTM at width 1024 cost about as much; their build is what the plan
    checks.)"""
    planned = critical.plan("bhattamishra-critical-paper")
    assert planned.lengths == [20, 50, 100, 200, 400]
    assert planned.settings.widths[-1] == 1024 and planned.over == ("train.lr",)
    assert all(len(f.templates[400]) == 7 for f in planned.families)
    mamba = next(f for f in planned.families if f.label.startswith("mamba"))
    config = critical.probe_experiment(mamba.templates[400][0], 1024, 0, 0.9).model_dump(
        mode="json"
    )
    for dotted, value in {"train.steps": 1, "train.batch_size": 2, "train.val_examples": 2,
                          "train.warmup_steps": 0, "eval.examples": 2, "eval.batch_size": 2,
                          "device": "cpu"}.items():
        set_dotted(config, dotted, value, source="test")
    result = run(experiment_from_dict(config), store=Store(tmp_path / "s.sqlite"))
    assert result.status == "done" and result.metrics["steps_run"] == 1
