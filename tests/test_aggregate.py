"""Aggregation over seeds: Student-t intervals, grouping by config minus seed, lines across N."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sepbench.aggregate import (
    CHOSEN,
    Selection,
    central_probability,
    estimate,
    group_runs,
    lines,
    seedless,
    t_critical,
)
from sepbench.store import Store
from tests.stored_runs import add_run


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "runs.sqlite")


@pytest.mark.parametrize(
    ("df", "expected"),
    [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (30, 2.0423)],
)
def test_t_critical_matches_the_tables(df: int, expected: float) -> None:
    assert t_critical(0.95, df) == pytest.approx(expected, abs=1e-4)


def test_t_distribution_function_tends_to_the_normal() -> None:
    assert central_probability(1.959964, 10_000) == pytest.approx(0.95, abs=1e-4)
    assert central_probability(0.0, 5) == 0.0


def test_estimate_is_mean_plus_minus_t_times_standard_error() -> None:
    value = estimate([0.5, 0.7, 0.9])
    assert value.mean == pytest.approx(0.7)
    assert value.half_width == pytest.approx(4.3027 * 0.2 / math.sqrt(3), rel=1e-4)
    assert (value.low, value.high, value.n) == (value.mean - value.half_width,
                                                 value.mean + value.half_width, 3)
    assert value.text() == "0.700 ± 0.497"


def test_one_seed_has_no_interval_and_says_so() -> None:
    value = estimate([0.25])
    assert (value.mean, value.half_width, value.low, value.n) == (0.25, None, None, 1)
    assert value.text() == "0.250 (1 seed)"


def test_seedless_drops_only_the_seed_and_the_name() -> None:
    config = {"name": "x", "train": {"seed": 3, "lr": 0.1}, "task": {"length": 8}}
    assert seedless(config) == {"train": {"lr": 0.1}, "task": {"length": 8}}
    assert config["train"]["seed"] == 3


def test_seeds_group_together_and_other_fields_apart(store: Store) -> None:
    for seed, value in enumerate([0.5, 0.7, 0.9]):
        add_run(store, {8: value}, train__seed=seed)
    add_run(store, {8: 0.1}, train__seed=0, train__lr=3e-4)
    add_run(store, None, train__seed=5, status="failed")
    groups = group_runs(store.runs())
    assert [g.seeds for g in groups] == [[0, 1, 2], [0]]
    assert groups[0].metric()[8].mean == pytest.approx(0.7)
    assert groups[1].config["train"]["lr"] == 3e-4
    assert groups[1].metric()[8].half_width is None


def test_the_newest_finished_run_of_a_config_counts_once(store: Store) -> None:
    add_run(store, {8: 0.2})
    add_run(store, {8: 0.4})  # the same config forced again
    add_run(store, None, status="failed")
    (group,) = group_runs(store.runs())
    assert len(group.records) == 1 and group.metric()[8].mean == 0.4


def test_a_scalar_metric_sits_at_the_training_length(store: Store) -> None:
    add_run(store, {8: 1.0}, steps=30, train__seed=0)
    add_run(store, {8: 1.0}, steps=50, train__seed=1)
    (group,) = group_runs(store.runs())
    assert group.metric("steps_run")[8].mean == 40


def test_runs_at_each_n_join_into_one_line(store: Store) -> None:
    for length in (8, 16):
        add_run(store, {length: 0.5}, task__length=length)
        add_run(store, {length: 0.2}, task__length=length, model__name="lstm")
    drawn = lines(group_runs(store.runs()))
    assert [sorted(line.metric()) for line in drawn] == [[8, 16], [8, 16]]
    assert [line.config["model"]["name"] for line in drawn] == ["transformer", "lstm"]
    assert drawn[0].train_lengths == [8, 16]


def test_overlapping_test_lengths_split_lines_by_training_length(store: Store) -> None:
    add_run(
        store, {8: 0.9, 16: 0.5}, task__length=8, eval__lengths=[8, 16],
        model__params__positional="sinusoidal",
    )
    add_run(store, {16: 0.8}, task__length=16, model__params__positional="sinusoidal")
    drawn = lines(group_runs(store.runs()))
    assert [line.config["task"]["length"] for line in drawn] == [8, 16]
    assert [line.metric()[16].mean for line in drawn] == [0.5, 0.8]


def test_a_selection_chooses_on_validation_per_model_and_length(store: Store) -> None:
    """Per N, the learning rate with the better mean validation score over seeds is kept, even
    where the other has the better test score; the chosen configurations join into one line
    across N although different rates were chosen."""
    for seed in (0, 1):
        add_run(store, {8: 0.9}, val=0.4, train__lr=1e-3, train__seed=seed)
        add_run(store, {8: 0.2}, val=0.6, train__lr=3e-3, train__seed=seed)
        add_run(store, {16: 0.7}, val=0.8, train__lr=1e-3, train__seed=seed, task__length=16)
        add_run(store, {16: 0.1}, val=0.3, train__lr=3e-3, train__seed=seed, task__length=16)
    groups = group_runs(store.runs(), Selection(("train.lr",)))
    assert [(g.train_length, g.chosen) for g in groups] == [
        (8, {"train.lr": 3e-3}), (16, {"train.lr": 1e-3})
    ]
    assert [len(g.records) for g in groups] == [2, 2]
    assert [g.config["train"]["lr"] for g in groups] == [CHOSEN, CHOSEN]
    assert [[score for _, score in g.candidates] for g in groups] == [[0.4, 0.6], [0.8, 0.3]]
    (line,) = lines(groups)
    assert {n: e.mean for n, e in line.metric().items()} == {8: 0.2, 16: 0.7}


def test_a_tie_on_validation_goes_to_the_earlier_configuration(store: Store) -> None:
    add_run(store, {8: 0.5}, val=0.5, train__lr=3e-3)
    add_run(store, {8: 0.9}, val=0.5, train__lr=1e-3)
    (group,) = group_runs(store.runs(), Selection(("train.lr",)))
    assert group.chosen == {"train.lr": 3e-3}
