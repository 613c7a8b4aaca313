"""Per-run costs of the Zhang et al. presets (papers.md §3) on one CPU thread: what sizes
``presets/zhang.yaml``.

For every model of the preset and every task and mode, two short runs through ``sepbench.run``
(fresh temporary store) at the preset's own sizes (its ``base``, task and model entries):
milliseconds per training step and the seconds of the rest (building, validation, the
length-generalisation evaluation at every test length). One worker of a two-worker sweep has
one thread, so this runs with one thread, and counts CPU time (see :func:`measure`).

Run with ``python benchmarks/zhang_costs.py [--steps S] [--models a,b] [--tasks a,b]
[--other-tasks]``. Prints a table and, over the whole preset, the time it takes at most (every
run to its step budget); never asserts. ``--other-tasks`` adds the tasks only ``zhang-paper``
has (counting, reversal, unbounded Dyck, multiplication), at the CPU preset's sizes.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import sepbench
from sepbench.config import experiment_from_dict, set_dotted
from sepbench.store import Store
from sepbench.sweep_spec import load

OTHER_TASKS = [  # the zhang-paper tasks left out of the CPU preset, at its sizes (T = 20)
    {"task.name": "counting"},
    {"task.name": "reversal"},
    {"task.name": "dyck", "task.params.max_depth": "none", "task.params.trace": "depth",
     "task.params.train_lengths": "uniform"},
    {"task.name": "multiplication", "task.length": 6,
     "eval.length_generalisation": {"test_max": 24, "stride": 3}},
]
MODES = [{}, {"task.params.cot": True}, {"task.params.filler": True}]


def configure(base: dict[str, Any], *settings: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(base)
    for setting in settings:
        for dotted, value in setting.items():
            set_dotted(config, dotted, copy.deepcopy(value), source="zhang_costs")
    return config


def model_label(model: dict[str, Any]) -> str:
    positional = model.get("params", {}).get("positional")
    return model["name"] + (f"-{positional}" if model["name"] == "transformer" else "")


def cpu_seconds(config: dict[str, Any], steps: int, store: Store) -> float:
    """CPU seconds of one run of ``steps`` steps, validated once at the end."""
    config = copy.deepcopy(config)
    config["train"].update(steps=steps, val_interval=steps, early_stop=None)
    experiment = experiment_from_dict(config)
    start = time.process_time()
    sepbench.run(experiment, store=store, force=True)
    return time.process_time() - start


def measure(config: dict[str, Any], steps: int, store: Store) -> tuple[float, float]:
    """(ms per training step, seconds of the rest: build, one validation and the test
    evaluation at every length), from runs of ``steps`` and 3 x ``steps`` steps.

    CPU time of this one-thread process, not wall time: on a shared machine the wall clock
    counts the other processes' turns, CPU time only this run's work."""
    short, long = cpu_seconds(config, steps, store), cpu_seconds(config, 3 * steps, store)
    per_step = (long - short) / (2 * steps)
    return 1000 * per_step, short - steps * per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="zhang")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", default="")
    parser.add_argument("--tasks", default="")
    parser.add_argument(
        "--other-tasks", action="store_true", help="also the tasks only zhang-paper has"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = load(args.preset)
    variants = list(spec.grid["variants"])
    if args.other_tasks:
        variants += [{**task, **mode} for task in OTHER_TASKS for mode in MODES]
    chosen_tasks = set(filter(None, args.tasks.split(",")))
    chosen_models = set(filter(None, args.models.split(",")))
    load_average = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# {args.preset}: runs of {args.steps} and {3 * args.steps} steps, 1 thread, CPU time")
    print(f"# torch {torch.__version__}, load average {load_average}")
    print(f"{'model':<22}{'task':<16}{'mode':<8}{'ms/step':>9}{'rest s':>9}")
    seeds = len(spec.grid.get("train.seed", [0])) * len(spec.grid.get("train.lr", [0]))
    steps = spec.base["train"]["steps"]
    preset_seconds = 0.0
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "runs.sqlite")
        first = configure(spec.base, variants[0], {"model": spec.grid["model"][0]})
        cpu_seconds(first, 2, store)  # warm-up: imports, first allocations
        for model in spec.grid["model"]:
            if chosen_models and model_label(model) not in chosen_models:
                continue
            for variant in variants:
                if chosen_tasks and variant["task.name"] not in chosen_tasks:
                    continue
                config = configure(spec.base, variant, {"model": model})
                per_step, rest = measure(config, args.steps, store)
                mode = "cot" if "task.params.cot" in variant else (
                    "filler" if "task.params.filler" in variant else "direct"
                )
                print(
                    f"{model_label(model):<22}{variant['task.name']:<16}{mode:<8}"
                    f"{per_step:>9.1f}{rest:>9.1f}",
                    flush=True,
                )
                if variant in spec.grid["variants"]:
                    preset_seconds += seeds * (steps * per_step / 1000 + rest)
    if not (chosen_models or chosen_tasks):
        minutes = preset_seconds / 60
        print(
            f"# {args.preset} at most {steps} steps a run (early stopping cuts it): "
            f"{minutes:.0f} CPU-minutes, {minutes / 2:.0f} minutes on 2 workers"
        )


if __name__ == "__main__":
    main()
