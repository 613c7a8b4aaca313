"""Sweeps: a base experiment times a grid, run on a local pool of worker processes.

Every run goes through the results store, so a sweep that is started again serves its finished
runs from the store and trains only what is missing (or was interrupted).

A sweep spec (YAML, or a preset under ``sepbench/presets``) has ``base`` (an experiment, as
``sepbench run`` takes), ``grid`` (dotted field -> list of values; the product is taken) and
optional ``smoke`` (dotted field -> value: a tiny version for CI and first tries). The grid
axis ``variants`` takes a list of mappings (dotted field -> value) that vary together, e.g. a
model with its own learning rate.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from importlib import resources
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from sepbench.config import Experiment, experiment_from_dict
from sepbench.errors import SepbenchError
from sepbench.runner import RunResult, run
from sepbench.store import Store


def preset_names() -> list[str]:
    folder = resources.files("sepbench") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_spec(name_or_path: str | Path) -> dict[str, Any]:
    """A sweep spec from a YAML file, or a packaged preset by name."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SepbenchError(f"sweep: no such file {path}")
        text = path.read_text()
    elif str(name_or_path) in preset_names():
        text = (resources.files("sepbench") / "presets" / f"{name_or_path}.yaml").read_text()
    else:
        raise SepbenchError(
            f"sweep: {name_or_path!r} is neither a .yaml file nor a preset; "
            f"presets: {', '.join(preset_names())}"
        )
    spec = yaml.safe_load(text)
    if not isinstance(spec, dict) or "base" not in spec:
        raise SepbenchError("sweep: the spec needs a 'base' experiment (and usually a 'grid')")
    return spec


def set_path(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``config["a"]["b"] = value`` for ``dotted = "a.b"``, creating dicts on the way."""
    *parents, leaf = dotted.split(".")
    for key in parents:
        config = config.setdefault(key, {})
    config[leaf] = value


def expand(spec: dict[str, Any], *, smoke: bool = False) -> list[Experiment]:
    """The experiments of a spec: ``base`` for every point of the ``grid`` product.

    With ``smoke``, the spec's ``smoke`` entries apply: one naming a grid field replaces that
    field's list of values; the others are set on every experiment.
    """
    grid: dict[str, list[Any]] = dict(spec.get("grid") or {})
    fixed: dict[str, Any] = {}
    for dotted, value in (spec.get("smoke") or {}).items() if smoke else ():
        (grid if dotted in grid else fixed)[dotted] = value
    experiments = []
    for point in itertools.product(*grid.values()):
        config = copy.deepcopy(spec["base"])
        for dotted, value in [*zip(grid, point), *fixed.items()]:
            for field, setting in value.items() if dotted == "variants" else [(dotted, value)]:
                set_path(config, field, copy.deepcopy(setting))
        experiments.append(experiment_from_dict(config))
    return experiments


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
