"""Model specs: the one, fully resolved description a model is built from.

A spec is plain JSON data, one typed entry per layer (Zoology's ``ModuleConfig`` shape,
../shared/design.md "Config describes, it does not build")::

    {"name": "hybrid", "width": 64,
     "layers": [{"mixer": {"name": "mamba", "d_state": 16, ...}, "feedforward": None},
                {"mixer": {"name": "attention", "heads": 4, "rope": True},
                 "feedforward": {"name": "swiglu", "ratio": 4}}],
     "params": {"embedding": "learned", "positional": "none", "norm": "layernorm",
                "tie_head": True, "max_length": 2048}}

Every keyword of every mixer and feed-forward is written out with its default, so a spec names
exactly one model: the experiment's hash is taken over it, and :func:`build_spec` builds from
it alone. A spec is itself a valid short form, so resolving it again changes nothing.

:func:`resolve` expands the short forms people write:

- a family and a depth: ``resolve("mamba", 64, 2, {"d_state": 8})``;
- ``hybrid`` with ``params["mixers"] = ["mamba", "mamba", "attention"]``;
- a list of layers, each a mixer name or ``{"mixer": name or {name, **params},
  "feedforward": ...}``. A mixer name may be an import path (``package.module:Class`` or
  ``file.py:Class``, :mod:`sepbench.models.external`).

A mixer keyword given once for the whole model (``params``) goes to the layers whose mixer
takes it. When mixers of two different kinds take it (``d_state`` for Mamba and S4D), the value
is ambiguous and must be given per layer: one dict is never broadcast over different mixers.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any

from sepbench.errors import SepbenchError, check_choice, check_int, unknown_name
from sepbench.models.base import (
    FEEDFORWARDS,
    MIXERS,
    NORMS,
    Block,
    Mixer,
    SequenceModel,
)
from sepbench.models.external import is_import_path, load_class

MODEL_TO_MIXER = {"transformer": "attention"}
POSITIONAL = ("learned", "sinusoidal", "rope", "none")
EMBEDDINGS = ("learned", "frozen_sinusoidal")
MODEL_OPTIONS: dict[str, Any] = {
    "embedding": "learned",
    "positional": None,
    "norm": "layernorm",
    "tie_head": True,
    "max_length": 2048,
}
"""Whole-model options and their defaults (``positional``: learned when a mixer has no sense
of order of its own, else none)."""
FEEDFORWARD_OPTIONS = ("mlp", "mlp_ratio")
"""Short-form options that choose every layer's feed-forward: ``mlp`` None (the mixer's
default), False (none), True (the default, ``mlp`` where there is none) or a name."""


def names() -> list[str]:
    """Model names: one per mixer (``transformer`` for attention), and ``hybrid``."""
    mixer_to_model = {v: k for k, v in MODEL_TO_MIXER.items()}
    return sorted([mixer_to_model.get(m, m) for m in MIXERS] + ["hybrid"])


def keyword_defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """The keyword parameters of a function or class that have defaults, with them."""
    return {
        p.name: p.default
        for p in inspect.signature(function).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty
    }


# -- short form -> spec ----------------------------------------------------------------------


def resolve(
    name: str | None,
    width: int,
    layers: int | Sequence[Any] | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The spec of a model given in any short form (see the module docstring)."""
    params = dict(params or {})
    owner = name or "model"
    check_int(owner, "width", width, 1, 65536)
    entries = _layer_entries(owner, name, layers, params.pop("mixers", None))
    options = {k: params.pop(k) for k in list(params) if k in MODEL_OPTIONS}
    feedforward = {k: params.pop(k) for k in list(params) if k in FEEDFORWARD_OPTIONS}
    kinds = [entry["mixer"]["name"] for entry in entries]
    _route_shared(owner, kinds, params, entries)
    options = _model_options(owner, kinds, options)
    if options.pop("rope"):
        for entry in entries:
            if "rope" in _mixer_keywords(entry["mixer"]["name"]):
                entry["mixer"].setdefault("rope", True)
    return {
        "name": name or _family(kinds),
        "width": width,
        "layers": [_resolve_layer(owner, entry, feedforward) for entry in entries],
        "params": options,
    }


