"""Stored runs without training: real resolved configs, given metrics (for the tests of the
aggregation, the claims, the summaries and the report)."""

from __future__ import annotations

import copy
from typing import Any

from sepbench.config import experiment_from_dict
from sepbench.store import RunRecord, Store

BASE: dict[str, Any] = {
    "task": {"name": "index_lookup", "length": 8, "params": {"vocab_size": 8, "max_length": 64}},
    "model": {"name": "transformer", "width": 8, "layers": 1},
    "train": {"steps": 10, "batch_size": 8, "lr": 1e-3, "seed": 0},
    "eval": {"examples": 16},
    "device": "cpu",
}


def experiment_config(**dotted: Any) -> dict[str, Any]:
    """BASE with ``dotted`` fields set (``train__lr=3e-4`` sets train.lr)."""
    config = copy.deepcopy(BASE)
    for key, value in dotted.items():
        *parents, leaf = key.split("__")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def add_run(
    store: Store,
    accuracy: dict[int, float] | None,
    *,
    status: str = "done",
    state_size: int = 100,
    steps: int = 10,
    val: float = 0.5,
    answer: dict[int, float] | None = None,
    extra: dict[str, Any] | None = None,
    **dotted: Any,
) -> RunRecord:
    """Store one finished run of ``experiment_config(**dotted)`` with these test accuracies
    (and ``answer`` accuracies, as a generating run stores), ``val`` as its best validation
    accuracy, and ``extra`` metrics (``ood_accuracy``...)."""
    experiment = experiment_from_dict(experiment_config(**dotted))
    run_id = store.start(experiment.config_hash(), experiment.resolved(), {"device": "cpu"})
    metrics: dict[str, Any] = {"steps_run": steps, "best_val_accuracy": val, **(extra or {})}
    if accuracy is not None:
        metrics["test_accuracy"] = {str(n): a for n, a in accuracy.items()}
    if answer is not None:
        metrics["test_answer_accuracy"] = {str(n): a for n, a in answer.items()}
    if status == "failed":
        store.fail(run_id, "RuntimeError: boom")
    else:
        info = {"num_parameters": 1000, "state_size": state_size, "wall_time_s": 2.0}
        curve = [{"step": 5, "loss": 1.0, "val_accuracy": 0.25}, {"step": 10, "loss": 0.5,
                                                                     "val_accuracy": 0.5}]
        store.finish(run_id, status, metrics, info, curve)
    return store.get(run_id)
