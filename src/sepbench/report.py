"""Reports: a self-contained HTML page, and every figure as PNG and SVG, from the stored runs.

Everything is aggregated over seeds (:mod:`sepbench.aggregate`): a point is the mean over the
seeds of one configuration, its error bar the 95 % Student-t interval; a configuration with one
seed has no bar and its legend entry says ``n=1``. The page opens with the claims, when given
(:mod:`sepbench.claims`: text, paper section, verdict, numbers). Then, per task:

- test accuracy against test length: one line per configuration, labelled by the model
  summary and exactly the config fields that vary among the lines of its panel
  (:mod:`sepbench.labels`), in the same colour in every panel; one panel per task mode
  (``mode``, ``cot``, ``filler``, ``variant``) where the runs differ in it; the training
  lengths stated on the x axis; chance from the task itself
  (:meth:`~sepbench.tasks.base.Task.chance`: the best guess that ignores the prompt), one
  dashed line per distinct task. Where every run generated freely (and so stored the
  ``answer`` metric), the figure draws the answer accuracy, Wen et al.'s generation metric
  (papers.md §1), with its own chance (:meth:`~sepbench.tasks.base.Task.answer_chance`); the
  table gives both;
- for the retrieval tasks, accuracy against state size (log scale), one panel per test length:
  the lower bounds of papers.md §1-2 are on state against N;
- validation accuracy against training step, one panel per training length, every seed drawn;
- the table: one row per configuration (:mod:`sepbench.summary`).

Where runs were scored beyond their training lengths (papers.md §3), a closing section adds the
out-of-distribution heat-map, (task, mode) × model, and the recurrence-completeness probe:
accuracy against test length of every model answering directly (:mod:`sepbench.length_figures`).
"""

from __future__ import annotations

import base64
import html
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

from sepbench import tasks
from sepbench.aggregate import (
    Estimate,
    Group,
    Line,
    Selection,
    canonical,
    group_runs,
    lines,
)
from sepbench.claims import PAPERS, Claim, ClaimResult, evaluate_claims
from sepbench.constructions.report import (
    constructions_section,
    impossible_html,
    split_constructions,
)
from sepbench.errors import SepbenchError
from sepbench.labels import (
    SEPARATOR,
    field_texts,
    format_value,
    label,
    model_summary,
    varying_fields,
)
from sepbench.length_figures import length_curves, mode_of, ood_heatmap
from sepbench.store import RunRecord, Store
from sepbench.summary import configuration_rows, html_table

MODE_PARAMS = ("mode", "cot", "filler", "variant")
STATE_SIZE_TASKS = ("index_lookup", "associative_recall", "nearest_neighbor")
INTERVAL_NOTE = (
    "Points are means over seeds; error bars and ± are 95 % Student-t intervals "
    "(mean ± t·s/√n over the n seeds); one seed gives no interval (n=1). Chance is the accuracy "
    "of the best guess that ignores the prompt (the likeliest whole completion, as scored)."
)


@dataclass
class Report:
    """What :func:`write_report` produced."""

    html: Path
    figures: list[Path]
    runs: int
    configurations: int
    claims: list[ClaimResult] = field(default_factory=list)


def write_report(
    store: Store,
    out: Path,
    task: str | None = None,
    run_ids: Sequence[int] | None = None,
    claims: Sequence[Claim] = (),
    selection: Selection | None = None,
) -> Report:
    """Write ``out/report.html`` (figures embedded) and each figure as PNG and SVG.

    Reports the finished runs of ``task`` (all tasks if None), or only ``run_ids``; ``claims``
    are evaluated over the same runs and open the page. With a ``selection``, figures, tables
    and claims show the configuration chosen on validation among each set of candidates.
    """
    records = store.runs(task=task)
    if run_ids is not None:
        wanted = set(run_ids)
        records = [r for r in records if r.id in wanted]
    records, built = split_constructions(records)
    groups = group_runs(records, selection)
    if not groups and not built:
        where = f" for task {task!r}" if task else ""
        raise SepbenchError(f"report: no finished runs{where} in {store.path}")
    out.mkdir(parents=True, exist_ok=True)
    verdicts = evaluate_claims(claims, records, selection)
    sections, figures = [], []
    for name in sorted({g.task for g in groups}):
        section, written = task_section(name, [g for g in groups if g.task == name], store, out)
        sections.append(section)
        figures.extend(written)
    length_html, length_figures = length_section([r for g in groups for r in g.records], out)
    figures.extend(length_figures)
    built_html, built_figures = constructions_section(built, out)
    figures.extend(built_figures)
    runs = sum(len(g.records) for g in groups) + len(built)
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>sepbench report</title>"
        f"<style>{STYLE}</style></head><body><h1>sepbench report</h1>"
        f"<p>{runs} finished runs in {len(groups)} configurations from "
        f"<code>{html.escape(str(store.path))}</code>. {INTERVAL_NOTE}"
        f"{selection_note(selection)}</p>"
        f"{impossible_html(records)}{claims_section(verdicts)}{''.join(sections)}{length_html}"
        f"{built_html}"
        "</body></html>"
    )
    page_path = out / "report.html"
    page_path.write_text(page)
    return Report(page_path, figures, runs, len(groups), verdicts)


