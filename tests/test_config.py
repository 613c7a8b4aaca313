"""Experiment configs: the documented YAML loads, overrides apply, bad input is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sepbench.config import Experiment, experiment_from_dict, load_experiment
from sepbench.errors import SepbenchError

EXAMPLE = """\
task: {name: index_lookup, length: 16, params: {vocab_size: 16}}
model: {name: transformer, width: 32, layers: 1}
train: {steps: 3000, batch_size: 64, lr: 0.001, seed: 0}
eval: {lengths: [16], examples: 500}
"""


@pytest.fixture
def example(tmp_path: Path) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(EXAMPLE)
    return path


def test_the_documented_example_loads_with_defaults(example: Path) -> None:
    experiment = load_experiment(example)
    assert isinstance(experiment, Experiment)
    assert (experiment.task.name, experiment.task.length) == ("index_lookup", 16)
    assert experiment.train.schedule == "cosine" and experiment.train.weight_decay == 0
    assert experiment.eval.mode == "teacher_forced" and experiment.device == "auto"


def test_overrides_are_yaml_scalars_applied_to_nested_fields(example: Path) -> None:
    experiment = load_experiment(
        example,
        ["train.lr=3e-4", "eval.lengths=[16, 32]", "task.params.vocab_size=8", "name=probe"],
    )
    assert experiment.train.lr == pytest.approx(3e-4)
    assert experiment.eval.lengths == [16, 32]
    assert experiment.task.params == {"vocab_size": 8}
    assert experiment.name == "probe"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=0.1", "train.lrr: unknown field; allowed: steps, batch_size, lr"),
        ("colour=red", "colour: unknown field; allowed: task, model, train, eval"),
        ("train.steps=many", "train.steps: must be a valid integer"),
        ("task.name=no_such_task", "task.name: unknown task 'no_such_task'; known: "),
        ("model.name=no_such_model", "model.name: unknown model 'no_such_model'; known: "),
        ("task.params.vocab_size=1", "task.params: index_lookup: vocab_size"),
        ("task.params.colour=red", "task.params: index_lookup: unknown parameter 'colour'"),
        ("model.params.colour=red", "model: transformer: unknown parameter 'colour'"),
        ("train.lr=0", "train.lr: must be greater than 0; got 0"),
        ("train.lr=-1e-3", "train.lr: must be greater than 0"),
        ("eval.mode=beam", "eval.mode: must be 'teacher_forced' or 'generate'; got 'beam'"),
        ("train.schedule=linear", "train.schedule: must be 'cosine' or 'constant'"),
        ("train.early_stop=1.5", "train.early_stop: must be less than or equal to 1"),
        ("train.betas=[0.9, 1.0]", "train.betas: each must be in [0, 1)"),
        ("task.length=0", "task.length: must be greater than or equal to 1; got 0"),
        ("task.length=1000", "task.length: index_lookup: length must be in [1, 512]"),
        ("eval.lengths=[16, 1000]", "eval.lengths: index_lookup: length must be in [1, 512]"),
        ("device=tpu", "device: must be 'auto', 'cpu' or 'cuda'"),
        ("model.params.max_length=10", "model.params.max_length: the position table has 10 rows"),
        ("train.lr.value=1", "--set train.lr.value: train.lr is not a section"),
        ("train.lr", "--set takes key.path=value"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(
    example: Path, override: str, message: str
) -> None:
    with pytest.raises(SepbenchError) as caught:
        load_experiment(example, [override])
    text = str(caught.value)
    assert message in text and "\n" not in text, text


def test_missing_section_and_bad_files_are_one_line(example: Path, tmp_path: Path) -> None:
    with pytest.raises(SepbenchError, match=r"^train: required field missing$"):
        experiment_from_dict({"task": {"name": "index_lookup", "length": 16},
                              "model": {"name": "lstm", "width": 8, "layers": 1}})
    with pytest.raises(SepbenchError, match="no such file"):
        load_experiment(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: {name: [\n")
    with pytest.raises(SepbenchError, match="not valid YAML"):
        load_experiment(broken)


def test_resolved_fills_every_default_and_the_hash_follows_it(example: Path) -> None:
    experiment = load_experiment(example)
    resolved = experiment.resolved()
    assert resolved["task"]["params"]["vocab_size"] == 16
    assert set(resolved["task"]["params"]) > {"vocab_size"}  # the task's own defaults
    assert {"heads", "mlp_ratio", "positional"} <= set(resolved["model"]["params"])
    assert resolved["train"]["grad_clip"] == 1.0 and resolved["eval"]["lengths"] == [16]
    digest = experiment.config_hash()
    assert len(digest) == 16 and int(digest, 16) >= 0
    heads = resolved["model"]["params"]["heads"]
    spelled_out = load_experiment(
        example, [f"model.params.heads={heads}", "train.schedule=cosine", "eval.lengths=[16]"]
    )
    assert spelled_out.config_hash() == digest  # a default written out is the same config
    assert load_experiment(example, ["name=label"]).config_hash() == digest
    assert load_experiment(example, ["train.lr=0.002"]).config_hash() != digest
    assert load_experiment(example, ["train.seed=1"]).config_hash() != digest
