"""Training logs for the tools the field watches runs in: TensorBoard scalars, one folder per run.

``train.log: tensorboard`` makes the runner hand the training loop one more consumer of its
progress events (:class:`~sepbench.train.ProgressEvent`): every event becomes TensorBoard scalars
at the event's step,

============================  =============================================================
``train/loss``                mean training loss since the previous event
``train/learning_rate``       the learning rate after that step
``train/tokens_per_s``        training throughput (validation time excluded)
``validation/accuracy``       validation accuracy, at validation points only
============================  =============================================================

and the resolved config is written once as the text ``config``. The folder is
``<run_dir>/tensorboard/run-<id>`` (beside the run's checkpoints), one per attempt, so a forced
rerun of a config is a separate TensorBoard run; the run's record names it (``log_dir`` among
its metrics). ``tensorboard --logdir <store folder>/checkpoints`` shows every logged run.

The writer is ``torch.utils.tensorboard``, which needs the ``tensorboard`` extra.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sepbench.config import Experiment
from sepbench.extras import require
from sepbench.train import ProgressCallback, ProgressEvent


class TensorBoardLog:
    """A progress callback that writes each event as TensorBoard scalars to ``folder``."""

    def __init__(self, folder: Path, experiment: Experiment) -> None:
        tensorboard = require("torch.utils.tensorboard", "tensorboard", "train.log: tensorboard")
        self.folder = folder
        self._writer = tensorboard.SummaryWriter(log_dir=str(folder))
        config = json.dumps(experiment.resolved(), indent=1)
        self._writer.add_text("config", f"```\n{config}\n```")

    def __call__(self, event: ProgressEvent) -> None:
        scalars = {
            "train/loss": event.loss,
            "train/learning_rate": event.lr,
            "train/tokens_per_s": event.tokens_per_s,
            "validation/accuracy": event.val_accuracy,
        }
        for tag, value in scalars.items():
            if value is not None:
                self._writer.add_scalar(tag, value, event.step)

    def close(self) -> None:
        self._writer.close()


@contextmanager
def training_log(
    experiment: Experiment, folder: Path, on_progress: ProgressCallback | None
) -> Iterator[tuple[ProgressCallback | None, dict[str, Any]]]:
    """Yield the progress callback to train with (``on_progress`` followed by the log's
    writer, if ``experiment.train.log`` asks for one) and what the run's record keeps about
    the log (``{"log_dir": folder}``, or nothing). The log is closed on leaving."""
    if experiment.train is None or experiment.train.log == "none":  # a construction trains not
        yield on_progress, {}
        return
    log = TensorBoardLog(folder, experiment)
    try:
        yield _both(on_progress, log), {"log_dir": str(folder.resolve())}
    finally:
        log.close()


def _both(first: ProgressCallback | None, second: ProgressCallback) -> ProgressCallback:
    if first is None:
        return second

    def both(event: ProgressEvent) -> None:
        first(event)
        second(event)

    return both
