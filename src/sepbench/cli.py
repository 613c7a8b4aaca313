"""The command line: thin. Each command parses, calls one API function, prints.

Bad input (a :class:`~sepbench.errors.SepbenchError`) prints one line and exits with code 2.
"""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
import yaml

from sepbench import tasks
from sepbench.errors import SepbenchError, check_choice, check_int
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
    out: Annotated[Path, typer.Option(help="Output file (.jsonl, .parquet) or hf folder.")],
    format_: Annotated[
        str | None,
        typer.Option("--format", help="jsonl, parquet or hf (default: from OUT's suffix)."),
    ] = None,
    n: Annotated[int, typer.Option(help="Number of examples.")] = 1000,
    length: Annotated[int | None, typer.Option(help="Task length (default: task minimum).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    param: ParamOption = None,
) -> None:
    """Write examples (prompt, completion, answer, token ids, loss mask) and the vocabulary."""
    from sepbench.export import export as export_examples

    built = tasks.get(task, **parse_assignments(param, "--param"))
    written = export_examples(built, out, n=n, length=length, seed=seed, format=format_)
    typer.echo(
        f"wrote {written.examples} examples to {written.path} ({written.format}), "
        f"vocabulary {written.vocab_path}"
    )


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

    for option, value in (("--width", width), ("--layers", layers), ("--length", length),
                          ("--vocab", vocab)):
        check_int("models", option, value, 1)
    lines = []  # every model is built before anything is printed
    for name in models.names():
        mixers = ["mamba"] * max(layers - 1, 1) + ["attention"] if name == "hybrid" else None
        model = models.build(name, vocab, width, None if mixers else layers, mixers=mixers)
        described = "+".join(mixers) if mixers else f"{layers} x {name}"
        recurrence = "+".join(dict.fromkeys(block.mixer.recurrence for block in model.blocks))
        lines.append(
            f"{name:28s} {model.num_parameters():12,d} {model.state_size(length):12,d}  "
            f"{recurrence:12s} {described}"
        )
    typer.echo(f"{'model':28s} {'parameters':>12s} {'state size':>12s}  {'recurrence':12s} layers")
    typer.echo("\n".join(lines))


@app.command("check-mixer")
def check_mixer_command(
    mixer: Annotated[str, typer.Argument(help="package.module:Class, file.py:Class or a name.")],
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Constructor keyword k=v (repeatable).")
    ] = None,
) -> None:
    """Check a mixer class against the contract; exit 1 if any check fails."""
    from sepbench.mixer_check import check_mixer

    checks = check_mixer(mixer, parse_assignments(param, "--param"))
    for check in checks:
        typer.echo(f"{'✓' if check.passed else '✗'} {check.name}: {check.measured}")
    failed = sum(not check.passed for check in checks)
    typer.echo(f"{mixer}: {len(checks) - failed} of {len(checks)} checks passed")
    if failed:
        raise typer.Exit(1)


@app.command("run")
def run_command(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a field: key.path=value.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rerun even if the store has this config.")] = False,
    store: StoreOption = None,
) -> None:
    """Train, evaluate and store one experiment; print its summary.

    SIGINT, SIGTERM or SIGHUP mark the run ``interrupted`` (exit code 128 + the signal's
    number); the next ``run`` of the same config resumes from its last checkpoint.
    """
    from sepbench.backends.signals import exit_code, stop_on_signals
    from sepbench.config import load_experiment
    from sepbench.progress import console_progress
    from sepbench.runner import Interrupted, run
    from sepbench.summary import result_line

    experiment = load_experiment(config, set_ or [])
    opened = open_store(store)
    try:
        with stop_on_signals(), console_progress() as on_event:
            result = run(experiment, store=opened, force=force, on_event=on_event)
    except Interrupted as stop:
        typer.echo(f"{stop}: the run is marked interrupted; run again to resume", err=True)
        sys.exit(exit_code(stop.signum))
    typer.echo(result_line(result))


