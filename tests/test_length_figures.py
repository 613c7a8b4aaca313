"""The length-generalisation figures (src/sepbench/length_figures.py) from hand-made run
records: selection on validation, grouping, the heat-map's cells and the curves' panels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from matplotlib import pyplot as plt

from sepbench.length_figures import (
    length_curves,
    mode_of,
    model_of,
    ood_heatmap,
    ood_scores,
    select_on_validation,
)
from sepbench.models import resolve
from sepbench.store import RunRecord


def record(
    task: str = "parity",
    model: str = "lstm",
    positional: str | None = None,
    mode: str = "direct",
    seed: int = 0,
    lr: float = 1e-3,
    val: float = 1.0,
    curve: dict[int, float] | None = None,
) -> RunRecord:
    params: dict[str, Any] = {"cot": mode == "cot", "filler": mode == "filler"}
    model_params = {} if positional is None else {"positional": positional}
    curve = curve or {10: 1.0, 20: 1.0, 30: 0.5, 40: 0.25}
    config = {
        "task": {"name": task, "length": 20, "params": params},
        "model": resolve(model, 8, 1, model_params),
        "train": {"seed": seed, "lr": lr, "steps": 10},
        "eval": {"lengths": sorted(curve)},
        "name": None,
    }
    ood = float(np.mean([a for n, a in curve.items() if n > 20]))
    metrics = {"best_val_accuracy": val, "test_accuracy": {str(n): a for n, a in curve.items()},
               "ood_accuracy": ood}
    return RunRecord(1, f"{task}{model}{mode}{seed}{lr}", task, model, config, "done", metrics)


def test_labels_name_the_mode_and_the_positional_encoding() -> None:
    assert mode_of(record(mode="cot").config) == "cot"
    assert mode_of(record(mode="filler").config) == "filler"
    assert mode_of(record().config) == "direct"
    assert model_of(record(model="transformer", positional="none").config) == "transformer-nope"
    assert model_of(record(model="transformer", positional="rope").config) == "transformer-rope"
    assert model_of(record(model="transformer").config) == "transformer-learned"
    assert model_of(record(model="gru").config) == "gru"


def test_the_learning_rate_is_chosen_on_validation_per_seed() -> None:
    good = record(lr=1e-3, val=0.9, curve={20: 0.9, 40: 0.1})
    better = record(lr=3e-3, val=0.95, curve={20: 0.95, 40: 0.0})
    other_seed = record(seed=1, lr=1e-3, val=0.5, curve={20: 0.5, 40: 0.7})
    failed = record(seed=2)
    failed.status = "failed"
    kept = select_on_validation([good, better, other_seed, failed])
    assert sorted(r.config["train"]["lr"] for r in kept) == [1e-3, 3e-3]
    assert better in kept and good not in kept  # test accuracy plays no part
    assert ood_scores([good, better, other_seed]) == {("parity", "lstm", "direct"): [0.0, 0.7]}


def test_the_heatmap_holds_the_mean_over_seeds_per_task_model_and_mode() -> None:
    records = [
        record(seed=0, curve={20: 1.0, 40: 0.8}),
        record(seed=1, curve={20: 1.0, 40: 0.6}),
        record(model="transformer", positional="none", mode="cot", curve={20: 1.0, 40: 0.3}),
        record(task="dyck", curve={20: 1.0, 40: 0.5}),
    ]
    figure = ood_heatmap(records)
    cells = figure.axes[0].images[0].get_array()
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels == ["lstm", "transformer-nope"]
    rows = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert rows == ["dyck, direct", "parity, direct", "parity, cot"]
    np.testing.assert_allclose(
        cells.filled(np.nan), [[0.5, np.nan], [0.7, np.nan], [np.nan, 0.3]]
    )
    plt.close(figure)


def test_the_curves_have_a_panel_per_task_and_mode_with_the_training_range_shaded() -> None:
    records = [
        record(seed=s, mode=mode, model=model)
        for s in (0, 1)
        for mode in ("direct", "cot")
        for model in ("lstm", "gru")
    ] + [record(task="dyck", model="mamba")]
    figure = length_curves(records)
    titles = sorted(a.get_title() for a in figure.axes if a.get_title())
    assert titles == ["dyck, direct", "parity, cot", "parity, direct"]
    panel = next(a for a in figure.axes if a.get_title() == "parity, direct")
    assert sorted(bars.get_label() for bars in panel.containers) == ["gru", "lstm"]
    shaded = panel.patches[0]
    assert (shaded.get_x(), shaded.get_width()) == pytest.approx((0, 20))
    plt.close(figure)
    probe = length_curves(records, models=["gru"])
    labels = {bars.get_label() for a in probe.axes for bars in a.containers}
    assert labels == {"gru"}
    plt.close(probe)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, "direct"), ({"cot": True}, "cot"), ({"filler": True}, "filler"),
        ({"cot": "interleaved"}, "cot-interleaved"),
        ({"filler": "interleaved"}, "filler-interleaved"),
    ],
)
def test_mode_names_each_trace_and_layout(params: dict, expected: str) -> None:
    assert mode_of({"task": {"params": {"cot": False, "filler": False, **params}}}) == expected
