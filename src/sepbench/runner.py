"""``sepbench.run``: one experiment, from config to a stored result, served from the store
when it is already there.

resolve and hash the config -> claim it in the store (:meth:`~sepbench.store.Store.claim`: a
finished run is returned as cached unless ``force``; a config another live process is training
is waited for, or raises :class:`Busy`) -> build the task and the model on the device -> train
(:func:`sepbench.train.train`, continuing from the run's last checkpoint if it has one; every
log point also beats the row's heartbeat) -> evaluate the best-on-validation weights on the
test stream at each evaluation length (:func:`sepbench.evaluate.evaluate`) -> write metrics,
sizes, throughput and the training curve to the row.

The middle steps, which never touch the store, are :func:`train_and_evaluate`: a backend whose
runs execute elsewhere (:mod:`sepbench.backends.ray`) claims and records in its own process
(:func:`claim_run`, :func:`record`) and sends only that part away.

An exception marks the row ``failed`` with its one-line cause; a stop (:class:`Interrupted`,
``KeyboardInterrupt``) marks it ``interrupted``, its checkpoints kept for the next attempt;
both are re-raised. A ``diverged`` run is stored as such, with ``diverged_at_step``; it is
evaluated only when a validation point came before the divergence (the best weights are then
from before it), otherwise it has no test accuracy.
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sepbench import evaluate, training_sets
from sepbench.config import Experiment
from sepbench.constructions.bounds import DTYPE_BITS, state_bound_metrics
from sepbench.constructions.run import evaluate_construction
from sepbench.cpu import keep_freed_memory
from sepbench.errors import SepbenchError
from sepbench.overlap import measured_overlap
from sepbench.store import Claim, RunRecord, Store, StoreError, git_sha
from sepbench.tasks.base import Task
from sepbench.train import (
    EventCallback,
    Notice,
    ProgressCallback,
    ProgressEvent,
    TrainEvent,
    clear_checkpoints,
    data_streams,
    mixed_precision,
    seed_everything,
    train,
)
from sepbench.training_log import training_log

BUSY_POLL_S = 1.0
"""How often a run waiting for another process's training of the same config looks again."""


class Interrupted(BaseException):
    """A signal asked this process to stop (see :mod:`sepbench.backends.signals`)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class Busy(Exception):
    """Another live process is training this config (``run(..., wait=False)``)."""

    def __init__(self, config_hash: str, run_id: int) -> None:
        self.config_hash, self.run_id = config_hash, run_id
        super().__init__(f"config {config_hash} is being trained by another process (run {run_id})")


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
    resumed_from_step: int | None = None
    produced_by: str | None = None
    """For a served run: the commit that produced it, when it is not this code's commit."""


def run(
    experiment: Experiment,
    *,
    store: Store | None = None,
    force: bool = False,
    on_event: EventCallback | None = None,
    wait: bool = True,
) -> RunResult:
    """Train and evaluate ``experiment``, or return its stored result (``cached=True``).

    ``store`` defaults to :meth:`Store.default`; ``force`` retrains from step 0 even when a
    finished run of the same config exists. ``on_event`` receives the training's
    :class:`~sepbench.train.ProgressEvent` and :class:`~sepbench.train.Notice` events. When
    another process is training the same config, ``wait`` waits for its outcome; otherwise
    :class:`Busy` is raised.
    """
    store = store or Store.default()
    config_hash = experiment.config_hash()
    run_dir = store.run_dir(config_hash)
    device = resolve_device(experiment.device)
    claim = claim_run(store, experiment, str(device), force=force, wait=wait, say=on_event)
    if claim.record is not None:
        return result_from_record(claim.record, run_dir)
    run_id = claim.run_id
    if force:
        clear_checkpoints(run_dir)

    def relay(event: TrainEvent) -> None:
        if isinstance(event, ProgressEvent):
            store.heartbeat(run_id)
        if on_event is not None:
            on_event(event)

    try:
        trained = train_and_evaluate(
            experiment, run_dir=run_dir, log_dir=log_dir(run_dir, run_id), on_event=relay
        )
        return record(store, run_id, experiment, trained, run_dir)
    except Exception as error:
        _close(store, run_id, "failed", one_line(error))
        raise
    except BaseException as error:
        _close(store, run_id, "interrupted", str(error) or f"interrupted ({type(error).__name__})")
        raise


@dataclass
class Trained:
    """What :func:`train_and_evaluate` returns: the run's outcome, before the store has it."""

    status: str
    metrics: dict[str, Any]
    info: dict[str, Any]
    curve: list[dict[str, Any]]
    resumed_from_step: int | None


def train_and_evaluate(
    experiment: Experiment,
    *,
    run_dir: Path,
    log_dir: Path,
    on_event: EventCallback | None = None,
) -> Trained:
    """The run's work, without the store: build the task and the model on the experiment's
    device, train (continuing from the checkpoint in ``run_dir``, if there is one), evaluate.

    A training log (``train.log``) is written to ``log_dir``. This is the part a remote worker
    executes (:mod:`sepbench.backends.ray`); :func:`run` wraps it in the store's claim and
    :func:`record`.
    """
    device = resolve_device(experiment.device)
    events = on_event or (lambda event: None)
    with training_log(experiment, log_dir, None) as (log, log_record):
        status, metrics, info, curve, resumed = _execute(
            experiment, device, run_dir, _with_log(events, log)
        )
    metrics.update(log_record)
    return Trained(status, metrics, info, curve, resumed)


