"""Running a construction as an experiment: build it, evaluate it with the engine's own
evaluation (no training), and return what the store records, like a trained run's."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from sepbench import evaluate
from sepbench.constructions.bounds import DTYPE_BITS, prompt_length, state_bound_metrics
from sepbench.train import data_streams

if TYPE_CHECKING:
    from sepbench.config import Experiment


def evaluate_construction(
    experiment: Experiment, device: torch.device
) -> tuple[str, dict[str, Any], dict[str, Any], list[dict[str, Any]], None]:
    """(status, metrics, info, curve, resumed-from step: none) of a construction experiment:
    test accuracy at each evaluation length on the seed's test stream, the construction's size
    and certificate, and, for a recurrent construction, its state against the lower bound."""
    task = experiment.build_task()
    model = experiment.build_construction(task).to(device)
    started = time.perf_counter()
    tested = evaluate.evaluate_metrics(
        model,
        task,
        lengths=experiment.eval_lengths,
        examples=experiment.eval.examples,
        mode=experiment.eval.mode,
        rng=data_streams(experiment.construction.seed).test,
        batch_size=experiment.eval.batch_size,
    )
    bits = model.precision.bits or DTYPE_BITS["float32"]
    metrics = {
        "test_accuracy": tested["exact"],
        **({"test_answer_accuracy": tested["answer"]} if "answer" in tested else {}),
        "construction": model.size(),
        "certificate": model.certificate(),
        **state_bound_metrics(model, task, experiment.task.length, bits),
    }
    info = {
        "num_parameters": model.num_parameters(),
        "state_size": model.state_size(prompt_length(task, experiment.task.length)),
        "wall_time_s": time.perf_counter() - started,
        "tokens_per_s": None,
        "device": str(device),
    }
    return "done", metrics, info, [], None
