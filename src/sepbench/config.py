"""Typed experiment configs: YAML in, a validated and hashed :class:`Experiment` out.

An experiment names a task (papers.md §1-3), a model, how to train it and how to evaluate it::

    task: {name: index_lookup, length: 16, params: {vocab_size: 16}}
    model: {name: transformer, width: 32, layers: 1}
    train: {steps: 3000, batch_size: 64, lr: 0.001, seed: 0}
    eval: {lengths: [16], examples: 500}

Validation builds the task and the model once, so a bad task or model parameter fails when the
file is loaded, not after training. Every bad key or value raises a one-line
:class:`~sepbench.errors.SepbenchError` naming the field path (``train.lr``) and what it accepts.

Defaults where the papers leave the choice open (papers.md §1 and §2): AdamW with betas
(0.9, 0.999) and no weight decay (Wen et al.), linear warm-up then cosine decay to zero, gradient
clipping at norm 1, fresh batches every step (Bhattamishra et al.), validation every 250 steps
on 500 examples, evaluation by teacher forcing at the task's own length.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from sepbench import constructions, models, tasks
from sepbench.errors import SepbenchError
from sepbench.models.base import SequenceModel
from sepbench.models.spec import match_parameters
from sepbench.tasks.base import Task, task_class


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskConfig(_Section):
    """Which task, at which test length, with which generator parameters."""

    name: str
    length: int = Field(ge=1)
    params: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(_Section):
    """A model, in any short form of :func:`sepbench.models.resolve`: a family and a depth
    (``{name: mamba, width: 64, layers: 2}``), a hybrid (``params: {mixers: [...]}``) or one
    entry per layer (``layers: [{mixer: {name: mamba, d_state: 16}, feedforward: none}, ...]``).
    ``params`` holds whole-model options and mixer keywords shared by the layers that take them.

    ``params_target``: grow the model in depth (its first layer repeated) or width (``grow``)
    to the size closest to this many parameters (Wen et al.'s matching, papers.md §1); the
    chosen layers are what the resolved config records and the hash covers.
    """

    name: str | None = None
    width: int = Field(ge=1)
    layers: int | list[str | dict[str, Any]] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    params_target: int | None = Field(default=None, ge=1)
    grow: Literal["depth", "width"] = "depth"


class TrainConfig(_Section):
    """The training loop (see :func:`sepbench.train.train`).

    ``dataset_size``: None draws fresh batches every step; an int draws a fixed training set of
    that many examples once and cycles through it in shuffled epochs (Wen et al.'s set-up).
    ``train_lengths``: ``task`` samples the task's training length distribution per example
    (e.g. index lookup's k ~ U{10..N}); ``batch`` draws one length per batch from the same
    distribution, so no batch is padded to the longest of its examples (the same lengths on
    average, fewer padded positions: cheaper steps; fresh batches only); ``fixed`` trains at
    exactly ``task.length``.
    ``early_stop``: stop once validation accuracy reaches this value (None: never).
    ``val_mode``: how validation scores (None: the evaluation's mode). ``teacher_forced``
    validation of a generating experiment is the same ``exact`` score, cheaper, when every
    prompt has one correct completion and the retriever (if any) is an oracle: every argmax
    right given the right prefix is exactly greedy generation being right; the test still
    generates.
    ``log``: ``tensorboard`` also writes the training scalars as TensorBoard events
    (:mod:`sepbench.training_log`); a log does not change the result, so the hash leaves it out.
    """

    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    seed: int = Field(default=0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float | None = Field(default=1.0, gt=0)
    dataset_size: int | None = Field(default=None, ge=1)
    train_lengths: Literal["task", "batch", "fixed"] = "task"
    early_stop: float | None = Field(default=None, gt=0, le=1)
    val_interval: int = Field(default=250, ge=1)
    val_examples: int = Field(default=500, ge=1)
    val_mode: Literal["teacher_forced", "generate"] | None = None
    log: Literal["none", "tensorboard"] = "none"

    @model_validator(mode="after")
    def _betas_in_range(self) -> TrainConfig:
        if not all(0 <= beta < 1 for beta in self.betas):
            raise SepbenchError(f"train.betas: each must be in [0, 1), got {list(self.betas)}")
        if self.train_lengths == "batch" and self.dataset_size is not None:
            raise SepbenchError(
                "train.train_lengths: batch draws fresh batches; with train.dataset_size use "
                "task or fixed"
            )
        return self


class LengthGeneralisation(_Section):
    """The length-generalisation protocol of papers.md §3 (Delétang et al., ICLR 2023).

    Training covers lengths up to ``task.length`` = T (the serial tasks draw them uniformly from
    1..T); the test lengths are T and every ``stride``-th length below it (in distribution),
    then T + ``stride``, T + 2·``stride``, .. and ``test_max`` (out of distribution); lengths
    in between that the task does not allow (odd ones for Dyck) are left out. The run stores
    the accuracy at every test length, ``ood_accuracy`` (their mean over the lengths beyond T)
    and ``id_accuracy`` (over the others).
    """

    test_max: int = Field(ge=2)
    stride: int = Field(default=1, ge=1)

    def lengths(self, train_max: int, task: Task) -> list[int]:
        """The test lengths, ascending, for training lengths up to ``train_max``."""
        if self.test_max <= train_max:
            raise SepbenchError(
                f"eval.length_generalisation.test_max: must exceed task.length={train_max} "
                f"(the longest training length), got {self.test_max}"
            )
        _prefixed("eval.length_generalisation.test_max", task.validate_length, self.test_max)
        below = range(train_max, task.min_length - 1, -self.stride)
        beyond = range(train_max + self.stride, self.test_max, self.stride)
        candidates = sorted({*below, *beyond, self.test_max})
        return [length for length in candidates if _allows(task, length)]


class EvalConfig(_Section):
    """Test evaluation: at each of ``lengths`` (default: the task length), ``examples`` each;
    or, with ``length_generalisation``, at the lengths that protocol expands to."""

    lengths: list[int] | None = None
    length_generalisation: LengthGeneralisation | None = None
    examples: int = Field(default=1000, ge=1)
    mode: Literal["teacher_forced", "generate"] = "teacher_forced"
    batch_size: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _one_way_to_name_lengths(self) -> EvalConfig:
        if self.lengths is not None and self.length_generalisation is not None:
            raise SepbenchError(
                "eval: give lengths or length_generalisation, not both "
                "(length_generalisation expands to its own lengths)"
            )
        return self


class ConstructionConfig(_Section):
    """A hand-built model of :mod:`sepbench.constructions` in place of a trained one: its
    ``name``, its knobs (``params``; see ``constructions.defaults(name)``) and the ``seed`` that
    draws its random codes and the test data. An experiment has a construction or a model (with
    ``train``), never both."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(default=0, ge=0)


class Experiment(_Section):
    """One training run, fully specified. Build it with :func:`load_experiment` (YAML) or
    :func:`experiment_from_dict`; both turn every validation error into one line."""

    task: TaskConfig
    model: ModelConfig | None = None
    train: TrainConfig | None = None
    eval: EvalConfig = Field(default_factory=EvalConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "bfloat16"] = "float32"
    name: str | None = None
    construction: ConstructionConfig | None = None
    _model_spec: dict[str, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _build_once(self) -> Experiment:
        task = self.build_task()
        for length in self.eval.lengths or []:
            _prefixed("eval.lengths", task.validate_length, length)
        if self.construction is not None:
            self._check_construction(task)
            return self
        if self.model is None:
            raise SepbenchError("model: required field missing (or give a construction)")
        if self.train is None:
            raise SepbenchError("train: required field missing")
        lengths = self.eval_lengths  # expands length_generalisation: its errors surface here
        self._check_generation(task)
        self._check_positions(task, self.build_model(task), lengths)
        return self

    def _check_generation(self, task: Task) -> None:
        """A task whose input arrives inside the completion cannot be generated freely."""
        if task.generates:
            return
        for field, mode in (("eval.mode", self.eval.mode), ("train.val_mode", self.train.val_mode)):
            if mode == "generate":
                raise SepbenchError(
                    f"{field}: {task.describe()} hands its input in between the trace tokens, "
                    "so free generation cannot run it; use teacher_forced"
                )

    def _check_construction(self, task: Task) -> None:
        """A construction replaces the model and its training, and is built for one length."""
        given = [section for section in ("model", "train") if getattr(self, section) is not None]
        if given:
            raise SepbenchError(
                f"construction: an experiment has a construction or a model with train, not "
                f"both; drop {' and '.join(given)}"
            )
        model = self.build_construction(task)
        if not model.any_length and self.eval_lengths != [self.task.length]:
            raise SepbenchError(
                f"eval.lengths: {model.name} is built for task.length={self.task.length} only; "
                f"got {self.eval_lengths}"
            )

    def build_construction(self, task: Task) -> constructions.Construction:
        """The construction for ``task`` at ``task.length`` (errors name ``construction.*``)."""
        config = self.construction
        _prefixed("construction.name", constructions.construction_class, config.name)
        return _prefixed(
            "construction.params",
            lambda: constructions.build(
                config.name, task, self.task.length, seed=config.seed, **config.params
            ),
        )

    def _check_positions(self, task: Task, model: SequenceModel, lengths: list[int]) -> None:
        """A learned or sinusoidal position table must cover the longest sequence, and a
        learned one must not be read beyond the training lengths (its rows there were never
        trained, so a length-generalisation run would measure the table, papers.md §3): both
        fail here rather than after training."""
        if model.positions is None:
            return
        longest = max(self.task.length, *lengths)
        if model.positional == "learned" and longest > self.task.length:
            raise SepbenchError(
                f"model.params.positional: a learned position table is trained only up to "
                f"task.length={self.task.length}, so evaluating at length {longest} would read "
                f"untrained rows; use rope or none (attention), sinusoidal, or no longer lengths"
            )
        example = task.sample(np.random.default_rng(0), 1, longest)
        needed = int(example.lengths[0])
        if self.eval.mode == "generate":
            needed = int(example.prompt_lengths[0]) + task.completion_cap(longest)
        if needed > model.max_length:
            raise SepbenchError(
                f"model.params.max_length: the position table has {model.max_length} rows but "
                f"length {longest} needs {needed} tokens; set max_length >= {needed}"
            )

    # -- building ------------------------------------------------------------------------

    @property
    def eval_lengths(self) -> list[int]:
        """The test lengths: ``eval.lengths``, the expanded ``eval.length_generalisation``, or
        the task length."""
        if self.eval.length_generalisation is not None:
            task = self.build_task()
            return self.eval.length_generalisation.lengths(self.task.length, task)
        return list(self.eval.lengths or [self.task.length])

    def build_task(self) -> Task:
        """The task, its parameters and length checked (errors name ``task.*``)."""
        _prefixed("task.name", task_class, self.task.name)
        task = _prefixed("task.params", lambda: tasks.get(self.task.name, **self.task.params))
        _prefixed("task.length", task.validate_length, self.task.length)
        return task

    def model_spec(self) -> dict[str, Any]:
        """The model's fully resolved per-layer spec (:mod:`sepbench.models.spec`)."""
        if self._model_spec is None:
            config = self.model
            known = config.name is None or config.name in models.names() or ":" in config.name
            if not known:
                raise SepbenchError(
                    f"model.name: unknown model {config.name!r}; "
                    f"known: {', '.join(models.names())}"
                )
            spec = _prefixed(
                "model",
                lambda: models.resolve(config.name, config.width, config.layers, config.params),
            )
            if config.params_target is not None:
                vocab_size = len(self.build_task().vocab)
                spec = _prefixed(
                    "model.params_target",
                    lambda: match_parameters(spec, vocab_size, config.params_target, config.grow),
                )
            self._model_spec = spec
        return copy.deepcopy(self._model_spec)

    def build_model(self, task: Task) -> SequenceModel:
        """The model for ``task``'s vocabulary (errors name ``model.*``). Seed torch first."""
        spec = self.model_spec()
        return _prefixed("model", lambda: models.build_spec(spec, len(task.vocab)))

    # -- identity ------------------------------------------------------------------------

    def resolved(self) -> dict[str, Any]:
        """The config with every default filled in: the task's parameters, the model's
        per-layer spec, the evaluation lengths. This is what the store records and what the
        hash covers; it is itself a valid config with the same hash."""
        config = self.model_dump(mode="json")
        config["task"]["params"] = _jsonable(self.build_task().params)
        if self.construction is not None:
            construction = config["construction"]
            defaults = constructions.defaults(construction["name"])
            construction["params"] = _jsonable({**defaults, **construction["params"]})
            del config["model"], config["train"]
            config["eval"]["lengths"] = self.eval_lengths
            return config
        del config["construction"]
        config["model"] = _jsonable(self.model_spec())
        config["eval"]["lengths"] = self.eval_lengths
        if config["eval"]["length_generalisation"] is None:  # configs from before it: same hash
            del config["eval"]["length_generalisation"]
        return config

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of :meth:`resolved`, first 16 hex digits.

        ``name`` and ``train.log`` are left out: they do not change the result.
        """
        config = self.resolved()
        config.pop("name")
        if "train" in config:  # a construction has none
            config["train"].pop("log")
            if config["train"]["val_mode"] is None:  # configs from before it: same hash
                del config["train"]["val_mode"]
        canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _allows(task: Task, length: int) -> bool:
    try:
        task.validate_length(length)
    except (TypeError, ValueError):
        return False
    return True


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, default=str))


def _prefixed(path: str, function: Any, *args: Any) -> Any:
    """Call ``function``; a bad-input error it raises is re-raised prefixed with ``path``."""
    try:
        return function(*args)
    except (TypeError, ValueError) as error:
        raise SepbenchError(f"{path}: {error}") from error


# -- loading -------------------------------------------------------------------------------


def experiment_from_dict(data: object) -> Experiment:
    """Validate a plain dict (as parsed from YAML) into an :class:`Experiment`."""
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise SepbenchError(f"experiment: expected a mapping of sections, got a {kind}")
    try:
        return Experiment.model_validate(data)
    except ValidationError as error:
        raise SepbenchError(one_line(error)) from None


def load_experiment(path: str | Path, overrides: Iterable[str] = ()) -> Experiment:
    """Read an experiment YAML file, apply ``key.path=value`` overrides, validate.

    Override values are parsed as YAML scalars (``3e-4`` -> float, ``[16, 32]`` -> list).
    """
    path = Path(path)
    if not path.is_file():
        raise SepbenchError(f"experiment: no such file {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        reason = _first_line(error)
        raise SepbenchError(f"experiment: {path} is not valid YAML ({reason})") from None
    if not isinstance(data, dict):
        raise SepbenchError(f"experiment: {path} must hold a mapping of sections")
    for override in overrides:
        apply_override(data, override)
    return experiment_from_dict(data)


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``data["a"]["b"] = value`` for ``override = "a.b=value"``, creating sections."""
    dotted, sep, text = override.partition("=")
    if not sep:
        raise SepbenchError(f"--set takes key.path=value, got {override!r}")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SepbenchError(f"--set {dotted}: bad value {text!r} ({_first_line(error)})") from None
    set_dotted(data, dotted, value, source="--set")


def set_dotted(data: dict[str, Any], dotted: str, value: Any, *, source: str) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted = "a.b"``, creating sections on the way.

    The one dotted-path setter: ``--set``, sweep grids and ``variants`` all use it. ``source``
    names the caller in the one-line error.
    """
    keys = dotted.split(".") if isinstance(dotted, str) else []
    if not keys or not all(keys):
        raise SepbenchError(f"{source}: a field path is dotted names (train.lr), got {dotted!r}")
    node = data
    for depth, key in enumerate(keys[:-1]):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            section = ".".join(keys[: depth + 1])
            raise SepbenchError(f"{source} {dotted}: {section} is not a section")
    node[keys[-1]] = value


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]


def one_line(error: ValidationError, root: type[BaseModel] | None = None) -> str:
    """The first of pydantic's errors as ``field.path: what it accepts; got value``."""
    first = error.errors()[0]
    path = ".".join(str(part) for part in first["loc"])
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, SepbenchError):
        message = str(cause)
    elif first["type"] == "extra_forbidden":
        allowed = _fields_at(root or Experiment, first["loc"][:-1])
        message = f"{path}: unknown field; allowed: {', '.join(allowed)}"
    elif first["type"] == "missing":
        message = f"{path}: required field missing"
    else:
        text = first["msg"].replace("Input should be", "must be")
        message = f"{path}: {text}; got {first['input']!r}"
    more = error.error_count() - 1
    return message + (f" (and {more} more)" if more else "")


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _fields_at(section: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the config section at ``loc`` below ``section`` (``()``: itself)."""
    for part in loc:
        if str(part) not in section.model_fields:
            return []
        annotation = section.model_fields[str(part)].annotation
        sections = [a for a in (annotation, *get_args(annotation)) if _is_section(a)]
        if not sections:
            return []
        section = sections[0]
    return list(section.model_fields)