def _layer_entries(
    owner: str, name: str | None, layers: int | Sequence[Any] | None, mixers: Any
) -> list[dict[str, Any]]:
    """One ``{"mixer": {"name": ...}, ...}`` entry per layer, from any of the short forms."""
    if isinstance(layers, Sequence) and not isinstance(layers, str):
        if mixers is not None:
            raise SepbenchError(f"{owner}: give either a list of layers or mixers=[...], not both")
        if not layers:
            raise SepbenchError(f"{owner}: layers must list at least one layer")
        entries = [_entry(owner, layer) for layer in layers]
        family = _family([entry["mixer"]["name"] for entry in entries])
        if name not in (None, family, "hybrid"):
            raise SepbenchError(f"{owner}: these layers make a {family} model, not a {name}")
        return entries
    if name == "hybrid":
        if not mixers:
            raise SepbenchError("hybrid: give mixers=[...], e.g. ['mamba', 'mamba', 'attention']")
        if layers is not None and layers != len(mixers):
            raise SepbenchError(f"hybrid: layers={layers} but {len(mixers)} mixers were given")
        return [_entry(owner, mixer) for mixer in mixers]
    if mixers is not None:
        raise SepbenchError(f"{owner}: mixers=[...] is only for the hybrid model")
    if name is None or not (name in names() or is_import_path(name)):
        raise unknown_name("model", str(name), names())
    check_int(name, "layers", layers, 1, 256)
    mixer = MODEL_TO_MIXER.get(name, name)
    if getattr(mixer_class(mixer), "stack", False):  # one block holding a depth-L stack
        return [{"mixer": {"name": mixer, "depth": layers}}]
    return [_entry(owner, mixer) for _ in range(layers)]


def _entry(owner: str, layer: Any) -> dict[str, Any]:
    """A layer entry as a fresh dict with ``mixer`` a dict holding ``name``."""
    if isinstance(layer, str):
        layer = {"mixer": layer}
    if not isinstance(layer, dict) or "mixer" not in layer:
        raise SepbenchError(
            f"{owner}: a layer is a mixer name or {{mixer: ..., feedforward: ...}}, got {layer!r}"
        )
    unknown = set(layer) - {"mixer", "feedforward"}
    if unknown:
        raise SepbenchError(
            f"{owner}: unknown layer field {sorted(unknown)[0]!r}; allowed: mixer, feedforward"
        )
    mixer = layer["mixer"]
    mixer = {"name": mixer} if isinstance(mixer, str) else dict(mixer or {})
    mixer_class(str(mixer.get("name")))
    return {**layer, "mixer": mixer}


def mixer_class(name: str) -> type[Mixer]:
    """A registered mixer, or a class from an import path (:mod:`sepbench.models.external`)."""
    if is_import_path(name):
        return load_class(name)
    if name not in MIXERS:
        raise unknown_name("mixer", name, MIXERS)
    return MIXERS[name]


def _route_shared(
    owner: str, kinds: list[str], params: dict[str, Any], entries: list[dict[str, Any]]
) -> None:
    """Give each shared mixer keyword to the layers whose mixer takes it (unambiguous only)."""
    for key, value in params.items():
        if key == "depth" and any(entry["mixer"].get("depth") for entry in entries):
            raise SepbenchError(f"{owner}: set its depth with layers, not depth")
        takers = sorted({kind for kind in kinds if key in _mixer_keywords(kind)})
        if not takers:
            allowed = set().union(*(_mixer_keywords(k) for k in kinds))
            allowed |= set(MODEL_OPTIONS) | set(FEEDFORWARD_OPTIONS)
            raise SepbenchError(
                f"{owner}: unknown parameter {key!r}; allowed: {', '.join(sorted(allowed))}"
            )
        if len(takers) > 1:
            raise SepbenchError(
                f"{owner}: {key!r} is taken by both {' and '.join(takers)}; "
                "give it per layer in model.layers"
            )
        for entry in entries:
            if entry["mixer"]["name"] == takers[0]:
                entry["mixer"].setdefault(key, value)


