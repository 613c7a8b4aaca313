"""The command line: thin. Each command parses, calls one API function, prints.

Bad input (a :class:`~sepbench.errors.SepbenchError`) prints one line and exits with code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
import yaml

from sepbench import tasks
from sepbench.errors import SepbenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


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
    batch = built.sample(np.random.default_rng(seed), n, length or built.min_length)
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
    batch = built.sample(np.random.default_rng(seed), n, length or built.min_length)
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


def main() -> None:
    """Console entry point: one-line errors with exit code 2 for bad input."""
    try:
        app(standalone_mode=False)
    except SepbenchError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as error:  # click usage errors carry their own exit code
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise
