"""Building a fixed training set at Wen et al.'s scale (papers.md §1): 1M IsTree examples with
retrieval traces at N = 64, generated, stored and reloaded by ``sepbench.training_sets``.

Run with ``python benchmarks/training_set_build.py [--size S] [--workers W] [--nodes N]
[--mode M] [--dir DIR]``. Prints; never asserts. Targets set by the issue (measured here, not
asserted): at most 2 GB stored and at most 5 minutes on 2 cores for 1M examples at N = 64.

Besides the build it times the task's generator alone on one core (``task.sample`` of one
chunk, the padded int64 path), reloading the stored set, and drawing a training batch of 64
from it. On a shared machine the wall time depends on the load; the CPU time of the build (all
processes) divided by the workers is what idle cores would take. The set is written to a
temporary directory (``--dir`` keeps it), so every run builds from scratch. BLAS/OpenMP are
limited to one thread per process, and freed memory is kept for reuse (``sepbench.cpu``), as
in a training run.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from sepbench import tasks, training_sets
from sepbench.cpu import keep_freed_memory
from timing import seconds

GB = 1e9
TARGET_BYTES, TARGET_SECONDS = 2 * GB, 300.0


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker processes)."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="examples in the set")
    parser.add_argument("--workers", type=int, default=2, help="generating processes")
    parser.add_argument("--nodes", type=int, default=64, help="IsTree graph size N")
    parser.add_argument("--mode", default="retrieval", help="IsTree mode: none, cot, retrieval")
    parser.add_argument("--dir", type=Path, help="build here and keep the set (default: temp)")
    args = parser.parse_args()
    keep_freed_memory()  # as sepbench.run does before training (sepbench.cpu)
    task = tasks.get("is_tree", mode=args.mode, max_nodes=max(64, args.nodes))
    spec = training_sets.TrainingSetSpec(task.name, task.params, args.nodes, True, 0, args.size)
    print(f"is_tree mode={args.mode} N={args.nodes}: {args.size:,} examples, "
          f"{args.workers} worker process(es), chunks of {spec.chunk}, numpy {np.__version__}")

    rng = np.random.default_rng(0)
    one_chunk = seconds(lambda: task.sample(rng, spec.chunk, args.nodes, train=True), 3)
    print(f"generator alone, one core:  {spec.chunk / one_chunk:>10,.0f} examples/s")

    with tempfile.TemporaryDirectory() as scratch:
        cache = args.dir or Path(scratch)
        start, cpu_start = time.perf_counter(), cpu_seconds()
        dataset = training_sets.load_or_build(task, spec, cache, workers=args.workers)
        build_s, build_cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
        stored = disk_bytes(cache)
        start = time.perf_counter()
        dataset = training_sets.load_or_build(task, spec, cache)
        load_s = time.perf_counter() - start
        batches = dataset.batches(64, seed=0)
        batch_s = seconds(lambda: next(batches), 20)
        tokens, longest = int(dataset.offsets[-1]), int(np.diff(dataset.offsets).max())

    verdict_s = "ok" if build_s <= TARGET_SECONDS else "OVER"
    verdict_b = "ok" if stored <= TARGET_BYTES else "OVER"
    print(f"build (generate + write):    {build_s:>10.1f} s   "
          f"{args.size / build_s:,.0f} examples/s  {verdict_s} (target {TARGET_SECONDS:.0f} s)")
    print(f"build CPU time (all processes): {build_cpu:>7.1f} s   on {args.workers} idle core(s) "
          f"about {build_cpu / args.workers:.0f} s; load average now {os.getloadavg()[0]:.1f}")
    print(f"stored:                      {stored / GB:>10.3f} GB  {stored / args.size:,.0f} "
          f"bytes/example  {verdict_b} (target {TARGET_BYTES / GB:.0f} GB)")
    print(f"tokens:                      {tokens:>10,}     mean {tokens / args.size:,.1f} per "
          f"example, {dataset.tokens.dtype}; padded int64 (longest {longest}) would be "
          f"{8 * args.size * longest / GB:,.1f} GB")
    print(f"reload (memory-mapped):      {load_s * 1e3:>10.1f} ms")
    print(f"one training batch of 64:    {batch_s * 1e3:>10.2f} ms")


if __name__ == "__main__":
    main()
