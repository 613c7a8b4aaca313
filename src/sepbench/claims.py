"""Claims as checks: a paper's statement, declared beside the sweep that tests it, evaluated
over the sweep's stored runs (../shared/design.md, "Preset").

A preset or sweep spec may declare ``claims:``, a list of::

    - text: 1-layer Transformer of width 64 is near-perfect at every N
      paper: "§2"              # the papers.md section it comes from (§1, §2 or §3)
      where: {model: transformer, model.width: 64}
      metric: test_accuracy    # any stored metric (default test_accuracy)
      at: all                  # all | min | max | a length | a list of lengths
      op: ">="                 # >=, <=, > or <
      value: 0.95

``where`` selects runs by config field: a dotted path of the resolved config
(``task.params.mode``, ``train.lr``), or a short name that ends exactly one such path (``lr``,
``width``); ``model`` and ``task`` stand for ``model.name`` and ``task.name``, and
``model.depth`` is the model's number of layers (its resolved ``layers`` is a list); a list of
values for a field that is not itself a list (``model: [lstm, gru]``) matches any of them.
``at`` picks test lengths among those the selected runs were set to test (every run counts
here, failed ones too, so a length whose runs all failed is missing rather than forgotten).

Evaluation: the finished runs that match are aggregated over seeds (mean and 95 % Student-t
interval, :mod:`sepbench.aggregate`) and joined across N into lines; the claim is checked on
every selected line at every required length. A claim is judged on the **mean**; the interval
is reported beside it, so a reader sees how close the mean is to the value (judging the
interval's bound instead would turn every claim into "not held" at 2-3 seeds, where t
intervals are wide). Verdicts:

- ``not enough runs``: nothing selected, a required length missing from a line, or fewer than
  2 seeds at one (unless another line already fails with enough seeds);
- ``not held``: on some line, with at least 2 seeds, the mean at some required length fails;
- ``held``: every line meets it at every required length, each with at least 2 seeds.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sepbench.aggregate import Estimate, Line, Selection, group_runs, lines
from sepbench.errors import SepbenchError
from sepbench.labels import flatten, label, varying_fields
from sepbench.store import RunRecord

HELD, NOT_HELD, NOT_ENOUGH = "held", "not held", "not enough runs"
MIN_SEEDS = 2
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
ALIASES = {"model": "model.name", "task": "task.name"}
SECTIONS = ("§1", "§2", "§3")
PAPERS = {
    "§1": ("Wen et al. 2024", "https://arxiv.org/abs/2402.18510"),
    "§2": ("Bhattamishra et al. 2024", "https://arxiv.org/abs/2406.09347"),
    "§3": ("Zhang et al. 2024", "https://arxiv.org/abs/2409.09239"),
}
AT_WORDS = ("all", "min", "max")


class Claim(BaseModel):
    """One declared claim (see the module docstring for the fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1)
    paper: str
    where: dict[str, Any] = Field(default_factory=dict)
    metric: str = "test_accuracy"
    at: Any = "all"
    op: Literal[">=", "<=", ">", "<"]
    value: float

    @field_validator("paper")
    @classmethod
    def _cites_a_section(cls, paper: str) -> str:
        if not re.match(r"§[123](?!\d)", paper):
            raise SepbenchError(f"must cite a papers.md section, one of {', '.join(SECTIONS)}")
        return paper

    @field_validator("at")
    @classmethod
    def _lengths(cls, at: Any) -> str | int | list[int]:
        if at in AT_WORDS or _is_length(at):
            return at
        if isinstance(at, list) and at and all(_is_length(n) for n in at):
            return at
        raise SepbenchError("must be all, min, max, a length or a list of lengths")

    @property
    def section(self) -> str:
        return self.paper[:2]

    def condition(self) -> str:
        """``mean >= 0.95 at every length`` and the like."""
        where = {"all": "every length", "min": "the shortest length", "max": "the longest length"}
        at = where.get(self.at) if isinstance(self.at, str) else f"length {self.at}"
        return f"{self.metric} mean {self.op} {self.value:g} at {at}"