def task_section(
    name: str, groups: list[Group], store: Store, out: Path
) -> tuple[str, list[Path]]:
    """A task's heading, figures and table; returns the HTML and the figure files."""
    colors = line_colors(groups)
    figures = [("accuracy", accuracy_figure(name, groups, colors, figure_metric(groups)))]
    if name in STATE_SIZE_TASKS:
        figures.append(("state_size", state_size_figure(name, groups)))
    figures.append(("curves", curves_figure(name, groups, store, colors)))
    images, paths = embedded(figures, out, name)
    table = html_table(*configuration_rows(groups))
    return f"<h2>{html.escape(name)}</h2>{images}{table}", paths


def length_section(records: Sequence[RunRecord], out: Path) -> tuple[str, list[Path]]:
    """The length-generalisation summary over ``records`` (those shown, one learning rate per
    configuration), or nothing when no run was scored beyond its training lengths."""
    scored = [r for r in records if "ood_accuracy" in r.metrics]
    if not scored:
        return "", []
    figures = [("ood_heatmap", ood_heatmap(scored))]
    direct = [r for r in scored if mode_of(r.config) == "direct"]
    if direct:
        figures.append(("recurrence_probe", length_curves(direct)))
    images, paths = embedded(figures, out, "length_generalisation")
    heading = "<h2>Length generalisation: out of distribution, and answering directly</h2>"
    return heading + images, paths


def embedded(
    figures: Sequence[tuple[str, plt.Figure]], out: Path, name: str
) -> tuple[str, list[Path]]:
    """Save each figure as ``out/<name>_<kind>`` (PNG, SVG); the PNGs as inline images."""
    images, paths = [], []
    for kind, figure in figures:
        written, encoded = save(figure, out / f"{name}_{kind}")
        paths.extend(written)
        images.append(f'<img alt="{name} {kind}" src="data:image/png;base64,{encoded}">')
    return "".join(images), paths


def selection_note(selection: Selection | None) -> str:
    if selection is None:
        return ""
    fields = ", ".join(f"<code>{html.escape(path)}</code>" for path in selection.over)
    return (
        f" Per model and length, {fields} is chosen on validation (the highest mean "
        f"<code>{html.escape(selection.by)}</code> over seeds); only the chosen configuration is "
        "drawn, tabled and judged, and the table lists every value tried."
    )


def claims_section(results: Sequence[ClaimResult]) -> str:
    if not results:
        return ""
    rows = []
    for result in results:
        claim = result.claim
        paper, address = PAPERS[claim.section]
        cells = [
            html.escape(claim.text),
            f'<a href="{address}">{html.escape(paper)}</a> {html.escape(claim.paper)}',
            html.escape(claim.condition()),
            f'<b class="{result.verdict.replace(" ", "-")}">{html.escape(result.verdict)}</b>',
            html.escape(result.numbers() + (f" [{result.reason}]" if result.reason else "")),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>" for h in ("claim", "paper", "checked as", "verdict", "measured")
    )
    return (
        "<h2>Claims</h2><p>Judged on the mean over seeds; the 95 % t interval is shown beside "
        "it. At least 2 seeds at every required length, else <i>not enough runs</i>.</p>"
        f"<table class='claims'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table>"
    )


# -- figures -----------------------------------------------------------------------------------


def panels(groups: Sequence[Group]) -> list[tuple[str, list[Group]]]:
    """A task's groups split by the mode parameters that differ among them (one panel each)."""
    keys = [
        key
        for key in MODE_PARAMS
        if len({canonical(g.config["task"]["params"].get(key)) for g in groups}) > 1
    ]
    by_title: dict[str, list[Group]] = {}
    for group in groups:
        params = group.config["task"]["params"]
        title = ", ".join(f"{key}={format_value(params.get(key))}" for key in keys)
        by_title.setdefault(title, []).append(group)
    return sorted(by_title.items())


