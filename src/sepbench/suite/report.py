"""The suite's table and report: the user's model beside the shipped baselines, family by
family, with the verdict at each family's judged length (:mod:`sepbench.suite.verdict`).

The figure has one panel per family: the metric at each length, one marker per model with its
95 % interval over seeds, the user's model in black, the judge's thresholds as dotted lines.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sepbench.report import STYLE, save
from sepbench.suite.baselines import Baselines, MeasuredModel
from sepbench.suite.definition import Suite
from sepbench.suite.verdict import Peer, Score, behaves_like, outcome
from sepbench.summary import Column, html_table, text_table

BASELINE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf")


@dataclass(frozen=True)
class SuiteReport:
    html: Path
    figures: list[Path]


def columns(user: MeasuredModel, baselines: Baselines | None) -> list[Column]:
    peers = baselines.models if baselines else []
    return [
        Column("family", "family"),
        Column("length", "N"),
        Column("metric", "metric"),
        Column("user", f"{user.label} (yours)"),
        *[Column(f"baseline{i}", f"{m.label} ({m.kind})") for i, m in enumerate(peers)],
        Column("verdict", "verdict (at the judged N)"),
    ]


def rows(suite: Suite, user: MeasuredModel, baselines: Baselines | None) -> list[dict[str, str]]:
    """One row per family and length; the verdict on the family's judged length."""
    peers = baselines.models if baselines else []
    table = []
    for name, family in suite.families.items():
        for length in family.lengths:
            row = {"family": name, "length": str(length), "metric": family.judge.metric,
                   "user": _cell(user.scores.get(name, {}).get(length))}
            for i, peer in enumerate(peers):
                row[f"baseline{i}"] = _cell(peer.scores.get(name, {}).get(length))
            if length == family.judged_length:
                row["verdict"] = verdict_text(suite, name, user, peers)
            table.append(row)
    return table


def verdict_text(
    suite: Suite, family: str, user: MeasuredModel, peers: Sequence[MeasuredModel]
) -> str:
    judge, length = suite.families[family].judge, suite.families[family].judged_length
    mine = user.scores.get(family, {}).get(length)
    if not peers:
        return f"{outcome(judge, mine)} (no baselines)"
    seen = [Peer(p.label, p.kind, p.scores.get(family, {}).get(length)) for p in peers]
    return f"{outcome(judge, mine)}: {behaves_like(judge, mine, seen)}"


def _cell(score: Score | None) -> str:
    if score is None:
        return "-"
    return f"{score.estimate.text()} (lr {score.lr:g})"


def text(suite: Suite, user: MeasuredModel, baselines: Baselines | None) -> str:
    return text_table(columns(user, baselines), rows(suite, user, baselines))


def write(out: Path, suite: Suite, user: MeasuredModel, baselines: Baselines | None) -> SuiteReport:
    """``out/report.html`` with the verdict table and the figure (also PNG and SVG)."""
    out.mkdir(parents=True, exist_ok=True)
    figure_paths, encoded = save(figure(suite, user, baselines), out / "suite")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>sepbench suite</title>"
        f"<style>{STYLE}</style></head><body><h1>Separation suite: {html.escape(user.label)}</h1>"
        f"<p>{_intro(suite, baselines)}</p>"
        f"{html_table(columns(user, baselines), rows(suite, user, baselines))}"
        f"<img src='data:image/png;base64,{encoded}' alt='suite scores per family'>"
        f"{_families(suite)}</body></html>"
    )
    page_path = out / "report.html"
    page_path.write_text(page)
    return SuiteReport(page_path, figure_paths)


def _intro(suite: Suite, baselines: Baselines | None) -> str:
    budget = (
        f"Budget <code>{suite.budget}</code>: every model at most {suite.base['train']['steps']} "
        f"steps (a family may set its batch), its learning rate chosen on validation from "
        f"{', '.join(f'{lr:g}' for lr in suite.lr)}; mean ± 95 % Student-t interval over seeds. "
    )
    if baselines is None:
        return budget + (
            "No baselines are measured for this budget yet: "
            f"<code>sepbench suite --refresh-baselines --budget {suite.budget}</code>."
        )
    source = baselines.provenance
    where = (f"Baselines measured {source.get('date')} at commit "
             f"{str(source.get('commit'))[:10]} ({source.get('machine')}, "
             f"{source.get('seeds')} seeds).")
    stale = (" <b>The suite has changed since: refresh them with <code>sepbench suite "
             "--refresh-baselines</code>.</b>") if baselines.stale(suite) else ""
    return budget + html.escape(where) + stale


def _families(suite: Suite) -> str:
    items = "".join(
        f"<li><b>{html.escape(name)}</b> ({f.paper}): {html.escape(f.text)}; judged at N = "
        f"{f.judged_length} on {f.judge.metric}: solves at ≥ {f.judge.pass_:g}, fails at ≤ "
        f"{f.judge.fail:g}</li>"
        for name, f in suite.families.items()
    )
    return f"<h2>Families</h2><ul>{items}</ul>"


def figure(suite: Suite, user: MeasuredModel, baselines: Baselines | None) -> plt.Figure:
    models = [user, *(baselines.models if baselines else [])]
    names = list(suite.families)
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 3.2), sharey=True,
                             squeeze=False)
    for ax, name in zip(axes[0], names):
        family = suite.families[name]
        for k, model in enumerate(models):
            color = "black" if k == 0 else BASELINE_COLORS[(k - 1) % len(BASELINE_COLORS)]
            _draw(ax, family.lengths, model.scores.get(name, {}), k, len(models), color,
                  model.label if name == names[0] else None)
        for level in (family.judge.pass_, family.judge.fail):
            ax.axhline(level, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xticks(range(len(family.lengths)), [f"N={n}" for n in family.lengths])
        ax.set_title(f"{name}\n{family.judge.metric}", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("score (mean, 95 % t)")
    fig.legend(loc="lower center", ncol=len(models), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def _draw(ax: plt.Axes, lengths: list[int], scores: dict[int, Score], k: int, count: int,
          color: str, label: str | None) -> None:
    offset = (k - (count - 1) / 2) * 0.12
    xs, ys, errors = [], [], []
    for i, length in enumerate(lengths):
        if length in scores:
            estimate = scores[length].estimate
            xs.append(i + offset)
            ys.append(estimate.mean)
            errors.append(estimate.half_width or 0.0)
    ax.errorbar(xs, ys, yerr=errors, fmt="o", color=color, markersize=4, capsize=2, label=label)
