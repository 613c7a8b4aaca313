"""Labels: model summaries of both config shapes, and exactly the fields that vary."""

from __future__ import annotations

from typing import Any

import pytest

from sepbench.config import experiment_from_dict
from sepbench.labels import (
    config_fields,
    flatten,
    format_value,
    label,
    model_summary,
    varying_fields,
)
from tests.stored_runs import experiment_config


def resolved(**dotted: Any) -> dict[str, Any]:
    return experiment_from_dict(experiment_config(**dotted)).resolved()


def layer(mixer: str, feedforward: dict | None = None, **params: Any) -> dict[str, Any]:
    return {"mixer": {"name": mixer, **params}, "feedforward": feedforward}


def per_layer_model(name: str, layers: list[dict[str, Any]], width: int = 64) -> dict[str, Any]:
    """The per-layer typed shape the config is moving to."""
    return {"name": name, "width": width, "embedding": "learned", "positional": "none",
            "norm": "layernorm", "tie_head": True, "max_length": 2048, "layers": layers}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"name": "transformer", "width": 64, "layers": 2, "params": {}}, "transformer w64 L2"),
        (
            {"name": "hybrid", "width": 64, "layers": None,
             "params": {"mixers": ["mamba"] * 12 + ["attention"]}},
            "mamba×12+attention w64",
        ),
        (per_layer_model("transformer", [layer("attention", {"name": "mlp", "ratio": 4})] * 2),
         "transformer w64 L2"),
        (per_layer_model("hybrid", [layer("mamba", d_state=16)] * 12 + [layer("attention")]),
         "mamba×12+attention w64"),
        (per_layer_model("hybrid", [layer("mamba"), layer("s4d"), layer("mamba")], width=32),
         "mamba+s4d+mamba w32"),
    ],
)
def test_model_summary_reads_both_config_shapes(model: dict, expected: str) -> None:
    assert model_summary(model) == expected


def test_model_summary_without_width() -> None:
    assert model_summary({"name": "lstm", "width": 8, "layers": 3}, width=False) == "lstm L3"


def test_flatten_writes_dotted_keys_and_keeps_lists() -> None:
    config = {"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}
    assert flatten(config) == {"a.b": 1, "a.c.d": [1, 2], "e": None}


def test_only_the_learning_rate_varies() -> None:
    configs = [resolved(train__lr=1e-3), resolved(train__lr=3e-4)]
    assert varying_fields(configs) == ["train.lr"]
    assert label(configs[1], ["train.lr"]) == "transformer w8 L1 · train.lr=0.0003"


def test_models_of_different_families_differ_in_the_summary_only() -> None:
    """An option only one family has (attention heads) is not a varying field."""
    configs = [resolved(), resolved(model__name="lstm"), resolved(model__width=16)]
    assert varying_fields(configs) == ["model"]


def test_a_mode_and_a_width_vary() -> None:
    configs = [
        resolved(task__name="parity", task__params={"cot": True}, task__length=4),
        resolved(task__name="parity", task__params={"cot": False}, task__length=4,
                 model__width=16),
    ]
    assert varying_fields(configs) == ["task.params.cot", "model"]
    assert label(configs[0], ["task.params.cot", "model"]) == (
        "transformer w8 L1 · task.params.cot=true"
    )


def test_a_layer_option_is_written_once_for_all_layers() -> None:
    small = {"model": per_layer_model("mamba", [layer("mamba", d_state=16, d_conv=4)] * 2)}
    large = {"model": per_layer_model("mamba", [layer("mamba", d_state=64, d_conv=4)] * 2)}
    assert config_fields(small)["model.layers.*.mixer.d_state"] == 16
    assert varying_fields([small, large]) == ["model.layers.*.mixer.d_state"]
    assert label(large, ["model.layers.*.mixer.d_state"]) == (
        "mamba w64 L2 · model.layers.*.mixer.d_state=64"
    )


def test_layers_that_disagree_give_the_per_layer_values() -> None:
    mixed = {"model": per_layer_model("mamba", [layer("mamba", d_state=16),
                                                layer("mamba", d_state=64)])}
    assert config_fields(mixed)["model.layers.*.mixer.d_state"] == (16, 64)


@pytest.mark.parametrize(
    ("value", "text"),
    [(3e-4, "0.0003"), (True, "true"), (None, "none"), ([20, 50], "[20, 50]"), ("cot", "cot")],
)
def test_format_value(value: Any, text: str) -> None:
    assert format_value(value) == text


def test_a_model_option_varies_within_a_family_only() -> None:
    """The Transformer's learned positions follow from the family; a choice within it does
    not."""
    configs = [resolved(), resolved(model__name="lstm"),
               resolved(model__params={"positional": "sinusoidal"})]
    assert varying_fields(configs) == ["model", "model.params.positional"]
    assert label(configs[1], ["model", "model.params.positional"]) == (
        "lstm w8 L1 · model.params.positional=none"
    )