def line_colors(groups: Sequence[Group]) -> dict[str, str]:
    """One colour per line (configuration across N), keyed by each group's canonical config,
    so that a configuration has the same colour in every figure of its task; lines that differ
    only in the task mode (one per panel) share theirs."""
    by_line: dict[str, str] = {}
    colors = {}
    for line in lines(groups):
        key = canonical(modeless(line.config))
        color = by_line.setdefault(key, f"C{len(by_line) % 10}")
        colors.update({canonical(group.config): color for group in line.groups})
    return colors


def modeless(config: dict) -> dict:
    """``config`` without the task's mode parameters (what tells the panels apart)."""
    params = config["task"].get("params", {})
    task = {**config["task"], "params": {k: v for k, v in params.items() if k not in MODE_PARAMS}}
    return {**config, "task": task}


ANSWER = "test_answer_accuracy"


def figure_metric(groups: Sequence[Group]) -> str:
    """The ``answer`` metric where every run of the task stored it (free generation), else
    ``test_accuracy`` (the whole completion)."""
    stored = all(ANSWER in r.metrics for g in groups for r in g.records)
    return ANSWER if stored else "test_accuracy"


def accuracy_figure(
    task: str,
    groups: Sequence[Group],
    colors: dict[str, str] | None = None,
    metric: str = "test_accuracy",
) -> plt.Figure:
    """Test accuracy (``metric``) against test length, one panel per task mode, one line per
    config."""
    colors = colors or line_colors(groups)
    split = panels(groups)
    figure, all_axes = plt.subplots(
        1, len(split), figsize=(6.4 * len(split), 4.4), squeeze=False, sharey=True
    )
    for axes, (title, members) in zip(all_axes[0], split):
        drawn = lines(members)
        fields = varying_fields([line.config for line in drawn])
        for line in drawn:
            by_length = line.metric(metric)
            axes.errorbar(
                list(by_length),
                [e.mean for e in by_length.values()],
                yerr=error_bars(by_length.values()),
                marker="o",
                capsize=3,
                color=colors[canonical(line.groups[0].config)],
                label=f"{label(line.config, fields)} ({seeds_text(by_length.values())})",
            )
        draw_chance(axes, drawn, answer=metric == ANSWER)
        axes.set_xticks(sorted({n for line in drawn for n in line.metric(metric)}))
        axes.set(
            title=f"{task}: {title}" if title else task,
            xlabel=length_axis(drawn),
            ylim=(-0.02, 1.02),
        )
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    quantity = "answer accuracy (the final answer)" if metric == ANSWER else "test accuracy"
    all_axes[0][0].set_ylabel(f"{quantity} (mean, 95% t interval)")
    figure.tight_layout()
    return figure


def error_bars(estimates: Sequence[Estimate]) -> list[list[float]]:
    """Lower and upper bar lengths: the t interval, drawn within [0, 1] (an accuracy cannot
    leave it, while a t interval over 2-3 seeds can; the tables give it unclipped)."""
    low = [e.mean - max(e.low, 0.0) if e.half_width else 0.0 for e in estimates]
    high = [min(e.high, 1.0) - e.mean if e.half_width else 0.0 for e in estimates]
    return [low, high]


def seeds_text(estimates: Sequence[Estimate]) -> str:
    """``n=3``, ``n=1, no interval`` or ``n=2-3`` (seeds per point)."""
    counts = sorted({e.n for e in estimates})
    if not counts:
        return "no test accuracy"
    if counts == [1]:
        return "n=1, no interval"
    return f"n={counts[0]}" if len(counts) == 1 else f"n={counts[0]}-{counts[-1]}"


def draw_chance(axes: plt.Axes, drawn: Sequence[Line], answer: bool = False) -> None:
    """Each distinct task's chance at the lengths its lines were tested at (with ``answer``,
    the chance of the final answer alone)."""
    by_task: dict[str, tuple[dict, set[int]]] = {}
    for line in drawn:
        task = line.config["task"]
        entry = by_task.setdefault(canonical(task), (task, set()))
        entry[1].update(line.metric())
    several = len(by_task) > 1
    for index, (task, lengths) in enumerate(by_task.values()):
        built = tasks.get(task["name"], **task.get("params", {}))
        xs = sorted(lengths)
        ys = [built.answer_chance(n) if answer else built.chance(n) for n in xs]
        name = f"chance {ys[0]:.3g}" if len(set(ys)) == 1 else "chance"
        if several:
            name += f" ({built.describe()})"
        axes.plot(
            xs,
            ys,
            linestyle="--",
            linewidth=1,
            color="black" if not several else f"C{index % 10}",
            label=name,
        )


