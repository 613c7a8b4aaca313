"""The length-generalisation protocol (papers.md §3): ``eval.length_generalisation`` in the
config (src/sepbench/config.py), its scores (``evaluate.length_scores``), the refusal of a
learned position table beyond the training lengths, and one run end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sepbench
from sepbench.config import experiment_from_dict
from sepbench.errors import SepbenchError
from sepbench.evaluate import length_scores
from sepbench.store import Store


def config(
    task: str = "parity",
    length: int = 20,
    model: dict[str, Any] | None = None,
    **evaluation: Any,
) -> dict[str, Any]:
    return {
        "task": {"name": task, "length": length},
        "model": model or {"name": "lstm", "width": 8, "layers": 1},
        "train": {"steps": 1, "batch_size": 4, "lr": 1e-3},
        "eval": evaluation,
        "device": "cpu",
    }


def lengths_of(**protocol: Any) -> list[int]:
    task = protocol.pop("task", "parity")
    length = protocol.pop("length", 20)
    experiment = experiment_from_dict(config(task, length, length_generalisation=protocol))
    return experiment.eval_lengths


def test_expands_to_every_length_in_and_out_of_distribution() -> None:
    assert lengths_of(test_max=100) == list(range(1, 101))
    assert lengths_of(test_max=100, stride=10) == list(range(10, 101, 10))
    assert lengths_of(test_max=95, stride=10) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    assert lengths_of(test_max=45, stride=30) == [20, 45]  # T and test_max are always in


def test_lengths_the_task_does_not_allow_are_left_out() -> None:
    assert lengths_of(task="dyck", test_max=30) == list(range(4, 31, 2))
    assert lengths_of(task="dyck", test_max=40, stride=5) == [10, 20, 30, 40]


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        (
            {"lengths": [20], "length_generalisation": {"test_max": 100}},
            "eval: give lengths or length_generalisation, not both",
        ),
        (
            {"length_generalisation": {"test_max": 20}},
            "eval.length_generalisation.test_max: must exceed task.length=20",
        ),
        (
            {"length_generalisation": {"test_max": 100, "stride": 0}},
            "eval.length_generalisation.stride: must be greater than or equal to 1",
        ),
        (
            {"length_generalisation": {"test_max": 100, "train_max": 20}},
            "eval.length_generalisation.train_max: unknown field; allowed: test_max, stride",
        ),
    ],
)
def test_bad_protocols_are_one_line(evaluation: dict[str, Any], message: str) -> None:
    with pytest.raises(SepbenchError) as caught:
        experiment_from_dict(config(**evaluation))
    assert message in str(caught.value) and "\n" not in str(caught.value), caught.value


def test_a_test_max_the_task_refuses_names_the_field() -> None:
    with pytest.raises(SepbenchError) as caught:
        experiment_from_dict(config("dyck", 20, length_generalisation={"test_max": 41}))
    assert str(caught.value).startswith("eval.length_generalisation.test_max: dyck: length")
    assert lengths_of(task="dyck", test_max=22) == [*range(4, 21, 2), 22]


@pytest.mark.parametrize(
    "model",
    [
        {"name": "transformer", "width": 16, "layers": 1},
        {"name": "linear_attention", "width": 16, "layers": 1},
        {"name": "transformer", "width": 16, "layers": 1, "params": {"positional": "learned"}},
    ],
)
def test_a_learned_position_table_is_refused_beyond_the_training_lengths(model: dict) -> None:
    for evaluation in ({"length_generalisation": {"test_max": 40}}, {"lengths": [20, 21]}):
        with pytest.raises(SepbenchError) as caught:
            experiment_from_dict(config(model=model, **evaluation))
        message = str(caught.value)
        assert message.startswith("model.params.positional: a learned position table")
        assert "untrained rows" in message and "use rope or none" in message
        assert "\n" not in message
    experiment_from_dict(config(model=model, lengths=[5, 20]))  # within the trained lengths


@pytest.mark.parametrize(
    ("name", "positional"),
    [("transformer", "rope"), ("transformer", "none"), ("transformer", "sinusoidal"),
     ("linear_attention", "none"), ("lstm", None)],
)
def test_encodings_that_can_generalise_are_accepted(name: str, positional: str | None) -> None:
    params = {} if positional is None else {"positional": positional}
    model = {"name": name, "width": 16, "layers": 1, "params": params}
    experiment = experiment_from_dict(
        config(model=model, length_generalisation={"test_max": 100, "stride": 20})
    )
    assert max(experiment.eval_lengths) == 100


def test_the_hash_covers_the_protocol_and_its_lengths() -> None:
    base = experiment_from_dict(config(length_generalisation={"test_max": 100, "stride": 10}))
    assert base.resolved()["eval"]["lengths"] == list(range(10, 101, 10))
    strided = experiment_from_dict(config(length_generalisation={"test_max": 100, "stride": 5}))
    listed = experiment_from_dict(config(lengths=list(range(10, 101, 10))))
    hashes = {base.config_hash(), strided.config_hash(), listed.config_hash()}
    assert len(hashes) == 3


def test_scores_are_means_over_lengths_on_each_side() -> None:
    per_length = {5: 1.0, 10: 0.9, 15: 0.5, 20: 0.2, 40: 0.0}
    scores = length_scores(per_length, 10)
    assert scores == pytest.approx({"id_accuracy": 0.95, "ood_accuracy": 0.7 / 3})
    assert length_scores({10: 0.5}, 10) == {"id_accuracy": 0.5}


def test_a_run_stores_the_curve_and_the_ood_score(tmp_path: Path) -> None:
    experiment = experiment_from_dict(
        {
            **config(length=6, length_generalisation={"test_max": 12, "stride": 3}),
            "train": {"steps": 10, "batch_size": 8, "lr": 3e-3, "val_interval": 5,
                      "val_examples": 16},
            "eval": {"examples": 32, "length_generalisation": {"test_max": 12, "stride": 3}},
        }
    )
    store = Store(tmp_path / "runs.sqlite")
    result = sepbench.run(experiment, store=store)
    curve = result.metrics["test_accuracy"]
    assert sorted(curve) == [3, 6, 9, 12]
    assert result.metrics["ood_accuracy"] == pytest.approx(np.mean([curve[9], curve[12]]))
    assert result.metrics["id_accuracy"] == pytest.approx(np.mean([curve[3], curve[6]]))
    stored = store.lookup_done(result.config_hash).metrics
    assert stored["ood_accuracy"] == result.metrics["ood_accuracy"]
    plain = experiment_from_dict(config(length=6, lengths=[6, 12]))
    assert "ood_accuracy" not in sepbench.run(plain, store=store).metrics
