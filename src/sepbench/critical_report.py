"""The report of a critical-size search (:mod:`sepbench.critical`): one figure, the table, the
result as JSON.

The figure has two panels on log-log axes, one colour per model family:

- critical width against N: a point per N where the search found one, its bar the bracket
  (largest failing width, critical width]; ``v`` where the smallest width tried already passes
  (the critical width is at most that), ``^`` at the largest width tried where none passed;
  a red ring where a larger width failed after a smaller one passed (non-monotone). Per
  family the better of a·log2 N + b and a·N + b by leave-one-out error over N, named in the
  legend with both errors; the theory's bound beside it, dotted, where there is one (a lower
  bound for a recurrent family, the construction's size for an attention one);
- the state size at the critical width against N (scalars after the prompt; a Transformer's
  KV cache grows with N), with the bound as a state.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter, ScalarFormatter

from sepbench.critical import COLUMNS, METRIC, Cell, CriticalResult, fits, rows
from sepbench.report import STYLE, save
from sepbench.summary import html_table


@dataclass
class CriticalReport:
    """What :func:`write_report` wrote."""

    html: Path
    figures: list[Path]
    json: Path


def write_report(result: CriticalResult, out: Path) -> CriticalReport:
    """Write ``out/report.html`` (figure embedded), the figure as PNG and SVG, and
    ``out/critical.json`` (every cell with every probe and its run ids)."""
    out.mkdir(parents=True, exist_ok=True)
    figures, encoded = save(critical_figure(result), out / "critical")
    data = out / "critical.json"
    data.write_text(json.dumps(result.to_dict(), indent=1, default=str))
    settings = result.settings
    bounds = {
        (cell.family, cell.bound.statement)
        for cell in result.cells
        if cell.bound is not None
    }
    bound_items = "".join(
        f"<li><b>{html.escape(family)}</b>: {html.escape(statement)}</li>"
        for family, statement in sorted(bounds)
    )
    fitted = "".join(
        f"<li><b>{html.escape(family)}</b>: "
        + (html.escape(found.text()) if found else "fewer than 3 lengths with a bracket: no fit")
        + "</li>"
        for family, found in fits(result).items()
    )
    step = f", bisecting over multiples of {settings.step}" if settings.step else ""
    skip = (
        " Second assumption (skip_below_shorter): the critical width does not shrink as N "
        "grows, so widths below the one found at the next shorter N are taken to fail unmeasured."
        if settings.skip_below_shorter else ""
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>sepbench critical: {html.escape(result.name)}</title><style>{STYLE}</style>"
        f"</head><body><h1>Critical size against length: {html.escape(result.name)}</h1>"
        f"<p>Per model family and N, the smallest width whose {METRIC} (mean over "
        f"{settings.seeds} seeds) reaches {settings.target:g}: the ladder "
        f"{settings.widths} probed in order until a rung passes{step}"
        f"{', then the rung above as a check' if settings.confirm else ''}. The search assumes "
        "accuracy is monotone in width; a larger width that fails after a smaller one passed "
        f"is reported (non-monotone), not hidden.{skip} Every run is in the store; "
        f"<code>{data.name}</code> has every probe with its run ids.</p>"
        f'<img alt="critical size" src="data:image/png;base64,{encoded}">'
        f"<h2>Fits (critical width against N)</h2><ul>{fitted}</ul>"
        "<p>Both a·log2 N + b and a·N + b are fitted by least squares to the lengths with a "
        "bracket (a critical width at the ladder's floor is only an upper bound and is left "
        "out); the one with the smaller leave-one-out error over N is drawn.</p>"
        + (f"<h2>Theory</h2><ul>{bound_items}</ul>" if bound_items else "")
        + f"<h2>Table</h2>{html_table(COLUMNS, rows(result))}</body></html>"
    )
    page_path = out / "report.html"
    page_path.write_text(page)
    return CriticalReport(page_path, figures, data)


def critical_figure(result: CriticalResult) -> plt.Figure:
    """Critical width and the state at it, against N (log-log), per family."""
    figure, (width_axes, state_axes) = plt.subplots(1, 2, figsize=(13.6, 7.6))
    lengths = sorted({cell.length for cell in result.cells})
    grid = np.geomspace(min(lengths), max(lengths), 64) if len(lengths) > 1 else np.array(lengths)
    fitted = fits(result)
    for index, family in enumerate(result.families()):
        color = f"C{index % 10}"
        cells = [cell for cell in result.cells if cell.family == family]
        for axes, value in ((width_axes, _width), (state_axes, _state)):
            _draw_points(axes, cells, value, color, family)
            _draw_bound(axes, cells, color, family, axes is width_axes)
        found = fitted[family]
        if found is not None:
            ys = found(grid)
            keep = ys > 0
            width_axes.plot(
                grid[keep], ys[keep], linestyle="--", color=color, linewidth=1,
                label=f"{family} fit: {found.text()}",
            )
    target = f"{METRIC} ≥ {result.settings.target:g}, mean of {result.settings.seeds} seeds"
    width_axes.set(title=f"critical width ({target})", ylabel="width")
    state_axes.set(
        title="state size at the critical width",
        ylabel="state (scalars after the prompt at N)",
    )
    for axes in (width_axes, state_axes):
        axes.set(xscale="log", yscale="log", xlabel="length N")
        axes.set_xticks(lengths)
        axes.xaxis.set_major_formatter(ScalarFormatter())
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.grid(alpha=0.3, which="both")
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    figure.suptitle(
        f"{result.name}: critical size against length (v: at most this width, the smallest "
        "tried; ^: no width tried passes; bar: (largest failing, critical])",
        fontsize=9,
    )
    figure.tight_layout()
    return figure


def _width(cell: Cell) -> tuple[float | None, float | None]:
    """(the value drawn, the bracket's low end) in widths."""
    if cell.critical is not None:
        return float(cell.critical), float(cell.lower) if cell.lower else None
    tried = [probe.width for probe in cell.probes]
    return (float(max(tried)) if tried else None), None


def _state(cell: Cell) -> tuple[float | None, float | None]:
    """(the value drawn, none) in state scalars: at the critical width, or at the largest
    width tried where none passed."""
    if cell.critical is not None:
        return (float(cell.state_size) if cell.state_size else None), None
    sizes = [p.state_size for p in cell.probes if p.state_size]
    return (float(sizes[-1]) if sizes else None), None


Value = Callable[[Cell], tuple[float | None, float | None]]
RING = "non-monotone: a larger width failed"


def _draw_points(axes: plt.Axes, cells: list[Cell], value: Value, color: str, family: str) -> None:
    """The family's points, a red ring on each non-monotone one (labelled once per panel)."""
    labelled = False
    for cell in cells:
        y, low = value(cell)
        if y is None:
            continue
        if cell.critical is None:
            marker, face = "^", "none"
        elif not cell.lower:
            marker, face = "v", color
        else:
            marker, face = "o", color
        axes.errorbar(
            [cell.length], [y],
            yerr=[[y - low], [0.0]] if low is not None else None,
            marker=marker, markerfacecolor=face, color=color, capsize=3, linestyle="none",
            label=None if labelled else family,
        )
        labelled = True
        if cell.non_monotone:
            axes.plot(
                [cell.length], [y], marker="o", markersize=14, markerfacecolor="none",
                markeredgecolor="red", linestyle="none",
                label=None if RING in axes.get_legend_handles_labels()[1] else RING,
            )
    _connect(axes, cells, value, color)


def _connect(axes: plt.Axes, cells: list[Cell], value: Value, color: str) -> None:
    """A thin line through the family's found points, in order of N."""
    points = [(c.length, value(c)[0]) for c in cells if c.critical is not None]
    points = [(n, y) for n, y in points if y is not None]
    if len(points) > 1:
        axes.plot(*zip(*points), color=color, linewidth=0.8, alpha=0.6)


def _draw_bound(
    axes: plt.Axes, cells: list[Cell], color: str, family: str, as_width: bool
) -> None:
    """The theory's bound at the family's lengths, dotted (``lower`` or ``upper``)."""
    points = []
    for cell in cells:
        if cell.bound is None:
            continue
        y = cell.bound.width if as_width else cell.bound.state
        if y is not None and y > 0:
            points.append((cell.length, y))
    if not points:
        return
    kind = next(cell.bound.kind for cell in cells if cell.bound is not None)
    axes.plot(
        *zip(*points), linestyle=":", marker=".", color=color, linewidth=1.2,
        label=f"{family}: theory's {kind} bound (see the report)",
    )