def _model_options(owner: str, kinds: list[str], given: dict[str, Any]) -> dict[str, Any]:
    """Whole-model options with defaults; ``rope`` (a flag for the caller) split out."""
    options = {**MODEL_OPTIONS, **given}
    check_choice(owner, "embedding", options["embedding"], EMBEDDINGS)
    check_choice(owner, "norm", options["norm"], NORMS)
    check_int(owner, "max_length", options["max_length"], 1)
    unordered = any(getattr(mixer_class(kind), "needs_positions", False) for kind in kinds)
    positional = options["positional"] or ("learned" if unordered else "none")
    check_choice(owner, "positional", positional, POSITIONAL)
    if positional == "rope" and not any("rope" in _mixer_keywords(kind) for kind in kinds):
        raise SepbenchError(f"{owner}: positional=rope needs an attention mixer")
    options["positional"] = "none" if positional == "rope" else positional
    options["rope"] = positional == "rope"
    return options


def _resolve_layer(
    owner: str, entry: dict[str, Any], shared: dict[str, Any]
) -> dict[str, Any]:
    """A layer with every mixer and feed-forward keyword written out."""
    kind = entry["mixer"]["name"]
    given = {k: v for k, v in entry["mixer"].items() if k != "name"}
    unknown = set(given) - _mixer_keywords(kind)
    if unknown:
        raise SepbenchError(
            f"{owner}: mixer {kind} has no parameter {sorted(unknown)[0]!r}; allowed: "
            f"{', '.join(sorted(_mixer_keywords(kind))) or 'none'}"
        )
    defaults = keyword_defaults(mixer_class(kind))
    missing = sorted(_mixer_keywords(kind) - set(defaults) - set(given))
    if missing:
        raise SepbenchError(f"{owner}: the {kind} mixer needs {missing[0]}=<value>")
    mixer = {"name": kind, **defaults, **given}
    choice = entry["feedforward"] if "feedforward" in entry else shared.get("mlp")
    ratio = shared.get("mlp_ratio", 4)
    return {"mixer": mixer, "feedforward": _resolve_feedforward(owner, kind, choice, ratio)}


def _resolve_feedforward(
    owner: str, kind: str, choice: Any, ratio: int
) -> dict[str, Any] | None:
    """``None`` (the mixer's default), False/"none" (none), True, a name, or a dict."""
    default = getattr(mixer_class(kind), "default_feedforward", "mlp")
    if choice is False or choice == "none" or (choice is None and default is None):
        return None
    if choice is None or choice is True:
        choice = default or "mlp"
    given = {"name": choice} if isinstance(choice, str) else dict(choice)
    check_choice(owner, "feedforward", given.get("name"), [*FEEDFORWARDS, "none"])
    defaults = keyword_defaults(FEEDFORWARDS[given["name"]])
    if "ratio" in defaults:
        check_int(owner, "mlp_ratio", ratio, 1, 64)
        defaults["ratio"] = ratio
    unknown = set(given) - {"name"} - set(defaults)
    if unknown:
        raise SepbenchError(
            f"{owner}: feed-forward {given['name']} has no parameter {sorted(unknown)[0]!r}"
        )
    return {**defaults, **given}


def _mixer_keywords(kind: str) -> set[str]:
    """Every keyword a mixer takes (with a default or without), ``width`` aside."""
    parameters = inspect.signature(mixer_class(kind)).parameters.values()
    return {
        p.name for p in parameters
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "width"
    }


