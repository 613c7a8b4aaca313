"""Sweeps: the experiments of a spec (:mod:`sepbench.sweep_spec`) run on a local pool of
worker processes.

Every run goes through the results store, so a sweep that is started again serves its finished
runs from the store and trains only what is missing (or was interrupted).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

from sepbench.config import Experiment
from sepbench.errors import SepbenchError
from sepbench.runner import RunResult, run
from sepbench.store import Store


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_one(experiment: Experiment, store_path: str, force: bool) -> RunResult:
    return run(experiment, store=Store(store_path), force=force)


def run_all(
    experiments: list[Experiment],
    *,
    store: Store,
    workers: int | None = None,
    force: bool = False,
    on_result: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Run every experiment (longest tasks first) on ``workers`` processes; results in order.

    Each worker gets an equal share of the cores as torch threads.
    """
    workers = workers or default_workers()
    if workers < 1:
        raise SepbenchError(f"workers must be >= 1, got {workers}")
    order = sorted(range(len(experiments)), key=lambda i: -experiments[i].task.length)
    results: dict[int, RunResult] = {}
    threads = max(1, default_workers() // workers)
    if workers == 1:
        _init_worker(threads)
        for i in order:
            results[i] = _run_one(experiments[i], str(store.path), force)
            if on_result:
                on_result(results[i])
    else:
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads,),
        ) as pool:
            futures = {
                pool.submit(_run_one, experiments[i], str(store.path), force): i for i in order
            }
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if on_result:
                    on_result(results[futures[future]])
    return [results[i] for i in range(len(experiments))]
