"""The report's "Constructions" section and its impossible-results warning.

From the stored construction runs (experiments that name a ``construction``):

- accuracy against N for each construction at the theorem's size (every size knob at its
  default);
- the smallest size that still gives 100 % against N (the size ladder: runs that set ``k``),
  with the smallest size the construction's certificate proves right on every input, and the
  fit k ≈ a + b log2 N (papers.md §2: width O(log N));
- accuracy against precision p at fixed N, and the smallest p giving 100 % against N (the
  theorems' p = O(log N)).

:func:`impossible_html` is the red box the report opens with when a stored result beats a
proven lower bound (:mod:`~sepbench.constructions.check`).
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sepbench.constructions import defaults
from sepbench.constructions.check import check_runs
from sepbench.store import RunRecord

SIZE_KNOBS = ("k", "eta", "gain", "bound")
PERFECT = 1.0


def is_construction(record: RunRecord) -> bool:
    return bool(record.config.get("construction"))


def split_constructions(records: Iterable[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """(trained runs, construction runs)."""
    records = list(records)
    return (
        [r for r in records if not is_construction(r)],
        [r for r in records if is_construction(r)],
    )


def latest(records: Iterable[RunRecord]) -> list[RunRecord]:
    """The newest finished run of each config."""
    newest: dict[str, RunRecord] = {}
    for record in records:
        if record.status == "done":
            newest[record.config_hash] = record
    return list(newest.values())


def params(record: RunRecord) -> dict[str, Any]:
    return record.config["construction"]["params"]


def length(record: RunRecord) -> int:
    return int(record.config["task"]["length"])


def accuracy(record: RunRecord) -> float | None:
    value = record.metrics.get("test_accuracy", {}).get(str(length(record)))
    if value is None:
        value = record.metrics.get("test_accuracy", {}).get(length(record))
    return None if value is None else float(value)


def certified(record: RunRecord) -> bool | None:
    return record.metrics.get("certificate", {}).get("certified")


def label(record: RunRecord) -> str:
    """The construction and what distinguishes its task: variant, Dyck's (k, m), alphabet."""
    name, task = record.config["construction"]["name"], record.config["task"]
    given = task.get("params", {})
    if task["name"] == "dyck":
        detail = f"Dyck-({given.get('num_types', 2)}, {given.get('max_depth', 2)})"
    elif task["name"] == "string_equality":
        detail = f"equality {given.get('variant', 'random')}"
    elif task["name"] == "nearest_neighbor":
        detail = f"nearest neighbour, dim {given.get('dim', 8)}"
    else:
        detail = task["name"].replace("_", " ")
    cell = params(record).get("activation")
    return f"{name} ({detail}{', ' + cell if cell else ''})"


def at_theorem_size(record: RunRecord) -> bool:
    knobs = defaults(record.config["construction"]["name"])
    given = params(record)
    return given.get("precision") is None and all(
        given.get(knob) == knobs[knob] for knob in SIZE_KNOBS if knob in knobs
    )


def on_size_ladder(record: RunRecord) -> bool:
    given = params(record)
    return given.get("k") is not None and given.get("precision") is None and not given.get("eta")


def on_precision_ladder(record: RunRecord) -> bool:
    return params(record).get("precision") is not None


# -- the measured tables ------------------------------------------------------------------


def smallest_sizes(records: Iterable[RunRecord]) -> list[dict[str, Any]]:
    """Per construction and N on the size ladder: the smallest k with 100 % test accuracy and
    the smallest k certified right on every input (None where no k on the ladder is)."""
    groups: dict[tuple[str, int], list[RunRecord]] = defaultdict(list)
    for record in records:
        if on_size_ladder(record) and accuracy(record) is not None:
            groups[(label(record), length(record))].append(record)
    rows = []
    for (name, n), runs in sorted(groups.items()):
        perfect = [params(r)["k"] for r in runs if accuracy(r) >= PERFECT]
        proven = [params(r)["k"] for r in runs if certified(r)]
        rows.append({
            "construction": name, "length": n, "ladder": sorted(params(r)["k"] for r in runs),
            "smallest_k": min(perfect, default=None),
            "smallest_certified_k": min(proven, default=None),
            "examples": runs[0].config["eval"]["examples"],
        })
    return rows


