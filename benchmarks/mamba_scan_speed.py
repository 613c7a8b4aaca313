"""Mamba on CPU: the compiled C scan against the torch scans it replaces, side by side.

Run with ``python benchmarks/mamba_scan_speed.py [--threads 2] [--repeats 3] [--clock cpu]``.
Prints; never asserts. fp32; the variants of each table are timed alternately in one process
(one call of each per round, median over rounds), so a busy machine slows them alike. On a
shared machine ``--threads 1 --clock cpu`` (this process's CPU time, not wall time) measures
the work done and is the least disturbed by other processes.

1. Mamba training tokens/s: 2 layers, width 64 (inner 128, d_state 16), vocab 64, batch 64,
   forward+backward of next-token cross-entropy, at lengths 100 and 1,024. ``torch`` is the
   model as it ran before the kernel (``SEPBENCH_MAMBA_KERNELS=0``: at these sizes the stepwise
   scan), ``compiled`` the default.
2. One scan, forward+backward (inner 128, d_state 16): the chunked, stepwise and compiled scans
   at batch 64 and lengths 100 and 1,024, and at batch 1, length 1,024 (where the torch path
   takes the chunked scan).
3. Building the kernel from scratch (compile and link, as on first use in a process).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from sepbench import models
from sepbench.cpu import keep_freed_memory
from sepbench.models import mamba_cpu
from sepbench.models.mamba import StepwiseScan, chunked_scan

VOCAB, WIDTH, LAYERS, INNER, D_STATE = 64, 64, 2, 128, 16


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def interleaved(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each run, timed one call of each per round after a warm-up call."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(rounds):
        for name, run in runs.items():
            start = clock()
            run()
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def with_compiled_scan(enabled: bool, run: Callable[[], None]) -> Callable[[], None]:
    def switched() -> None:
        os.environ[mamba_cpu.DISABLE_VARIABLE] = "1" if enabled else "0"
        run()

    return switched


def training_step(length: int, batch: int) -> Callable[[], None]:
    torch.manual_seed(0)
    model = models.build("mamba", VOCAB, WIDTH, LAYERS, max_length=length)
    x = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(0))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        logits, _ = model(x)
        F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1)).backward()

    return step


def training_table(lengths: list[int], batch: int, rounds: int) -> None:
    print(f"\n1. mamba training tokens/s, {LAYERS} layers, width {WIDTH}, batch {batch}")
    print(f"{'length':>8}{'torch scan':>14}{'compiled':>14}{'ratio':>8}")
    for length in lengths:
        step = training_step(length, batch)
        runs = {name: with_compiled_scan(name == "compiled", step)
                for name in ("torch", "compiled")}
        times = interleaved(runs, rounds)
        tokens = batch * length
        print(
            f"{length:>8}{tokens / times['torch']:>14,.0f}{tokens / times['compiled']:>14,.0f}"
            f"{times['torch'] / times['compiled']:>7.1f}x"
        )


def scan_inputs(batch: int, length: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, length, INNER, generator=generator)
    dt = F.softplus(torch.randn(batch, length, INNER, generator=generator) - 3)
    a = -torch.arange(1.0, D_STATE + 1).repeat(INNER, 1)
    b, c = (torch.randn(batch, length, D_STATE, generator=generator) for _ in range(2))
    return [t.requires_grad_() for t in (x, dt, a, b, c)]


def scan_table(shapes: list[tuple[int, int]], rounds: int) -> None:
    scans = {
        "chunked": chunked_scan,
        "stepwise": StepwiseScan.apply,
        "compiled": mamba_cpu.CompiledScan.apply,
    }
    print(f"\n2. one scan forward+backward, inner {INNER}, d_state {D_STATE}, ms")
    names = "".join(f"{name:>11}" for name in scans)
    print(f"{'batch':>6}{'length':>8}{names}   best torch/compiled")
    for batch, length in shapes:
        inputs = scan_inputs(batch, length)
        weights = torch.randn(batch, length, INNER, generator=torch.Generator().manual_seed(1))

        def run(scan: Callable, inputs=inputs, weights=weights) -> None:
            y, _ = scan(*inputs, None)
            (y * weights).sum().backward()

        times = interleaved({name: lambda s=s: run(s) for name, s in scans.items()}, rounds)
        best_torch = min(times["chunked"], times["stepwise"])
        print(
            f"{batch:>6}{length:>8}" + "".join(f"{times[n] * 1e3:>11.1f}" for n in scans)
            + f"{best_torch / times['compiled']:>20.1f}x"
        )


def build_time() -> None:
    mamba_cpu._build.cache_clear()
    start = time.perf_counter()
    loaded = mamba_cpu.library() is not None
    print(f"\n3. building the kernel: {time.perf_counter() - start:.2f} s (loaded: {loaded})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of each table")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    options = parser.parse_args()
    global clock
    clock = CLOCKS[options.clock]
    torch.set_num_threads(options.threads)
    keep_freed_memory()  # as the engine does on CPU (sepbench.cpu)
    if mamba_cpu.library() is None:
        raise SystemExit(f"compiled scan unavailable: {mamba_cpu.unavailable_reason()}")
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, fp32, {options.clock} time")
    build_time()
    training_table([100, 1024], batch=64, rounds=options.repeats)
    scan_table([(64, 100), (64, 1024), (1, 1024)], rounds=options.repeats)


if __name__ == "__main__":
    main()