def length_axis(drawn: Sequence[Line]) -> str:
    """The x label, stating the training lengths: ``task.length`` is the longest length a run
    trains on (each task draws its training lengths up to it, or exactly it)."""
    groups = [g for line in drawn for g in line.groups]
    if all(g.test_lengths == [g.train_length] for g in groups):
        return "length N (each run trained at lengths <= its N, tested at N)"
    trained = ", ".join(str(n) for n in sorted({g.train_length for g in groups}))
    return f"test length (trained on lengths up to task.length = {trained})"


def state_size_figure(task: str, groups: Sequence[Group]) -> plt.Figure:
    """Accuracy against state size (log), one panel per test length; a series per model
    family and setting, its points the widths (Zoology's plot; papers.md §1-2)."""
    lengths = sorted({n for g in groups for n in g.metric()})
    columns = min(len(lengths), 4)
    rows = -(-len(lengths) // columns)
    figure, all_axes = plt.subplots(
        rows, columns, figsize=(4.4 * columns, 3.8 * rows), squeeze=False, sharey=True
    )
    fields = varying_fields(
        [g.config for g in groups], skip=("model", "model.width", "task.length", "eval.lengths")
    )
    series: dict[str, list[Group]] = {}
    for group in groups:
        texts = field_texts(group.config, fields)
        name = SEPARATOR.join(
            [model_summary(group.config["model"], width=False)]
            + [f"{k}={v}" for k, v in texts.items() if v]
        )
        series.setdefault(name, []).append(group)
    for axes, length in zip(all_axes.flat, lengths):
        for index, (name, members) in enumerate(series.items()):
            points = sorted(
                (
                    (statistics.fmean(r.state_size for r in g.records), g.metric()[length], g)
                    for g in members
                    if length in g.metric() and all(r.state_size for r in g.records)
                ),
                key=lambda point: point[0],
            )
            if not points:
                continue
            axes.errorbar(
                [p[0] for p in points],
                [p[1].mean for p in points],
                yerr=error_bars([p[1] for p in points]),
                marker="o",
                capsize=3,
                color=f"C{index % 10}",
                label=name,
            )
            for x, value, group in points:
                axes.annotate(
                    f"w{group.config['model']['width']}", (x, value.mean), fontsize=6
                )
        axes.set(title=f"N = {length}", xscale="log", ylim=(-0.02, 1.02))
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("state size (scalars after the training-length prompt)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    for axes in list(all_axes.flat)[len(lengths) :]:
        axes.set_visible(False)
    for axes in all_axes[:, 0]:
        axes.set_ylabel("test accuracy")
    figure.suptitle(f"{task}: accuracy against state size")
    figure.tight_layout()
    return figure


def curves_figure(
    task: str, groups: Sequence[Group], store: Store, colors: dict[str, str] | None = None
) -> plt.Figure:
    """Validation accuracy against step, one panel per training length, every seed drawn in
    its configuration's colour."""
    colors = colors or line_colors(groups)
    lengths = sorted({g.train_length for g in groups})
    figure, all_axes = plt.subplots(
        1, len(lengths), figsize=(max(6.4, 4.4 * len(lengths)), 3.8), squeeze=False, sharey=True
    )
    fields = varying_fields([g.config for g in groups], skip=("task.length", "eval.lengths"))
    for axes, length in zip(all_axes[0], lengths):
        for group in groups:
            if group.train_length != length:
                continue
            color = colors[canonical(group.config)]
            for seed, record in enumerate(group.records):
                _draw_curve(axes, store, record, color, seed == 0, group, fields)
        axes.set(title=f"trained at length {length}", xlabel="training step", ylim=(-0.02, 1.02))
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    all_axes[0][0].set_ylabel("validation accuracy")
    figure.suptitle(f"{task}: training curves (every seed)")
    figure.tight_layout()
    return figure


def _draw_curve(
    axes: plt.Axes,
    store: Store,
    record: RunRecord,
    color: str,
    labelled: bool,
    group: Group,
    fields: Sequence[str],
) -> None:
    points = [p for p in store.curve(record.id) if p["val_accuracy"] is not None]
    axes.plot(
        [p["step"] for p in points],
        [p["val_accuracy"] for p in points],
        color=color,
        linewidth=1,
        alpha=0.8,
        label=f"{label(group.config, fields)} (n={len(group.records)})" if labelled else None,
    )


def save(figure: plt.Figure, stem: Path) -> tuple[list[Path], str]:
    """Write PNG and SVG beside each other; return the paths and the PNG as base64."""
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        figure.savefig(path, dpi=120)
    plt.close(figure)
    return paths, base64.b64encode(paths[0].read_bytes()).decode()


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
table.claims td { text-align: left; }
th { background: #f3f3f3; } img { max-width: 100%; }
.held { color: #1a7f37; } .not-held { color: #b42318; } .not-enough-runs { color: #9a6700; }
"""
