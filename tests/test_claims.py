"""Claims: one-line validation errors, and verdicts over stored runs aggregated over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sepbench.claims import (
    HELD,
    NOT_ENOUGH,
    NOT_HELD,
    evaluate_claim,
    matches,
    parse_claims,
)
from sepbench.config import experiment_from_dict
from sepbench.errors import SepbenchError
from sepbench.store import Store
from sepbench.sweep_spec import expand, load, preset_names
from tests.stored_runs import add_run, experiment_config

TRANSFORMER_SOLVES = {
    "text": "1-layer Transformer solves it", "paper": "§2", "where": {"model": "transformer"},
    "at": "all", "op": ">=", "value": 0.95,
}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "runs.sqlite")


def claim(**fields: Any):
    (parsed,) = parse_claims([{**TRANSFORMER_SOLVES, **fields}])
    return parsed


def seeds(store: Store, values: list[float], length: int = 8, **dotted: Any) -> None:
    for seed, value in enumerate(values):
        add_run(store, {length: value}, train__seed=seed, task__length=length, **dotted)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"op": "=>"}, "claims[0].op: must be '>=', '<=', '>' or '<'; got '=>'"),
        ({"at": "every"}, "claims[0].at: must be all, min, max, a length or a list of lengths"),
        ({"at": [8, 0]}, "claims[0].at: must be all, min, max"),
        ({"paper": "Wen"}, "claims[0].paper: must cite a papers.md section, one of §1, §2, §3"),
        ({"value": "high"}, "claims[0].value: must be a valid number"),
        ({"colour": 1}, "claims[0].colour: unknown field; allowed: text, paper, where"),
    ],
)
def test_a_bad_claim_is_one_line_naming_the_field(fields: dict, message: str) -> None:
    with pytest.raises(SepbenchError) as raised:
        parse_claims([{**TRANSFORMER_SOLVES, **fields}])
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_missing_field_and_a_non_list_are_named() -> None:
    broken = {k: v for k, v in TRANSFORMER_SOLVES.items() if k != "op"}
    with pytest.raises(SepbenchError, match=r"^claims\[0\]\.op: required field missing$"):
        parse_claims([broken])
    with pytest.raises(SepbenchError, match="claims: must be a list of mappings"):
        parse_claims({"text": "x"})
    assert parse_claims(None) == []


def test_a_where_field_no_config_has_fails_before_the_sweep() -> None:
    from sepbench.config import experiment_from_dict

    configs = [experiment_from_dict(experiment_config()).resolved()]
    assert len(parse_claims([TRANSFORMER_SOLVES], configs)) == 1
    with pytest.raises(SepbenchError, match=r"claims\[0\]\.where\.modle: no such config field"):
        parse_claims([{**TRANSFORMER_SOLVES, "where": {"modle": "transformer"}}], configs)


def test_held_on_the_mean_at_every_length(store: Store) -> None:
    seeds(store, [1.0, 0.96, 0.98], length=8)
    seeds(store, [0.97, 0.99], length=16)
    result = evaluate_claim(claim(), store.runs())
    assert result.verdict == HELD, result.line()
    ((name, by_length),) = result.measured
    assert name == "transformer w8 L1" and sorted(by_length) == [8, 16]
    assert by_length[8].mean == pytest.approx(0.98) and by_length[8].n == 3
    assert "8: 0.980 ± 0.050 (n=3)" in result.line()


def test_not_held_when_a_mean_misses_the_value(store: Store) -> None:
    seeds(store, [1.0, 0.99], length=8)
    seeds(store, [0.9, 0.96], length=16)
    result = evaluate_claim(claim(), store.runs())
    assert result.verdict == NOT_HELD and "fails at N = 16" in result.reason


def test_one_seed_is_not_enough(store: Store) -> None:
    seeds(store, [1.0], length=8)
    result = evaluate_claim(claim(), store.runs())
    assert result.verdict == NOT_ENOUGH and "fewer than 2 seeds at N = 8" in result.reason


def test_a_length_whose_runs_all_failed_is_missing(store: Store) -> None:
    seeds(store, [1.0, 1.0], length=8)
    add_run(store, None, status="failed", task__length=16)
    result = evaluate_claim(claim(), store.runs())
    assert result.verdict == NOT_ENOUGH and "no test_accuracy at N = 16" in result.reason


def test_nothing_selected_is_not_enough(store: Store) -> None:
    seeds(store, [1.0, 1.0], model__name="lstm")
    assert evaluate_claim(claim(), store.runs()).verdict == NOT_ENOUGH


@pytest.mark.parametrize(("at", "verdict"), [("max", HELD), ("min", NOT_HELD), (16, HELD),
                                             ([8, 16], NOT_HELD), (32, NOT_ENOUGH)])
def test_at_picks_the_lengths(store: Store, at: Any, verdict: str) -> None:
    seeds(store, [0.5, 0.6], length=8)
    seeds(store, [0.99, 0.97], length=16)
    assert evaluate_claim(claim(at=at), store.runs()).verdict == verdict


def test_every_selected_configuration_must_hold(store: Store) -> None:
    seeds(store, [0.2, 0.25], model__name="lstm")
    seeds(store, [0.4, 0.45], model__name="lstm", train__lr=3e-4)
    lstm_low = claim(where={"model": "lstm"}, op="<=", value=0.3, at="max")
    result = evaluate_claim(lstm_low, store.runs())
    assert result.verdict == NOT_HELD
    assert [name for name, _ in result.measured] == [
        "lstm w8 L1 · train.lr=0.001", "lstm w8 L1 · train.lr=0.0003"
    ]
    assert result.reason == "lstm w8 L1 · train.lr=0.0003: fails at N = 8"
    only_fast = claim(where={"model": "lstm", "lr": "1e-3"}, op="<=", value=0.3)
    assert evaluate_claim(only_fast, store.runs()).verdict == HELD


def test_an_ambiguous_short_name_is_reported(store: Store) -> None:
    seeds(store, [1.0, 1.0])
    result = evaluate_claim(claim(where={"max_length": 64}), store.runs())
    assert result.verdict == NOT_ENOUGH and "ambiguous" in result.reason


def test_a_scalar_metric_is_checked_at_the_training_length(store: Store) -> None:
    for seed, steps in enumerate([300, 500]):
        add_run(store, {8: 1.0}, steps=steps, train__seed=seed)
    fast = claim(metric="steps_run", op="<=", value=450)
    assert evaluate_claim(fast, store.runs()).verdict == HELD
    assert evaluate_claim(claim(metric="steps_run", op="<", value=400), store.runs()).verdict == (
        NOT_HELD
    )


@pytest.mark.parametrize("preset", preset_names())
def test_every_presets_claims_are_valid_on_fields_its_runs_have(preset: str) -> None:
    spec = load(preset)
    configs = [experiment.resolved() for experiment in expand(spec, smoke=True)]
    assert len(parse_claims(spec.claims, configs)) == len(spec.claims)


def test_the_demo_declares_its_claims() -> None:
    assert [c.paper for c in parse_claims(load("demo").claims)] == ["§2"] * 4


def test_a_list_of_values_in_where_matches_any_of_them() -> None:
    """``model: [lstm, transformer]`` selects runs of either model (the probe's claims name
    several models); a field whose value is itself a list compares as a whole."""
    lstm, transformer = (experiment_config(model__name=name) for name in ("lstm", "transformer"))
    resolved = [experiment_from_dict(c).resolved() for c in (lstm, transformer)]
    assert all(matches({"model": ["lstm", "transformer"]}, config) for config in resolved)
    assert not matches({"model": ["gru", "mamba"]}, resolved[0])
    assert matches({"eval.lengths": [8]}, resolved[0])
    assert not matches({"eval.lengths": [8, 16]}, resolved[0])


def test_model_depth_selects_by_the_number_of_layers() -> None:
    """Bhattamishra et al.'s Dyck figure (papers.md §2) tells a one-layer Transformer from a
    two-layer one; the resolved ``model.layers`` is a list of per-layer specs."""
    one, two = (
        experiment_from_dict(experiment_config(model__layers=depth)).resolved() for depth in (1, 2)
    )
    assert matches({"model.depth": 1}, one) and not matches({"model.depth": 1}, two)
    assert matches({"model": "transformer", "model.depth": 2}, two)
