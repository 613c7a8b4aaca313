"""Aggregation over seeds: what every table, figure and claim of sepbench reports.

A single seed is an anecdote at CPU scale (papers.md "Designing CPU-scale reproductions"), so
results are reported per *configuration*: the finished runs (``done`` or ``diverged``, the
newest of each config hash) grouped by their resolved config minus ``train.seed`` (and minus
``name``, which labels a run and is outside its hash). Per configuration and test length:

- the mean over seeds,
- a 95 % interval from Student's t: mean ± t(0.975, n - 1) · s / √n, with s the sample
  standard deviation over the n seeds (the seeds are the only source of replication; the
  test examples of one run are not counted as replicates),
- n, the number of seeds with a value. One seed gives no interval, and says so.

A per-length metric (``test_accuracy``) is read per test length; a scalar one (``steps_run``,
``best_val_accuracy``, ...) is placed at the run's training length ``task.length``.

A :class:`Selection` chooses, among configurations that differ only in some fields (the
learning rate), the one with the best mean validation score over seeds, per model and N: the
fair comparison of papers.md "Designing CPU-scale reproductions" (every model its own rate from
the same grid, chosen on validation, never on test).

A :class:`Line` joins the configurations that differ only in ``task.length`` and
``eval.lengths`` (one run per N, as in papers.md §2's figures), so that a figure draws one line
across N; configurations whose test lengths overlap stay apart, split by ``task.length``.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sepbench.store import RunRecord

FINISHED = ("done", "diverged")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds, its interval's half-width (None for one seed) and the seed count."""

    mean: float
    half_width: float | None
    n: int

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width

    def text(self, digits: int = 3) -> str:
        """``0.912 ± 0.034`` (n >= 2) or ``0.912 (1 seed)``."""
        if self.half_width is None:
            return f"{self.mean:.{digits}f} (1 seed)"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def estimate(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean and Student-t interval of ``values`` (one value per seed)."""
    if not values:
        raise ValueError("estimate: no values")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Estimate(mean, None, 1)
    spread = statistics.stdev(values) / math.sqrt(len(values))
    return Estimate(mean, t_critical(confidence, len(values) - 1) * spread, len(values))


def t_critical(confidence: float, df: int) -> float:
    """The c with P(|T| <= c) = ``confidence`` for Student's t with ``df`` (integer) degrees
    of freedom, by bisection on the closed-form distribution function."""
    if not 0 < confidence < 1 or df < 1:
        raise ValueError(f"t_critical: need 0 < confidence < 1 and df >= 1, got {confidence}, {df}")
    low, high = 0.0, 1.0
    while central_probability(high, df) < confidence:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if central_probability(middle, df) < confidence:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def central_probability(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df``: the finite series of Abramowitz and
    Stegun 26.7.3 (odd df) and 26.7.4 (even df), in θ = atan(t / √df)."""
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2:
        term, total = math.cos(theta), 0.0
        for j in range(1, (df - 1) // 2 + 1):
            total += term
            term *= cos2 * 2 * j / (2 * j + 1)
        return 2 / math.pi * (theta + math.sin(theta) * total)
    term, total = 1.0, 0.0
    for j in range(1, df // 2 + 1):
        total += term
        term *= cos2 * (2 * j - 1) / (2 * j)
    return math.sin(theta) * total


# -- grouping ----------------------------------------------------------------------------------


def seedless(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved config without ``train.seed`` and ``name``: what seeds of one
    configuration share."""
    config = copy.deepcopy(config)
    config.pop("name", None)
    config.get("train", {}).pop("seed", None)
    config.get("construction", {}).pop("seed", None)
    return config


def run_seed(config: dict[str, Any]) -> int:
    """The seed of a run: ``train.seed``, or a construction's ``construction.seed``."""
    return int((config.get("train") or config.get("construction") or {}).get("seed", 0))


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def latest_finished(records: Sequence[RunRecord]) -> list[RunRecord]:
    """The newest finished (done or diverged) run of each config hash, in id order."""
    latest: dict[str, RunRecord] = {}
    for record in sorted(records, key=lambda r: r.id):
        if record.status in FINISHED:
            latest[record.config_hash] = record
    return sorted(latest.values(), key=lambda r: r.id)


@dataclass
class Group:
    """The seeds of one configuration: finished runs whose configs differ only in the seed.

    After a :class:`Selection`, ``config`` holds :data:`CHOSEN` at each chosen field, ``chosen``
    the value chosen there and ``candidates`` each value tried with its mean validation score.
    """

    config: dict[str, Any]
    records: list[RunRecord] = field(default_factory=list)
    chosen: dict[str, Any] = field(default_factory=dict)
    candidates: list[tuple[dict[str, Any], float | None]] = field(default_factory=list)

    @property
    def task(self) -> str:
        return str(self.config["task"]["name"])

    @property
    def train_length(self) -> int:
        return int(self.config["task"]["length"])

    @property
    def test_lengths(self) -> list[int]:
        return sorted(int(n) for n in self.config["eval"]["lengths"])

    @property
    def seeds(self) -> list[int]:
        return [run_seed(r.config) for r in self.records]

    def values(self, metric: str) -> dict[int, list[float]]:
        """Per length, the metric of each seed that has it (see the module docstring)."""
        result: dict[int, list[float]] = {}
        for record in self.records:
            value = record.metrics.get(metric)
            pairs = value.items() if isinstance(value, dict) else [(self.train_length, value)]
            for length, number in pairs:
                if isinstance(number, (int, float)) and not isinstance(number, bool):
                    result.setdefault(int(length), []).append(float(number))
        return dict(sorted(result.items()))

    def metric(self, metric: str = "test_accuracy") -> dict[int, Estimate]:
        """Per length, the mean and interval over seeds."""
        return {length: estimate(v) for length, v in self.values(metric).items()}


def group_runs(
    records: Sequence[RunRecord], selection: Selection | None = None
) -> list[Group]:
    """Finished runs grouped by configuration (seeds together), in order of first run id;
    with a ``selection``, only the chosen configuration of each set of candidates."""
    groups: dict[str, Group] = {}
    for record in latest_finished(records):
        config = seedless(record.config)
        groups.setdefault(canonical(config), Group(config)).records.append(record)
    for group in groups.values():
        group.records.sort(key=lambda r: run_seed(r.config))
    chosen = list(groups.values())
    return chosen if selection is None else selection.choose(chosen)


CHOSEN = "chosen on validation"


@dataclass(frozen=True)
class Selection:
    """Per set of configurations that differ only in the ``over`` fields (dotted paths, e.g.
    ``train.lr``), keep the one with the highest mean of ``by`` over its seeds (a validation
    score: ``best_val_accuracy``); a tie goes to the earlier configuration (first run id).
    A configuration with no value of ``by`` (no run reached validation) is never chosen over
    one that has it."""

    over: tuple[str, ...]
    by: str = "best_val_accuracy"

    def choose(self, groups: Sequence[Group]) -> list[Group]:
        sets: dict[str, list[Group]] = {}
        for group in groups:
            sets.setdefault(canonical(self._without(group.config)), []).append(group)
        return [self._best(members) for members in sets.values()]

    def _best(self, members: list[Group]) -> Group:
        scored = [(group, self._score(group)) for group in members]
        best = max(scored, key=lambda pair: -math.inf if pair[1] is None else pair[1])[0]
        return Group(
            self._without(best.config),
            best.records,
            chosen=self._values(best.config),
            candidates=[(self._values(group.config), score) for group, score in scored],
        )

    def _score(self, group: Group) -> float | None:
        values = group.values(self.by).get(group.train_length)
        return statistics.fmean(values) if values else None

    def _values(self, config: dict[str, Any]) -> dict[str, Any]:
        return {path: _get(config, path) for path in self.over}

    def _without(self, config: dict[str, Any]) -> dict[str, Any]:
        config = copy.deepcopy(config)
        for path in self.over:
            *parents, leaf = path.split(".")
            node = config
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = CHOSEN
        return config


def _get(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


@dataclass
class Line:
    """Configurations drawn as one line against test length: they differ only in
    ``task.length`` and ``eval.lengths`` and test at distinct lengths. ``config`` is their
    shared config (``task.length`` kept only when it tells lines apart)."""

    config: dict[str, Any]
    groups: list[Group]

    @property
    def train_lengths(self) -> list[int]:
        return sorted({g.train_length for g in self.groups})

    def metric(self, metric: str = "test_accuracy") -> dict[int, Estimate]:
        merged: dict[int, Estimate] = {}
        for group in self.groups:
            merged.update(group.metric(metric))
        return dict(sorted(merged.items()))

    @property
    def seeds(self) -> list[int]:
        return sorted({seed for g in self.groups for seed in g.seeds})


def lines(groups: Sequence[Group]) -> list[Line]:
    """Join configurations into lines across N (see :class:`Line`). Where test lengths
    overlap, split by ``task.length``; where they still overlap, each configuration is a line."""
    by_key: dict[str, list[Group]] = {}
    for group in groups:
        by_key.setdefault(canonical(_lengthless(group.config)), []).append(group)
    result = []
    for members in by_key.values():
        if _disjoint(members):
            result.append(Line(_lengthless(members[0].config), members))
            continue
        for train_length in sorted({g.train_length for g in members}):
            split = [g for g in members if g.train_length == train_length]
            if _disjoint(split):
                config = _lengthless(split[0].config)
                config["task"]["length"] = train_length
                result.append(Line(config, split))
            else:
                result.extend(Line(copy.deepcopy(g.config), [g]) for g in split)
    return result


def _disjoint(groups: Sequence[Group]) -> bool:
    lengths = [n for g in groups for n in g.test_lengths]
    return len(lengths) == len(set(lengths))


def _lengthless(config: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(config)
    config["task"].pop("length", None)
    config["eval"].pop("lengths", None)
    return config
