"""sepbench.analysis: the store as a DataFrame, one row per run, every stored value in a column;
curves in long format; Parquet that reads back as the same frame."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

import sepbench
from sepbench.analysis import model_columns
from sepbench.config import experiment_from_dict
from sepbench.errors import SepbenchError
from sepbench.extras import MissingExtra
from sepbench.store import Store
from tests.test_cli import sepbench as cli

pandas = pytest.importorskip("pandas", reason="pandas comes with .[dev] (the analysis extra)")

MAMBA = {"name": "mamba", "d_state": 4, "dt_rank": 2}
MODELS = {
    "transformer": {"name": "transformer", "width": 8, "layers": 1},
    "hybrid": {"width": 8, "layers": [
        {"mixer": {**MAMBA, "d_state": 4}}, {"mixer": {**MAMBA, "d_state": 8}}, "attention",
    ]},
    "mamba": {"name": "mamba", "width": 8, "layers": 1, "params": {"dt_rank": "auto"}},
}


def experiment(model: dict[str, Any], seed: int = 0) -> Any:
    return experiment_from_dict({
        "task": {"name": "index_lookup", "length": 6, "params": {"vocab_size": 4}},
        "model": model,
        "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "seed": seed, "val_interval": 2,
                  "val_examples": 8},
        "eval": {"lengths": [4, 6], "examples": 8},
        "device": "cpu",
    })


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Four tiny runs: three model shapes, and the transformer again at seed 1."""
    store = Store(tmp_path_factory.mktemp("results") / "runs.sqlite")
    for model in MODELS.values():
        sepbench.run(experiment(model), store=store)
    sepbench.run(experiment(MODELS["transformer"], seed=1), store=store)
    return store


def test_one_row_per_run_with_every_stored_value(store: Store) -> None:
    frame = sepbench.results(store)
    records = store.runs()
    assert frame["run_id"].tolist() == [r.id for r in records]
    for row, record in zip(frame.to_dict("records"), records):
        assert row["config_hash"] == record.config_hash and row["status"] == record.status
        assert json.loads(row["config"]) == record.config
        assert row["task.name"] == "index_lookup" and row["task.params.vocab_size"] == 4
        assert row["train.seed"] == record.config["train"]["seed"]
        assert list(row["eval.lengths"]) == [4, 6]
        assert row["device_requested"] == "cpu" and row["device"] == record.device
        for length, accuracy in record.metrics["test_accuracy"].items():
            assert row[f"test_accuracy@{length}"] == accuracy
        assert row["test_accuracy"] == record.metrics["test_accuracy"]["6"]  # task.length 6
        assert row["best_val_accuracy"] == record.metrics["best_val_accuracy"]
        for column in ("num_parameters", "state_size", "tokens_per_s", "git_sha", "pid"):
            assert row[column] == getattr(record, column)
        assert row["started_at"] == pandas.Timestamp(record.started_at)


def test_the_model_spec_becomes_comparable_columns(store: Store) -> None:
    frame = sepbench.results(store).set_index("model.name")
    hybrid, mamba = frame.loc["hybrid"], frame.loc["mamba"]
    assert hybrid["model.mixers"] == "mamba+mamba+attention" and hybrid["model.depth"] == 3
    assert hybrid["model.feedforwards"] == "none+none+mlp"
    assert hybrid["model.mamba.d_state"] == "4+8"  # the layers differ: their values, as text
    assert hybrid["model.attention.heads"] == 4 and hybrid["model.feedforward.ratio"] == 4
    assert hybrid["model.params.positional"] == "learned"
    assert mamba["model.mixers"] == "mamba" and mamba["model.mamba.d_state"] == "16"
    assert {hybrid["model.mamba.dt_rank"], mamba["model.mamba.dt_rank"]} == {"2", "auto"}
    assert frame.loc["transformer", "model.mamba.d_state"].isna().all()  # not a mamba


