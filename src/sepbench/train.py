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
  test distribution), scored in ``train.val_mode`` (default: the evaluation's mode), every
  ``val_interval`` steps and after the last step;
- a fixed training set (``dataset_size``) is visited in shuffled epochs, each epoch's order
  drawn from the seed and the epoch number (:mod:`sepbench.training_sets`);
- weight decay, when set, applies to every trainable parameter;
- ``bfloat16`` is autocast mixed precision: weights and optimizer state stay float32;
- a non-finite training loss or weight stops the run as ``diverged`` (checked every
  :data:`LOG_INTERVAL` steps, so the loop never waits on the device at every step); the step
  recorded is the first whose loss was not finite, and no weights of a diverged model are
  ever kept: the best validated weights (from before the divergence) are restored.

Resume: at every log point the loop writes ``last.pt`` (:mod:`sepbench.checkpoint`): model,
optimizer, schedule, the training data stream's position, torch's RNG, the curve so far and
the best weights so far. A run started again in the same ``run_dir`` continues from it and
ends with the metrics of an uninterrupted run, bit for bit on the CPU (at the same torch
thread count). A checkpoint that cannot be trusted is reported as a :class:`Notice` and
training starts from step 0.
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

from sepbench import checkpoint, evaluate, training_sets
from sepbench.config import Experiment
from sepbench.tasks.base import Batch, Task

LOG_INTERVAL = 50
"""Steps between progress events, curve points and checkpoints (validation points too)."""


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
class Notice:
    """A one-line warning or fact from training, e.g. a checkpoint it could not trust."""

    message: str


TrainEvent = ProgressEvent | Notice
EventCallback = Callable[[TrainEvent], None]


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
    diverged_at_step: int | None = None
    resumed_from_step: int | None = None


CARRIED = (
    "status", "steps_run", "best_val_accuracy", "final_val_accuracy", "steps_to_threshold",
    "curve", "diverged_at_step",
)
"""The :class:`TrainResult` fields a checkpoint carries (the others are timing)."""


def train(
    experiment: Experiment,
    task: Task,
    model: nn.Module,
    *,
    run_dir: str | Path,
    on_event: EventCallback | None = None,
) -> TrainResult:
    """Train ``model`` on ``task`` as ``experiment.train`` says; restore the best weights.

    Continues from ``run_dir/last.pt`` when it holds a trustworthy checkpoint of this config,
    and writes it at every log point; writes ``best.pt`` (model, step, validation accuracy)
    whenever validation improves. Call :func:`seed_everything` before building the model for
    a deterministic run. ``on_event`` receives :class:`ProgressEvent` and :class:`Notice`.
    """
    loop = _Loop(experiment, task, model, Path(run_dir), on_event or (lambda event: None))
    loop.resume()
    loop.run()
    return loop.finish()


def clear_checkpoints(run_dir: str | Path) -> None:
    """Forget a run's checkpoints: the next :func:`train` in ``run_dir`` starts at step 0."""
    for name in ("last.pt", "best.pt"):
        (Path(run_dir) / name).unlink(missing_ok=True)


class _Loop:
    """One training run: everything a checkpoint must carry, in one place."""

    def __init__(
        self,
        experiment: Experiment,
        task: Task,
        model: nn.Module,
        run_dir: Path,
        emit: EventCallback,
    ) -> None:
        config = experiment.train
        self.experiment, self.task, self.model, self.emit = experiment, task, model, emit
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.config_hash = experiment.config_hash()
        self.device = next(model.parameters()).device
        streams = data_streams(config.seed)
        self.validation = _validation_set(experiment, task, streams.validation)
        cache = training_sets.cache_dir(run_dir)
        self.batches = TrainingBatches(experiment, task, streams.train, cache)
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
        )
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_factor(experiment))
        self.result = TrainResult("done", 0, None, None, None)
        self.best: dict[str, torch.Tensor] | None = None
        self.clock = _Clock(config.steps)

    # -- checkpoints -------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "batches": self.batches.state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "result": {name: getattr(self.result, name) for name in CARRIED},
            "best": self.best,
            "clock": self.clock.state(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.batches.restore(state["batches"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        for name in CARRIED:
            setattr(self.result, name, state["result"][name])
        self.best = state["best"]
        self.clock.restore(state["clock"], self.result.steps_run)

    def resume(self) -> None:
        """Continue from ``last.pt`` if it can be trusted; otherwise say why and start over."""
        path = self.run_dir / "last.pt"
        if not path.is_file():
            return
        fresh = _copied(self._state())
        try:
            self._restore(checkpoint.load(path, self.config_hash))
        except Exception as error:  # unreadable, or a state this code cannot load
            self._restore(fresh)
            self.emit(Notice(
                f"checkpoint {path} cannot be trusted ({_first_line(error)}); "
                "training restarts from step 0"
            ))
            return
        self.result.resumed_from_step = self.result.steps_run
        self.emit(Notice(f"resuming from the checkpoint at step {self.result.steps_run}"))

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        config = self.experiment.train
        losses: list[torch.Tensor] = []
        self.model.train()
        step = self.result.steps_run
        while step < config.steps and not self._stopped():
            step += 1
            batch = next(self.batches)
            losses.append(
                _optimise(self.experiment, self.model, self.optimizer, batch, self.device)
            )
            self.schedule.step()
            self.clock.count(int(batch.lengths.sum()))
            validate = step % config.val_interval == 0 or step == config.steps
            if validate or step % LOG_INTERVAL == 0:
                self._log_point(step, torch.stack(losses), validate)
                losses.clear()

    def _stopped(self) -> bool:
        return self.result.status == "diverged" or self.result.steps_to_threshold is not None

    def _log_point(self, step: int, losses: torch.Tensor, validate: bool) -> None:
        """Curve point, divergence check, validation, checkpoint, progress event."""
        result = self.result
        mean_loss = float(losses.mean())  # the only wait on the device
        result.steps_run = step
        accuracy = None
        if not math.isfinite(mean_loss) or not _finite(self.model):
            result.status = "diverged"
            result.diverged_at_step = _first_non_finite(losses, step)
        elif validate:
            with self.clock.paused(), mixed_precision(self.experiment, self.device):
                accuracy = _validation_accuracy(
                    self.experiment, self.task, self.model, self.validation
                )
            self._record_validation(step, accuracy)
        result.curve.append({"step": step, "loss": mean_loss, "val_accuracy": accuracy})
        if result.status != "diverged":
            checkpoint.save(self._state(), self.run_dir / "last.pt", self.config_hash)
        self.emit(self.clock.event(step, mean_loss, accuracy, self.schedule.get_last_lr()[0]))

    def _record_validation(self, step: int, accuracy: float) -> None:
        """Update the result; keep the weights and write ``best.pt`` on a new best."""
        result, threshold = self.result, self.experiment.train.early_stop
        result.final_val_accuracy = accuracy
        if result.best_val_accuracy is None or accuracy > result.best_val_accuracy:
            result.best_val_accuracy = accuracy
            self.best = _copied(self.model.state_dict())
            state = {"step": step, "model": self.best, "val_accuracy": accuracy}
            checkpoint.save(state, self.run_dir / "best.pt", self.config_hash)
        if threshold is not None and accuracy >= threshold and result.steps_to_threshold is None:
            result.steps_to_threshold = step

    def finish(self) -> TrainResult:
        """Timing into the result; the best validated weights into the model."""
        self.result.tokens_per_s = self.clock.tokens_per_s()
        self.result.wall_time_s = self.clock.wall_time_s()
        if self.best is not None:
            self.model.load_state_dict(self.best)
        return self.result


def _copied(state: Any) -> Any:
    """A deep copy of nested dicts and lists of tensors (tensors cloned)."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {key: _copied(value) for key, value in state.items()}
    if isinstance(state, list):
        return [_copied(value) for value in state]
    return state


def _finite(model: nn.Module) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def _first_non_finite(losses: torch.Tensor, step: int) -> int:
    """The step of the first non-finite loss among the last ``len(losses)`` steps (``step``
    itself when every loss is finite but a weight is not)."""
    bad = (~torch.isfinite(losses)).nonzero()
    return step - len(losses) + 1 + int(bad[0]) if len(bad) else step


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


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


class TrainingBatches:
    """Fresh batches every step, or shuffled epochs over a fixed set (``dataset_size``) drawn
    once from the seed: stored in ``cache`` and shared by the runs that ask for it, or built
    in memory without one (:mod:`sepbench.training_sets`).

    Its position is part of a checkpoint (:meth:`state`, :meth:`restore`): the generator's
    state for fresh batches; the step for a fixed set, whose batch at step s is a function of
    the seed and s.
    """

    def __init__(
        self,
        experiment: Experiment,
        task: Task,
        rng: np.random.Generator,
        cache: Path | None = None,
    ) -> None:
        config = experiment.train
        self.task, self.rng, self.seed = task, rng, config.seed
        self.batch_size, self.length = config.batch_size, experiment.task.length
        self.lengths, self.step = config.train_lengths, 0
        self.varied = self.lengths == "task"
        self.dataset: training_sets.TrainingSet | None = None
        if config.dataset_size is not None:
            spec = training_sets.TrainingSetSpec(
                task.name, task.params, self.length, self.varied, self.seed, config.dataset_size
            )
            self.dataset = (
                training_sets.build(task, spec)
                if cache is None
                else training_sets.load_or_build(task, spec, cache)
            )
            self.epochs = self.dataset.batches(self.batch_size, self.seed)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        self.step += 1
        if self.dataset is not None:
            return next(self.epochs)
        if self.lengths == "batch":
            length = int(self.task.train_lengths(self.rng, 1, self.length)[0])
            return self.task.generate_lengths(self.rng, np.full(self.batch_size, length, np.int64))
        return self.task.sample(self.rng, self.batch_size, self.length, train=self.varied)

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "step": self.step}

    def restore(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state, self.step = state["rng"], state["step"]
        if self.dataset is not None:
            self.epochs = self.dataset.batches(self.batch_size, self.seed, start_step=self.step)


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


# -- validation ----------------------------------------------------------------------------


def _validation_accuracy(
    experiment: Experiment, task: Task, model: nn.Module, validation: list[Batch]
) -> float:
    mode = experiment.train.val_mode or experiment.eval.mode
    length = experiment.task.length
    correct = sum(
        len(batch) * evaluate.accuracy(model, task, batch, mode, length=length)
        for batch in validation
    )
    return correct / sum(len(batch) for batch in validation)


class _Clock:
    """Training time (validation excluded) and trained tokens, for throughput and ETA. The
    totals carry over a resume (:meth:`state`); the ETA follows this attempt's pace."""

    def __init__(self, steps: int) -> None:
        self.steps, self.tokens, self.paused_s = steps, 0, 0.0
        self.start = time.perf_counter()
        self.earlier_wall_s, self.first_step = 0.0, 0

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

    def state(self) -> dict[str, float]:
        return {"tokens": self.tokens, "wall_s": self.wall_time_s(), "paused_s": self.paused_s}

    def restore(self, state: dict[str, float], step: int) -> None:
        self.tokens, self.paused_s = int(state["tokens"]), float(state["paused_s"])
        self.earlier_wall_s, self.first_step = float(state["wall_s"]), step
        self.start = time.perf_counter()

    def wall_time_s(self) -> float:
        return self.earlier_wall_s + time.perf_counter() - self.start

    def tokens_per_s(self) -> float:
        return self.tokens / max(self.wall_time_s() - self.paused_s, 1e-9)

    def event(self, step: int, loss: float, accuracy: float | None, lr: float) -> ProgressEvent:
        pace = (time.perf_counter() - self.start) / max(step - self.first_step, 1)
        eta = pace * (self.steps - step)
        return ProgressEvent(step, self.steps, loss, accuracy, self.tokens_per_s(), eta, lr)
