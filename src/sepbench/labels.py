"""Naming configurations: the fields that tell plotted runs apart, and short model summaries.

A config is flattened to dotted keys (``train.lr``, ``task.params.mode``). The model's
structure (family, width, the mixer of every layer) is one field, ``model``, written by
:func:`model_summary` (``transformer w64 L2``, ``mamba×12+attention w64``); the model's other
fields stay dotted (``model.params.d_state`` in the flat shape; in the per-layer shape a layer
field is written once for all layers, ``model.layers.*.mixer.d_state``, when the layers that
have it agree). A label is the model summary followed by exactly the other fields that vary
among the configurations drawn together (a model option counts as varying only within one
model family).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

SEPARATOR = " · "
MODEL_FAMILY = {"attention": "transformer"}
_MISSING = object()


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


# -- the model ---------------------------------------------------------------------------------


def mixer_names(model: dict[str, Any]) -> list[str] | None:
    """Each layer's mixer, from either config shape; None when the flat shape names no list."""
    layers = model.get("layers")
    if isinstance(layers, list):
        return [str(layer["mixer"]["name"]) for layer in layers]
    mixers = (model.get("params") or {}).get("mixers")
    return [str(m) for m in mixers] if mixers else None


def model_summary(model: dict[str, Any], *, width: bool = True) -> str:
    """A model's structure in a few characters: ``transformer w64 L2``, ``mamba×12+attention
    w64``. Reads both the flat shape (``name, width, layers: int, params``) and the per-layer
    shape (``layers: [{mixer: {name, ...}, feedforward}, ...]``)."""
    mixers = mixer_names(model)
    size = f" w{model['width']}" if width else ""
    if mixers is None:
        layers = model.get("layers")
        return f"{model['name']}{size}" + (f" L{layers}" if layers else "")
    if len(set(mixers)) == 1 and model["name"] != "hybrid":
        return f"{model['name']}{size} L{len(mixers)}"
    return f"{_runs(mixers)}{size}"


def config_summary(config: dict[str, Any]) -> str:
    """The model summary of a trained run, or a construction's name and the knobs it sets
    away from their defaults (``index_lookup_attention k=32``)."""
    if config.get("model"):
        return model_summary(config["model"])
    from sepbench.constructions import defaults

    name, given = config["construction"]["name"], config["construction"].get("params", {})
    knobs = [f"{k}={v}" for k, v in given.items() if v != defaults(name).get(k)]
    return " ".join([name, *knobs])


def _runs(names: Sequence[str]) -> str:
    """``[mamba, mamba, attention]`` -> ``mamba×2+attention``."""
    parts: list[list[Any]] = []
    for name in names:
        if parts and parts[-1][0] == name:
            parts[-1][1] += 1
        else:
            parts.append([name, 1])
    return "+".join(name if count == 1 else f"{name}×{count}" for name, count in parts)


def model_fields(model: dict[str, Any]) -> dict[str, Any]:
    """The model's fields that :func:`model_summary` does not show, as dotted keys."""
    fields: dict[str, Any] = {}
    for key, value in model.items():
        if key in ("name", "width"):
            continue
        if key == "layers":
            if isinstance(value, list):
                fields.update(_layer_fields(value))
            continue
        if key == "params" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "mixers"}
        fields.update(flatten({key: value}, "model."))
    return fields


def _layer_fields(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-layer fields written once: the common value when every layer that has the field
    agrees, else the tuple of per-layer values (None where a layer lacks it)."""
    flats = [{k: v for k, v in flatten(layer).items() if k != "mixer.name"} for layer in layers]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    fields = {}
    for key in keys:
        values = [flat.get(key, _MISSING) for flat in flats]
        present = {_comparable(v) for v in values if v is not _MISSING}
        if len(present) == 1:
            value = next(v for v in values if v is not _MISSING)
        else:
            value = tuple(None if v is _MISSING else v for v in values)
        fields[f"model.layers.*.{key}"] = value
    return fields


# -- configs -----------------------------------------------------------------------------------


def config_fields(config: dict[str, Any]) -> dict[str, Any]:
    """A config as labelled fields: ``model`` (the summary), the model's other fields, and
    every other section flattened."""
    fields: dict[str, Any] = {}
    for section, value in config.items():
        if section == "model":
            fields["model"] = model_summary(value)
            fields.update(model_fields(value))
        elif isinstance(value, dict):
            fields.update(flatten(value, f"{section}."))
        else:
            fields[section] = value
    return fields


def varying_fields(configs: Iterable[dict[str, Any]], skip: Iterable[str] = ()) -> list[str]:
    """The fields (see :func:`config_fields`) that take at least two values among the
    ``configs`` that have them, in config order. A field only some configs have (a mixer's
    option, another task's parameter) varies only where it is set differently; a model field
    varies only within one model family (``model.name``): one that differs only between
    families (a Transformer's learned positions, an LSTM's none) follows from the family,
    which the model summary already names."""
    configs = list(configs)
    flats = [config_fields(c) for c in configs]
    families = [str(c.get("model", {}).get("name")) for c in configs]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    skipped = set(skip)
    return [key for key in keys if key not in skipped and _varies(key, flats, families)]


def _varies(key: str, flats: list[dict[str, Any]], families: list[str]) -> bool:
    scopes = sorted(set(families)) if key.startswith("model.") else [None]
    for scope in scopes:
        values = {
            _comparable(flat[key])
            for flat, family in zip(flats, families)
            if key in flat and scope in (None, family)
        }
        if len(values) > 1:
            return True
    return False


def field_texts(config: dict[str, Any], fields: Sequence[str]) -> dict[str, str]:
    """The text of each of ``fields`` in ``config`` (blank where the config lacks it)."""
    values = config_fields(config)
    return {key: format_value(values[key]) if key in values else "" for key in fields}


def label(config: dict[str, Any], fields: Sequence[str]) -> str:
    """The model summary, then ``field=value`` for each of ``fields`` (the varying ones) that
    ``config`` has."""
    texts = field_texts(config, [key for key in fields if key != "model"])
    parts = [config_summary(config)]
    parts += [f"{key}={text}" for key, text in texts.items() if text]
    return SEPARATOR.join(parts)


def format_value(value: Any) -> str:
    """A field value as written in labels: ``0.0003``, ``true``, ``none``, ``[20, 50]``."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def _comparable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