def smallest_precisions(records: Iterable[RunRecord]) -> list[dict[str, Any]]:
    """Per construction, rounding and N on the precision ladder: the smallest p with 100 %."""
    groups: dict[tuple[str, str, int], list[RunRecord]] = defaultdict(list)
    for record in records:
        if on_precision_ladder(record) and accuracy(record) is not None:
            key = (label(record), params(record).get("rounding", "fixed"), length(record))
            groups[key].append(record)
    rows = []
    for (name, rounding, n), runs in sorted(groups.items()):
        perfect = [params(r)["precision"] for r in runs if accuracy(r) >= PERFECT]
        rows.append({
            "construction": name, "rounding": rounding, "length": n,
            "ladder": sorted(params(r)["precision"] for r in runs),
            "smallest_precision": min(perfect, default=None),
        })
    return rows


def log_fit(points: list[tuple[int, int]]) -> tuple[float, float] | None:
    """(a, b) of the least-squares line k = a + b log2 N; None below two distinct N."""
    if len({n for n, _ in points}) < 2:
        return None
    slope, intercept = np.polyfit([np.log2(n) for n, _ in points], [k for _, k in points], 1)
    return float(intercept), float(slope)


# -- figures --------------------------------------------------------------------------------


def accuracy_figure(records: list[RunRecord]) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for record in records:
        if at_theorem_size(record) and accuracy(record) is not None:
            lines[label(record)].append((length(record), accuracy(record)))
    for name, points in sorted(lines.items()):
        points.sort()
        axes.plot(*zip(*points), marker="o", label=name)
    axes.set(
        title="constructions at the theorem's size", xscale="log", xlabel="length N",
        ylabel="test accuracy", ylim=(-0.02, 1.02),
    )
    _finish(figure, axes)
    return figure


def size_figure(rows: list[dict[str, Any]]) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_name[row["construction"]].append(row)
    for name, group in sorted(by_name.items()):
        points = [(r["length"], r["smallest_k"]) for r in group if r["smallest_k"] is not None]
        certified = [
            (r["length"], r["smallest_certified_k"])
            for r in group
            if r["smallest_certified_k"] is not None
        ]
        fit = log_fit(points)
        text = f" (k ≈ {fit[0]:.1f} + {fit[1]:.1f} log2 N)" if fit else ""
        if points:
            line = axes.plot(*zip(*points), marker="o", label=f"{name}: 100 %{text}")[0]
            if fit:
                grid = np.geomspace(min(n for n, _ in points), max(n for n, _ in points), 50)
                axes.plot(grid, fit[0] + fit[1] * np.log2(grid), ":", color=line.get_color())
        if certified:
            axes.plot(*zip(*certified), marker="x", linestyle="--", label=f"{name}: certified")
    axes.set(
        title="smallest size that solves length N", xscale="log", xlabel="length N",
        ylabel="smallest k (position-code width)",
    )
    _finish(figure, axes)
    return figure


def precision_figure(records: list[RunRecord], rows: list[dict[str, Any]]) -> plt.Figure:
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for record in records:
        if on_precision_ladder(record) and accuracy(record) is not None:
            key = f"{label(record)}, {params(record).get('rounding', 'fixed')}, N={length(record)}"
            lines[key].append((params(record)["precision"], accuracy(record)))
    for name, points in sorted(lines.items()):
        points.sort()
        left.plot(*zip(*points), marker="o", label=name)
    left.set(title="accuracy against precision", xlabel="precision p (bits)",
             ylabel="test accuracy", ylim=(-0.02, 1.02))
    smallest: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row in rows:
        if row["smallest_precision"] is not None:
            key = f"{row['construction']}, {row['rounding']}"
            smallest[key].append((row["length"], row["smallest_precision"]))
    for name, points in sorted(smallest.items()):
        points.sort()
        right.plot(*zip(*points), marker="o", label=name)
    right.set(title="smallest precision giving 100 %", xscale="log", xlabel="length N",
              ylabel="smallest p (bits)")
    _finish(figure, left)
    _finish(figure, right)
    return figure


