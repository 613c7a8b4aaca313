"""The command line: thin. Each command parses, calls one API function, prints.

Bad input (a :class:`~sepbench.errors.SepbenchError`) prints one line and exits with code 2.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
import yaml

from sepbench import tasks
from sepbench.errors import SepbenchError, check_choice
from sepbench.store import Store

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def parse_assignments(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> {k: v}, values parsed as YAML scalars (3 -> int, true -> bool)."""
    result: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SepbenchError(f"{flag} takes key=value, got {pair!r}")
        result[key] = yaml.safe_load(value)
    return result


ParamOption = Annotated[
    list[str] | None, typer.Option("--param", help="Task parameter key=value (repeatable).")
]


@app.command("tasks")
def tasks_command() -> None:
    """List every task: name, source paper, what it tests."""
    for name in tasks.names():
        cls = tasks.base.task_class(name)
        typer.echo(f"{name:20s} {cls.paper:32s} {cls.summary}")


@app.command()
def sample(
    task: str,
    length: Annotated[int | None, typer.Option(help="Task length (default: task minimum).")] = None,
    n: Annotated[int, typer.Option(help="Number of examples.")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    param: ParamOption = None,
) -> None:
    """Print readable examples: prompt | completion | answer."""
    built = tasks.get(task, **parse_assignments(param, "--param"))
    length = built.min_length if length is None else length
    batch = built.sample(np.random.default_rng(seed), n, length)
    for i in range(len(batch)):
        prompt = built.vocab.text(batch.prompt(i))
        completion = built.vocab.text(batch.completion(i))
        typer.echo(f"{prompt} | {completion} | {batch.answers[i]}")


@app.command()
def export(
    task: str,
    out: Annotated[Path, typer.Option(help="Output JSONL file.")],
    n: Annotated[int, typer.Option(help="Number of examples.")] = 1000,
    length: Annotated[int | None, typer.Option(help="Task length (default: task minimum).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    param: ParamOption = None,
) -> None:
    """Write one JSON object per example (prompt, completion, answer, tokens) to OUT."""
    built = tasks.get(task, **parse_assignments(param, "--param"))
    length = built.min_length if length is None else length
    batch = built.sample(np.random.default_rng(seed), n, length)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with partial.open("w") as handle:
        for i in range(len(batch)):
            record = {
                "prompt": built.vocab.text(batch.prompt(i)),
                "completion": built.vocab.text(batch.completion(i)),
                "answer": batch.answers[i],
                "tokens": batch.tokens[i, : batch.lengths[i]].tolist(),
            }
            handle.write(json.dumps(record) + "\n")
    partial.replace(out)
    typer.echo(f"wrote {len(batch)} examples to {out}")


StoreOption = Annotated[
    Path | None,
    typer.Option("--store", help="Results store; default $SEPBENCH_STORE or runs/sepbench.sqlite."),
]


def open_store(path: Path | None) -> Store:
    return Store(path) if path is not None else Store.default()


@app.command("models")
def models_command(
    width: Annotated[int, typer.Option(help="Model width.")] = 64,
    layers: Annotated[int, typer.Option(help="Number of layers.")] = 2,
    length: Annotated[int, typer.Option(help="Sequence length for the state size.")] = 1024,
    vocab: Annotated[int, typer.Option(help="Vocabulary size.")] = 64,
) -> None:
    """List every model with its parameter count, state size at this size and recurrence class
    (papers.md §3: complete, block, linear or none)."""
    from sepbench import models

    typer.echo(f"{'model':28s} {'parameters':>12s} {'state size':>12s}  {'recurrence':12s} layers")
    for name in models.names():
        mixers = ["mamba"] * max(layers - 1, 1) + ["attention"] if name == "hybrid" else None
        model = models.build(name, vocab, width, None if mixers else layers, mixers=mixers)
        described = "+".join(mixers) if mixers else f"{layers} x {name}"
        recurrence = "+".join(dict.fromkeys(block.mixer.recurrence for block in model.blocks))
        typer.echo(
            f"{name:28s} {model.num_parameters():12,d} {model.state_size(length):12,d}  "
            f"{recurrence:12s} {described}"
        )


@app.command("run")
def run_command(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a field: key.path=value.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rerun even if the store has this config.")] = False,
    store: StoreOption = None,
) -> None:
    """Train, evaluate and store one experiment; print its summary."""
    from sepbench.config import load_experiment
    from sepbench.progress import console_progress
    from sepbench.runner import run

    experiment = load_experiment(config, set_ or [])
    with console_progress() as on_progress:
        result = run(experiment, store=open_store(store), force=force, on_progress=on_progress)
    typer.echo(format_result(result))


def format_result(result: Any) -> str:
    source = "served from the store" if result.cached else "trained"
    by_length = result.metrics.get("test_accuracy", {})
    accuracy = ", ".join(f"{length}: {value:.3f}" for length, value in by_length.items())
    return (
        f"run {result.run_id} ({result.status}, {source}) config {result.config_hash}: "
        f"test accuracy {{{accuracy}}}"
    )


@app.command("runs")
def runs_command(
    task: Annotated[str | None, typer.Option(help="Only runs of this task.")] = None,
    model: Annotated[str | None, typer.Option(help="Only runs of this model.")] = None,
    status: Annotated[str | None, typer.Option(help="running, done, diverged or failed.")] = None,
    format_: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    store: StoreOption = None,
) -> None:
    """List stored runs."""
    check_choice("runs", "--format", format_, ("table", "csv", "json"))
    records = open_store(store).runs(task=task, model=model, status=status)
    if format_ == "json":
        typer.echo(json.dumps([r.to_dict() for r in records], indent=2))
        return
    rows = [run_row(r) for r in records]
    if format_ == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(RUN_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
        return
    typer.echo(format_table(list(RUN_COLUMNS.values()), [list(row.values()) for row in rows]))


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table (pipes and terminals alike)."""
    cells = [headers] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


RUN_COLUMNS = {
    "id": "run", "task": "task", "length": "length", "model": "model", "status": "status",
    "test_accuracy": "test accuracy", "num_parameters": "params", "state_size": "state",
    "steps": "steps", "wall_time_s": "wall s", "config_hash": "config",
}


def run_row(record: Any) -> dict[str, Any]:
    accuracy = record.metrics.get("test_accuracy", {})
    return {
        "id": record.id,
        "task": record.task,
        "length": record.config["task"]["length"],
        "model": record.model,
        "status": record.status,
        "test_accuracy": " ".join(f"{k}:{v:.3f}" for k, v in accuracy.items()),
        "num_parameters": record.num_parameters,
        "state_size": record.state_size,
        "steps": record.metrics.get("steps_run"),
        "wall_time_s": None if record.wall_time_s is None else round(record.wall_time_s, 1),
        "config_hash": record.config_hash,
    }


@app.command()
def show(run_id: int, store: StoreOption = None) -> None:
    """Print one stored run in full: config, metrics, provenance, curve."""
    opened = open_store(store)
    record = opened.get(run_id)
    typer.echo(yaml.safe_dump({**record.to_dict(), "curve": opened.curve(run_id)}, sort_keys=False))


@app.command()
def report(
    store: StoreOption = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("reports"),
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
) -> None:
    """Write an HTML report with figures (PNG and SVG too) from the stored runs."""
    from sepbench.report import write_report

    written = write_report(open_store(store), out, task)
    typer.echo(f"report of {written.runs} runs: {written.html}")


WorkersOption = Annotated[
    int | None, typer.Option(help="Worker processes (default: one per core).")
]


@app.command("sweep")
def sweep_command(
    spec: Annotated[str, typer.Argument(help="Sweep YAML file, or a preset name.")],
    workers: WorkersOption = None,
    smoke: Annotated[bool, typer.Option(help="The spec's tiny version.")] = False,
    force: Annotated[bool, typer.Option(help="Rerun runs the store already has.")] = False,
    store: StoreOption = None,
) -> None:
    """Run a grid of experiments on a local pool of workers, through the store."""
    run_sweep(spec, workers=workers, smoke=smoke, force=force, store=store)


def run_sweep(
    spec: str, *, workers: int | None, smoke: bool, force: bool, store: Path | None
) -> list[Any]:
    """Run a sweep, printing one line per finished run and the results table."""
    from sepbench import sweep

    opened = open_store(store)
    experiments = sweep.expand(sweep.load_spec(spec), smoke=smoke)
    typer.echo(f"{len(experiments)} runs, store {opened.path}")
    results = sweep.run_all(
        experiments,
        store=opened,
        workers=workers,
        force=force,
        on_result=lambda result: typer.echo(format_result(result)),
    )
    rows = [run_row(opened.get(result.run_id)) for result in results]
    typer.echo(format_table(list(RUN_COLUMNS.values()), [list(row.values()) for row in rows]))
    return results


@app.command()
def demo(
    workers: WorkersOption = None,
    smoke: Annotated[bool, typer.Option(help="Tiny lengths and steps (seconds).")] = False,
    out: Annotated[Path, typer.Option(help="Report directory.")] = Path("reports/demo"),
    force: Annotated[bool, typer.Option(help="Retrain even if stored.")] = False,
    store: StoreOption = None,
) -> None:
    """The main job: index lookup, Transformer vs LSTM vs Mamba (papers.md §2), with a report."""
    from sepbench.report import write_report

    results = run_sweep("demo", workers=workers, smoke=smoke, force=force, store=store)
    written = write_report(open_store(store), out, run_ids=[r.run_id for r in results])
    typer.echo(f"report: {written.html} ({len(written.figures)} figure files)")


def main() -> None:
    """Console entry point: bad input prints one line and exits with code 2.

    Usage errors (unknown option, missing argument) are typer's own, also exit code 2.
    """
    try:
        app()
    except SepbenchError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
