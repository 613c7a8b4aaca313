"""Fault injection: SIGKILL a small sweep again and again, at random moments, and check that
nothing is lost, duplicated, corrupted or left running.

    .venv/bin/python benchmarks/faults.py [--kills 20] [--seed 0] [--workers 2] [--quick]
                                          [--log FILE]

First an uninterrupted reference sweep (its own store). Then cycles of `sepbench sweep` on one
store: each cycle is killed with SIGKILL after a random delay (uniform up to the reference
sweep's wall time), either the sweep's own process or one of its pool workers (chosen at
random), and the next cycle resumes it. A cycle that finishes before its kill completes a
round: the store is checked (exactly one ``done`` row per grid point, metrics and curves
bit-identical to the reference, no ``running`` row) and the next round starts on a fresh
store, until ``--kills`` kills have been made. After a parent kill, every process of that sweep
must be gone within 10 s; at the end no process any sweep started may be alive.

Prints kills (parent / worker), resumes, rows checked, mismatches, running rows, orphans and
how many times a run resumed from a checkpoint (and how many of those finished in that same
sweep); ``--log`` keeps every sweep's output. Exits 1 if any mismatch, running row or orphan.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sepbench.store import Store

ORPHAN_WAIT_S = 10.0


def spec(quick: bool) -> dict:
    """Two models (one on a fixed dataset, resumed mid-epoch) times two seeds; quick: one seed."""
    return {
        "base": {
            "task": {"name": "index_lookup", "length": 8,
                     "params": {"vocab_size": 8, "max_length": 12}},
            "train": {"steps": 150 if quick else 400, "batch_size": 16, "lr": 0.003,
                      "val_interval": 25, "val_examples": 32},
            "eval": {"examples": 64},
            "device": "cpu",
        },
        "grid": {
            "variants": [
                {"model": {"name": "lstm", "width": 8, "layers": 1}},
                {"model": {"name": "transformer", "width": 8, "layers": 1},
                 "train.dataset_size": 200},
            ],
            "train.seed": [0] if quick else [0, 1],
        },
    }


@dataclass
class Tally:
    kills: Counter = field(default_factory=Counter)
    resumes: int = 0
    rounds: int = 0
    rows_checked: int = 0
    mismatches: int = 0
    running_rows: int = 0
    orphans: int = 0
    resumed_runs: int = 0
    resumed_finished: int = 0
    seen: set[tuple[int, int]] = field(default_factory=set)

    def remember(self, pids: set[int]) -> None:
        self.seen |= {(pid, start) for pid in pids if (start := started_at(pid)) is not None}


STARTED: list[subprocess.Popen] = []


def sweep(spec_path: Path, store: Path, workers: int, log: Path) -> subprocess.Popen:
    with log.open("a") as out:
        STARTED.append(subprocess.Popen(
            [sys.executable, "-m", "sepbench", "sweep", str(spec_path),
             "--workers", str(workers), "--store", str(store),
             "--out", str(store.parent / "report")],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        ))
    return STARTED[-1]


def kill_leftovers() -> None:
    """When this script is stopped early: no sweep it started may go on without it."""
    for process in STARTED:
        if process.poll() is None:
            for pid in alive(descendants(process.pid) | {process.pid}):
                os.kill(pid, signal.SIGKILL)


def descendants(pid: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def started_at(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): with the pid, who it is (pids are
    reused on a busy machine), or None when it is gone (or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if started_at(pid) is not None}


def still_there(seen: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """The processes of ``seen`` (pid, start time) that still exist."""
    return {(pid, start) for pid, start in seen if started_at(pid) == start}


def is_worker(pid: int) -> bool:
    try:
        return b"backends/worker.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def cycle(process: subprocess.Popen, delay_s: float, rng: random.Random, tally: Tally) -> bool:
    """Kill the sweep (or a worker) after ``delay_s`` unless it ends first; True if killed."""
    deadline = time.monotonic() + delay_s
    while time.monotonic() < deadline and process.poll() is None:
        tally.remember(descendants(process.pid))
        time.sleep(0.05)
    if process.poll() is not None:
        return False
    family = descendants(process.pid)
    tally.remember(family)
    workers = [pid for pid in alive(family) if is_worker(pid)]
    if workers and rng.random() < 0.5:
        os.kill(rng.choice(workers), signal.SIGKILL)
        tally.kills["worker"] += 1
        process.wait(timeout=600)  # the sweep goes on without that worker's run
        return True
    members = {(pid, start) for pid in family if (start := started_at(pid)) is not None}
    os.kill(process.pid, signal.SIGKILL)
    tally.kills["parent"] += 1
    process.wait()
    end = time.monotonic() + ORPHAN_WAIT_S
    while still_there(members) and time.monotonic() < end:
        time.sleep(0.1)
    for pid, _ in still_there(members):
        tally.orphans += 1
        os.kill(pid, signal.SIGKILL)
    return True


def check(store_path: Path, reference: Store, tally: Tally) -> None:
    """One done row per grid point, bit-identical to the reference; no running rows."""
    store, expected = Store(store_path), {r.config_hash: r for r in reference.runs()}
    done = Counter(r.config_hash for r in store.runs(status="done"))
    tally.running_rows += len(store.runs(status="running"))
    for config_hash, record in expected.items():
        tally.rows_checked += 1
        ours = store.lookup_done(config_hash)
        same = (
            done[config_hash] == 1
            and ours is not None
            and ours.metrics == record.metrics
            and store.curve(ours.id) == reference.curve(record.id)
        )
        tally.mismatches += not same
    tally.mismatches += sum(1 for h in done if h not in expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one seed, 150 steps (for CI)")
    parser.add_argument("--log", type=Path, help="keep every sweep's output in this file")
    args = parser.parse_args()
    rng, tally = random.Random(args.seed), Tally()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        spec_path = root / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec(args.quick), sort_keys=False))
        log = root / "sweeps.log"
        clock = time.monotonic()
        reference_path = root / "reference" / "s.sqlite"
        reference_run = sweep(spec_path, reference_path, args.workers, log)
        if reference_run.wait() != 0:
            sys.exit(f"the reference sweep failed:\n{log.read_text()}")
        reference_s = time.monotonic() - clock
        reference, store = Store(reference_path), root / "round-0" / "s.sqlite"
        total = sum(tally.kills.values())
        while total < args.kills:
            killed = cycle(sweep(spec_path, store, args.workers, log),
                           rng.uniform(0.2, reference_s), rng, tally)
            if killed:
                tally.resumes += 1  # the next cycle resumes it
            else:
                check(store, reference, tally)
                tally.rounds += 1
                store = root / f"round-{tally.rounds}" / "s.sqlite"
            total = sum(tally.kills.values())
        final = sweep(spec_path, store, args.workers, log)
        tally.remember(descendants(final.pid))
        final.wait()
        check(store, reference, tally)
        tally.rounds += 1
        time.sleep(1.0)
        tally.orphans += len(still_there(tally.seen))
        text = log.read_text()
        tally.resumed_runs = text.count("resuming from the checkpoint at step")
        tally.resumed_finished = text.count("resumed from step")
        if args.log is not None:
            args.log.write_text(text)
    grid = spec(args.quick)["grid"]
    print(
        f"fault injection: {args.kills} SIGKILLs (parent {tally.kills['parent']}, worker "
        f"{tally.kills['worker']}) over {tally.rounds} rounds of a "
        f"{len(grid['variants']) * len(grid['train.seed'])}-run sweep, {args.workers} workers, "
        f"seed {args.seed}"
    )
    print(
        f"kills {sum(tally.kills.values())}  resumes {tally.resumes}  "
        f"rows checked {tally.rows_checked}  mismatches {tally.mismatches}  "
        f"running rows {tally.running_rows}  orphans {tally.orphans}"
    )
    print(f"runs resumed from a checkpoint: {tally.resumed_runs} "
          f"({tally.resumed_finished} finished in that same sweep)")
    print(f"reference sweep {reference_s:.1f} s, whole run {time.monotonic() - started:.0f} s")
    sys.exit(1 if tally.mismatches or tally.running_rows or tally.orphans else 0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        main()
    finally:
        kill_leftovers()