@app.command("runs")
def runs_command(
    task: Annotated[str | None, typer.Option(help="Only runs of this task.")] = None,
    model: Annotated[str | None, typer.Option(help="Only runs of this model.")] = None,
    status: Annotated[
        str | None, typer.Option(help="running, done, diverged, failed or interrupted.")
    ] = None,
    format_: Annotated[
        str, typer.Option("--format", help="table, csv, json or parquet.")
    ] = "table",
    out: Annotated[Path | None, typer.Option(help="Output file (--format parquet).")] = None,
    check: Annotated[
        bool, typer.Option(help="List results that beat a proven lower bound; exit 1 if any.")
    ] = False,
    store: StoreOption = None,
) -> None:
    """List stored runs (parquet: one row per run, every config field a column, to --out)."""
    from sepbench import summary

    check_choice("runs", "--format", format_, ("table", "csv", "json", "parquet"))
    if (format_ == "parquet") != (out is not None):
        raise SepbenchError("runs: --format parquet writes to --out FILE; the others print")
    if format_ == "parquet":
        from sepbench.analysis import results, write_parquet

        frame = results(open_store(store), task=task, model=model, status=status)
        typer.echo(f"wrote {len(frame)} runs to {write_parquet(frame, out)}")
        return
    records = open_store(store).runs(task=task, model=model, status=status)
    if check:
        check_bounds(records)
        return
    if format_ == "json":
        typer.echo(json.dumps([r.to_dict() for r in records], indent=2))
        return
    rows = summary.run_rows(records)
    if format_ == "csv":
        typer.echo(summary.csv_text(summary.RUN_COLUMNS, rows), nl=False)
        return
    typer.echo(summary.text_table(summary.RUN_COLUMNS, rows))


def check_bounds(records: list[Any]) -> None:
    """Print every run that beats a lower bound of papers.md §1-2; exit 1 if there is one."""
    from sepbench.constructions.check import check_runs

    result = check_runs(records)
    for impossible in result.impossible:
        typer.echo(f"IMPOSSIBLE {impossible.describe()}")
    if result.unknown:
        typer.echo(f"not checked (model no longer builds): runs {result.unknown}")
    typer.echo(
        f"{len(result.impossible)} impossible result(s) among {result.checked} runs of "
        "recurrent models on tasks with a lower bound"
    )
    if result.impossible:
        raise typer.Exit(1)


@app.command("bounds")
def bounds_command(
    task: str,
    length: Annotated[int, typer.Option(help="Task length N.")],
    precision: Annotated[int, typer.Option(help="Bits per state scalar, p.")] = 32,
    vocab: Annotated[int | None, typer.Option(help="Alphabet size |Σ| (default: task's).")] = None,
) -> None:
    """The least state any recurrent model needs for TASK at this length, with its theorem,
    and the construction's size as the upper bound."""
    from sepbench.constructions.bounds import describe

    typer.echo("\n".join(describe(task, length, precision=precision, vocab=vocab)))


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
    select: Annotated[
        list[str] | None,
        typer.Option(help="A field chosen on validation per model and N (e.g. train.lr)."),
    ] = None,
) -> None:
    """Write an HTML report with figures (PNG and SVG too) from the stored runs."""
    from sepbench.aggregate import Selection
    from sepbench.report import write_report

    selection = Selection(tuple(select)) if select else None
    written = write_report(open_store(store), out, task, selection=selection)
    typer.echo(f"report of {written.runs} runs: {written.html}")


WorkersOption = Annotated[
    int | None,
    typer.Option(help="Worker processes, >= 1 (default: one per core; 1 runs in this process)."),
]
SeedsOption = Annotated[
    int | None, typer.Option(help="Run seeds 0..K-1 (replaces the spec's train.seed axis).")
]
BackendOption = Annotated[
    str,
    typer.Option(help="local (a process pool on this machine) or ray (Ray tasks; needs "
                      "sepbench[ray])."),
]
AddressOption = Annotated[
    str | None,
    typer.Option(help="Ray cluster to join: auto or HOST:PORT (default: start a local Ray)."),
]
MaxRetriesOption = Annotated[
    int | None,
    typer.Option("--max-retries",
                 help="Ray: restarts of a run whose worker or node died (default 2)."),
]
CheckpointsOption = Annotated[
    Path | None,
    typer.Option(help="Ray: checkpoint folder every node can read (default: beside the store)."),
]


@dataclass(frozen=True)
class BackendChoice:
    """The backend options of ``sweep`` and ``demo``, as given."""

    name: str = "local"
    address: str | None = None
    max_retries: int | None = None
    checkpoints: Path | None = None


@app.command("sweep")
def sweep_command(
    spec: Annotated[str, typer.Argument(help="Sweep YAML file, or a preset name.")],
    workers: WorkersOption = None,
    smoke: Annotated[bool, typer.Option(help="The spec's tiny version.")] = False,
    force: Annotated[bool, typer.Option(help="Rerun runs the store already has.")] = False,
    store: StoreOption = None,
    seeds: SeedsOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Report directory (default: reports/<spec name>).")
    ] = None,
    backend: BackendOption = "local",
    address: AddressOption = None,
    max_retries: MaxRetriesOption = None,
    checkpoints: CheckpointsOption = None,
) -> None:
    """Run a grid of experiments on a local pool of workers or on Ray, through the store,
    and write the report (claims first, one line per configuration).

    Exit code 1 when a run failed (the others still ran), 130 / 143 / 129 when stopped by
    SIGINT / SIGTERM / SIGHUP (the next sweep resumes the interrupted runs).
    """
    out = out or Path("reports") / Path(spec).stem
    result = run_sweep(
        spec, workers=workers, smoke=smoke, force=force, store=store, seeds=seeds, out=out,
        backend=BackendChoice(backend, address, max_retries, checkpoints),
    )
    exit_for(result)


