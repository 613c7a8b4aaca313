"""Data-generation throughput of every registered task on one CPU core.

Run with ``python benchmarks/tasks_throughput.py [--batch B] [--seconds S]``. Prints; never
asserts. Each task in ``tasks.names()`` is timed at a typical length (``TYPICAL``; otherwise
length 64, clipped to the task's allowed range) through ``task.sample(rng, batch, length)``,
the test-length path. Tokens count prompt plus completion, padding excluded. BLAS/OpenMP and
torch are limited to one thread before numpy is imported.

Floors set by the issue (measured here, not asserted): index lookup, associative recall,
string equality and parity >= 5 M tokens/s; is_tree with CoT >= 5,000 graphs/s at 32 nodes.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import time
from typing import Any

import numpy as np
import torch

from sepbench import tasks
from sepbench.errors import SepbenchError

DEFAULT_LENGTH = 64
TYPICAL: dict[str, tuple[int, dict[str, Any]]] = {
    "index_lookup": (100, {}),
    "associative_recall": (64, {}),
    "string_equality": (200, {}),
    "parity": (40, {}),
    "is_tree": (32, {"mode": "cot"}),
}
FLOORS: dict[str, tuple[str, float]] = {  # task -> (unit, floor)
    "index_lookup": ("tokens/s", 5e6),
    "associative_recall": ("tokens/s", 5e6),
    "string_equality": ("tokens/s", 5e6),
    "parity": ("tokens/s", 5e6),
    "is_tree": ("examples/s", 5e3),
}


def typical(task: tasks.Task) -> int:
    length = TYPICAL.get(task.name, (DEFAULT_LENGTH, {}))[0]
    top = task.max_length()
    return max(task.min_length, length if top is None else min(length, top))


def throughput(task: tasks.Task, length: int, batch: int, seconds: float) -> tuple[float, float]:
    """(tokens/s, examples/s) of ``task.sample`` over at least ``seconds`` and three calls."""
    rng = np.random.default_rng(0)
    task.sample(rng, batch, length)
    tokens = examples = calls = 0
    start = time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        drawn = task.sample(rng, batch, length)
        tokens += int(drawn.lengths.sum())
        examples += len(drawn)
        calls += 1
    elapsed = time.perf_counter() - start
    return tokens / elapsed, examples / elapsed


def verdict(name: str, tokens_per_s: float, examples_per_s: float) -> str:
    if name not in FLOORS:
        return ""
    unit, floor = FLOORS[name]
    value = tokens_per_s if unit == "tokens/s" else examples_per_s
    return f"{'ok' if value >= floor else 'BELOW'} (floor {floor:,.0f} {unit})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024, help="examples per sample call")
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum timing per task")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"batch {args.batch}, one thread, numpy {np.__version__}")
    header = f"{'task':<20} {'params':<18} {'length':>6} {'M tokens/s':>11} {'examples/s':>11}"
    print(header + "  floor")
    print("-" * (len(header) + 30))
    for name in tasks.names():
        params = TYPICAL.get(name, (DEFAULT_LENGTH, {}))[1]
        shown = ",".join(f"{k}={v}" for k, v in params.items()) or "-"
        task = tasks.get(name, **params)
        length = typical(task)
        try:
            per_token, per_example = throughput(task, length, args.batch, args.seconds)
        except SepbenchError as error:
            print(f"{name:<20} {shown:<18} {length:>6}  failed: {error}")
            continue
        print(
            f"{name:<20} {shown:<18} {length:>6} {per_token / 1e6:>11.2f} {per_example:>11,.0f}  "
            + verdict(name, per_token, per_example)
        )


if __name__ == "__main__":
    main()
