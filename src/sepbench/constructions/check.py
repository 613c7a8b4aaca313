"""Theory as a check on results (papers.md §1-2): a stored run of a recurrent model that
reports accuracy >= 0.99 with less state than a proven lower bound allows cannot be right. It
is an evaluation bug or a leak (the answer reached the model some other way), and ``sepbench
runs --check`` and the report say so.

Only the bounds that hold on sepbench's own test data count (``Bound.holds_on_test_data``:
exact retrieval, where Fano's inequality makes the bound hold at any accuracy). The measured
accuracy is an estimate from ``eval.examples`` test examples, so the bound is taken at its
lower confidence limit, a - sqrt(ln(1/δ) / 2n) with δ = 10^-6 (Hoeffding): a run is flagged
only when even that accuracy needs more state than the run has.

A run's state comes from its metrics (``state_bound``, written by every run since the bounds
were added); for an older run the model is rebuilt from its stored config to measure it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from sepbench import tasks
from sepbench.constructions.bounds import (
    DTYPE_BITS,
    KNOWN,
    is_recurrent,
    lower_bound,
    state_bits,
)
from sepbench.errors import SepbenchError
from sepbench.store import RunRecord

THRESHOLD = 0.99
DELTA = 1e-6


@dataclass(frozen=True)
class Impossible:
    """A result no recurrent model of its state can reach."""

    run_id: int
    task: str
    model: str
    length: int
    accuracy: float
    state_bits: int
    bound_bits: float
    statement: str
    theorem: str

    def describe(self) -> str:
        return (
            f"run {self.run_id} ({self.model} on {self.task}, N = {self.length}): accuracy "
            f"{self.accuracy:.3f} with a state of {self.state_bits:,} bits, below the "
            f"{self.bound_bits:,.0f} bits any recurrent model needs ({self.statement}; "
            f"{self.theorem}): an evaluation bug or a leak"
        )


@dataclass
class CheckResult:
    """What :func:`check_runs` found: the impossible results and how many runs it judged."""

    impossible: list[Impossible] = field(default_factory=list)
    checked: int = 0
    unknown: list[int] = field(default_factory=list)


def check_runs(records: Iterable[RunRecord], threshold: float = THRESHOLD) -> CheckResult:
    """Every finished run of a recurrent model on a task with a bound, judged against it.

    ``unknown`` lists runs whose state could not be measured (their model no longer builds).
    """
    result = CheckResult()
    for record in records:
        if record.status not in ("done", "diverged") or record.task not in KNOWN:
            continue
        try:
            bits = recurrent_state_bits(record)
        except SepbenchError:
            result.unknown.append(record.id)
            continue
        if bits is None:
            continue
        result.checked += 1
        result.impossible.extend(_judge(record, bits, threshold))
    return result


def recurrent_state_bits(record: RunRecord) -> int | None:
    """The run's state in bits if its model is recurrent, else None."""
    stored = record.metrics.get("state_bound")
    if stored is not None:
        return int(stored["state_bits"]) if stored.get("recurrent") else None
    if record.config.get("construction"):
        return None  # a construction run stores its state bound whenever it is recurrent
    from sepbench.config import experiment_from_dict

    experiment = experiment_from_dict(record.config)
    task = experiment.build_task()
    model = experiment.build_model(task)
    if not is_recurrent(model):
        return None
    return state_bits(model, task, experiment.task.length, DTYPE_BITS[experiment.dtype])


def _judge(record: RunRecord, bits: int, threshold: float) -> list[Impossible]:
    config = record.config["task"]
    task = tasks.get(config["name"], **config.get("params", {}))
    examples = int(record.config.get("eval", {}).get("examples", 1))
    slack = math.sqrt(math.log(1 / DELTA) / (2 * examples))
    found = []
    for length, accuracy in record.metrics.get("test_accuracy", {}).items():
        if accuracy < threshold:
            continue
        bound = lower_bound(task, int(length), accuracy=max(0.0, accuracy - slack))
        if bound.holds_on_test_data and bits < bound.bits:
            found.append(
                Impossible(
                    record.id, record.task, record.model, int(length), accuracy, bits,
                    bound.bits, bound.statement, bound.theorem,
                )
            )
    return found
