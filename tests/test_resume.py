"""A run whose process is SIGKILLed mid-training resumes from its last checkpoint and ends with
exactly the metrics of an uninterrupted run (papers' results must not depend on a crash)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from sepbench.config import load_experiment
from sepbench.runner import run
from sepbench.store import Store
from sepbench.train import Notice

CONFIG = """
task: {name: index_lookup, length: 8, params: {vocab_size: 8, max_length: 8}}
model: {name: lstm, width: 8, layers: 1}
train: {steps: 200, batch_size: 16, lr: 0.003, seed: 0, val_interval: 50, val_examples: 32}
eval: {lengths: [8], examples: 64}
device: cpu
"""

KILLED_AT_STEP_130 = """
import os, signal, sys
from sepbench import train
from sepbench.cli import main

real, calls = train._optimise, []

def optimise(*args):
    calls.append(1)
    if len(calls) == 130:  # mid-way between the checkpoints of steps 100 and 150
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args)

train._optimise = optimise
sys.argv = ["sepbench", "run", {config!r}, "--store", {store!r}]
main()
"""


def test_a_run_killed_mid_training_resumes_to_the_same_metrics(tmp_path: Path) -> None:
    config, store_path = tmp_path / "run.yaml", tmp_path / "s.sqlite"
    config.write_text(CONFIG)
    script = KILLED_AT_STEP_130.format(config=str(config), store=str(store_path))
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # one torch thread, as in this process
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stderr
    store = Store(store_path)
    (killed,) = store.runs()
    assert killed.status == "running" and killed.metrics == {} and store.curve(killed.id) == []

    events: list[Any] = []
    resumed = run(load_experiment(config), store=store, on_event=events.append)
    assert events[0] == Notice("resuming from the checkpoint at step 100")
    assert resumed.status == "done" and resumed.resumed_from_step == 100
    reference_store = Store(tmp_path / "reference" / "s.sqlite")
    reference = run(load_experiment(config), store=reference_store)
    assert resumed.metrics == reference.metrics
    assert store.curve(resumed.run_id) == reference_store.curve(reference.run_id)

    first, second = store.runs()
    assert (first.id, first.status) == (killed.id, "interrupted") and "died" in first.error
    assert (second.id, second.status) == (resumed.run_id, "done")
    assert run(load_experiment(config), store=store).cached