def test_columns_come_in_sections(store: Store) -> None:
    columns = list(sepbench.results(store).columns)
    assert columns[:6] == ["run_id", "config_hash", "name", "status", "task.name", "task.length"]
    firsts = [columns.index(c) for c in (
        "task.name", "model.name", "model.mamba.d_state", "model.params.norm", "train.lr",
        "eval.lengths", "best_val_accuracy", "num_parameters", "git_sha", "config",
    )]
    assert firsts == sorted(firsts)
    at = columns.index("test_accuracy")
    assert columns[at : at + 3] == ["test_accuracy", "test_accuracy@4", "test_accuracy@6"]


@pytest.mark.parametrize(
    ("filters", "models"),
    [
        ({"model": "transformer"}, ["transformer", "transformer"]),
        ({"model": ["mamba", "hybrid"]}, ["hybrid", "mamba"]),
        ({"train__seed": 1}, ["transformer"]),
        ({"model__mixers": "mamba+mamba+attention", "status": "done"}, ["hybrid"]),
        ({"model__mamba__d_state": None}, ["transformer", "transformer"]),
        ({"train__lr": [0.5, 2.0]}, []),
    ],
)
def test_filters_keep_the_matching_runs(
    store: Store, filters: dict[str, Any], models: list[str]
) -> None:
    assert sepbench.results(store, **filters)["model.name"].tolist() == models


def test_a_filter_on_no_column_names_the_columns(store: Store) -> None:
    with pytest.raises(SepbenchError, match=r"no column 'train.sed' .* columns: run_id, "):
        sepbench.results(store, train__sed=1)


def test_no_run_gives_an_empty_frame(store: Store, tmp_path: Path) -> None:
    assert sepbench.results(store, task="dyck").empty
    assert sepbench.results(Store(tmp_path / "empty.sqlite"), train__seed=0).empty
    with pytest.raises(SepbenchError, match="no store at"):
        sepbench.results(tmp_path / "absent.sqlite")


def test_curves_are_the_stored_curves_in_long_format(store: Store) -> None:
    curves = sepbench.curves(store, model="transformer")
    runs = sepbench.results(store, model="transformer")["run_id"].tolist()
    assert list(curves.columns) == ["run_id", "step", "loss", "val_accuracy"]
    assert sorted(set(curves["run_id"])) == runs
    for run_id in runs:
        stored = store.curve(run_id)
        points = curves[curves["run_id"] == run_id]
        assert points["step"].tolist() == [p["step"] for p in stored]
        assert points["loss"].tolist() == [p["loss"] for p in stored]


def test_parquet_reads_back_as_the_same_frame(store: Store, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="pyarrow comes with .[dev] (the analysis extra)")
    out = tmp_path / "runs.parquet"
    result = cli("runs", "--format", "parquet", "--out", str(out), "--store", str(store.path))
    assert result.returncode == 0 and result.stdout == f"wrote 4 runs to {out}\n"
    back, frame = pandas.read_parquet(out), sepbench.results(store)
    pandas.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert back["test_accuracy@4"].dtype == "float64" and back["pid"].dtype == "int64"
    cli("runs", "--format", "parquet", "--out", str(out), "--model", "mamba",
        "--store", str(store.path))
    assert pandas.read_parquet(out)["model.name"].tolist() == ["mamba"]


def test_an_older_flat_model_config_is_flattened_as_it_is() -> None:
    old = {"name": "lstm", "width": 8, "layers": 2, "params": {"dropout": 0}}
    assert model_columns(old) == [
        {"model.name": "lstm", "model.width": 8, "model.layers": 2, "model.params.dropout": 0}
    ]


def test_without_pandas_the_error_names_the_extra(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import raises ImportError
    with pytest.raises(MissingExtra, match=r"pip install 'sepbench\[analysis\]'"):
        sepbench.results(store)
    result = cli("runs", "--format", "parquet", "--out", "x.parquet", "--store", str(store.path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "sepbench.results() needs pandas" in result.stderr
