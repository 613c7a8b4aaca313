"""``sepbench.run``: one experiment, from config to a stored result, served from the store
when it is already there.

resolve and hash the config -> look for a ``done`` run of that hash in the store (returned as
cached unless ``force``) -> claim a ``running`` row -> build the task and the model on the
device -> train (:func:`sepbench.train.train`) -> evaluate the best-on-validation weights on the
test stream at each evaluation length (:func:`sepbench.evaluate.evaluate`) -> write metrics,
sizes, throughput and the training curve to the row. Any exception (Ctrl-C included) marks
the row ``failed`` with the error and is re-raised.

A ``diverged`` run is still evaluated when a validation point came before the divergence
(its best weights are then meaningful); otherwise it has no test accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sepbench import evaluate
from sepbench.config import Experiment
from sepbench.cpu import keep_freed_memory
from sepbench.errors import SepbenchError
from sepbench.store import RunRecord, Store
from sepbench.tasks.base import Task
from sepbench.train import (
    ProgressCallback,
    data_streams,
    mixed_precision,
    seed_everything,
    train,
)
from sepbench.training_log import training_log


@dataclass
class RunResult:
    """What :func:`run` returns; ``metrics["test_accuracy"]`` maps length (int) to accuracy
    (``exact``); with generation, ``metrics["test_answer_accuracy"]`` likewise (``answer``)."""

    run_id: int
    config_hash: str
    status: str
    metrics: dict[str, Any]
    cached: bool
    run_dir: Path


def run(
    experiment: Experiment,
    *,
    store: Store | None = None,
    force: bool = False,
    on_progress: ProgressCallback | None = None,
) -> RunResult:
    """Train and evaluate ``experiment``, or return its stored result (``cached=True``).

    ``store`` defaults to :meth:`Store.default`; ``force`` retrains even when a ``done`` run of
    the same config exists. ``on_progress`` receives :class:`~sepbench.train.ProgressEvent`.
    """
    store = store or Store.default()
    config_hash = experiment.config_hash()
    run_dir = store.run_dir(config_hash)
    record = None if force else store.lookup_done(config_hash)
    if record is not None:
        return _cached(record, run_dir)
    device = resolve_device(experiment.device)
    run_id = store.start(config_hash, experiment.resolved(), {"device": str(device)})
    try:
        log_dir = run_dir / "tensorboard" / f"run-{run_id}"
        with training_log(experiment, log_dir, on_progress) as (progress, log_record):
            status, metrics, info, curve = _execute(experiment, device, run_dir, progress)
        metrics.update(log_record)
    except BaseException as error:
        store.fail(run_id, f"{type(error).__name__}: {error}")
        raise
    store.finish(run_id, status, metrics, info, curve)
    return RunResult(run_id, config_hash, status, metrics, False, run_dir)


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SepbenchError("device: cuda was asked for but no CUDA device is available")
    return torch.device(device)


def _execute(
    experiment: Experiment,
    device: torch.device,
    run_dir: Path,
    on_progress: ProgressCallback | None,
) -> tuple[str, dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Build, train, evaluate: (status, metrics, info, curve) for the store."""
    if device.type == "cpu":
        keep_freed_memory()
    seed_everything(experiment.train.seed, device)
    task = experiment.build_task()
    model = experiment.build_model(task).to(device)
    trained = train(experiment, task, model, run_dir=run_dir, on_progress=on_progress)
    metrics: dict[str, Any] = {
        "steps_run": trained.steps_run,
        "best_val_accuracy": trained.best_val_accuracy,
        "final_val_accuracy": trained.final_val_accuracy,
        "steps_to_threshold": trained.steps_to_threshold,
    }
    if trained.best_val_accuracy is not None:
        with mixed_precision(experiment, device):
            tested = evaluate.evaluate_metrics(
                model,
                task,
                lengths=experiment.eval_lengths,
                examples=experiment.eval.examples,
                mode=experiment.eval.mode,
                rng=data_streams(experiment.train.seed).test,
                batch_size=experiment.eval.batch_size,
            )
        metrics["test_accuracy"] = tested["exact"]
        if "answer" in tested:  # generation only (sepbench.evaluate)
            metrics["test_answer_accuracy"] = tested["answer"]
        if experiment.eval.length_generalisation is not None:
            for metric, name in (("exact", "accuracy"), ("answer", "answer_accuracy")):
                if metric in tested:
                    scores = evaluate.length_scores(tested[metric], experiment.task.length, name)
                    metrics.update(scores)
    info = {
        "num_parameters": model.num_parameters(),
        "state_size": model.state_size(prompt_tokens(task, experiment.task.length)),
        "wall_time_s": trained.wall_time_s,
        "tokens_per_s": trained.tokens_per_s,
        "device": str(device),
    }
    return trained.status, metrics, info, trained.curve


def prompt_tokens(task: Task, length: int) -> int:
    """Tokens in the prompt of an example at ``length``: where the state size is measured.

    The state after reading the prompt is what the lower bounds of papers.md §1-2 constrain
    (the answer must be read out of it). One example drawn with a fixed seed (0) stands for
    the length; ``length`` counts the task's own units (symbols, nodes, bits), not tokens.
    """
    return int(task.sample(np.random.default_rng(0), 1, length).prompt_lengths[0])


def _cached(record: RunRecord, run_dir: Path) -> RunResult:
    metrics = dict(record.metrics)
    for key in ("test_accuracy", "test_answer_accuracy"):
        if key in metrics:
            metrics[key] = {int(k): v for k, v in metrics[key].items()}
    return RunResult(record.id, record.config_hash, record.status, metrics, True, run_dir)
