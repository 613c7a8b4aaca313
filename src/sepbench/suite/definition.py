"""The suite's definition: claim families, the budget they run at, the baselines they are
measured against, and the experiments they expand to.

A suite file (``cpu.yaml``, ``full.yaml`` beside this module) names:

- ``width``, ``depth``: the size the user's mixer is built at; ``seeds``; ``lr``: the grid each
  model's learning rate is chosen from on validation;
- ``baselines``: the project's models the user's is compared with, each of a ``kind``
  (``transformer`` or ``recurrent``, the two sides of the papers' separations);
- ``base``: the experiment every family starts from (train, eval, device);
- ``families``: per claim family its ``text``, ``paper`` section (papers.md), ``task``, the
  ``lengths`` it runs at, ``train`` / ``eval`` overrides and the ``judge``: the metric read at
  the longest length and the thresholds at or above which the family is solved (``pass``) or
  at or below which it is failed (``fail``).

``extends: cpu`` in a suite file merges it over another, family by family.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sepbench.config import Experiment, experiment_from_dict, one_line
from sepbench.errors import SepbenchError
from sepbench.models.external import is_import_path
from sepbench.sweep_spec import deep_merge

BUDGETS = ("cpu", "full")


class Judge(BaseModel):
    """How a family's outcome is read: ``metric`` at the family's longest length."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = "test_accuracy"
    pass_: float = Field(alias="pass", gt=0, le=1)
    fail: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> Judge:
        if self.fail >= self.pass_:
            raise ValueError(f"fail ({self.fail}) must be below pass ({self.pass_})")
        return self

    def outcome(self, score: float) -> Literal["solves", "fails", "between"]:
        if score >= self.pass_:
            return "solves"
        return "fails" if score <= self.fail else "between"


class Family(BaseModel):
    """One claim family of the suite (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    paper: Literal["§1", "§2", "§3"]
    task: dict[str, Any]
    lengths: list[int] = Field(min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)
    eval: dict[str, Any] = Field(default_factory=dict)
    judge: Judge

    @property
    def judged_length(self) -> int:
        return max(self.lengths)


class Baseline(BaseModel):
    """A shipped baseline: its side of the separations, its model and, per family, changes to
    the model there (a Transformer's positions beyond the training lengths)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["transformer", "recurrent"]
    model: dict[str, Any]
    per_family: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Suite(BaseModel):
    """A suite file, validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget: str
    width: int = Field(ge=1)
    depth: int = Field(ge=1)
    seeds: int = Field(ge=1)
    lr: list[float] = Field(min_length=1)
    baselines: list[Baseline] = Field(min_length=1)
    base: dict[str, Any]
    families: dict[str, Family] = Field(min_length=1)

    def digest(self) -> str:
        """A hash of everything that decides the suite's runs (baselines files carry it)."""
        text = json.dumps(self.model_dump(by_alias=True), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SuiteRun:
    """One experiment of the suite: its family, length, and the model it trains."""

    family: str
    length: int
    experiment: Experiment


def load(budget: str) -> Suite:
    """The packaged suite of a budget (``cpu`` or ``full``); a bad name is a one-line error."""
    if budget not in BUDGETS:
        choices = ", ".join(BUDGETS)
        raise SepbenchError(f"suite --budget: unknown {budget!r}; choose one of {choices}")
    raw = _read(budget)
    try:
        return Suite.model_validate({"budget": budget, **raw})
    except ValidationError as error:
        raise SepbenchError(f"suite {budget}: {one_line(error)}") from None


def _read(budget: str) -> dict[str, Any]:
    text = (resources.files("sepbench") / "suite" / f"{budget}.yaml").read_text()
    raw = yaml.safe_load(text)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    merged = _read(parent)
    for key, value in raw.items():
        if key == "families":
            for name, overrides in value.items():
                merged["families"][name] = deep_merge(merged["families"].get(name, {}), overrides)
        else:
            merged[key] = deep_merge(merged.get(key), value)
    return merged


def user_model(suite: Suite, mixer: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model config of a user's mixer: a registered name or an import path, built as the
    suite's ``depth`` layers of its ``width`` with no positional table; ``params`` go to the
    mixer's constructor."""
    if is_import_path(mixer):
        layer = {"mixer": {"name": mixer, **(params or {})}}
        return {"width": suite.width, "layers": [layer] * suite.depth,
                "params": {"positional": "none"}}
    return {"name": mixer, "width": suite.width, "layers": suite.depth,
            "params": {"positional": "none", **(params or {})}}


def runs(
    suite: Suite,
    model: dict[str, Any],
    seeds: int | None = None,
    per_family: dict[str, dict[str, Any]] | None = None,
) -> list[SuiteRun]:
    """Every experiment of the suite for one model: family x length x lr x seed;
    ``per_family`` merges changes into the model in the families it names."""
    seeds = suite.seeds if seeds is None else seeds
    planned = []
    for name, family in suite.families.items():
        family_model = deep_merge(model, (per_family or {}).get(name, {}))
        for length in family.lengths:
            for lr in suite.lr:
                for seed in range(seeds):
                    config = deep_merge(suite.base, {
                        "task": {**family.task, "length": length},
                        "model": family_model,
                        "train": {**family.train, "lr": lr, "seed": seed},
                        "eval": family.eval,
                    })
                    try:
                        experiment = experiment_from_dict(config)
                    except SepbenchError as error:
                        raise SepbenchError(f"suite family {name} at N={length}: {error}") from None
                    planned.append(SuiteRun(name, length, experiment))
    return planned
