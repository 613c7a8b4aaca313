"""The training loop: one loop for every task, since every task is a causal-LM problem.

The model predicts ``tokens[:, 1:]`` from ``tokens[:, :-1]``; the loss is the cross-entropy at
the positions where ``loss_mask[:, 1:]`` is True, averaged over those tokens of the batch (the
prompt and retrieved tokens are never trained, papers.md §1). AdamW with linear warm-up, then
cosine decay to zero (or a constant rate), and gradient-norm clipping.

Three disjoint data streams come from the one seed (``SeedSequence(seed).spawn(3)``):
training, validation and test. Model selection and early stopping look at the validation
stream only (Bhattamishra et al. stop "when validation is (almost) perfect", papers.md §2); the
test stream is for :func:`sepbench.evaluate.evaluate` after training.

Choices the papers leave open, decided here:
- validation is a fixed set of ``val_examples`` drawn once at exactly the task length (the
  test distribution), scored in the experiment's evaluation mode, every ``val_interval``
  steps and after the last step;
- a fixed training set (``dataset_size``) is visited in shuffled epochs, each epoch's order
  drawn from the seed and the epoch number (:mod:`sepbench.training_sets`);
- weight decay, when set, applies to every trainable parameter;
- ``bfloat16`` is autocast mixed precision: weights and optimizer state stay float32;
- a non-finite training loss stops the run as ``diverged`` (checked every
  :data:`LOG_INTERVAL` steps, so the loop never waits on the device at every step).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from sepbench import evaluate, training_sets
from sepbench.config import Experiment
from sepbench.tasks.base import Batch, Task

LOG_INTERVAL = 50
"""Steps between progress events and curve points (validation points are always included)."""


class Streams(NamedTuple):
    """The three disjoint random streams of one seed."""

    train: np.random.Generator
    validation: np.random.Generator
    test: np.random.Generator


def data_streams(seed: int) -> Streams:
    """Training, validation and test generators, spawned from ``SeedSequence(seed)``."""
    return Streams(*(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)))


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed torch (model initialisation); on CUDA also ask for deterministic kernels.

    The CPU kernels used here are deterministic already, and the switch costs a CPU process
    seconds of imports (torch's compiler stack), so it is set only where it matters.
    """
    torch.manual_seed(seed)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class ProgressEvent:
    """What a progress display needs; ``val_accuracy`` is None between validation points;
    ``lr`` is the learning rate after ``step`` (the next update's)."""

    step: int
    steps: int
    loss: float
    val_accuracy: float | None
    tokens_per_s: float
    eta_s: float
    lr: float


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class TrainResult:
    """The outcome of :func:`train`. ``status`` is ``done`` or ``diverged``."""

    status: str
    steps_run: int
    best_val_accuracy: float | None
    final_val_accuracy: float | None
    steps_to_threshold: int | None
    curve: list[dict[str, Any]] = field(default_factory=list)
    tokens_per_s: float = 0.0
    wall_time_s: float = 0.0


