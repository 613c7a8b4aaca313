"""Sweep specs: a base experiment times a grid, as YAML, and the packaged presets.

A spec (a YAML file, or a preset under ``sepbench/presets`` named without ``.yaml``) has:

- ``base``: an experiment, as ``sepbench run`` takes;
- ``grid``: dotted field -> list of values; the product is taken. The axis ``variants`` takes a
  list of mappings (dotted field -> value) that vary together, e.g. a model with its own
  learning rate; ``train.seed: [0, 1, 2]`` is the seeds axis;
- ``smoke``: dotted field -> value, a tiny version for CI and first tries: an entry naming a grid
  axis replaces that axis, the others are set on every experiment;
- ``claims``: the paper's statements as checks over the sweep's results (see
  :mod:`sepbench.claims`), passed through as written;
- ``select``: ``{over: [train.lr], by: best_val_accuracy}``, the fields chosen on validation per
  model and N (see :class:`sepbench.aggregate.Selection`): the table, figures and claims show
  only the chosen configuration (the default ``by``; ``final_val_accuracy`` is the other
  choice);
- ``critical``: the width ladder and target of ``sepbench critical`` (see
  :mod:`sepbench.critical`), passed through as written; a sweep ignores it;
- ``extends``: another preset (by name) or spec file (relative to this one) that this one
  overrides: ``base`` and ``critical`` are merged key by key at every depth, ``grid`` and
  ``smoke`` axis by axis (an axis set to null is dropped), ``claims`` and ``select`` replaced
  when given.

Every dotted path, here and in ``--set``, goes through :func:`sepbench.config.set_dotted`.
"""

from __future__ import annotations

import copy
import itertools
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sepbench.aggregate import Selection
from sepbench.config import Experiment, experiment_from_dict, one_line, set_dotted
from sepbench.errors import SepbenchError
from sepbench.labels import flatten


class SelectSpec(BaseModel):
    """``select:`` of a spec: the fields chosen on validation and the score that chooses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    over: list[str] = Field(min_length=1)
    by: Literal["best_val_accuracy", "final_val_accuracy"] = "best_val_accuracy"


class SweepSpec(BaseModel):
    """A loaded spec, ``extends`` already applied."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: dict[str, Any]
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    smoke: dict[str, Any] = Field(default_factory=dict)
    claims: list[dict[str, Any]] = Field(default_factory=list)
    select: SelectSpec | None = None
    critical: dict[str, Any] = Field(default_factory=dict)

    def selection(self, experiments: list[Experiment]) -> Selection | None:
        """The spec's choice on validation (None without ``select``); a field that is not
        a config field of ``experiments`` is a one-line error."""
        if self.select is None:
            return None
        configs = [flatten(e.resolved()) for e in experiments]
        for path in self.select.over:
            if not any(path in config for config in configs):
                raise SepbenchError(
                    f"sweep select.over: {path!r} is not a field of the sweep's experiments "
                    "(a dotted path such as train.lr)"
                )
        return Selection(tuple(self.select.over), self.select.by)


def preset_names() -> list[str]:
    folder = resources.files("sepbench") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load(name_or_path: str | Path) -> SweepSpec:
    """A spec from a YAML file, or a packaged preset by name; errors are one line."""
    raw = _read(name_or_path, parents=())
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise SepbenchError(f"sweep {name_or_path}: {one_line(error, SweepSpec)}") from None


def expand(
    spec: SweepSpec, *, smoke: bool = False, seeds: int | None = None
) -> list[Experiment]:
    """The experiments of a spec: ``base`` at every point of the ``grid`` product.

    ``smoke`` applies the spec's smoke entries; ``seeds`` replaces the seeds axis by
    ``train.seed: [0 .. seeds-1]``.
    """
    grid = dict(spec.grid)
    fixed: dict[str, Any] = {}
    for dotted, value in spec.smoke.items() if smoke else ():
        (grid if dotted in grid else fixed)[dotted] = value
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise SepbenchError(f"--seeds must be an integer >= 1, got {seeds!r}")
        grid["train.seed"] = list(range(seeds))
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SepbenchError(f"sweep grid: {axis} must be a non-empty list, got {values!r}")
    return [_experiment(spec.base, point) for point in _points(grid, fixed)]


def _points(grid: dict[str, list[Any]], fixed: dict[str, Any]) -> list[list[tuple[str, Any]]]:
    """Each grid point as (dotted field, value) settings: the variant's first (it may set a
    whole section, e.g. ``model``), then the other axes, then the fixed smoke fields."""
    points = []
    for values in itertools.product(*grid.values()):
        settings: list[tuple[str, Any]] = []
        for dotted, value in [*zip(grid, values), *fixed.items()]:
            if dotted != "variants":
                settings.append((dotted, value))
            elif isinstance(value, dict):
                settings[:0] = value.items()
            else:
                raise SepbenchError(f"sweep grid: each variant is a mapping, got {value!r}")
        points.append(settings)
    return points


def _experiment(base: dict[str, Any], settings: list[tuple[str, Any]]) -> Experiment:
    config = copy.deepcopy(base)
    for dotted, value in settings:
        set_dotted(config, dotted, copy.deepcopy(value), source="sweep grid")
    try:
        return experiment_from_dict(config)
    except SepbenchError as error:
        where = ", ".join(f"{k}={v}" for k, v in settings if not isinstance(v, dict))
        raise SepbenchError(f"grid point {{{where}}}: {error}") from None


# -- reading, with extends -------------------------------------------------------------------


def _read(name_or_path: str | Path, parents: tuple[str, ...]) -> dict[str, Any]:
    text, here = _source(name_or_path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        reason = str(error).strip().splitlines()[0]
        raise SepbenchError(f"sweep: {name_or_path} is not valid YAML ({reason})") from None
    if not isinstance(raw, dict) or ("base" not in raw and "extends" not in raw):
        raise SepbenchError(
            f"sweep: {name_or_path} needs a 'base' experiment (and usually a 'grid')"
        )
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    key = str(parent)
    if key in parents:
        raise SepbenchError(f"sweep: {name_or_path} extends itself through {key}")
    if here is not None and Path(key).suffix in (".yaml", ".yml"):
        parent = here / key
    return _override(_read(parent, (*parents, key)), raw)


def _source(name_or_path: str | Path) -> tuple[str, Path | None]:
    """The spec's text and, for a file, its folder (presets resolve by name)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SepbenchError(f"sweep: no such file {path}")
        return path.read_text(), path.parent
    if str(name_or_path) in preset_names():
        return (resources.files("sepbench") / "presets" / f"{name_or_path}.yaml").read_text(), None
    raise SepbenchError(
        f"sweep: {name_or_path!r} is neither a .yaml file nor a preset; "
        f"presets: {', '.join(preset_names())}"
    )


def _override(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(parent)
    for key, value in child.items():
        if key in ("base", "critical"):
            merged[key] = deep_merge(merged.get(key, {}), value)
        elif key in ("grid", "smoke") and isinstance(value, dict):
            axes = {**merged.get(key, {}), **value}
            merged[key] = {axis: v for axis, v in axes.items() if v is not None}
        else:
            merged[key] = value
    return merged


def deep_merge(parent: Any, child: Any) -> Any:
    """``child`` over ``parent``, dict by dict at every depth (copies; neither is changed)."""
    if not (isinstance(parent, dict) and isinstance(child, dict)):
        return copy.deepcopy(child)
    merged = dict(parent)
    for key, value in child.items():
        merged[key] = deep_merge(parent.get(key), value)
    return merged
