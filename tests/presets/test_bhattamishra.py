"""Bhattamishra et al.'s figures as presets (papers.md §2): Mamba's width trend, Dyck-(2,2),
string equality, and the first experiments on nearest neighbour and disjointness. Each CPU
preset gives every model one budget and one learning-rate grid, chosen on validation over at
least 2 seeds; each paper-scale preset builds and trains a step of every model at its longest
length."""

from __future__ import annotations

from pathlib import Path

import pytest

from sepbench.config import Experiment, experiment_from_dict, set_dotted
from sepbench.runner import run
from sepbench.store import Store
from sepbench.sweep_spec import expand, load
from tests.test_cli import sepbench as cli

CPU = ["bhattamishra-mamba-width", "bhattamishra-dyck", "bhattamishra-equality",
       "nearest-neighbour", "disjointness", "bhattamishra-index"]
PAPER = ["bhattamishra-mamba-width-paper", "bhattamishra-dyck-paper",
         "bhattamishra-equality-paper"]


def model_key(experiment: Experiment) -> tuple:
    return experiment.model.name, experiment.model.width, str(experiment.model.layers)


@pytest.mark.parametrize("name", CPU)
def test_one_budget_one_grid_two_seeds_for_every_model(name: str) -> None:
    spec = load(name)
    experiments = expand(spec)
    budgets = {(e.train.steps, e.train.batch_size, e.train.early_stop) for e in experiments}
    assert len(budgets) == 1
    assert spec.selection(experiments).over == ("train.lr",)
    grids = {}
    for experiment in experiments:
        key = (model_key(experiment), experiment.task.length, str(experiment.task.params))
        grids.setdefault(key, set()).add((experiment.train.lr, experiment.train.seed))
    (grid,) = {frozenset(grid) for grid in grids.values()}  # the same grid for every model
    rates = {lr for lr, _ in grid}
    assert len(rates) >= 2 and grid == {(lr, seed) for lr in rates for seed in (0, 1)}


def test_the_width_trend_is_mamba_widths_against_one_transformer() -> None:
    experiments = expand(load("bhattamishra-mamba-width"))
    assert sorted({e.model.width for e in experiments if e.model.name == "mamba"}) == [
        32, 64, 128, 256]
    assert {e.task.length for e in experiments} == {30}
    paper = expand(load("bhattamishra-mamba-width-paper"))
    assert max(e.model.width for e in paper) == 1024 and {e.task.length for e in paper} == {200}


def test_equality_has_the_three_variants_and_dyck_the_two_transformer_depths() -> None:
    equality = expand(load("bhattamishra-equality"))
    assert {e.task.params["variant"] for e in equality} == {"random", "one_off", "copy"}
    dyck = expand(load("bhattamishra-dyck"))
    depths = {len(e.resolved()["model"]["layers"]) for e in dyck if e.model.name == "transformer"}
    assert depths == {1, 2}
    assert {e.task.params["max_depth"] for e in dyck} == {2}


@pytest.mark.parametrize("name", CPU[:-1])
def test_the_smoke_version_runs_and_reports_its_claims(name: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = cli("sweep", name, "--smoke", "--workers", "1",
                 "--store", str(tmp_path / "s.sqlite"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("claim ") == len(load(name).claims)
    assert (out / "report.html").exists()


@pytest.mark.parametrize("name", PAPER)
def test_one_step_of_each_paper_scale_model_at_the_longest_length(
    name: str, tmp_path: Path
) -> None:
    longest: dict[tuple, Experiment] = {}
    for experiment in expand(load(name)):
        key = model_key(experiment)
        if key not in longest or experiment.task.length > longest[key].task.length:
            longest[key] = experiment
    store = Store(tmp_path / "s.sqlite")
    for experiment in longest.values():
        config = experiment.model_dump(mode="json")
        for dotted, value in {"train.steps": 1, "train.batch_size": 2, "train.val_examples": 2,
                              "eval.examples": 2, "eval.batch_size": 2}.items():
            set_dotted(config, dotted, value, source="test")
        result = run(experiment_from_dict(config), store=store)
        assert result.status == "done" and result.metrics["steps_run"] == 1
        assert set(result.metrics["test_accuracy"]) == {experiment.task.length}