def train(
    experiment: Experiment,
    task: Task,
    model: nn.Module,
    *,
    run_dir: str | Path,
    on_progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train ``model`` on ``task`` as ``experiment.train`` says; restore the best weights.

    Writes ``last.pt`` (model, optimizer, step) at every validation point and ``best.pt``
    (model, step, validation accuracy) whenever validation improves, both in ``run_dir``.
    Call :func:`seed_everything` before building the model for a deterministic run.
    """
    config = experiment.train
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("best.pt", "last.pt"):
        (run_dir / stale).unlink(missing_ok=True)
    device = next(model.parameters()).device
    streams = data_streams(config.seed)
    validation = _validation_set(experiment, task, streams.validation)
    batches = _training_batches(experiment, task, streams.train, training_sets.cache_dir(run_dir))
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(experiment))
    clock = _Clock(config.steps)
    result = TrainResult("done", 0, None, None, None)
    losses: list[torch.Tensor] = []
    model.train()
    for step in range(1, config.steps + 1):
        batch = next(batches)
        losses.append(_optimise(experiment, model, optimizer, batch, device))
        schedule.step()
        clock.count(int(batch.lengths.sum()))
        validate = step % config.val_interval == 0 or step == config.steps
        if not (validate or step % LOG_INTERVAL == 0):
            continue
        mean_loss = float(torch.stack(losses).mean())  # the only wait on the device
        losses.clear()
        result.steps_run = step
        accuracy = None
        if not math.isfinite(mean_loss):
            result.status = "diverged"
        elif validate:
            with clock.paused(), mixed_precision(experiment, device):
                accuracy = _validation_accuracy(experiment, task, model, validation)
            _record_validation(result, step, accuracy, config.early_stop, model, optimizer, run_dir)
        result.curve.append({"step": step, "loss": mean_loss, "val_accuracy": accuracy})
        if on_progress is not None:
            on_progress(clock.event(step, mean_loss, accuracy, schedule.get_last_lr()[0]))
        if result.status == "diverged" or result.steps_to_threshold is not None:
            break
    result.tokens_per_s, result.wall_time_s = clock.tokens_per_s(), clock.wall_time_s()
    if (run_dir / "best.pt").is_file():
        model.load_state_dict(torch.load(run_dir / "best.pt", weights_only=True)["model"])
    return result


def _optimise(
    experiment: Experiment,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    device: torch.device,
) -> torch.Tensor:
    """One update: forward, backward, gradient clipping, AdamW step. Returns the loss."""
    with mixed_precision(experiment, device):
        loss = _loss(model, batch, device)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if experiment.train.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), experiment.train.grad_clip)
    optimizer.step()
    return loss.detach()


# -- data ----------------------------------------------------------------------------------


def _validation_set(experiment: Experiment, task: Task, rng: np.random.Generator) -> list[Batch]:
    """``val_examples`` examples at the task length, in evaluation-size batches, drawn once."""
    total, size = experiment.train.val_examples, experiment.eval.batch_size
    return [
        task.sample(rng, min(size, total - start), experiment.task.length)
        for start in range(0, total, size)
    ]


def _training_batches(
    experiment: Experiment, task: Task, rng: np.random.Generator, cache: Path | None = None
) -> Iterator[Batch]:
    """Fresh batches every step, or shuffled epochs over a fixed set (``dataset_size``) drawn
    once from the seed: stored in ``cache`` and shared by the runs that ask for it, or built
    in memory without one (:mod:`sepbench.training_sets`; the batch at step s is a function of
    the seed and s, so ``TrainingSet.batches(size, seed, start_step=s)`` resumes there)."""
    config, length = experiment.train, experiment.task.length
    varied = config.train_lengths == "task"
    if config.dataset_size is None:
        while True:
            yield task.sample(rng, config.batch_size, length, train=varied)
    spec = training_sets.TrainingSetSpec(
        task.name, task.params, length, varied, config.seed, config.dataset_size
    )
    if cache is None:
        dataset = training_sets.build(task, spec)
    else:
        dataset = training_sets.load_or_build(task, spec, cache)
    yield from dataset.batches(config.batch_size, config.seed)


# -- one step ------------------------------------------------------------------------------


def _loss(model: nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    """Mean cross-entropy over the trained next-token positions of the batch (the head is
    applied at those positions only)."""
    trained = torch.from_numpy(batch.loss_mask[:, 1:]).to(device)
    targets = torch.from_numpy(batch.tokens[:, 1:]).to(device)[trained]
    hidden, _ = model.features(torch.from_numpy(batch.tokens[:, :-1]).to(device))
    return nn.functional.cross_entropy(model.head(hidden[trained]).float(), targets)


def _lr_factor(experiment: Experiment) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_steps``, then constant or cosine decay to zero."""
    config = experiment.train

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def mixed_precision(experiment: Experiment, device: torch.device) -> AbstractContextManager:
    """bfloat16 autocast when ``experiment.dtype`` asks for it, else a no-op context."""
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=experiment.dtype == "bfloat16"
    )


# -- validation and checkpoints --------------------------------------------------------------


def _validation_accuracy(
    experiment: Experiment, task: Task, model: nn.Module, validation: list[Batch]
) -> float:
    correct = sum(
        len(batch)
        * evaluate.accuracy(model, task, batch, experiment.eval.mode, length=experiment.task.length)
        for batch in validation
    )
    return correct / sum(len(batch) for batch in validation)


def _record_validation(
    result: TrainResult,
    step: int,
    accuracy: float,
    threshold: float | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run_dir: Path,
) -> None:
    """Update the result; write ``last.pt``, and ``best.pt`` on a new best."""
    result.final_val_accuracy = accuracy
    state = {"step": step, "model": model.state_dict()}
    _save({**state, "optimizer": optimizer.state_dict()}, run_dir / "last.pt")
    if result.best_val_accuracy is None or accuracy > result.best_val_accuracy:
        result.best_val_accuracy = accuracy
        _save({**state, "val_accuracy": accuracy}, run_dir / "best.pt")
    if threshold is not None and accuracy >= threshold and result.steps_to_threshold is None:
        result.steps_to_threshold = step


def _save(state: dict[str, Any], path: Path) -> None:
    """Write atomically: a killed process leaves the old checkpoint, never half a new one."""
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    partial.replace(path)


class _Clock:
    """Training time (validation excluded) and trained tokens, for throughput and ETA."""

    def __init__(self, steps: int) -> None:
        self.steps, self.tokens, self.paused_s = steps, 0, 0.0
        self.start = time.perf_counter()

    def count(self, tokens: int) -> None:
        self.tokens += tokens

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside the block is not training time."""
        since = time.perf_counter()
        try:
            yield
        finally:
            self.paused_s += time.perf_counter() - since

    def wall_time_s(self) -> float:
        return time.perf_counter() - self.start

    def tokens_per_s(self) -> float:
        return self.tokens / max(self.wall_time_s() - self.paused_s, 1e-9)

    def event(self, step: int, loss: float, accuracy: float | None, lr: float) -> ProgressEvent:
        eta = self.wall_time_s() / step * (self.steps - step)
        return ProgressEvent(step, self.steps, loss, accuracy, self.tokens_per_s(), eta, lr)
