"""Sweep specs: grids, variants, seeds, smoke, extends, and one-line errors for bad specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sepbench.errors import SepbenchError
from sepbench.sweep_spec import expand, load, preset_names

SPEC = """\
base:
  task: {name: index_lookup, length: 8, params: {vocab_size: 8}}
  model: {name: transformer, width: 16, layers: 1}
  train: {steps: 10, batch_size: 8, lr: 0.001}
grid:
  variants:
    - {model.name: transformer}
    - {model.name: lstm, train.lr: 0.003}
  task.length: [8, 12]
smoke:
  train.steps: 2
  task.length: [8]
claims:
  - {text: "a claim", metric: test_accuracy}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def settings(experiments: list) -> list[tuple]:
    return [(e.model.name, e.task.length, e.train.lr, e.train.steps, e.train.seed)
            for e in experiments]


def test_the_grid_product_with_variants(tmp_path: Path) -> None:
    spec = load(write(tmp_path, "s.yaml", SPEC))
    assert settings(expand(spec)) == [
        ("transformer", 8, 0.001, 10, 0), ("transformer", 12, 0.001, 10, 0),
        ("lstm", 8, 0.003, 10, 0), ("lstm", 12, 0.003, 10, 0),
    ]
    assert spec.claims == [{"text": "a claim", "metric": "test_accuracy"}]


def test_smoke_replaces_axes_and_sets_fields_and_seeds_add_an_axis(tmp_path: Path) -> None:
    spec = load(write(tmp_path, "s.yaml", SPEC))
    assert settings(expand(spec, smoke=True)) == [
        ("transformer", 8, 0.001, 2, 0), ("lstm", 8, 0.003, 2, 0),
    ]
    seeded = settings(expand(spec, smoke=True, seeds=3))
    assert [s[-1] for s in seeded] == [0, 1, 2, 0, 1, 2]
    with pytest.raises(SepbenchError, match="--seeds must be an integer >= 1, got 0"):
        expand(spec, seeds=0)


def test_extends_overrides_base_grid_and_claims(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", SPEC)
    child = write(tmp_path, "child.yaml", """\
extends: parent.yaml
base: {train: {steps: 40}}
grid: {task.length: null, train.seed: [0, 1]}
claims: []
""")
    spec = load(child)
    assert spec.base["train"] == {"steps": 40, "batch_size": 8, "lr": 0.001}
    assert spec.base["model"]["width"] == 16 and spec.claims == []
    assert set(spec.grid) == {"variants", "train.seed"}
    assert len(expand(spec)) == 4


def test_a_variant_may_set_a_whole_section_that_other_axes_refine(tmp_path: Path) -> None:
    text = SPEC.replace("  task.length: [8, 12]\n", "") .replace(
        "grid:\n", "grid:\n  model.width: [8, 24]\n"
    )
    text = text.replace("{model.name: lstm, train.lr: 0.003}",
                        "{model: {name: lstm, width: 16, layers: 2}}")
    widths = [(e.model.name, e.model.width, e.model.layers) for e in expand(load(
        write(tmp_path, "s.yaml", text)))]
    assert widths == [("transformer", 8, 1), ("lstm", 8, 2), ("transformer", 24, 1),
                      ("lstm", 24, 2)]


def test_every_preset_loads_and_expands(tmp_path: Path) -> None:
    for name in preset_names():
        assert expand(load(name), smoke=True), name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: {task: [\n", "is not valid YAML"),
        ("grid: {}\n", "needs a 'base' experiment"),
        (SPEC + "colour: red\n", "colour: unknown field; allowed: base, grid, smoke, claims"),
        (SPEC.replace("task.length: [8, 12]", "task.length: 8"), "grid.task.length: must be"),
        (SPEC.replace("task.length: [8, 12]", "task.length: []"), "must be a non-empty list"),
        (SPEC.replace("task.length: [8, 12]", "train.lr.x: [1]"),
         "sweep grid train.lr.x: train.lr is not a section"),
        (SPEC.replace("task.length: [8, 12]", "model.width: [0]"),
         "grid point {model.name=transformer, model.width=0}: model.width: must be"),
        ("extends: loop.yaml\n", "extends itself through loop.yaml"),
        ("extends: absent.yaml\n", "no such file"),
    ],
)
def test_a_bad_spec_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "loop.yaml", text)
    with pytest.raises(SepbenchError) as caught:
        expand(load(path))
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    ("select", "message"),
    [
        ("{over: [train.lr], by: test_accuracy}",
         "select.by: must be 'best_val_accuracy' or 'final_val_accuracy'; got 'test_accuracy'"),
        ("{over: []}", "select.over: List should have at least 1 item"),
        ("{over: [train.learning_rate]}",
         "select.over: 'train.learning_rate' is not a field of the sweep's experiments"),
    ],
)
def test_a_bad_selection_is_one_line(tmp_path: Path, select: str, message: str) -> None:
    path = write(tmp_path, "spec.yaml", SPEC + f"select: {select}\n")
    with pytest.raises(SepbenchError) as caught:
        spec = load(path)
        spec.selection(expand(spec))
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_a_selection_names_its_fields_and_score(tmp_path: Path) -> None:
    spec = load(write(tmp_path, "spec.yaml", SPEC + "select: {over: [train.lr]}\n"))
    selection = spec.selection(expand(spec))
    assert (selection.over, selection.by) == (("train.lr",), "best_val_accuracy")
    assert load(write(tmp_path, "plain.yaml", SPEC)).selection([]) is None