def _family(kinds: list[str]) -> str:
    if len(set(kinds)) > 1:
        return "hybrid"
    return {v: k for k, v in MODEL_TO_MIXER.items()}.get(kinds[0], kinds[0])


# -- spec -> model --------------------------------------------------------------------------


def build_spec(spec: dict[str, Any], vocab_size: int) -> SequenceModel:
    """The model a (resolved) spec describes, for a vocabulary of ``vocab_size`` tokens."""
    check_int(spec["name"], "vocab_size", vocab_size, 2)
    width, options = spec["width"], spec["params"]
    return SequenceModel(
        vocab_size,
        width,
        [_block(layer, width, options["norm"]) for layer in spec["layers"]],
        norm=options["norm"],
        tie_head=options["tie_head"],
        frozen_sinusoidal_embedding=options["embedding"] == "frozen_sinusoidal",
        positional=options["positional"],
        max_length=options["max_length"],
    )


def _block(layer: dict[str, Any], width: int, norm: str) -> Block:
    mixer_params = dict(layer["mixer"])
    mixer: Mixer = mixer_class(mixer_params.pop("name"))(width, **mixer_params)
    feedforward = None
    if layer["feedforward"] is not None:
        ff_params = dict(layer["feedforward"])
        feedforward = FEEDFORWARDS[ff_params.pop("name")](width, **ff_params)
    return Block(mixer, feedforward, width, norm)


def build(
    name: str, vocab_size: int, width: int, layers: int | None = None, **params: Any
) -> SequenceModel:
    """Build model ``name`` (see :func:`names`) from its short form (:func:`resolve`)."""
    return build_spec(resolve(name, width, layers, params), vocab_size)


def count_parameters(spec: dict[str, Any], vocab_size: int) -> int:
    """Parameters of the model a spec describes; each distinct layer is built once (cached),
    so growing a model layer by layer costs one layer per step."""
    shell = json.dumps({**spec, "layers": []}, sort_keys=True)
    norm = spec["params"]["norm"]
    return _shell_parameters(shell, vocab_size) + sum(
        _layer_parameters(json.dumps(layer, sort_keys=True), spec["width"], norm)
        for layer in spec["layers"]
    )


@functools.lru_cache(maxsize=256)
def _shell_parameters(shell: str, vocab_size: int) -> int:
    """Embedding, position table, final norm and head: the model without its layers."""
    return build_spec(json.loads(shell), vocab_size).num_parameters()


@functools.lru_cache(maxsize=1024)
def _layer_parameters(layer: str, width: int, norm: str) -> int:
    return sum(p.numel() for p in _block(json.loads(layer), width, norm).parameters())


def match_parameters(
    spec: dict[str, Any], vocab_size: int, target: int, grow: str = "depth"
) -> dict[str, Any]:
    """The spec grown in depth (its first layer repeated) or width (multiples of 8) to land
    closest to ``target`` parameters (Wen et al.'s 0.5M / 1M / 2M matching, papers.md §1).

    Depth keeps the layers after the first as they are (a hybrid's final attention layer);
    width keeps every layer and scales the model width. Ties go to the smaller model.
    """
    check_choice(spec["name"], "grow", grow, ("depth", "width"))
    first, rest = spec["layers"][0], spec["layers"][1:]
    if grow == "depth":
        candidates = [
            {**spec, "layers": [first] * depth + rest} for depth in range(1, 257 - len(rest))
        ]
    else:
        candidates = [{**spec, "width": width} for width in range(8, 4097, 8)]
    best, best_gap = candidates[0], None
    for candidate in candidates:
        try:
            gap = abs(count_parameters(candidate, vocab_size) - target)
        except (SepbenchError, ValueError):
            continue  # e.g. heads that do not divide this width
        if best_gap is None or gap < best_gap:
            best, best_gap = candidate, gap
        elif gap > best_gap:
            break  # counts grow with size: past the closest one
    return best
