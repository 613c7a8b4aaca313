"""The bhattamishra-index presets (papers.md §2): the CPU sweep and its paper-scale version."""

from __future__ import annotations

from pathlib import Path

import pytest

from sepbench.config import Experiment, experiment_from_dict, set_dotted
from sepbench.runner import run
from sepbench.store import Store
from sepbench.sweep_spec import expand, load

FAMILY = {"transformer", "lstm", "gru", "mamba", "s4d", "linear_attention", "retnet", "rwkv"}


def test_the_cpu_preset_runs_the_whole_family_with_one_budget_and_an_lr_grid() -> None:
    experiments = expand(load("bhattamishra-index"))
    assert {e.model.name for e in experiments} == FAMILY
    transformer = {(e.model.width, e.model.layers) for e in experiments
                   if e.model.name == "transformer"}
    assert transformer == {(64, 1)}
    assert len({(e.train.steps, e.train.batch_size, e.train.early_stop) for e in experiments}) == 1
    for name in FAMILY:
        grid = {(e.task.length, e.train.lr) for e in experiments if e.model.name == name}
        assert grid == {(n, lr) for n in (10, 20, 50) for lr in (0.001, 0.003)}


@pytest.fixture(scope="module")
def paper() -> list[Experiment]:
    """The paper-scale sweep, expanded once (280 runs take seconds to resolve)."""
    return expand(load("bhattamishra-index-paper"))


def test_the_paper_preset_has_the_papers_lengths_sampling_and_grid(
    paper: list[Experiment],
) -> None:
    experiments = paper
    assert {e.model.name for e in experiments} == FAMILY
    assert {e.task.length for e in experiments} == {20, 50, 100, 200, 400}
    assert {e.train.lr for e in experiments} == {1e-2, 5e-3, 1e-3, 5e-4, 1e-4, 5e-5, 1e-6}
    assert all(e.task.params["last_queries"] == 0 for e in experiments)
    assert {e.model.width for e in experiments if e.model.name != "transformer"} == {256}
    assert len(load("bhattamishra-index-paper").claims) == len(load("bhattamishra-index").claims)


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_one_step_of_each_paper_scale_model_runs_at_the_longest_length(
    name: str, paper: list[Experiment], tmp_path: Path
) -> None:
    """The paper's shapes (width 256, N = 400) build and train; a tiny batch keeps it short."""
    experiment = max(
        (e for e in paper if e.model.name == name),
        key=lambda e: e.task.length,
    )
    config = experiment.model_dump(mode="json")
    for dotted, value in {"train.steps": 1, "train.batch_size": 2, "train.val_examples": 2,
                          "eval.examples": 2, "eval.batch_size": 2}.items():
        set_dotted(config, dotted, value, source="test")
    result = run(experiment_from_dict(config), store=Store(tmp_path / "s.sqlite"))
    assert result.status == "done"
    assert set(result.metrics["test_accuracy"]) == {400}
