"""Training speed of the recurrent Transformers (papers.md §3) beside the Transformer and the LSTM.

Run with ``python benchmarks/recurrent_transformers_speed.py [--quick] [--threads N]``. Prints;
never asserts. fp32; torch threads 2 by default (the CI and demo machines have two cores); on a
machine shared with other jobs, ``--threads 1`` keeps the ratios from measuring contention.

Forward+backward tokens/s (cross-entropy on next-token prediction) at a fixed batch of 64, the
batch the presets train with, for the Transformer, the LSTM and the five recurrent Transformers,
all of width 64 and 2 layers (the LSTM: 2 layers, no MLP, as in every sepbench LSTM), every
other parameter at its default (block 4, segment 10 with 4 memory tokens, 4 heads). The
Feedback and the Recurrent Transformer must run one token at a time (their state update is
serial by design); the Block-Recurrent and the memory-token Transformer run one block or
segment at a time; the looped Transformer is as parallel as the Transformer. The models are
timed in turns (one step of each, repeated), so a change of machine load hits them alike, and
each row gives the median step's tokens/s and its ratio to the Transformer's and the LSTM's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from sepbench import models
from sepbench.cpu import keep_freed_memory

VOCAB = 64
WIDTH = 64
LAYERS = 2
BATCH = 64
MODELS = (
    "transformer",
    "lstm",
    "universal_transformer",
    "recurrent_memory_transformer",
    "block_recurrent_transformer",
    "recurrent_transformer",
    "feedback_transformer",
)


def training_step(name: str, length: int) -> Callable[[], None]:
    torch.manual_seed(0)
    model = models.build(name, VOCAB, WIDTH, LAYERS, max_length=4096)
    x = torch.randint(0, VOCAB, (BATCH, length), generator=torch.Generator().manual_seed(0))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        logits, _ = model(x)
        nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1)
        ).backward()

    return step


def in_turns(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each step, calling them in turns after one warm-up each."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def table(length: int, repeats: int) -> None:
    print(f"\nlength {length}, batch {BATCH}, width {WIDTH}, {LAYERS} layers, median of {repeats}")
    print(f"{'model':<30}{'tokens/s':>12}{'vs transformer':>16}{'vs lstm':>10}")
    seconds = in_turns({name: training_step(name, length) for name in MODELS}, repeats)
    tokens = {name: BATCH * length / elapsed for name, elapsed in seconds.items()}
    for name in MODELS:
        ratio_transformer = tokens[name] / tokens["transformer"]
        ratio_lstm = tokens[name] / tokens["lstm"]
        print(f"{name:<30}{tokens[name]:>12,.0f}{ratio_transformer:>15.3f}x{ratio_lstm:>9.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="length 20 only")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    arguments = parser.parse_args()
    quick = arguments.quick
    torch.set_num_threads(arguments.threads)
    keep_freed_memory()  # as the engine does on CPU (sepbench.cpu)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32")
    for length in [20] if quick else [20, 100]:
        table(length, repeats=3)


if __name__ == "__main__":
    main()