def _is_length(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def parse_claims(raw: object, configs: Sequence[dict[str, Any]] = ()) -> list[Claim]:
    """Validate a spec's ``claims`` (None: no claims); errors are one line naming the field.

    With ``configs`` (the sweep's resolved configs), every ``where`` field must name a field of
    one of them (:func:`check_fields`), so a typo fails before the sweep runs.
    """
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise SepbenchError(
            "claims: must be a list of mappings with text, paper, where, metric, at, op, value"
        )
    claims = []
    for index, item in enumerate(raw):
        try:
            claims.append(Claim.model_validate(item))
        except ValidationError as error:
            raise _one_line(error, f"claims[{index}]") from None
    if configs:
        check_fields(claims, configs)
    return claims


def _one_line(error: ValidationError, prefix: str) -> SepbenchError:
    first = error.errors()[0]
    path = ".".join([prefix, *(str(part) for part in first["loc"])])
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, SepbenchError):
        message = f"{cause}; got {first['input']!r}"
    elif first["type"] == "extra_forbidden":
        message = f"unknown field; allowed: {', '.join(Claim.model_fields)}"
    elif first["type"] == "missing":
        message = "required field missing"
    else:
        message = first["msg"].replace("Input should be", "must be") + f"; got {first['input']!r}"
    return SepbenchError(f"{path}: {message}")


# -- evaluation --------------------------------------------------------------------------------


@dataclass
class ClaimResult:
    """A claim's verdict, the measured numbers per selected line, and why (when not held)."""

    claim: Claim
    verdict: str
    measured: list[tuple[str, dict[int, Estimate]]] = field(default_factory=list)
    reason: str = ""

    def numbers(self) -> str:
        """``transformer w64 L1: 20: 1.000 ± 0.000 (n=3), 50: ...``; one part per line."""
        parts = []
        for name, by_length in self.measured:
            values = ", ".join(
                f"{n}: {e.text()}" + (f" (n={e.n})" if e.n > 1 else "")
                for n, e in by_length.items()
            )
            parts.append(f"{name}: {values or 'no runs'}")
        return "; ".join(parts)

    def line(self) -> str:
        """The claim's verdict line, as ``sweep`` prints it."""
        text = f"claim {self.verdict}: {self.claim.text} ({self.claim.paper}; "
        text += f"{self.claim.condition()})"
        if self.measured:
            text += f" -- {self.numbers()}"
        return text + (f" [{self.reason}]" if self.reason else "")


def evaluate_claims(
    claims: Sequence[Claim], records: Sequence[RunRecord], selection: Selection | None = None
) -> list[ClaimResult]:
    """Each claim's verdict over ``records`` (the sweep's runs, any status); with a
    ``selection``, over the configurations it chooses on validation."""
    return [evaluate_claim(claim, records, selection) for claim in claims]


def evaluate_claim(
    claim: Claim, records: Sequence[RunRecord], selection: Selection | None = None
) -> ClaimResult:
    try:
        selected = [r for r in records if matches(claim.where, r.config)]
    except SepbenchError as error:
        return ClaimResult(claim, NOT_ENOUGH, reason=str(error))
    chosen = lines(group_runs(selected, selection))
    if not chosen:
        return ClaimResult(claim, NOT_ENOUGH, reason="no finished run matches 'where'")
    required = required_lengths(claim, selected)
    fields = varying_fields([line.config for line in chosen], skip=("task.length",))
    measured, verdicts, reasons = [], [], []
    for line in chosen:
        name = label(line.config, fields)
        by_length = line.metric(claim.metric)
        measured.append((name, {n: by_length[n] for n in required if n in by_length}))
        verdict, reason = _judge(claim, line, by_length, required)
        verdicts.append(verdict)
        if reason:
            reasons.append(f"{name}: {reason}" if len(chosen) > 1 else reason)
    verdict = next((v for v in (NOT_HELD, NOT_ENOUGH) if v in verdicts), HELD)
    return ClaimResult(claim, verdict, measured, "; ".join(reasons))


