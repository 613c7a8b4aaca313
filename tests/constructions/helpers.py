"""Shared by the construction tests: test accuracy through the engine, chunked runs."""

from __future__ import annotations

import numpy as np
import torch

from sepbench import evaluate
from sepbench.tasks.base import Task
from tests.models.chunks import run_in_chunks


def test_accuracy(
    model: torch.nn.Module, task: Task, length: int, examples: int, mode: str = "teacher_forced"
) -> float:
    """The engine's own evaluation (evaluate.evaluate) on a fixed test stream."""
    rng = np.random.default_rng(1234)
    return evaluate.evaluate(
        model, task, lengths=[length], examples=examples, mode=mode, rng=rng, batch_size=256
    )[length]


test_accuracy.__test__ = False  # a helper, not a test


def chunked_matches_whole(model: torch.nn.Module, tokens: torch.Tensor, sizes: list[int]) -> None:
    """Whole-sequence, chunked and token-by-token logits agree (the model contract)."""
    with torch.no_grad():
        whole, _ = model(tokens)
        chunked, _ = run_in_chunks(model, tokens, sizes)
        stepped, _ = run_in_chunks(model, tokens, [1] * tokens.shape[1])
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(stepped, whole)


def prompt_tokens(task: Task, length: int, count: int, seed: int = 0) -> torch.Tensor:
    batch = task.sample(np.random.default_rng(seed), count, length)
    return torch.from_numpy(batch.tokens[:, : int(batch.prompt_lengths.min())])
