"""How much of a run's test set it saw in training.

The three random streams of a seed (training, validation, test) never share randomness, but at
small N they can share content: there are only so many Dyck-(2,2) strings of length 8 or
parity strings of 6 bits, and a test prompt that was also a training prompt measures memory,
not the separation (papers.md §2's lookups are safe, IsTree at N = 4 or short serial tasks are
not). Each run therefore stores the measured fraction per test length: the test set is drawn
again exactly as :func:`sepbench.evaluate.evaluate_metrics` drew it, the training batches
exactly as training drew them (``steps_run`` of them), and prompts are compared token for token
(a prompt fixes its answer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sepbench.config import Experiment
from sepbench.evaluate import sample_test_set
from sepbench.tasks.base import Batch, Task
from sepbench.train import TrainingBatches, data_streams


def measured_overlap(
    experiment: Experiment, task: Task, steps_run: int, cache: Path | None = None
) -> dict[int, float]:
    """Per test length, the fraction of test prompts that also appeared in the first
    ``steps_run`` training batches of the run."""
    streams = data_streams(experiment.train.seed)
    tested = _test_prompts(experiment, task, streams.test)
    seen: set[bytes] = set()
    training = TrainingBatches(experiment, task, streams.train, cache)
    for _ in range(steps_run):
        seen.update(_prompts(next(training)))
    return {
        length: sum(prompt in seen for prompt in prompts) / len(prompts)
        for length, prompts in tested.items()
    }


def _test_prompts(
    experiment: Experiment, task: Task, rng: np.random.Generator
) -> dict[int, list[bytes]]:
    prompts: dict[int, list[bytes]] = {}
    for length, batch in sample_test_set(
        task, experiment.eval_lengths, experiment.eval.examples, rng, experiment.eval.batch_size
    ):
        prompts.setdefault(length, []).extend(_prompts(batch))
    return prompts


def _prompts(batch: Batch) -> list[bytes]:
    return [batch.prompt(i).tobytes() for i in range(len(batch))]