def run_sweep(
    spec: str,
    *,
    workers: int | None,
    smoke: bool,
    force: bool,
    store: Path | None,
    seeds: int | None,
    out: Path,
    backend: BackendChoice,
) -> Any:
    """Run a sweep with a progress view; print the table (one row per configuration, seeds
    aggregated), each claim's verdict and the failures; write the report to ``out``."""
    from sepbench import backends, claims, summary, sweep, sweep_spec
    from sepbench.progress import sweep_progress
    from sepbench.report import write_report
    from sepbench.store import FINISHED

    if workers is not None:
        sweep.check_workers(workers)
    chosen = backends.choose(
        backend.name, workers=workers, address=backend.address,
        max_retries=backend.max_retries, checkpoints=backend.checkpoints,
    )
    opened = open_store(store)
    loaded = sweep_spec.load(spec)
    experiments = sweep_spec.expand(loaded, smoke=smoke, seeds=seeds)
    declared = claims.parse_claims(loaded.claims, [e.resolved() for e in experiments])
    selection = loaded.selection(experiments)
    typer.echo(f"{len(experiments)} grid points, store {opened.path}")
    with sweep_progress() as on_event:
        result = sweep.run_all(
            experiments, store=opened, workers=workers, force=force, on_event=on_event,
            backend=chosen,
        )
    ran = [o.run_id for o in result.outcomes if o is not None and o.run_id is not None]
    ran_records = [opened.get(run_id) for run_id in ran]
    typer.echo(summary.sweep_summary(ran_records, declared, selection))
    failed = [(e.resolved(), e.config_hash(), o.status, o.error) for e, o in result.failures]
    for line in summary.failure_lines(failed, [e.resolved() for e in experiments]):
        typer.echo(line)
    finished = [o.run_id for o in result.outcomes if o is not None and o.status in FINISHED]
    if finished and result.stopped_by is None:
        written = write_report(
            opened, out, run_ids=finished, claims=declared, selection=selection
        )
        typer.echo(f"report: {written.html} ({len(written.figures)} figure files)")
    return result


def exit_for(result: Any) -> None:
    """A stopped sweep exits with 128 + the signal's number, one with failures with 1."""
    from sepbench.backends.signals import exit_code

    if result.stopped_by is not None:
        name = signal.Signals(result.stopped_by).name
        typer.echo(f"stopped by {name}: the same command resumes the interrupted runs", err=True)
        sys.exit(exit_code(result.stopped_by))
    if result.failures:
        typer.echo(f"{len(result.failures)} runs did not finish (listed above)", err=True)
        sys.exit(1)


@app.command("critical")
def critical_command(
    spec: Annotated[str, typer.Argument(help="Spec YAML with a critical section, or a preset.")],
    target: Annotated[
        float | None,
        typer.Option(help="Validation accuracy to reach, in (0, 1] (default: the spec's, 0.9)."),
    ] = None,
    seeds: Annotated[
        int | None, typer.Option(help="Seeds per probed width, >= 2 (default: the spec's, else 2).")
    ] = None,
    workers: WorkersOption = None,
    smoke: Annotated[bool, typer.Option(help="The spec's tiny version.")] = False,
    store: StoreOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Report directory (default: reports/critical-<spec name>).")
    ] = None,
) -> None:
    """Per model family and N, the smallest width that reaches the target validation accuracy
    (bracketing on the spec's width ladder, then bisection), with the state size at it; prints
    the table and writes the report (figure: critical width and state against N).

    Exit code 1 when a run failed (its search stops there; the same command retries it),
    130 / 143 / 129 when stopped by SIGINT / SIGTERM / SIGHUP (the same command resumes).
    """
    from sepbench import critical, sweep
    from sepbench.critical_report import write_report
    from sepbench.progress import sweep_progress
    from sepbench.summary import text_table

    if workers is not None:
        sweep.check_workers(workers)
    planned = critical.plan(spec, smoke=smoke, target=target, seeds=seeds)
    opened = open_store(store)
    settings = planned.settings
    typer.echo(
        f"{len(planned.families)} families x {len(planned.lengths)} lengths, widths "
        f"{settings.widths}, target {settings.target:g} on the mean of {settings.seeds} seeds, "
        f"store {opened.path}"
    )
    with sweep_progress() as on_event:
        result = critical.search(planned, store=opened, workers=workers, on_event=on_event)
    typer.echo(text_table(critical.COLUMNS, critical.rows(result)))
    for cell in result.failures:
        typer.echo(f"failed: {cell.family} N={cell.length}: {cell.error}")
    if any(cell.probes for cell in result.cells):
        written = write_report(result, out or Path("reports") / f"critical-{planned.name}")
        typer.echo(f"report: {written.html} ({len(written.figures)} figure files)")
    exit_for(result)


