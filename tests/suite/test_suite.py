"""The separation suite: its budgets expand fairly, scores choose the rate on validation,
verdicts name the baselines a model behaves like, and the command runs end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sepbench import cli
from sepbench.store import Store
from sepbench.suite import baselines, definition
from sepbench.suite.definition import Judge, Suite, runs, user_model
from sepbench.suite.verdict import Peer, Score, behaves_like, scores
from tests.test_cli import sepbench

GLR = "examples/gated_linear_recurrence.py:GatedLinearRecurrence"
JUDGE = Judge.model_validate({"metric": "test_accuracy", "pass": 0.9, "fail": 0.5})


def tiny_suite(**changes: Any) -> Suite:
    """The cpu suite cut to two families at short lengths and a few steps."""
    suite = definition.load("cpu")
    families = {
        "index-lookup": suite.families["index-lookup"].model_copy(
            update={"lengths": [6, 8], "train": {}}
        ),
        "parity-ood": suite.families["parity-ood"].model_copy(
            update={"lengths": [4], "train": {},
                    "eval": {"length_generalisation": {"test_max": 8, "stride": 4}}}
        ),
    }
    base = {"train": {"steps": 3, "batch_size": 4, "lr": 1e-3, "val_interval": 2,
                      "val_examples": 8}, "eval": {"examples": 8}, "device": "cpu"}
    baseline = definition.Baseline(
        kind="transformer", model={"name": "transformer", "width": 8, "layers": 1},
        per_family={"parity-ood": {"params": {"positional": "rope"}}},
    )
    return suite.model_copy(update={"families": families, "base": base, "width": 8, "depth": 1,
                                    "baselines": [baseline], **changes})


@pytest.mark.parametrize("budget", definition.BUDGETS)
def test_every_model_gets_the_same_experiments_but_its_model(budget: str) -> None:
    suite = definition.load(budget)
    planned = [runs(suite, user_model(suite, GLR)),
               *(runs(suite, b.model, per_family=b.per_family) for b in suite.baselines)]
    expected = sum(len(f.lengths) for f in suite.families.values()) * len(suite.lr) * suite.seeds
    for model_runs in planned[1:]:
        assert len(model_runs) == expected
        configs = [r.experiment.resolved() for r in model_runs]
        for config in configs:
            config.pop("model")
        assert configs == [
            {k: v for k, v in r.experiment.resolved().items() if k != "model"}
            for r in planned[0]
        ]


def test_the_user_mixer_is_built_at_the_suite_size_without_a_position_table() -> None:
    suite = definition.load("cpu")
    model = runs(suite, user_model(suite, GLR, {"chunk": 8}))[0].experiment.resolved()["model"]
    assert model["width"] == suite.width and len(model["layers"]) == suite.depth
    assert model["layers"][0]["mixer"] == {"name": GLR, "chunk": 8}
    assert model["params"]["positional"] == "none"


def test_an_unknown_budget_is_one_line_naming_the_choices() -> None:
    with pytest.raises(definition.SepbenchError, match="unknown 'gpu'; choose one of cpu, full"):
        definition.load("gpu")


def test_the_judge_reads_solves_fails_and_between() -> None:
    assert [JUDGE.outcome(x) for x in (0.95, 0.9, 0.7, 0.5, 0.1)] == [
        "solves", "solves", "between", "fails", "fails"]
    with pytest.raises(ValueError, match="must be below pass"):
        Judge.model_validate({"pass": 0.5, "fail": 0.6})


def score(*values: float) -> Score:
    return Score(values, 1e-3)


PEERS = [Peer("transformer", "transformer", score(0.99, 0.98)),
         Peer("lstm", "recurrent", score(0.1, 0.2)),
         Peer("mamba", "recurrent", score(0.3, 0.2))]


@pytest.mark.parametrize(("mine", "expected"), [
    (score(0.97, 0.95), "like a Transformer"),
    (score(0.1, 0.1), "like a recurrent model"),
    (score(0.7, 0.75), "neither"),
    (None, "not run"),
])
def test_a_model_behaves_like_the_baselines_whose_outcome_it_shares(
    mine: Score | None, expected: str
) -> None:
    assert behaves_like(JUDGE, mine, PEERS) == expected


def test_recurrent_baselines_that_differ_are_named_and_no_separation_is_said() -> None:
    split = [PEERS[0], Peer("lstm", "recurrent", score(0.99, 0.99)), PEERS[2]]
    assert behaves_like(JUDGE, score(0.2, 0.1), split) == "like mamba"
    agree = [PEERS[0], Peer("lstm", "recurrent", score(0.99, 0.99))]
    assert behaves_like(JUDGE, score(0.95, 0.99), agree) == (
        "like both (no separation at this budget)")


def store_run(store: Store, experiment: Any, test: float, val: float) -> None:
    run_id = store.start(experiment.config_hash(), experiment.resolved(), {"device": "cpu"})
    length = experiment.task.length
    store.finish(run_id, "done", {"best_val_accuracy": val, "test_accuracy": {str(length): test},
                                  "ood_accuracy": test},
                 {"wall_time_s": 1.0}, [])


def test_scores_take_the_rate_with_the_best_validation_mean(tmp_path: Path) -> None:
    suite, store = tiny_suite(), Store(tmp_path / "s.sqlite")
    baseline = suite.baselines[0]
    planned = runs(suite, baseline.model, per_family=baseline.per_family)
    for run in planned:
        lr = run.experiment.train.lr
        # the larger rate validates better but tests worse: the score follows validation
        store_run(store, run.experiment, test=0.6 if lr > 1e-3 else 0.9,
                  val=0.8 if lr > 1e-3 else 0.7)
    measured = scores(suite, planned, store)
    assert measured["index-lookup"][8].lr == max(suite.lr)
    assert measured["index-lookup"][8].values == (0.6,) * suite.seeds
    assert set(measured) == {"index-lookup", "parity-ood"}


def test_baselines_round_trip_and_say_when_the_suite_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(baselines, "path", lambda budget: tmp_path / f"baselines-{budget}.json")
    suite = tiny_suite()
    assert baselines.load(suite) is None
    model = baselines.MeasuredModel("transformer w8 L1", "transformer", {"name": "transformer"},
                                    {"index-lookup": {8: score(0.5, 0.75)}}, 12.0)
    baselines.save(suite, [model], 2, "sepbench suite --refresh-baselines")
    loaded = baselines.load(suite)
    assert loaded is not None and loaded.models == [model] and not loaded.stale(suite)
    assert loaded.provenance["seeds"] == 2 and loaded.provenance["date"]
    assert loaded.stale(tiny_suite(lr=[0.01]))
    (tmp_path / "baselines-cpu.json").write_text("{")
    with pytest.raises(definition.SepbenchError, match=r"baselines-cpu\.json: unreadable"):
        baselines.load(suite)


@pytest.mark.parametrize("arguments", [[], [GLR, "--refresh-baselines"], [GLR, "--budget", "gpu"]])
def test_the_command_refuses_bad_input_in_one_line(arguments: list[str]) -> None:
    ran = sepbench("suite", *arguments)
    assert ran.returncode == 2
    assert len(ran.stderr.strip().splitlines()) == 1
    assert "MIXER" in ran.stderr or "cpu, full" in ran.stderr


def test_suite_refreshes_baselines_then_places_a_user_mixer_beside_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = tiny_suite()
    monkeypatch.setattr(definition, "load", lambda budget: small)
    monkeypatch.setattr(baselines, "path", lambda budget: tmp_path / f"baselines-{budget}.json")
    runner, store = CliRunner(), str(tmp_path / "runs.sqlite")
    common = ["--store", store, "--workers", "1", "--seeds", "2"]
    refreshed = runner.invoke(cli.app, ["suite", "--refresh-baselines", *common])
    assert refreshed.exit_code == 0, refreshed.output
    written = json.loads((tmp_path / "baselines-cpu.json").read_text())
    assert written["models"][0]["label"] == "transformer w8 L1"
    assert written["provenance"]["command"].endswith("--seeds 2")
    out = tmp_path / "report"
    result = runner.invoke(cli.app, ["suite", GLR, *common, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "GatedLinearRecurrence w8 L1 (yours)" in result.output
    assert "transformer w8 L1 (transformer)" in result.output
    page = (out / "report.html").read_text()
    assert "parity-ood" in page and (out / "suite.png").is_file()
    # the user's runs are in the store: a second call trains nothing
    again = runner.invoke(cli.app, ["suite", GLR, *common, "--out", str(out)])
    assert again.exit_code == 0 and "started" not in again.output


def test_a_baselines_model_changes_only_in_the_families_it_names() -> None:
    suite = definition.load("cpu")
    (transformer,) = [b for b in suite.baselines if b.kind == "transformer"]
    planned = runs(suite, transformer.model, per_family=transformer.per_family)
    positions = {r.family: r.experiment.resolved()["model"]["params"]["positional"]
                 for r in planned}
    assert positions.pop("parity-ood") == "none"  # RoPE lives in the attention layers
    assert set(positions.values()) == {"learned"}


def test_the_shipped_cpu_baselines_were_measured_on_this_suite() -> None:
    """The packaged baselines file must follow the suite: change cpu.yaml, refresh the file."""
    suite = definition.load("cpu")
    shipped = baselines.load(suite)
    assert shipped is not None, "run: sepbench suite --refresh-baselines --budget cpu"
    assert not shipped.stale(suite), "cpu.yaml changed: sepbench suite --refresh-baselines"
    assert [m.kind for m in shipped.models] == [b.kind for b in suite.baselines]
    assert shipped.provenance["seeds"] >= 2
    for model in shipped.models:
        for name, family in suite.families.items():
            assert set(model.scores[name]) == set(family.lengths), (model.label, name)


def test_the_full_budget_trains_every_family_at_least_as_long_as_the_cpu_one() -> None:
    cpu, full = definition.load("cpu"), definition.load("full")
    model = user_model(cpu, GLR)
    steps = {b: {r.family: r.experiment.train.steps for r in runs(s, model)}
             for b, s in (("cpu", cpu), ("full", full))}
    assert set(steps["cpu"]) <= set(steps["full"])
    assert all(steps["full"][f] >= n for f, n in steps["cpu"].items()), steps
