"""Critical size against length: per model family and per N, the smallest width whose
validation accuracy reaches a target, and the state the model carries at that width.

This is the quantity the separation theorems are about (papers.md §2): on index lookup a
one-layer Transformer needs width O(log N), any recurrent model a state of N log2|Σ| bits, so
width linear in N. A spec (:mod:`sepbench.sweep_spec`) gives the model families and the
lengths in its grid (every grid point minus ``model.width``, ``task.length`` and the seeds is
a family; the width its grid gives is replaced), and the search in its ``critical`` section::

    critical:
      widths: [4, 8, 16, 32, 64, 128, 256]  # the ladder, ascending
      step: 4            # bisect over multiples of 4 between rungs (none: the ladder's resolution)
      target: 0.9        # on best_val_accuracy, the mean over seeds
      seeds: 2           # every probe runs seeds 0..seeds-1 (at least 2)
      confirm: true      # also probe the rung above the first passing one
      skip_below_shorter: false
      smoke: {widths: [4, 8]}  # replaces these keys under --smoke

**The search assumes monotonicity in width**: a width that reaches the target is taken to
mean every larger width does, and a width that misses it that every smaller one does. Under
that assumption, per family and N: probe the ladder's rungs in order until one passes
(bracketing; the ladder is geometric, so this is the exponential search), then bisect over the
multiples of ``step`` strictly between the last failing and the first passing rung (integer
widths; the step is how constraints such as attention heads dividing the width are kept). The
critical width is the smallest passing width the bisection ends on: the true one lies in
(largest failing width below it, it]. The assumption is checked where it costs one probe: with
``confirm`` the rung above the first passing one is also run, and any measured pair where a
larger width fails after a smaller one passed is recorded as ``non_monotone`` and shown, never
dropped. ``skip_below_shorter`` adds a second, explicitly stated assumption to save compute:
the critical width does not shrink as N grows, so at each N the widths below the critical width
found at the next shorter N are taken to fail unmeasured, and a family that reached the target
at no rung at a shorter N is recorded as not reached, inferred (its searches run in order of N).

A probe is one width at one family and N: ``seeds`` runs, each with ``train.early_stop`` set
to the target (the training's own early stopping ends a run once validation reaches it), every
one through the store like any run, so a rerun is served from the store and an interrupted
search resumes where it stopped (the search is a function of the stored results). The measured
value is ``best_val_accuracy`` (the best validation point of the run; a run that diverged
before its first validation counts as 0), averaged over seeds. With a spec ``select`` (e.g.
``over: [train.lr]``), a probe runs every selected option and keeps the one with the highest
mean: the choice is made on validation, per width. Probes of all families and lengths that are
ready run together, one round at a time, on the local pool.

The state size at the critical width is the built model's state after the prompt at N, as the
store records it (for a Transformer its KV cache); the state grows with the width, so the
smallest state that reaches the target is the state at the critical width.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sepbench import sweep, sweep_spec
from sepbench.aggregate import canonical
from sepbench.backends.base import Runner, SweepEvent
from sepbench.config import Experiment, experiment_from_dict, one_line, set_dotted
from sepbench.constructions import bounds
from sepbench.errors import SepbenchError
from sepbench.labels import (
    SEPARATOR,
    field_texts,
    flatten,
    mixer_names,
    model_summary,
    varying_fields,
)
from sepbench.runner import run
from sepbench.store import Store
from sepbench.summary import Column

METRIC = "best_val_accuracy"
NON_FAMILY = ("model.width", "task.length", "train.seed")
"""The fields a family is defined without: the searched width, the length, the seeds."""


class CriticalSpec(BaseModel):
    """The ``critical`` section of a spec (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    widths: list[int] = Field(min_length=1)
    step: int | None = Field(default=None, ge=1)
    target: float = Field(default=0.9, gt=0, le=1)
    seeds: int = Field(default=2, ge=2)
    confirm: bool = True
    skip_below_shorter: bool = False
    smoke: dict[str, Any] = Field(default_factory=dict)

    @field_validator("widths")
    @classmethod
    def _ascending(cls, widths: list[int]) -> list[int]:
        if any(w < 1 for w in widths) or any(a >= b for a, b in itertools.pairwise(widths)):
            raise ValueError(f"must be strictly ascending integers >= 1, got {widths}")
        return widths


def check_target(target: object) -> float:
    """``target`` if it is a number in (0, 1], else a one-line error."""
    number = isinstance(target, (int, float)) and not isinstance(target, bool)
    if not number or not 0 < target <= 1 or math.isnan(target):
        raise SepbenchError(f"--target must be a number in (0, 1], got {target!r}")
    return float(target)


def check_seeds(seeds: object) -> int:
    """``seeds`` if it is an integer >= 2 (the boundary is a mean over seeds), else an error."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise SepbenchError(
            f"--seeds must be an integer >= 2 (the critical width is judged on a mean over "
            f"seeds), got {seeds!r}"
        )
    return seeds


def critical_spec(
    spec: sweep_spec.SweepSpec,
    *,
    smoke: bool = False,
    target: float | None = None,
    seeds: int | None = None,
) -> CriticalSpec:
    """The spec's ``critical`` section, its smoke entries applied under ``smoke`` and
    ``target`` / ``seeds`` (the command line's) over the section's own."""
    if not spec.critical:
        raise SepbenchError(
            "critical: the spec has no 'critical' section (at least widths: [ladder])"
        )
    raw = {k: v for k, v in spec.critical.items() if k != "smoke"}
    if smoke:
        raw.update(spec.critical.get("smoke") or {})
    if target is not None:
        raw["target"] = check_target(target)
    if seeds is not None:
        raw["seeds"] = check_seeds(seeds)
    try:
        return CriticalSpec.model_validate(raw)
    except ValidationError as error:
        raise SepbenchError(f"critical: {one_line(error, CriticalSpec)}") from None


# -- the search at one family and N ------------------------------------------------------------


@dataclass
class Search:
    """The search at one family and N, as a pure function of the measured widths: ``record``
    puts a measurement in, ``next_width`` says what to measure next (None: done), ``critical``
    is the answer once done (None: no rung reaches the target). See the module docstring."""

    ladder: Sequence[int]
    target: float
    step: int | None = None
    confirm: bool = True
    fails_below: int = 0
    """Widths below this are taken to fail without being measured (``skip_below_shorter``)."""
    measured: dict[int, float] = field(default_factory=dict)

    def record(self, width: int, accuracy: float) -> None:
        self.measured[width] = accuracy

    def passes(self, width: int) -> bool:
        return self.measured[width] >= self.target

    def next_width(self) -> int | None:
        return self._walk()[0]

    @property
    def done(self) -> bool:
        return self.next_width() is None

    @property
    def critical(self) -> int | None:
        """The critical width (None while the search runs, or when no rung passes)."""
        upcoming, critical = self._walk()
        return critical if upcoming is None else None

    @property
    def lower(self) -> int:
        """The largest width known to fail below the critical width (0: none): the critical
        width lies in (lower, critical]."""
        critical = self.critical
        if critical is None:
            return 0
        failing = [w for w in self.measured if w < critical and not self.passes(w)]
        inferred = [self.fails_below - 1] if self.fails_below > 1 else []
        return max(failing + inferred, default=0)

    @property
    def non_monotone(self) -> list[tuple[int, int]]:
        """Every measured (smaller passing width, larger failing width) pair."""
        widths = sorted(self.measured)
        return [
            (small, large)
            for small in widths
            for large in widths
            if small < large and self.passes(small) and not self.passes(large)
        ]

    def _walk(self) -> tuple[int | None, int | None]:
        """(the next width to measure or None, the critical width the measurements give)."""
        rungs = [w for w in self.ladder if w >= self.fails_below]
        low, first = max(self.fails_below - 1, 0), None
        for index, rung in enumerate(rungs):
            if rung not in self.measured:
                return rung, None
            if self.passes(rung):
                first = index
                break
            low = rung
        if first is None:
            return None, None
        high = rungs[first]
        above = rungs[first + 1] if first + 1 < len(rungs) else None
        if self.confirm and above is not None and above not in self.measured:
            return above, None
        candidates = self._between(low, high)
        while candidates:
            middle = candidates[len(candidates) // 2]
            if middle not in self.measured:
                return middle, None
            if self.passes(middle):
                high, candidates = middle, [c for c in candidates if c < middle]
            else:
                candidates = [c for c in candidates if c > middle]
        return None, high

    def _between(self, low: int, high: int) -> list[int]:
        """The multiples of ``step`` strictly between ``low`` and ``high`` (none without one)."""
        if self.step is None:
            return []
        first = (low // self.step + 1) * self.step
        return list(range(first, high, self.step))


# -- fits ------------------------------------------------------------------------------------

FORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "log": lambda n: np.log2(n),
    "linear": lambda n: n,
}
FORM_TEXT = {"log": "log2 N", "linear": "N"}


@dataclass(frozen=True)
class Fit:
    """y = a·f(N) + b with f = log2 (``log``) or the identity (``linear``), the form with the
    smaller leave-one-out error over N (root mean square, on the width itself)."""

    form: str
    a: float
    b: float
    loo_rmse: dict[str, float]

    def __call__(self, lengths: Sequence[float] | np.ndarray) -> np.ndarray:
        return self.a * FORMS[self.form](np.asarray(lengths, dtype=float)) + self.b

    def text(self) -> str:
        """``12.3·log2 N − 4.1 (LOO RMSE 1.2 vs 5.6 linear)``."""
        other = next(form for form in FORMS if form != self.form)
        sign = "−" if self.b < 0 else "+"
        return (
            f"{self.a:.3g}·{FORM_TEXT[self.form]} {sign} {abs(self.b):.3g} ({self.form}: "
            f"LOO RMSE {self.loo_rmse[self.form]:.3g} vs {self.loo_rmse[other]:.3g} {other})"
        )


def fit(lengths: Sequence[float], widths: Sequence[float]) -> Fit | None:
    """Fit a·log2 N + b and a·N + b by least squares; keep the one with the smaller
    leave-one-out error (a tie keeps ``log``). None with fewer than 3 distinct lengths, where
    one point held out leaves fewer than two to fit."""
    n, y = np.asarray(lengths, dtype=float), np.asarray(widths, dtype=float)
    if len(set(n.tolist())) < 3:
        return None
    errors, lines = {}, {}
    for form, transform in FORMS.items():
        x = transform(n)
        lines[form] = np.polyfit(x, y, 1)
        residuals = []
        for held in range(len(n)):
            keep = np.arange(len(n)) != held
            a, b = np.polyfit(x[keep], y[keep], 1)
            residuals.append(y[held] - (a * x[held] + b))
        errors[form] = float(np.sqrt(np.mean(np.square(residuals))))
    best = min(FORMS, key=lambda form: errors[form])
    a, b = lines[best]
    return Fit(best, float(a), float(b), errors)


# -- planning ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A model family of the spec: its label, one template per length (an option per
    selected value), and what the theory says about it."""

    label: str
    templates: dict[int, tuple[Experiment, ...]]
    recurrent: bool
    attention_layers: int | None
    """The number of layers when every mixer is attention (else None)."""


@dataclass(frozen=True)
class Plan:
    """What :func:`search` runs: the spec's families and lengths, and the search settings."""

    name: str
    settings: CriticalSpec
    families: list[Family]
    lengths: list[int]
    over: tuple[str, ...] = ()


def plan(
    spec: str | Path,
    *,
    smoke: bool = False,
    target: float | None = None,
    seeds: int | None = None,
) -> Plan:
    """Load ``spec`` (a preset name or a file) and plan its search; every ladder rung is built
    once per family, so a width a model cannot take is a one-line error here."""
    loaded = sweep_spec.load(spec)
    settings = critical_spec(loaded, smoke=smoke, target=target, seeds=seeds)
    over = tuple(loaded.select.over) if loaded.select else ()
    experiments = sweep_spec.expand(loaded, smoke=smoke, seeds=1)
    loaded.selection(experiments)  # a select field the experiments lack is an error
    grouped: dict[str, dict[int, list[Experiment]]] = {}
    for experiment in experiments:
        if experiment.model is None or experiment.model.params_target is not None:
            raise SepbenchError(
                "critical: every grid point needs a model whose width the search sets "
                "(no construction, no model.params_target)"
            )
        config = experiment.model_dump(mode="json")
        key = canonical(_without(config, (*NON_FAMILY, *over)))
        options = grouped.setdefault(key, {}).setdefault(experiment.task.length, [])
        option = canonical(_without(config, NON_FAMILY))
        if all(canonical(_without(o.model_dump(mode="json"), NON_FAMILY)) != option
               for o in options):
            options.append(experiment)
    firsts = [next(iter(by_length.values()))[0] for by_length in grouped.values()]
    configs = [e.resolved() for e in firsts]
    fields = varying_fields(configs, skip=(*NON_FAMILY, "eval.lengths", "model", *over))
    families = []
    for by_length, first, config in zip(grouped.values(), firsts, configs):
        texts = field_texts(config, fields)
        label = SEPARATOR.join(
            [model_summary(config["model"], width=False)]
            + [f"{k}={v}" for k, v in texts.items() if v]
        )
        for width in settings.widths:
            _checked(first, width, settings.target, label)
        task = first.build_task()
        mixers = mixer_names(config["model"]) or []
        families.append(
            Family(
                label,
                {n: tuple(options) for n, options in sorted(by_length.items())},
                bounds.is_recurrent(first.build_model(task)),
                len(mixers) if mixers and set(mixers) == {"attention"} else None,
            )
        )
    lengths = sorted({n for family in families for n in family.templates})
    return Plan(Path(str(spec)).stem, settings, families, lengths, over)


def _without(config: dict[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    config = copy.deepcopy(config)
    for path in paths:
        *parents, leaf = path.split(".")
        node = config
        for key in parents:
            node = node.get(key, {})
        if isinstance(node, dict):
            node.pop(leaf, None)
    return config


def probe_experiment(template: Experiment, width: int, seed: int, target: float) -> Experiment:
    """``template`` at ``width`` and ``seed``, stopping early once validation reaches
    ``target``."""
    config = template.model_dump(mode="json")
    for dotted, value in (("model.width", width), ("train.seed", seed),
                          ("train.early_stop", target)):
        set_dotted(config, dotted, value, source="critical")
    return experiment_from_dict(config)


def _checked(template: Experiment, width: int, target: float, label: str) -> None:
    """Build ``template`` at ``width``; a model that cannot take it is a one-line error."""
    try:
        probe_experiment(template, width, 0, target)
    except SepbenchError as error:
        raise SepbenchError(f"critical: {label} at width {width}: {error}") from None


# -- results -----------------------------------------------------------------------------------


@dataclass
class Probe:
    """One width measured at one family and N: the mean over seeds of the chosen option."""

    width: int
    accuracy: float
    per_seed: list[float]
    run_ids: list[int]
    state_size: int | None
    chosen: dict[str, Any] = field(default_factory=dict)
    """The selected option's values (a spec's ``select``), else empty."""


@dataclass(frozen=True)
class TheoryBound:
    """What the theory says at one family and N, as a state (scalars) and, where the state per
    unit of width is known, a width. ``kind``: ``lower`` (no model of the family can do with
    less) or ``upper`` (a construction does it with this much)."""

    kind: Literal["lower", "upper"]
    state: float
    width: float | None
    statement: str


@dataclass
class Cell:
    """The search's outcome at one family and N.

    ``outcome``: ``found``; ``not reached`` (no rung passes); ``not reached (inferred)`` (no
    rung passed at a shorter N, ``skip_below_shorter``); ``failed`` (a run failed: ``error``;
    the next search retries it); ``stopped`` (a stop signal; the next search resumes).
    """

    family: str
    length: int
    outcome: str
    critical: int | None
    lower: int
    state_size: int | None
    probes: list[Probe]
    non_monotone: list[tuple[int, int]]
    fails_below: int = 0
    error: str | None = None
    bound: TheoryBound | None = None


@dataclass
class CriticalResult:
    """What :func:`search` returns: one :class:`Cell` per family and N, in plan order."""

    name: str
    settings: CriticalSpec
    cells: list[Cell]
    stopped_by: int | None = None

    @property
    def failures(self) -> list[Cell]:
        return [cell for cell in self.cells if cell.outcome == "failed"]

    def families(self) -> list[str]:
        return list(dict.fromkeys(cell.family for cell in self.cells))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "settings": self.settings.model_dump(),
            "metric": METRIC,
            "cells": [asdict(cell) for cell in self.cells],
            "stopped_by": self.stopped_by,
        }


# -- running the search ------------------------------------------------------------------------


def search(
    plan: Plan,
    *,
    store: Store,
    workers: int | None = None,
    on_event: Callable[[SweepEvent], None] | None = None,
    runner: Runner = run,
) -> CriticalResult:
    """Run the searches of ``plan``, a round at a time: every search that has a width to
    measure contributes its probe's runs, and the round's runs go to
    :func:`sepbench.sweep.run_all` together (through ``store``; ``on_event`` gets its events).
    A failed run ends its own search (``failed``); a stop signal ends all of them
    (``stopped_by``)."""
    settings = plan.settings
    keys = [(f, n) for f, family in enumerate(plan.families) for n in family.templates]
    searches: dict[tuple[int, int], Search] = {}
    probes: dict[tuple[int, int], dict[int, Probe]] = {key: {} for key in keys}
    ended: dict[tuple[int, int], tuple[str, str | None]] = {}
    stopped_by = None
    while stopped_by is None:
        _start_searches(plan, keys, searches, ended)
        asks = [
            (key, width)
            for key, found in searches.items()
            if key not in ended and (width := found.next_width()) is not None
        ]
        if not asks:
            break
        round_runs = {
            (key, width): _probe_runs(plan.families[key[0]], key[1], width, settings)
            for key, width in asks
        }
        experiments = [e for runs in round_runs.values() for _, e in runs]
        result = sweep.run_all(
            experiments, store=store, workers=workers, on_event=on_event, runner=runner
        )
        outcomes = {e.config_hash(): o for e, o in zip(result.experiments, result.outcomes)}
        for (key, width), runs in round_runs.items():
            measured = _measure(width, runs, outcomes, store, plan.over)
            if isinstance(measured, Probe):
                probes[key][width] = measured
                searches[key].record(width, measured.accuracy)
            elif result.stopped_by is None:
                ended[key] = ("failed", measured)
        stopped_by = result.stopped_by
    cells = [
        _cell(plan, key, searches.get(key), probes[key], ended.get(key), stopped_by)
        for key in keys
    ]
    for (f, n), cell in zip(keys, cells):
        measured = [p for (g, _), found in probes.items() if g == f for p in found.values()]
        cell.bound = theory_bound(plan.families[f], n, settings.target, measured)
    return CriticalResult(plan.name, settings, cells, stopped_by)


def _start_searches(
    plan: Plan,
    keys: list[tuple[int, int]],
    searches: dict[tuple[int, int], Search],
    ended: dict[tuple[int, int], tuple[str, str | None]],
) -> None:
    """Start every search that may start: all at once, or (``skip_below_shorter``) each
    once its family's search at the next shorter N is over, from that one's critical width."""
    settings = plan.settings
    for f, n in keys:
        if (f, n) in searches:
            continue
        fails_below = 0
        shorter = [m for m in plan.families[f].templates if m < n]
        if settings.skip_below_shorter and shorter:
            previous = (f, max(shorter))
            if previous not in searches or (
                previous not in ended and not searches[previous].done
            ):
                continue
            if previous not in ended:
                found = searches[previous]
                critical = found.critical
                fails_below = max(found.fails_below, (critical or settings.widths[-1] + 1))
        searches[(f, n)] = Search(
            settings.widths, settings.target, settings.step, settings.confirm, fails_below
        )


def _probe_runs(
    family: Family, length: int, width: int, settings: CriticalSpec
) -> list[tuple[int, Experiment]]:
    """(option index, experiment) for every option and seed of one probe."""
    return [
        (index, probe_experiment(template, width, seed, settings.target))
        for index, template in enumerate(family.templates[length])
        for seed in range(settings.seeds)
    ]


def _measure(
    width: int,
    runs: list[tuple[int, Experiment]],
    outcomes: dict[str, Any],
    store: Store,
    over: Sequence[str],
) -> Probe | str:
    """The probe's measurement, or why there is none (a run that did not finish)."""
    by_option: dict[int, list[tuple[float, int, int | None]]] = {}
    for index, experiment in runs:
        outcome = outcomes.get(experiment.config_hash())
        if outcome is None or outcome.result is None:
            status = "not run" if outcome is None else outcome.status
            error = "" if outcome is None or not outcome.error else f": {outcome.error}"
            return f"width {width}, seed {experiment.train.seed}: {status}{error}"
        value = outcome.result.metrics.get(METRIC)
        record = store.get(outcome.run_id)
        by_option.setdefault(index, []).append(
            (0.0 if value is None else float(value), outcome.run_id, record.state_size)
        )
    means = {index: float(np.mean([v for v, _, _ in values])) for index, values in
             by_option.items()}
    best = max(means, key=lambda index: (means[index], -index))
    chosen = by_option[best]
    flat = flatten(next(e for i, e in runs if i == best).model_dump(mode="json"))
    return Probe(
        width,
        means[best],
        [v for v, _, _ in chosen],
        [run_id for _, run_id, _ in chosen],
        chosen[0][2],
        {path: flat.get(path) for path in over} if len(means) > 1 else {},
    )


def _cell(
    plan: Plan,
    key: tuple[int, int],
    found: Search | None,
    probes: dict[int, Probe],
    ended: tuple[str, str | None] | None,
    stopped_by: int | None,
) -> Cell:
    family, length = plan.families[key[0]], key[1]
    measured = [probes[w] for w in sorted(probes)]
    if found is None:
        outcome, critical, lower, fails_below, pairs = "stopped", None, 0, 0, []
    else:
        critical, lower, pairs = found.critical, found.lower, found.non_monotone
        fails_below = found.fails_below
        if ended is not None:
            outcome = ended[0]
        elif not found.done:
            outcome = "stopped" if stopped_by is not None else "pending"
        elif critical is not None:
            outcome = "found"
        elif fails_below > plan.settings.widths[-1]:
            outcome = "not reached (inferred)"
        else:
            outcome = "not reached"
    state = probes[critical].state_size if critical is not None else None
    return Cell(
        family.label, length, outcome, critical, lower, state, measured, pairs, fails_below,
        ended[1] if ended else None,
    )


def theory_bound(
    family: Family, length: int, target: float, probes: Sequence[Probe]
) -> TheoryBound | None:
    """The theory's bound for ``family`` at ``length`` (see :mod:`sepbench.constructions.bounds`):

    - a recurrent family on a task with a lower bound: the state a model right on a fraction
      ``target`` of the test data must carry, bits / p (p from the dtype) in scalars; as a
      width through the family's state per unit of width, measured on its stored ``probes``
      at any length (the width bound is left out unless that ratio is the same at every
      probed width);
    - an all-attention family with at least as many layers as the task's attention
      construction: the construction's width and state (hand-set weights, exact; k from the
      union bound, so an upper bound far above what training finds).
    """
    template = family.templates[length][0]
    task = template.build_task()
    if family.recurrent and task.name in bounds.KNOWN:
        precision = bounds.DTYPE_BITS[template.dtype]
        bound = bounds.lower_bound(task, length, precision=precision, accuracy=target)
        state = bound.bits / precision
        ratios = {p.state_size / p.width for p in probes if p.state_size}
        width = state / ratios.pop() if len(ratios) == 1 else None
        worst = "" if bound.holds_on_test_data else "; worst case over inputs"
        return TheoryBound(
            "lower", state, width,
            f"lower bound: {bound.statement}, p = {precision}, at accuracy {target:g} "
            f"(Fano){worst}; {bound.theorem}",
        )
    construction = bounds.CONSTRUCTION_FOR.get(task.name, "")
    layers = family.attention_layers
    if construction.endswith("_attention") and layers is not None:
        upper = bounds.upper_bound(task, length)
        if upper is not None and layers >= upper["layers"]:
            return TheoryBound(
                "upper", float(upper["state_scalars"]), float(upper["width"]),
                f"upper bound: construction {construction} ({upper['layers']} layer, exact "
                f"with hand-set weights; k from the union bound)",
            )
    return None


# -- tables ------------------------------------------------------------------------------------

COLUMNS = [
    Column("family", "family"),
    Column("length", "N"),
    Column("critical", "critical width"),
    Column("state", "state size at it"),
    Column("seeds", "seeds"),
    Column("tried", f"widths tried: mean {METRIC} (✓ reaches the target)"),
    Column("note", "note"),
]


def critical_text(cell: Cell) -> str:
    """``12``, ``≤ 4`` (the smallest width tried passes), ``> 256`` (no rung passes)."""
    if cell.critical is not None:
        return f"{cell.critical}" if cell.lower else f"≤ {cell.critical}"
    if cell.outcome.startswith("not reached"):
        tried = [p.width for p in cell.probes]
        return f"> {max(tried)}" if tried else "-"
    return cell.outcome


def rows(result: CriticalResult) -> list[dict[str, str]]:
    """One row per family and N: the table ``sepbench critical`` prints and the report shows."""
    target = result.settings.target
    table = []
    for cell in result.cells:
        tried = " ".join(
            f"{p.width}:{p.accuracy:.2f}{'✓' if p.accuracy >= target else ''}"
            + (f"({', '.join(f'{k}={v:g}' for k, v in p.chosen.items())})" if p.chosen else "")
            for p in cell.probes
        )
        notes = []
        if cell.critical is not None and cell.lower:
            notes.append(f"in ({cell.lower}, {cell.critical}]")
        if cell.outcome not in ("found",):
            notes.append(cell.outcome)
        if cell.fails_below and cell.outcome != "not reached (inferred)":
            notes.append(f"widths < {cell.fails_below} assumed to fail (shorter N)")
        if cell.non_monotone:
            pairs = ", ".join(f"{a} passes, {b} fails" for a, b in cell.non_monotone)
            notes.append(f"NON-MONOTONE: {pairs}")
        if cell.error:
            notes.append(cell.error)
        table.append({
            "family": cell.family,
            "length": str(cell.length),
            "critical": critical_text(cell),
            "state": f"{cell.state_size:,}" if cell.state_size else "",
            "seeds": str(len(cell.probes[0].per_seed)) if cell.probes else "",
            "tried": tried,
            "note": "; ".join(notes),
        })
    return table


def fits(result: CriticalResult) -> dict[str, Fit | None]:
    """Per family, the fit of critical width against N over its cells with a measured bracket
    (a critical width at the ladder's floor is only an upper bound and is left out)."""
    chosen: dict[str, Fit | None] = {}
    for family in result.families():
        cells = [c for c in result.cells if c.family == family and c.critical and c.lower]
        chosen[family] = fit([c.length for c in cells], [c.critical for c in cells])
    return chosen