@app.command("suite")
def suite_command(
    mixer: Annotated[
        str | None,
        typer.Argument(help="package.module:Class, file.py:Class or a model name."),
    ] = None,
    budget: Annotated[str, typer.Option(help="cpu (about 30 min on 2 cores) or full.")] = "cpu",
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Mixer constructor keyword k=v.")
    ] = None,
    seeds: Annotated[
        int | None, typer.Option(help="Run seeds 0..K-1 (default: the suite's, 2 for cpu).")
    ] = None,
    refresh_baselines: Annotated[
        bool, typer.Option(help="Measure the project's baselines and rewrite their file.")
    ] = False,
    workers: WorkersOption = None,
    store: StoreOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Report directory (default: reports/suite-<mixer>).")
    ] = None,
) -> None:
    """The separation suite: one configuration per claim family for a mixer, placed beside the
    shipped baselines with a verdict per family; prints the table and writes the report.

    Exit code 1 when a run failed, 130 / 143 / 129 when stopped (the same command resumes).
    """
    from sepbench import suite as separation
    from sepbench.progress import sweep_progress
    from sepbench.suite import baselines, definition
    from sepbench.suite import report as suite_report

    if workers is not None:
        from sepbench.sweep import check_workers

        check_workers(workers)
    if (mixer is None) == (not refresh_baselines):
        raise SepbenchError(
            "suite: name a MIXER (package.module:Class, file.py:Class or a model name) "
            "or give --refresh-baselines, not both"
        )
    suite, opened = definition.load(budget), open_store(store)
    if refresh_baselines:
        measured = []
        for baseline in suite.baselines:
            with sweep_progress() as on_event:
                model, result = separation.measure(
                    suite, baseline.model, baseline.kind, store=opened, seeds=seeds,
                    workers=workers, on_event=on_event, per_family=baseline.per_family,
                )
            exit_for(result)
            measured.append(model)
        command = f"sepbench suite --refresh-baselines --budget {budget}" + (
            f" --seeds {seeds}" if seeds else "")
        written = baselines.save(suite, measured, seeds or suite.seeds, command)
        typer.echo(f"baselines of {len(measured)} models: {written}")
        return
    model_config = definition.user_model(suite, mixer, parse_assignments(param, "--param"))
    with sweep_progress() as on_event:
        measured_model, result = separation.measure(
            suite, model_config, "yours", store=opened, seeds=seeds, workers=workers,
            on_event=on_event,
        )
    shipped = baselines.load(suite)
    typer.echo(suite_report.text(suite, measured_model, shipped))
    if shipped is not None and shipped.stale(suite):
        typer.echo("note: the baselines were measured on an earlier suite definition; "
                   "refresh them with sepbench suite --refresh-baselines", err=True)
    slug = mixer.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    written = suite_report.write(out or Path("reports") / f"suite-{slug}", suite,
                                 measured_model, shipped)
    typer.echo(f"report: {written.html}")
    exit_for(result)


@app.command()
def demo(
    workers: WorkersOption = None,
    smoke: Annotated[bool, typer.Option(help="Tiny lengths and steps (seconds).")] = False,
    out: Annotated[Path, typer.Option(help="Report directory.")] = Path("reports/demo"),
    force: Annotated[bool, typer.Option(help="Retrain even if stored.")] = False,
    store: StoreOption = None,
    seeds: SeedsOption = None,
    backend: BackendOption = "local",
    address: AddressOption = None,
    max_retries: MaxRetriesOption = None,
    checkpoints: CheckpointsOption = None,
) -> None:
    """The main job: index lookup, Transformer vs LSTM vs Mamba (papers.md §2), with a report."""
    result = run_sweep(
        "demo", workers=workers, smoke=smoke, force=force, store=store, seeds=seeds, out=out,
        backend=BackendChoice(backend, address, max_retries, checkpoints),
    )
    exit_for(result)


def main() -> None:
    """Console entry point: bad input prints one line and exits with code 2.

    Usage errors (unknown option, missing argument) are typer's own, also exit code 2.
    """
    try:
        app()
    except SepbenchError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