def _finish(figure: plt.Figure, axes: plt.Axes) -> None:
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7)
    figure.tight_layout()


def _save(figure: plt.Figure, stem: Path) -> tuple[list[Path], str]:
    """PNG and SVG beside each other; the PNG as base64 for the page."""
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        figure.savefig(path, dpi=120)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return paths, base64.b64encode(buffer.getvalue()).decode()


# -- HTML ---------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], columns: dict[str, str]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for title in columns.values())
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row[key]))}</td>" for key in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return "none on the ladder"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def run_table(records: list[RunRecord]) -> str:
    rows = []
    for r in sorted(records, key=lambda r: (label(r), length(r), str(params(r)))):
        theirs = defaults(r.config["construction"]["name"])
        knobs = {k: v for k, v in params(r).items() if v != theirs[k]}
        rows.append({
            "run": r.id, "construction": label(r), "length": length(r),
            "knobs": ", ".join(f"{k}={v}" for k, v in knobs.items()) or "theorem's",
            "width": r.metrics.get("construction", {}).get("width"),
            "accuracy": f"{accuracy(r):.3f}" if accuracy(r) is not None else "",
            "certified": certified(r),
            "examples": r.config["eval"]["examples"],
        })
    return table(rows, {
        "run": "run", "construction": "construction", "length": "N", "knobs": "knobs",
        "width": "width", "accuracy": "test accuracy", "certified": "certified",
        "examples": "test examples",
    })


def constructions_section(records: list[RunRecord], out: Path) -> tuple[str, list[Path]]:
    """The "Constructions" section (HTML) and its figure files; empty without such runs."""
    records = latest(records)
    if not records:
        return "", []
    sizes, precisions = smallest_sizes(records), smallest_precisions(records)
    images, files = [], []
    for kind, figure in (
        ("accuracy", accuracy_figure(records)),
        ("size", size_figure(sizes)),
        ("precision", precision_figure(records, precisions)),
    ):
        paths, encoded = _save(figure, out / f"constructions_{kind}")
        files.extend(paths)
        images.append(f'<img alt="constructions {kind}" src="data:image/png;base64,{encoded}">')
    page = (
        "<h2>Constructions</h2><p>Hand-built models realising the theorems of papers.md §2, "
        "evaluated like trained runs. 100 % means every test example right; certified means "
        "the construction's own check proves it right on every input.</p>"
        f"{images[0]}{images[1]}"
        "<h3>Smallest size giving 100 %</h3>"
        + table(sizes, {
            "construction": "construction", "length": "N", "smallest_k": "smallest k (100 %)",
            "smallest_certified_k": "smallest certified k", "ladder": "k tried",
            "examples": "test examples",
        })
        + f"{images[2]}<h3>Smallest precision giving 100 %</h3>"
        + table(precisions, {
            "construction": "construction", "rounding": "rounding", "length": "N",
            "smallest_precision": "smallest p", "ladder": "p tried",
        })
        + "<h3>Every construction run</h3>" + run_table(records)
    )
    return page, files


def impossible_html(records: Iterable[RunRecord]) -> str:
    """A red box listing the results that beat a proven lower bound; empty when none do."""
    found = check_runs(records).impossible
    if not found:
        return ""
    items = "".join(f"<li>{html.escape(item.describe())}</li>" for item in found)
    return (
        '<div style="border: 2px solid #c00; background: #fee; color: #900; padding: 0.5em '
        '1em;"><strong>Impossible results: a recurrent model reports accuracy with less state '
        f"than a proven lower bound allows.</strong><ul>{items}</ul></div>"
    )
