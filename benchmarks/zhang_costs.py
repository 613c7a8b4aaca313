"""Per-run costs of the Zhang et al. presets (papers.md §3) on one CPU thread: what sizes
``presets/zhang.yaml``.

For every model of the preset and every task and mode, two short runs through ``sepbench.run``
(fresh temporary store) at the preset's own sizes (its ``base``, task and model entries):
milliseconds per training step and the seconds of the rest (building, validation, the
length-generalisation evaluation at every test length). One worker of a two-worker sweep has
one thread, so this runs with one thread, and counts CPU time (see :func:`measure`).

Run with ``python benchmarks/zhang_costs.py [--steps S] [--models a,b] [--tasks a,b]``. Prints a
table and the estimated preset time; never asserts.
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
from sepbench.config import experiment_from_dict
from sepbench.store import Store
from sepbench.sweep import load_spec, set_path


def configure(base: dict[str, Any], *settings: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(base)
    for setting in settings:
        for dotted, value in setting.items():
            set_path(config, dotted, copy.deepcopy(value))
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
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = load_spec(args.preset)
    chosen_tasks = set(filter(None, args.tasks.split(",")))
    chosen_models = set(filter(None, args.models.split(",")))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# {args.preset}: runs of {args.steps} and {3 * args.steps} steps, 1 thread, CPU time")
    print(f"# torch {torch.__version__}, load average {load}")
    print(f"{'model':<22}{'task':<16}{'mode':<8}{'ms/step':>9}{'rest s':>9}")
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "runs.sqlite")
        first = spec["grid"]["variants"][0]
        cpu_seconds(configure(spec["base"], first, {"model": spec["grid"]["model"][0]}), 2, store)
        for model in spec["grid"]["model"]:
            if chosen_models and model_label(model) not in chosen_models:
                continue
            for task in spec["grid"]["variants"]:
                if chosen_tasks and task["task.name"] not in chosen_tasks:
                    continue
                for mode in spec["grid"]["task.params"]:
                    config = configure(spec["base"], {"task.params": mode}, task, {"model": model})
                    per_step, rest = measure(config, args.steps, store)
                    mode_name = "cot" if mode.get("cot") else "filler" if mode else "direct"
                    print(
                        f"{model_label(model):<22}{task['task.name']:<16}{mode_name:<8}"
                        f"{per_step:>9.1f}{rest:>9.1f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