def _judge(
    claim: Claim, line: Line, by_length: dict[int, Estimate], required: list[int]
) -> tuple[str, str]:
    missing = [n for n in required if n not in by_length]
    few = [n for n in required if n in by_length and by_length[n].n < MIN_SEEDS]
    failing = [
        n
        for n in required
        if n in by_length
        and by_length[n].n >= MIN_SEEDS
        and not OPERATORS[claim.op](by_length[n].mean, claim.value)
    ]
    if failing:
        return NOT_HELD, f"fails at {_lengths_text(failing)}"
    if missing:
        return NOT_ENOUGH, f"no {claim.metric} at {_lengths_text(missing)}"
    if few:
        return NOT_ENOUGH, f"fewer than {MIN_SEEDS} seeds at {_lengths_text(few)}"
    return HELD, ""


def _lengths_text(lengths: list[int]) -> str:
    return "N = " + ", ".join(str(n) for n in lengths)


def required_lengths(claim: Claim, records: Sequence[RunRecord]) -> list[int]:
    """The lengths ``at`` asks for, among those the selected runs were set to test (their
    ``eval.lengths``; for a scalar metric their training length ``task.length``)."""
    planned = sorted({n for r in records for n in _planned(claim.metric, r)})
    if claim.at == "all":
        return planned
    if claim.at in ("min", "max"):
        return [min(planned) if claim.at == "min" else max(planned)] if planned else []
    return [claim.at] if isinstance(claim.at, int) else sorted(claim.at)


def _planned(metric: str, record: RunRecord) -> list[int]:
    """Test metrics (``test_*``, or any stored per length) at ``eval.lengths``; a scalar
    metric at ``task.length``. Read from the config, so a failed run counts too."""
    if metric.startswith("test_") or isinstance(record.metrics.get(metric), dict):
        return [int(n) for n in record.config["eval"]["lengths"]]
    return [int(record.config["task"]["length"])]


def matches(where: dict[str, Any], config: dict[str, Any]) -> bool:
    """Does ``config`` have every ``where`` field at the given value? Numbers compare as
    numbers, so ``lr: 1e-3`` (a string to YAML) matches 0.001."""
    flat = claim_fields(config)
    return all(
        _same(flat.get(resolve_field(key, flat), _ABSENT), value) for key, value in where.items()
    )


_ABSENT = object()


def _same(stored: Any, wanted: Any) -> bool:
    if stored is _ABSENT:
        return False
    if isinstance(wanted, list) and not isinstance(stored, list):
        return any(_same(stored, one) for one in wanted)
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return type(stored) is type(wanted) and stored == wanted
    if isinstance(stored, (int, float)):
        try:
            return math.isclose(stored, float(wanted), rel_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return stored == wanted


def check_fields(claims: Sequence[Claim], configs: Sequence[dict[str, Any]]) -> None:
    """Every ``where`` field names a field of at least one of ``configs`` (the sweep's
    resolved configs), so a typo fails before the sweep runs, not after."""
    flats = [claim_fields(config) for config in configs]
    for index, claim in enumerate(claims):
        for key in claim.where:
            if not any(resolve_field(key, flat) in flat for flat in flats):
                raise SepbenchError(
                    f"claims[{index}].where.{key}: no such config field in this sweep; "
                    "write a dotted path (task.params.mode, train.lr) or model / task"
                )


def claim_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened config a ``where`` reads, with ``model.depth`` (the number of layers)."""
    flat = flatten(config)
    layers = (config.get("model") or {}).get("layers")
    if isinstance(layers, list):
        flat["model.depth"] = len(layers)
    return flat


def resolve_field(key: str, flat: dict[str, Any]) -> str:
    """The dotted path a ``where`` key names in a flattened config (see the module docstring);
    an ambiguous short name is an error."""
    key = ALIASES.get(key, key)
    if key in flat:
        return key
    candidates = [path for path in flat if path.endswith(f".{key}")]
    if len(candidates) > 1:
        raise SepbenchError(f"where.{key}: ambiguous; write one of {', '.join(candidates)}")
    return candidates[0] if candidates else key
