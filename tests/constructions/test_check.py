"""Theory as a check: a recurrent model's result that beats a proven lower bound is flagged,
tested on a deliberately leaky evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import sepbench
from sepbench import evaluate, tasks
from sepbench.config import experiment_from_dict
from sepbench.constructions.bounds import state_bound_metrics
from sepbench.constructions.check import check_runs
from sepbench.report import write_report
from sepbench.store import Store
from sepbench.tasks.base import Batch
from sepbench.tasks.retrieval import IndexLookup
from tests.test_cli import sepbench as cli

N = 400
CLAIMED = {
    "task": {"name": "index_lookup", "length": N, "params": {"max_length": N}},
    "model": {"name": "lstm", "width": 1, "layers": 1},
    "train": {"steps": 1, "batch_size": 1, "lr": 1e-3},
    "eval": {"examples": 500},
    "device": "cpu",
}


class CopyLast(nn.Module):
    """A recurrent toy carrying one scalar: it predicts that the next token repeats this one."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.unused = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, tokens: torch.Tensor, state: object = None) -> tuple[torch.Tensor, object]:
        return nn.functional.one_hot(tokens, self.vocab_size).float(), tokens[:, -1:]

    def state_size(self, seq_len: int) -> int:
        return 1


class LeakyIndexLookup(IndexLookup):
    """The leak: the prompt repeats the answer just before the answer is asked for."""

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        batch = super().generate(rng, batch_size, length)
        tokens = np.concatenate([batch.tokens, batch.tokens[:, -1:]], axis=1)
        mask = np.zeros(tokens.shape, bool)
        mask[:, -1] = True
        return Batch(tokens, mask, batch.prompt_lengths + 1, batch.lengths + 1, batch.answers)


def store_toy_run(store: Store, task: IndexLookup) -> int:
    """Evaluate the toy on ``task`` with the engine and store it as the claimed config."""
    toy = CopyLast(len(task.vocab))
    accuracy = evaluate.evaluate(
        toy, task, lengths=[N], examples=500, mode="teacher_forced",
        rng=np.random.default_rng(0),
    )
    experiment = experiment_from_dict(CLAIMED)
    run_id = store.start(experiment.config_hash(), experiment.resolved(), {"device": "cpu"})
    metrics = {"test_accuracy": accuracy, **state_bound_metrics(toy, task, N, 32)}
    store.finish(run_id, "done", metrics, {"state_size": 1}, [])
    return run_id


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "runs.sqlite")


def test_a_leaky_evaluation_is_flagged_as_impossible(store: Store, tmp_path: Path) -> None:
    leaky = store_toy_run(store, LeakyIndexLookup(max_length=N))
    assert store.get(leaky).metrics["test_accuracy"]["400"] == 1.0
    found = check_runs(store.runs()).impossible
    assert [f.run_id for f in found] == [leaky]
    assert found[0].state_bits == 32 and found[0].bound_bits > 1800
    assert "INDEX" in found[0].theorem
    result = cli("runs", "--check", "--store", str(store.path))
    assert result.returncode == 1
    assert f"IMPOSSIBLE run {leaky} (lstm on index_lookup, N = 400)" in result.stdout
    page = write_report(store, tmp_path / "report").html.read_text()
    assert "Impossible results" in page and "an evaluation bug or a leak" in page


def test_the_same_toy_evaluated_honestly_passes(store: Store) -> None:
    honest = store_toy_run(store, tasks.get("index_lookup", max_length=N))
    assert store.get(honest).metrics["test_accuracy"]["400"] < 0.05
    result = check_runs(store.runs())
    assert result.impossible == [] and result.checked == 1
    assert cli("runs", "--check", "--store", str(store.path)).returncode == 0


def test_an_older_run_without_a_stored_state_is_measured_from_its_config(store: Store) -> None:
    """Runs stored before the bounds were: the model is rebuilt from the config."""
    experiment = experiment_from_dict(CLAIMED)
    run_id = store.start(experiment.config_hash(), experiment.resolved(), {"device": "cpu"})
    store.finish(run_id, "done", {"test_accuracy": {"400": 0.995}}, {}, [])
    found = check_runs(store.runs()).impossible
    assert [f.run_id for f in found] == [run_id]
    assert found[0].state_bits == 2 * 32  # an LSTM of width 1: h and c


def test_honest_runs_pass_recurrent_or_not(store: Store) -> None:
    """A trained LSTM (recurrent, low accuracy) and a Transformer (state grows) pass."""
    base = {**CLAIMED, "task": {"name": "index_lookup", "length": 8, "params": {"vocab_size": 4}},
            "train": {"steps": 20, "batch_size": 16, "lr": 3e-3, "val_interval": 10,
                      "val_examples": 32},
            "eval": {"examples": 64}}
    lstm = sepbench.run(experiment_from_dict(base), store=store)
    transformer = sepbench.run(
        experiment_from_dict({**base, "model": {"name": "transformer", "width": 16, "layers": 1}}),
        store=store,
    )
    assert lstm.metrics["state_bound"]["recurrent"] is True
    assert lstm.metrics["state_bound"]["bits"] == 8 * 2  # N log2|Σ|
    assert transformer.metrics["state_bound"] == {"recurrent": False}
    result = check_runs(store.runs())
    assert result.impossible == [] and result.checked == 1
