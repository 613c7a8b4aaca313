"""The Zhang et al. presets (src/sepbench/presets/zhang.yaml, zhang-paper.yaml; papers.md §3):
the grid they expand to, the claims they declare, and one step of the paper-scale runs."""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import sepbench
from sepbench.config import Experiment
from sepbench.length_figures import mode_of
from sepbench.store import Store
from sepbench.sweep_spec import SweepSpec, expand, load

CLAIM_FIELDS = {"text", "paper", "where", "metric", "at", "op", "value"}


def mode(experiment: Experiment) -> str:
    """direct, cot, filler, or cot-interleaved / filler-interleaved."""
    return mode_of({"task": {"params": experiment.task.params}})


@functools.cache
def one_seed_one_lr(name: str) -> list[Experiment]:
    """The spec's experiments with its seed and learning-rate axes cut to one value (they change
    no shape), expanded once per test session."""
    spec = load(name)
    grid = {axis: values[:1] if axis in ("train.seed", "train.lr") else values
            for axis, values in spec.grid.items()}
    return expand(SweepSpec(**{**spec.model_dump(), "grid": grid}))


def field(config: dict[str, Any], dotted: str) -> Any:
    if dotted == "model":  # the claims' short form: the model's name
        return config["model"]["name"]
    for key in dotted.split("."):
        config = config.get(key, {}) if isinstance(config, dict) else {}
    return config


def matches(config: dict[str, Any], where: dict[str, Any]) -> bool:
    return all(
        field(config, dotted) in (wanted if isinstance(wanted, list) else [wanted])
        for dotted, wanted in where.items()
    )


@pytest.mark.parametrize(
    ("name", "modes"),
    [
        ("zhang", ("direct", "cot-interleaved", "filler-interleaved")),
        ("zhang-after", ("cot", "filler")),
    ],
)
def test_zhang_is_two_tasks_its_modes_seven_models_two_rates_three_seeds(
    name: str, modes: tuple[str, ...]
) -> None:
    spec = load(name)
    experiments = expand(spec)
    assert len(experiments) == 42 * 2 * len(modes) == len({e.config_hash() for e in experiments})
    cells = Counter((e.task.name, mode(e)) for e in experiments)
    assert cells == {(t, m): 42 for t in ("parity", "state_tracking") for m in modes}
    assert spec.selection(experiments).over == ("train.lr",)
    for name in {e.model.name for e in experiments}:  # every model, the same grid
        assert {e.train.lr for e in experiments if e.model.name == name} == {0.001, 0.003}
    for experiment in experiments:
        assert experiment.task.length == 20
        assert experiment.eval_lengths == list(range(10, 101, 10))
        model = experiment.build_model(experiment.build_task())
        assert model.positional == "none"  # RoPE, NoPE or a recurrent model: no table
        assert set(experiment.task.params) <= {"cot", "filler"}


def test_zhang_paper_sets_each_task_and_mode_apart() -> None:
    experiments = one_seed_one_lr("zhang-paper")
    assert len(experiments) == (6 * 3 + 2 * 2) * 7
    for experiment in experiments:
        task = experiment.build_task()
        layout = {"cot": True, "filler": True, "cot-interleaved": "interleaved",
                  "filler-interleaved": "interleaved"}
        trace = mode(experiment)
        assert task.cot == (layout[trace] if trace.startswith("cot") else False)
        assert task.filler == (layout[trace] if trace.startswith("filler") else False)
        if task.name == "dyck":
            assert task.max_depth is None and task.trace == "depth"
            assert task.length_sampling == "uniform"
        if task.name == "multiplication":
            assert (experiment.task.length, max(experiment.eval_lengths)) == (10, 50)
        else:
            assert (experiment.task.length, max(experiment.eval_lengths)) == (40, 500)
    models = Counter(e.model.name for e in experiments)
    assert models == {"transformer": 44, "lstm": 22, "gru": 22, "linear_attention": 22,
                      "rwkv": 22, "mamba": 22}


@pytest.mark.parametrize("name", ["zhang", "zhang-after", "zhang-paper"])
def test_every_claim_is_well_formed_and_names_runs_of_the_grid(name: str) -> None:
    claims = load(name).claims
    configs = [e.resolved() for e in one_seed_one_lr(name)]
    texts = [claim["text"] for claim in claims]
    assert len(texts) == len(set(texts)) >= (4 if name == "zhang-after" else 10)
    for claim in claims:
        assert set(claim) == CLAIM_FIELDS, claim["text"]
        assert claim["paper"] == "§3" and claim["metric"] == "ood_accuracy"
        assert claim["op"] in ("<=", ">=") and 0 < claim["value"] < 1
        assert any(matches(config, claim["where"]) for config in configs), claim["text"]


def test_zhang_paper_runs_one_step_of_its_longest_configuration(tmp_path: Path) -> None:
    """Reversal with its linear CoT at paper sizes: a 4-layer RoPE Transformer trains one step
    (the smoke version) and is evaluated at 40 and 60. To keep the test short the batch has 8
    examples (128 in the preset, a minute on one loaded core) and the longest test length is 60
    (500 in the preset: 5,900 tokens per example)."""
    experiments = expand(load("zhang-paper"), smoke=True)
    assert len(experiments) == (6 * 3 + 2 * 2) * 2
    longest = next(
        e for e in experiments
        if e.task.name == "reversal" and mode(e) == "cot" and e.model.name == "transformer"
    )
    assert longest.eval_lengths == [40, 500] and longest.model.layers == 4
    protocol = longest.eval.length_generalisation.model_copy(update={"test_max": 60})
    small = longest.model_copy(update={
        "train": longest.train.model_copy(update={"batch_size": 8}),
        "eval": longest.eval.model_copy(update={"length_generalisation": protocol}),
        "device": "cpu",
    })
    result = sepbench.run(small, store=Store(tmp_path / "runs.sqlite"))
    assert result.status == "done" and result.metrics["steps_run"] == 1
    assert sorted(result.metrics["test_accuracy"]) == [40, 60]
    assert 0 <= result.metrics["ood_accuracy"] <= 1
