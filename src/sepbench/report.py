"""Reports: figures and a self-contained HTML page from the results store.

Per task: test accuracy against length (one line per model, the majority-answer baseline
drawn), validation accuracy against training step, and a table of every run (parameters,
state size, steps, wall time, accuracy). Each figure is also written as PNG and SVG.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sepbench import tasks
from sepbench.errors import SepbenchError
from sepbench.store import RunRecord, Store


@dataclass
class Report:
    """What :func:`write_report` produced."""

    html: Path
    figures: list[Path]
    runs: int


def model_label(record: RunRecord) -> str:
    """A model's legend entry: name, width and depth (what distinguishes runs in a sweep)."""
    model = record.config["model"]
    layers = model.get("layers") or len(model.get("params", {}).get("mixers", []) or [])
    return f"{model['name']} w{model['width']} L{layers}"


def test_accuracy(record: RunRecord) -> dict[int, float]:
    """Per-length test accuracy of a run, keys as ints."""
    return {int(k): float(v) for k, v in record.metrics.get("test_accuracy", {}).items()}


def majority_baseline(record: RunRecord, length: int, examples: int = 2000) -> float:
    """Accuracy of always answering the most frequent answer: the chance level drawn."""
    task_config = record.config["task"]
    task = tasks.get(task_config["name"], **task_config.get("params", {}))
    batch = task.sample(np.random.default_rng(0), examples, length)
    return Counter(batch.answers).most_common(1)[0][1] / examples


def latest_per_config(records: list[RunRecord]) -> list[RunRecord]:
    """The newest finished (done or diverged) run of each config."""
    latest: dict[str, RunRecord] = {}
    for record in records:
        if record.status in ("done", "diverged"):
            latest[record.config_hash] = record
    return sorted(latest.values(), key=lambda r: (model_label(r), r.config["task"]["length"]))


def accuracy_figure(task: str, records: list[RunRecord]) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    by_model: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for record in records:
        by_model[model_label(record)].extend(test_accuracy(record).items())
    for label, points in sorted(by_model.items()):
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    lengths = sorted({length for points in by_model.values() for length, _ in points})
    if lengths:
        baseline = [majority_baseline(records[0], n) for n in lengths]
        axes.plot(lengths, baseline, "k--", linewidth=1, label="chance (majority answer)")
    axes.set(
        title=f"{task}: test accuracy against length",
        xlabel="length",
        ylabel="test accuracy",
        ylim=(-0.02, 1.02),
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def curves_figure(task: str, records: list[RunRecord], store: Store) -> plt.Figure:
    lengths = sorted({r.config["task"]["length"] for r in records})
    figure, all_axes = plt.subplots(
        1, len(lengths), figsize=(4.2 * len(lengths), 3.6), squeeze=False, sharey=True
    )
    for axes, length in zip(all_axes[0], lengths):
        for record in records:
            if record.config["task"]["length"] != length:
                continue
            points = [p for p in store.curve(record.id) if p["val_accuracy"] is not None]
            axes.plot(
                [p["step"] for p in points],
                [p["val_accuracy"] for p in points],
                label=model_label(record),
            )
        axes.set(title=f"length {length}", xlabel="training step", ylim=(-0.02, 1.02))
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    all_axes[0][0].set_ylabel("validation accuracy")
    figure.suptitle(f"{task}: training curves")
    figure.tight_layout()
    return figure


def save(figure: plt.Figure, stem: Path) -> tuple[list[Path], str]:
    """Write PNG and SVG beside each other; return the paths and the PNG as base64."""
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        figure.savefig(path, dpi=120)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return paths, base64.b64encode(buffer.getvalue()).decode()


def run_table(records: list[RunRecord]) -> str:
    header = [
        "run", "model", "length", "status", "parameters", "state size", "steps",
        "wall time (s)", "test accuracy",
    ]
    rows = []
    for r in records:
        accuracy = ", ".join(f"{n}: {a:.3f}" for n, a in sorted(test_accuracy(r).items()))
        cells = [
            r.id, model_label(r), r.config["task"]["length"], r.status, r.num_parameters,
            r.state_size, r.metrics.get("steps_run"), _round(r.wall_time_s), accuracy,
        ]
        rows.append("".join(f"<td>{html.escape(str(c))}</td>" for c in cells))
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(f"<tr>{row}</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _round(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } img { max-width: 100%; }
"""


def write_report(
    store: Store, out: Path, task: str | None = None, run_ids: list[int] | None = None
) -> Report:
    """Write ``out/report.html`` (figures embedded) and each figure as PNG and SVG.

    Reports every finished run of ``task`` (all tasks if None), or only ``run_ids``.
    """
    records = store.runs(task=task)
    if run_ids is not None:
        records = [r for r in records if r.id in set(run_ids)]
    records = latest_per_config(records)
    if not records:
        where = f" for task {task!r}" if task else ""
        raise SepbenchError(f"report: no finished runs{where} in {store.path}")
    out.mkdir(parents=True, exist_ok=True)
    by_task: dict[str, list[RunRecord]] = defaultdict(list)
    for record in records:
        by_task[record.task].append(record)
    sections, figures = [], []
    for name, task_records in sorted(by_task.items()):
        images = []
        for kind, figure in (
            ("accuracy", accuracy_figure(name, task_records)),
            ("curves", curves_figure(name, task_records, store)),
        ):
            paths, encoded = save(figure, out / f"{name}_{kind}")
            figures.extend(paths)
            images.append(f'<img alt="{name} {kind}" src="data:image/png;base64,{encoded}">')
        sections.append(f"<h2>{html.escape(name)}</h2>{''.join(images)}{run_table(task_records)}")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>sepbench report</title>"
        f"<style>{STYLE}</style></head><body><h1>sepbench report</h1>"
        f"<p>{len(records)} runs from <code>{html.escape(str(store.path))}</code>.</p>"
        f"{''.join(sections)}</body></html>"
    )
    page_path = out / "report.html"
    page_path.write_text(page)
    return Report(page_path, figures, len(records))
