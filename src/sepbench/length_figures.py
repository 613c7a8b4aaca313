"""Figures of the length-generalisation protocol (papers.md §3, Delétang et al.'s protocol as
Zhang et al.'s experiments use it), drawn from stored run records:

- :func:`length_curves`: test accuracy against test length, one panel per (task, mode), one
  line per model, the mean over seeds with the spread (min to max) as error bars, and the
  training range shaded;
- :func:`ood_heatmap`: the summary a reader of Delétang et al. expects, the out-of-distribution
  score (``ood_accuracy``, the mean over the lengths beyond training) for (task, mode) × model,
  averaged over seeds.

A run counts when it has per-length test accuracies (and, for the heat-map, ``ood_accuracy``).
Where several learning rates were swept, :func:`select_on_validation` keeps, per
configuration and seed, the run with the best validation accuracy (never the test score).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sepbench.store import RunRecord

MODES = ("direct", "cot", "filler", "cot-interleaved", "filler-interleaved")


def mode_of(config: dict[str, Any]) -> str:
    """``direct``, ``cot``, ``filler``, or ``cot-interleaved`` / ``filler-interleaved`` (the
    serial tasks' interleaved layout), from a run's task parameters."""
    params = config["task"].get("params", {})
    for trace in ("cot", "filler"):
        if params.get(trace) == "interleaved":
            return f"{trace}-interleaved"
        if params.get(trace):
            return trace
    return "direct"


def model_of(config: dict[str, Any]) -> str:
    """The model's name; a Transformer's carries its positional encoding (``transformer-rope``,
    ``transformer-nope``), the comparison papers.md §3 needs. Reads a resolved model spec
    (:mod:`sepbench.models.spec`: RoPE is a flag of the attention layers, the table kind a
    model option)."""
    model = config["model"]
    if model["name"] != "transformer":
        return model["name"]
    layers = model.get("layers")
    if isinstance(layers, list) and any(layer["mixer"].get("rope") for layer in layers):
        return "transformer-rope"
    positional = model.get("params", {}).get("positional") or "learned"
    return f"transformer-{'nope' if positional == 'none' else positional}"


def select_on_validation(records: Iterable[RunRecord]) -> list[RunRecord]:
    """Per configuration and seed, the finished run with the best validation accuracy among
    the learning rates swept (ties: the first)."""
    best: dict[str, RunRecord] = {}
    for record in records:
        if record.status != "done" or "test_accuracy" not in record.metrics:
            continue
        key = _without_lr(record.config)
        score = record.metrics.get("best_val_accuracy") or 0.0
        kept = best.get(key)
        if kept is None or score > (kept.metrics.get("best_val_accuracy") or 0.0):
            best[key] = record
    return list(best.values())


def ood_scores(records: Iterable[RunRecord]) -> dict[tuple[str, str, str], list[float]]:
    """``ood_accuracy`` of every run, grouped by (task, model, mode), one value per seed."""
    scores: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for record in select_on_validation(records):
        if "ood_accuracy" in record.metrics:
            key = (record.config["task"]["name"], model_of(record.config), mode_of(record.config))
            scores[key].append(float(record.metrics["ood_accuracy"]))
    return dict(scores)


def ood_heatmap(records: Iterable[RunRecord]) -> plt.Figure:
    """Mean OOD accuracy over seeds: rows (task, mode), columns models; blank where no run."""
    scores = ood_scores(records)
    rows = sorted({(t, mode) for t, _, mode in scores}, key=lambda r: (r[0], MODES.index(r[1])))
    model_names = sorted({model for _, model, _ in scores})
    grid = np.full((len(rows), len(model_names)), np.nan)
    for (task, model, mode), values in scores.items():
        grid[rows.index((task, mode)), model_names.index(model)] = np.mean(values)
    figure, axes = plt.subplots(
        figsize=(max(6.0, 1.1 * len(model_names) + 3), max(2.5, 0.42 * len(rows) + 1.8))
    )
    image = axes.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (row, column), value in np.ndenumerate(grid):
        if not np.isnan(value):
            colour = "black" if value > 0.6 else "white"
            axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8, c=colour)
    axes.set_xticks(range(len(model_names)), model_names, fontsize=8)
    axes.tick_params(axis="x", labelrotation=30)
    axes.set_yticks(range(len(rows)), [f"{task}, {mode}" for task, mode in rows], fontsize=8)
    axes.set_title("accuracy out of distribution (mean over the lengths beyond training, seeds)")
    figure.colorbar(image, ax=axes, fraction=0.03)
    figure.tight_layout()
    return figure


def length_curves(
    records: Iterable[RunRecord], *, models: Iterable[str] | None = None
) -> plt.Figure:
    """Accuracy against test length, a panel per (task, mode), a line per model (mean over
    seeds, min-max error bars), the training lengths 1..T shaded; ``models`` keeps only those
    (e.g. the recurrence-completeness probe of papers.md §3)."""
    wanted = set(models) if models is not None else None
    curves: dict[tuple[str, str], dict[str, list[dict[int, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    trained: dict[tuple[str, str], int] = {}
    for record in select_on_validation(records):
        model = model_of(record.config)
        if wanted is not None and model not in wanted:
            continue
        panel = (record.config["task"]["name"], mode_of(record.config))
        curves[panel][model].append({int(n): a for n, a in record.metrics["test_accuracy"].items()})
        trained[panel] = int(record.config["task"]["length"])
    panels = sorted(curves, key=lambda p: (p[0], MODES.index(p[1])))
    columns = min(3, max(1, len(panels)))
    rows = max(1, -(-len(panels) // columns))
    figure, grid = plt.subplots(
        rows, columns, figsize=(4.6 * columns, 3.3 * rows), squeeze=False, sharey=True
    )
    for axes, panel in zip(grid.flat, panels):
        axes.axvspan(0, trained[panel], color="0.9", label="training lengths")
        for model, runs in sorted(curves[panel].items()):
            _draw_mean_and_spread(axes, model, runs)
        axes.set(title=f"{panel[0]}, {panel[1]}", xlabel="test length", ylim=(-0.03, 1.03))
    for axes in grid.flat[len(panels) :]:
        axes.set_axis_off()
    grid[0, 0].set_ylabel("accuracy")
    if panels:
        handles, labels = grid.flat[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure


def _draw_mean_and_spread(axes: plt.Axes, model: str, runs: list[dict[int, float]]) -> None:
    lengths = sorted(set.intersection(*(set(run) for run in runs)))
    values = np.array([[run[n] for n in lengths] for run in runs])
    mean = values.mean(axis=0)
    spread = np.stack([mean - values.min(axis=0), values.max(axis=0) - mean])
    axes.errorbar(lengths, mean, yerr=spread, marker=".", capsize=2, linewidth=1, label=model)


def _has(scores: dict[tuple[str, str, str], list[float]], model: str, mode: str) -> bool:
    return any(m == model and md == mode for _, m, md in scores)


def _without_lr(config: dict[str, Any]) -> str:
    """The configuration with the learning rate and the name left out, as canonical JSON."""
    train = {k: v for k, v in config["train"].items() if k != "lr"}
    rest = {k: v for k, v in config.items() if k not in ("train", "name")}
    return json.dumps({**rest, "train": train}, sort_keys=True)
