"""Wen et al.'s presets (papers.md §1): the paper-scale one validates and runs a step here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sepbench
from sepbench.models.spec import count_parameters
from sepbench.store import Store
from sepbench.sweep_spec import expand, load


def test_wen_paper_is_the_published_grid() -> None:
    experiments = expand(load("wen-paper"))
    assert len(experiments) == 3 * 3 * 3 * 3
    for experiment in experiments:
        model = experiment.resolved()["model"]
        assert model["params"]["embedding"] == "frozen_sinusoidal"
        count = count_parameters(model, len(experiment.build_task().vocab))
        target = experiment.model.params_target
        assert abs(count - target) <= 0.1 * target, (model["name"], count, target)
        mixers = [layer["mixer"]["name"] for layer in model["layers"]]
        if model["name"] == "hybrid":
            assert mixers[-1] == "attention" and set(mixers[:-1]) == {"mamba"}
        expected_lr = 1e-3 if model["name"] == "transformer" else 3e-4
        assert experiment.train.lr == expected_lr


@pytest.mark.slow
def test_wen_paper_runs_a_step_of_its_largest_hybrid(tmp_path: Path) -> None:
    """One step of the 2M-parameter hybrid (59 Mamba layers and one attention layer) on
    DFS traces at N = 64, evaluated by free generation, through the store: the paper-scale
    config is real. (Decoding a retrieval trace through 60 layers costs minutes here; the live
    retriever is tested in tests/test_evaluate.py.)"""
    largest = next(
        e for e in expand(load("wen-paper"))
        if e.model.name == "hybrid" and e.model.params_target == 2_000_000
        and e.task.length == 64 and e.task.params["mode"] == "cot"
    )
    small = largest.model_copy(update={
        "train": largest.train.model_copy(update={
            "steps": 1, "batch_size": 4, "dataset_size": 8, "val_examples": 2, "warmup_steps": 0,
        }),
        "eval": largest.eval.model_copy(update={"examples": 2}),
        "device": "cpu",
    })
    result = sepbench.run(small, store=Store(tmp_path / "s.sqlite"))
    assert result.status == "done" and result.metrics["steps_run"] == 1
    assert set(result.metrics["test_accuracy"]) == {64}


def test_wen_is_parameter_matched_with_a_learning_rate_grid_and_three_seeds() -> None:
    """The CPU preset: 4 models x 3 modes x 3 N x 2 rates x 3 seeds, every model within 10 %
    of its target (papers.md §1's matching), the rate chosen on validation."""
    spec = load("wen")
    experiments = expand(spec)
    assert len(experiments) == 4 * 3 * 3 * 2 * 3
    assert spec.selection(experiments).over == ("train.lr",)
    for experiment in experiments:
        model = experiment.resolved()["model"]
        count = count_parameters(model, len(experiment.build_task().vocab))
        target = experiment.model.params_target
        assert abs(count - target) <= 0.1 * target, (model["name"], count, target)
        assert experiment.eval.mode == "generate"
    budgets = {(e.train.steps, e.train.batch_size) for e in experiments}
    assert budgets == {(800, 32)}


def test_wen_budget_is_wens_cot_at_n8_with_five_times_the_steps() -> None:
    """The budget probe differs from `wen` only in steps, mode, N, rate and seed: its numbers
    say what more steps do to `wen`'s own models (the same parameter-matched four)."""
    probe, wen = expand(load("wen-budget")), expand(load("wen"))
    assert len(probe) == 4
    models = [json.dumps(e.resolved()["model"], sort_keys=True) for e in probe]
    assert sorted(models) == sorted(
        json.dumps(e.resolved()["model"], sort_keys=True) for e in wen
        if (e.task.length, e.task.params["mode"], e.train.lr, e.train.seed) == (8, "cot", 0.003, 0)
    )
    assert {(e.task.length, e.task.params["mode"], e.train.lr, e.train.seed) for e in probe} == {
        (8, "cot", 0.003, 0)
    }
    assert {(e.train.steps, e.train.batch_size) for e in probe} == {(4000, 32)}
    assert {e.eval.mode for e in probe} == {"generate"}


def test_wen_smoke_runs_every_model_and_mode_and_reports_the_answer_metric(
    tmp_path: Path,
) -> None:
    """`sepbench sweep wen --smoke`: 12 runs (4 models x 3 modes), a table with both metrics
    and a report that opens with the six claims."""
    from tests.test_cli import sepbench as cli

    out = tmp_path / "report"
    result = cli("sweep", "wen", "--smoke", "--workers", "1",
                 "--store", str(tmp_path / "s.sqlite"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "answer accuracy" in result.stdout and result.stdout.count("claim ") == 6
    assert len(Store(tmp_path / "s.sqlite").runs()) == 12
    page = (out / "report.html").read_text()
    assert page.index("<h2>Claims</h2>") < page.index("<h2>is_tree</h2>")
    assert (out / "is_tree_accuracy.png").exists()
