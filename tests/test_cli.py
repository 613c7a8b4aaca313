"""The command line: every command runs, bad input gets one line and exit code 2."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest

from sepbench import tasks
from sepbench.cli import main
from sepbench.store import Store


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
    assert result.stdout.startswith(f"wrote 5 examples to {out} (jsonl)")
    assert json.loads((out.parent / "lookup.vocab.json").read_text())["[PAD]"] == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    task = tasks.get("index_lookup", vocab_size=8)
    batch = task.sample(np.random.default_rng(3), 5, 12)
    assert len(records) == 5
    for i, record in enumerate(records):
        assert set(record) == {
            "prompt", "completion", "answer", "tokens", "loss_mask", "prompt_length"
        }
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
        (["runs", "--format", "parquet"], "--format parquet writes to --out FILE"),
        (["export", "parity", "--out", "x.txt"], "cannot tell the format from 'x.txt'"),
        (["runs", "--status", "sleeping"], "running, done, diverged, failed, interrupted"),
        (["show", "999"], "no run with id 999"),
        (["sweep", "no_such_preset"],
         "presets: bhattamishra-critical, bhattamishra-critical-paper, bhattamishra-dyck"),
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


def test_runs_lists_the_store_as_a_table_and_as_csv(tmp_path: Path) -> None:
    from sepbench.store import Store
    from tests.stored_runs import add_run

    store = tmp_path / "s.sqlite"
    record = add_run(Store(store), {8: 0.5})
    table = sepbench("runs", "--store", str(store))
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[2].split()[:6] == [
        str(record.id), "index_lookup", "8", "transformer", "w8", "L1"
    ]
    rows = sepbench("runs", "--format", "csv", "--store", str(store)).stdout.splitlines()
    assert rows[0].startswith("id,task,length,model,status,seed,test_accuracy")
    assert rows[1].startswith(f"{record.id},index_lookup,8,transformer w8 L1,done,0,8: 0.500")


SWEEP_WITH_CLAIMS = """
base:
  task: {name: index_lookup, length: 4, params: {vocab_size: 4, max_length: 8}}
  model: {name: lstm, width: 4, layers: 1}
  train: {steps: 2, batch_size: 4, lr: 0.01, val_interval: 1, val_examples: 4}
  eval: {examples: 8}
  device: cpu
grid:
  train.seed: [0, 1]
claims:
  - {text: an LSTM scores at least 0, paper: "§2", where: {model: lstm}, op: ">=", value: 0}
  - {text: it scores above 1, paper: "§2", where: {lr: 1e-2}, at: max, op: ">", value: 1}
"""


def test_sweep_prints_the_table_then_each_claims_verdict(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SWEEP_WITH_CLAIMS)
    out = tmp_path / "report"
    result = sepbench("sweep", str(spec), "--workers", "1", "--store", str(tmp_path / "s.sqlite"),
                      "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    header = lines[-6].split()
    assert header[:4] == ["model", "train", "length", "seeds"] and lines[-4].split()[4] == "2"
    assert lines[-3].startswith("claim held: an LSTM scores at least 0 (§2;")
    assert lines[-2].startswith("claim not held: it scores above 1 (§2;")
    assert lines[-1].startswith(f"report: {out / 'report.html'} (")
    assert '<b class="not-held">not held</b>' in (out / "report.html").read_text()


def test_a_bad_claim_stops_the_sweep_before_any_run(tmp_path: Path) -> None:
    from sepbench.store import Store

    spec = tmp_path / "spec.yaml"
    spec.write_text(SWEEP_WITH_CLAIMS.replace('op: ">", value: 1', 'op: "=>", value: 1'))
    store = tmp_path / "s.sqlite"
    result = sepbench("sweep", str(spec), "--workers", "1", "--store", str(store))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: claims[1].op: must be '>=', '<=', '>' or '<'; got '=>'"
    assert Store(store).runs() == []
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep", "demo", "--workers", "0"], "--workers must be an integer >= 1, got 0"),
        (["demo", "--workers", "-1"], "--workers must be an integer >= 1, got -1"),
        (["models", "--width", "0"], "models: --width must be in >= 1, got 0"),
        (["models", "--length", "0"], "models: --length must be in >= 1, got 0"),
        (["sweep", "demo", "--backend", "slurm"],
         "sweep: --backend must be one of local, ray; got 'slurm'"),
        (["demo", "--address", "auto"], "sweep: --address applies only to --backend ray"),
        (["demo", "--max-retries", "1", "--checkpoints", "c"],
         "sweep: --max-retries and --checkpoints apply only to --backend ray"),
    ],
)
def test_bad_sizes_get_one_line_before_anything_is_printed(
    args: list[str], message: str, tmp_path: Path
) -> None:
    store = ["--store", str(tmp_path / "s.sqlite")] if args[0] != "models" else []
    result = sepbench(*args, *store)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: {message}\n"
    assert not (tmp_path / "s.sqlite").exists()


def test_a_sweep_with_a_failing_run_prints_the_table_lists_it_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sepbench import runner
    from tests.sweeps import write_spec

    real_train = runner.train

    def train(experiment: Any, *args: Any, **kwargs: Any) -> Any:
        if experiment.model.width == 12:
            raise ZeroDivisionError("a bug in one model")
        return real_train(experiment, *args, **kwargs)

    monkeypatch.setattr(runner, "train", train)
    spec = write_spec(tmp_path / "spec.yaml", {"model.width": [8, 12]})
    store = str(tmp_path / "s.sqlite")
    out = tmp_path / "report"
    result = sepbench("sweep", str(spec), "--workers", "1", "--store", store, "--out", str(out))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    table = result.stdout.split("-----")[-1]
    assert "lstm w8 L1" in table and " done " in table
    *_, failure, report = result.stdout.rstrip().splitlines()
    assert failure == (
        "failed: lstm w12 L1 · index_lookup N=8 · seed 0 · "
        f"{Store(store).runs(status='failed')[0].config_hash[:8]}: "
        "ZeroDivisionError: a bug in one model"
    )
    assert report.startswith("report: ") and (out / "report.html").is_file()


def test_a_local_sweep_never_imports_ray(tmp_path: Path) -> None:
    code = f"""
import sys
from sepbench import backends, cli, sweep
from sepbench.store import Store

assert backends.choose("local") is None
sweep.run_all([], store=Store({str(tmp_path / "s.sqlite")!r}), workers=2)
assert "ray" not in sys.modules, "ray was imported"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_models_shows_each_models_recurrence_class() -> None:
    from sepbench.models.base import MIXERS

    result = sepbench("models", "--width", "16", "--layers", "2", "--length", "100")
    rows = {line.split()[0]: line.split()[3] for line in result.stdout.splitlines()[1:]}
    assert result.stdout.split()[4] == "recurrence"  # model, parameters, state size, ...
    assert rows["transformer"] == "none" and rows["lstm"] == "complete"
    assert rows["hybrid"] == "linear+none"
    for name, cls in MIXERS.items():
        assert rows.get(name, cls.recurrence) == cls.recurrence
