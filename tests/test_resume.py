"""A run whose process is killed mid-training leaves the store consistent and is rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sepbench.config import load_experiment
from sepbench.runner import run
from sepbench.store import Store

CONFIG = """
task: {name: index_lookup, length: 8, params: {vocab_size: 8, max_length: 8}}
model: {name: lstm, width: 8, layers: 1}
train: {steps: 1500, batch_size: 16, lr: 0.003, seed: 0, val_interval: 100, val_examples: 32}
eval: {lengths: [8], examples: 64}
"""


def test_killed_run_leaves_a_consistent_store_and_is_rerun(tmp_path: Path) -> None:
    config, store_path = tmp_path / "run.yaml", tmp_path / "s.sqlite"
    config.write_text(CONFIG)
    child = subprocess.Popen(
        [sys.executable, "-m", "sepbench", "run", str(config), "--store", str(store_path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in child.stderr:  # progress lines: training has started
        if "val" in line:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    store = Store(store_path)
    (killed,) = store.runs()
    assert killed.status == "running" and killed.metrics == {}
    assert store.curve(killed.id) == []

    result = run(load_experiment(config), store=store)
    assert result.status == "done" and not result.cached
    first, second = store.runs()
    assert first.id == killed.id and first.status == "failed" and "interrupted" in first.error
    assert second.id == result.run_id and second.status == "done"
    assert store.lookup_done(result.config_hash).id == second.id
    assert run(load_experiment(config), store=store).cached