def log_dir(run_dir: Path, run_id: int) -> Path:
    """Where run ``run_id`` writes its training log (``train.log``): beside its checkpoints."""
    return run_dir / "tensorboard" / f"run-{run_id}"


def record(
    store: Store, run_id: int, experiment: Experiment, trained: Trained, run_dir: Path
) -> RunResult:
    """Write a trained run's outcome, metrics and curve to its row; the run as a result."""
    store.finish(run_id, trained.status, trained.metrics, trained.info, trained.curve)
    return RunResult(
        run_id, experiment.config_hash(), trained.status, trained.metrics, False, run_dir,
        trained.resumed_from_step,
    )


def _with_log(relay: EventCallback, log: ProgressCallback | None) -> EventCallback:
    """Training events to ``relay``, and the progress events to the training log too."""
    if log is None:
        return relay

    def both(event: TrainEvent) -> None:
        relay(event)
        if isinstance(event, ProgressEvent):
            log(event)

    return both


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``: the cause a failed run is recorded with."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def claim_run(
    store: Store,
    experiment: Experiment,
    device: str,
    *,
    force: bool,
    wait: bool,
    say: EventCallback | None = None,
) -> Claim:
    """A ``running`` row for this process, or the finished run to serve (``force``: never);
    waits (saying so once) or raises :class:`Busy` while another live process trains the
    config. ``device`` is recorded until the run's own report replaces it."""
    config_hash = experiment.config_hash()
    config, info = experiment.resolved(), {"device": device}
    said = False
    while True:
        claim = store.claim(config_hash, config, info, reuse=not force)
        if claim.state != "busy":
            return claim
        if not wait:
            raise Busy(config_hash, claim.run_id)
        if say is not None and not said:
            say(Notice(f"another process is training this config (run {claim.run_id}); "
                       "waiting for its result"))
            said = True
        time.sleep(BUSY_POLL_S)


def _close(store: Store, run_id: int, status: str, cause: str) -> None:
    """Record how the run ended, unless the store itself is what failed."""
    with contextlib.suppress(StoreError):
        store.end(run_id, status, cause)


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
    on_event: EventCallback,
) -> tuple[str, dict[str, Any], dict[str, Any], list[dict[str, Any]], int | None]:
    """Build, train, evaluate: (status, metrics, info, curve, resumed-from step)."""
    if device.type == "cpu":
        keep_freed_memory()
    if experiment.construction is not None:
        return evaluate_construction(experiment, device)
    seed_everything(experiment.train.seed, device)
    task = experiment.build_task()
    model = experiment.build_model(task).to(device)
    trained = train(experiment, task, model, run_dir=run_dir, on_event=on_event)
    metrics: dict[str, Any] = {
        "steps_run": trained.steps_run,
        "best_val_accuracy": trained.best_val_accuracy,
        "final_val_accuracy": trained.final_val_accuracy,
        "steps_to_threshold": trained.steps_to_threshold,
    }
    if trained.status == "diverged":
        metrics["diverged_at_step"] = trained.diverged_at_step
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
        metrics["test_overlap"] = measured_overlap(
            experiment, task, trained.steps_run, training_sets.cache_dir(run_dir)
        )
    metrics.update(
        state_bound_metrics(model, task, experiment.task.length, DTYPE_BITS[experiment.dtype])
    )
    info = {
        "num_parameters": model.num_parameters(),
        "state_size": model.state_size(prompt_tokens(task, experiment.task.length)),
        "wall_time_s": trained.wall_time_s,
        "tokens_per_s": trained.tokens_per_s,
        "device": str(device),
    }
    return trained.status, metrics, info, trained.curve, trained.resumed_from_step


def prompt_tokens(task: Task, length: int) -> int:
    """Tokens in the prompt of an example at ``length``: where the state size is measured.

    The state after reading the prompt is what the lower bounds of papers.md §1-2 constrain
    (the answer must be read out of it). One example drawn with a fixed seed (0) stands for
    the length; ``length`` counts the task's own units (symbols, nodes, bits), not tokens.
    """
    return int(task.sample(np.random.default_rng(0), 1, length).prompt_lengths[0])


def result_from_record(record: RunRecord, run_dir: Path) -> RunResult:
    """A stored run as a :class:`RunResult` (``cached``)."""
    metrics = dict(record.metrics)
    for key in ("test_accuracy", "test_answer_accuracy", "test_overlap"):
        if key in metrics:
            metrics[key] = {int(k): v for k, v in metrics[key].items()}
    current = git_sha()
    other = record.git_sha if record.git_sha and current and record.git_sha != current else None
    return RunResult(
        record.id, record.config_hash, record.status, metrics, True, run_dir, produced_by=other
    )
