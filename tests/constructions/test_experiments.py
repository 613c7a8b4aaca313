"""Constructions as experiments: config, hash, the runner, the store and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import sepbench
from sepbench.config import experiment_from_dict
from sepbench.constructions.report import smallest_precisions, smallest_sizes
from sepbench.errors import SepbenchError
from sepbench.report import write_report
from sepbench.store import Store


def lookup(length: int = 64, **params: Any) -> dict[str, Any]:
    return {
        "task": {"name": "index_lookup", "length": length, "params": {"max_length": length}},
        "construction": {"name": "index_lookup_attention", "params": params},
        "eval": {"examples": 200},
        "device": "cpu",
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "runs.sqlite")


def test_a_construction_runs_without_training_and_is_served_from_the_store(store: Store) -> None:
    experiment = experiment_from_dict(lookup(k=32))
    result = sepbench.run(experiment, store=store)
    assert result.status == "done" and result.metrics["test_accuracy"] == {64: 1.0}
    assert result.metrics["certificate"]["certified"] is True
    assert result.metrics["construction"]["k"] == 32
    record = store.get(result.run_id)
    assert record.model == "index_lookup_attention" and record.state_size == 65 * (32 + 6)
    assert sepbench.run(experiment, store=store).cached


def test_a_recurrent_construction_stores_its_state_against_the_bound(store: Store) -> None:
    experiment = experiment_from_dict({
        "task": {"name": "dyck", "length": 200},
        "construction": {"name": "dfa_lstm"},
        "eval": {"examples": 100, "lengths": [200, 1000]},
        "device": "cpu",
    })
    result = sepbench.run(experiment, store=store)
    assert result.metrics["test_accuracy"] == {200: 1.0, 1000: 1.0}
    bound = result.metrics["state_bound"]
    assert bound["recurrent"] and bound["state_bits"] == 2 * 12 * 32 and bound["bits"] == 3.0


def test_the_hash_covers_the_resolved_knobs() -> None:
    plain = experiment_from_dict(lookup())
    resolved = plain.resolved()
    assert resolved["construction"]["params"] == {
        "k": None, "eta": None, "precision": None, "rounding": "fixed"
    }
    assert "model" not in resolved and "train" not in resolved
    assert experiment_from_dict(lookup(k=None, rounding="fixed")).config_hash() == (
        plain.config_hash()
    )
    assert experiment_from_dict(lookup(k=64)).config_hash() != plain.config_hash()
    again = experiment_from_dict(resolved)
    assert again.config_hash() == plain.config_hash() and again.resolved() == resolved


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"name": "lstm", "width": 8, "layers": 1}},
         "construction: an experiment has a construction or a model with train, not both"),
        ({"construction": {"name": "abacus"}},
         "construction.name: unknown construction 'abacus'; known: dfa_elman"),
        ({"construction": {"name": "index_lookup_attention", "params": {"k": "wide"}}},
         "construction.params: index_lookup_attention: k must be an integer >= 1"),
        ({"construction": {"name": "dfa_elman"}},
         "construction.params: dfa_elman: builds for task dyck, parity, counting"),
        ({"eval": {"lengths": [32, 64]}},
         "eval.lengths: index_lookup_attention is built for task.length=64 only"),
    ],
)
def test_bad_construction_configs_are_one_line(change: dict, message: str) -> None:
    with pytest.raises(SepbenchError) as caught:
        experiment_from_dict({**lookup(), **change})
    assert message in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(SepbenchError, match=r"^model: required field missing \(or give a"):
        experiment_from_dict({"task": {"name": "dyck", "length": 8}})


def test_the_report_draws_the_ladders_and_tables(store: Store, tmp_path: Path) -> None:
    for k in (None, 2, 4, 16, 32):
        sepbench.run(experiment_from_dict(lookup(k=k)), store=store)
    sepbench.run(experiment_from_dict(lookup(length=32, k=16)), store=store)
    for precision in (1, 2, 4):
        sepbench.run(experiment_from_dict(lookup(k=32, precision=precision)), store=store)
    records = store.runs()
    sizes = {row["length"]: row for row in smallest_sizes(records)}
    assert sizes[64]["ladder"] == [2, 4, 16, 32] and sizes[64]["smallest_k"] == 16
    assert sizes[64]["smallest_certified_k"] == 16 and sizes[32]["smallest_k"] == 16
    assert [row["smallest_precision"] for row in smallest_precisions(records)] == [4]
    written = write_report(store, tmp_path / "report")
    page = written.html.read_text()
    assert "<h2>Constructions</h2>" in page and "Smallest size giving 100 %" in page
    names = {path.name for path in written.figures}
    assert {"constructions_accuracy.png", "constructions_size.svg"} <= names
    assert "constructions_precision.png" in names


def test_the_preset_smoke_runs_every_construction_and_the_report_has_the_section(
    tmp_path: Path,
) -> None:
    from tests.test_cli import sepbench as cli

    store = str(tmp_path / "runs.sqlite")
    swept = cli("sweep", "constructions", "--smoke", "--workers", "1", "--store", store)
    assert swept.returncode == 0, swept.stderr
    runs = Store(store).runs(status="done")
    names = {record.model for record in runs}
    assert names == {
        "index_lookup_attention", "equality_attention", "nearest_neighbor_attention",
        "dfa_elman", "dfa_lstm",
    }
    listed = cli("runs", "--store", store).stdout
    assert "index_lookup_attention k=8" in listed and "dfa_lstm" in listed
    reported = cli("report", "--store", store, "--out", str(tmp_path / "report"))
    assert reported.returncode == 0, reported.stderr
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Constructions</h2>" in page and page.count("<img") >= 3
