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
        ["train.lr=3e-4", "eval.lengths=[8, 16]", "task.params.vocab_size=8", "name=probe"],
    )
    assert experiment.train.lr == pytest.approx(3e-4)
    assert experiment.eval.lengths == [8, 16]
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
    layer = resolved["model"]["layers"][0]
    assert layer["mixer"] == {"name": "attention", "heads": 4, "rope": False}
    assert layer["feedforward"] == {"name": "mlp", "ratio": 4}
    assert resolved["model"]["params"]["positional"] == "learned"
    assert resolved["train"]["grad_clip"] == 1.0 and resolved["eval"]["lengths"] == [16]
    digest = experiment.config_hash()
    assert len(digest) == 16 and int(digest, 16) >= 0
    heads = layer["mixer"]["heads"]
    spelled_out = load_experiment(
        example, [f"model.params.heads={heads}", "train.schedule=cosine", "eval.lengths=[16]"]
    )
    assert spelled_out.config_hash() == digest  # a default written out is the same config
    assert load_experiment(example, ["name=label"]).config_hash() == digest
    assert load_experiment(example, ["train.lr=0.002"]).config_hash() != digest
    assert load_experiment(example, ["train.seed=1"]).config_hash() != digest


PINNED_HASH = "31286f6c35ab0713"
"""The hash of the README's documented example. If a change moves it, every stored run is
orphaned (served no more): change it only on purpose, and say so in the commit."""


def test_the_documented_example_has_its_pinned_hash(example: Path) -> None:
    assert load_experiment(example).config_hash() == PINNED_HASH


def test_the_resolved_config_is_a_config_with_the_same_hash(example: Path) -> None:
    for overrides in ([], ["model.params.positional=rope"], ["model.name=hybrid",
                      "model.layers=null", "model.params.mixers=[mamba, attention]"]):
        experiment = load_experiment(example, overrides)
        again = experiment_from_dict(experiment.resolved())
        assert again.config_hash() == experiment.config_hash()
        assert again.resolved() == experiment.resolved()


def _hybrid(layers: list, **params: object) -> Experiment:
    return experiment_from_dict({
        "task": {"name": "index_lookup", "length": 16, "params": {"vocab_size": 16}},
        "model": {"name": "hybrid", "width": 32, "layers": layers, "params": params},
        "train": {"steps": 10, "batch_size": 8, "lr": 1e-3},
    })


def test_each_layer_resolves_its_own_mixer_defaults() -> None:
    """Per-layer resolution: Mamba keeps its d_state 16 beside S4D's 64, and spelling out
    64 for Mamba builds (and hashes as) a different model."""
    implicit = _hybrid(["mamba", "s4d"])
    explicit = _hybrid([{"mixer": {"name": "mamba", "d_state": 64}}, "s4d"])
    states = [layer["mixer"]["d_state"] for layer in implicit.resolved()["model"]["layers"]]
    assert states == [16, 64]
    assert implicit.config_hash() != explicit.config_hash()
    task = implicit.build_task()
    sizes = {e.build_model(task).num_parameters() for e in (implicit, explicit)}
    assert len(sizes) == 2
    assert _hybrid(["mamba", {"mixer": "s4d"}]).config_hash() == implicit.config_hash()


def test_a_keyword_two_mixer_kinds_take_must_be_given_per_layer() -> None:
    with pytest.raises(SepbenchError, match="'d_state' is taken by both mamba and s4d; give it"):
        _hybrid(["mamba", "s4d"], d_state=64)
    routed = _hybrid(["mamba", "attention"], d_state=8, heads=2).resolved()["model"]["layers"]
    assert routed[0]["mixer"]["d_state"] == 8 and routed[1]["mixer"]["heads"] == 2


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([{"mixer": "mamba", "colour": 1}], "unknown layer field 'colour'; allowed: mixer"),
        ([{"mixer": {"name": "mamba", "heads": 2}}], "mixer mamba has no parameter 'heads'"),
        ([{"mixer": "nope"}], "unknown mixer 'nope'; known: "),
        ([{"mixer": "mamba", "feedforward": "big"}], "feedforward must be one of mlp, "),
        ([], "layers must list at least one layer"),
    ],
)
def test_bad_layers_are_one_line(layers: list, message: str) -> None:
    with pytest.raises(SepbenchError, match=message) as caught:
        _hybrid(layers)
    assert "\n" not in str(caught.value)


def test_per_layer_feedforwards_and_positions_build_wens_hybrid() -> None:
    """Wen et al.'s hybrid (papers.md §1): Mamba blocks without MLP, then one attention layer
    with RoPE and SwiGLU; frozen sinusoidal token embeddings, RMSNorm."""
    experiment = _hybrid(
        ["mamba", "mamba", {"mixer": {"name": "attention", "rope": True}, "feedforward": "swiglu"}],
        embedding="frozen_sinusoidal", norm="rmsnorm", positional="none",
    )
    model = experiment.build_model(experiment.build_task())
    assert [b.feedforward is None for b in model.blocks] == [True, True, False]
    assert type(model.blocks[2].feedforward).__name__ == "SwiGLU"
    assert model.blocks[2].mixer.rope and model.positions is None
    assert not model.embedding.weight.requires_grad


def _mamba(layers: int, **model: object) -> Experiment:
    return experiment_from_dict({
        "task": {"name": "index_lookup", "length": 16, "params": {"vocab_size": 16}},
        "model": {"name": "mamba", "width": 32, "layers": layers, **model},
        "train": {"steps": 10, "batch_size": 8, "lr": 1e-3},
    })


def test_params_target_picks_the_closest_depth_and_the_layers_are_the_identity() -> None:
    task = _mamba(1).build_task()
    counts = {d: _mamba(d).build_model(task).num_parameters() for d in range(1, 6)}
    near_four = _mamba(1, params_target=counts[4] + 10)
    assert len(near_four.resolved()["model"]["layers"]) == 4
    assert near_four.config_hash() == _mamba(4).config_hash()
    near_three = _mamba(1, params_target=counts[3] + (counts[4] - counts[3]) // 4)
    assert len(near_three.resolved()["model"]["layers"]) == 3


def test_params_target_can_grow_the_width_instead() -> None:
    task = _mamba(2).build_task()
    target = 3 * _mamba(2).build_model(task).num_parameters()
    widened = _mamba(2, params_target=target, grow="width")
    width = widened.resolved()["model"]["width"]
    achieved = widened.build_model(task).num_parameters()
    for other in (width - 8, width + 8):
        spec = {**widened.resolved()["model"], "width": other}
        neighbour = experiment_from_dict({**widened.resolved(), "model": spec})
        assert abs(achieved - target) <= abs(neighbour.build_model(task).num_parameters() - target)


@pytest.mark.parametrize("field", ["eval.mode", "train.val_mode"])
def test_a_task_that_hands_its_input_in_refuses_free_generation(field: str) -> None:
    section, key = field.split(".")
    config = {
        "task": {"name": "parity", "length": 6, "params": {"cot": "interleaved"}},
        "model": {"name": "lstm", "width": 8, "layers": 1},
        "train": {"steps": 1, "batch_size": 2, "lr": 0.01},
    }
    config.setdefault(section, {})[key] = "generate"
    with pytest.raises(SepbenchError, match=rf"^{field}: parity\(cot=interleaved.*teacher_forced$"):
        experiment_from_dict(config)
