"""The command line: every command runs, bad input gets one line and exit code 2."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from sepbench import tasks
from sepbench.cli import main


def sepbench(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI in this process (fast), as the console script would."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), mock.patch.object(
        sys, "argv", ["sepbench", *args]
    ):
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_the_console_script_exits_with_code_2_on_bad_input() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sepbench", "sample", "no_such_task"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown task 'no_such_task'; known: ")


def test_tasks_lists_every_task_with_its_paper() -> None:
    result = sepbench("tasks")
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == tasks.names()
    assert all("§" in line for line in lines)


@pytest.mark.parametrize("name", tasks.names())
def test_sample_prints_prompt_completion_answer(name: str) -> None:
    result = sepbench("sample", name, "--n", "2", "--seed", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.count(" | ") >= 2 for line in lines)


def test_export_writes_jsonl_that_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "data" / "lookup.jsonl"
    args = ["--n", "5", "--length", "12", "--seed", "3", "--param", "vocab_size=8"]
    result = sepbench("export", "index_lookup", *args, "--out", str(out))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    task = tasks.get("index_lookup", vocab_size=8)
    batch = task.sample(np.random.default_rng(3), 5, 12)
    assert len(records) == 5
    for i, record in enumerate(records):
        assert set(record) == {"prompt", "completion", "answer", "tokens"}
        assert record["tokens"] == batch.tokens[i, : batch.lengths[i]].tolist()
        assert task.vocab.text(record["tokens"]) == f"{record['prompt']} {record['completion']}"
        assert record["answer"] == batch.answers[i]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sample", "no_such_task"], "known: "),
        (["sample", "dyck", "--param", "max_depth=0"], "max_depth"),
        (["sample", "index_lookup", "--length", "0"], "length"),
        (["sample", "index_lookup", "--param", "colour=red"], "unknown parameter 'colour'"),
        (["sample", "index_lookup", "--param", "novalue"], "key=value"),
        (["runs", "--format", "xml"], "table, csv, json"),
        (["runs", "--status", "sleeping"], "running, done, diverged, failed"),
        (["show", "999"], "no run with id 999"),
        (["sweep", "no_such_preset"], "presets: demo"),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = sepbench(*args, "--store", str(tmp_path / "s.sqlite")) if args[0] in (
        "runs", "show", "sweep"
    ) else sepbench(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_failed_export_keeps_the_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "kept.jsonl"
    out.write_text("precious\n")
    result = sepbench("export", "index_lookup", "--length", "0", "--out", str(out))
    assert result.returncode == 2
    assert out.read_text() == "precious\n"


def test_models_lists_every_model_with_sizes() -> None:
    from sepbench import models

    result = sepbench("models", "--width", "16", "--layers", "2", "--length", "100")
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.strip().splitlines()[1:]]
    assert listed == models.names()


def test_models_shows_each_models_recurrence_class() -> None:
    from sepbench.models.base import MIXERS

    result = sepbench("models", "--width", "16", "--layers", "2", "--length", "100")
    rows = {line.split()[0]: line.split()[3] for line in result.stdout.splitlines()[1:]}
    assert result.stdout.split()[4] == "recurrence"  # model, parameters, state size, ...
    assert rows["transformer"] == "none" and rows["lstm"] == "complete"
    assert rows["hybrid"] == "linear+none"
    for name, cls in MIXERS.items():
        assert rows.get(name, cls.recurrence) == cls.recurrence
