"""The mixer contract checker (``sepbench check-mixer``) and mixers named by import path."""

from __future__ import annotations

from pathlib import Path

import pytest

from sepbench.config import experiment_from_dict
from sepbench.errors import SepbenchError
from sepbench.mixer_check import check_mixer
from sepbench.models.base import MIXERS

from .test_cli import sepbench

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GATED = f"{EXAMPLES}/gated_linear_recurrence.py:GatedLinearRecurrence"
WINDOW = f"{EXAMPLES}/sliding_window_attention.py:SlidingWindowAttention"
NONCAUSAL = f"{EXAMPLES}/noncausal_mixer.py:ChunkMeanMixer"


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_every_registered_mixer_keeps_the_contract(name: str) -> None:
    params = {"depth": 2} if MIXERS[name].stack else {}  # a whole multi-layer design
    checks = check_mixer(name, params, learn=False)
    assert all(check.passed for check in checks), [c for c in checks if not c.passed]


@pytest.mark.parametrize("path", [GATED, WINDOW])
def test_the_example_mixers_pass_every_check(path: str) -> None:
    checks = check_mixer(path)
    assert len(checks) == 6 and all(c.passed for c in checks), checks


def test_a_non_causal_mixer_fails_with_the_size_of_the_leak() -> None:
    failed = {c.name.split(":")[0]: c.measured for c in check_mixer(NONCAUSAL) if not c.passed}
    assert set(failed) == {
        "causal", "whole = chunked = token-by-token",
        "learns a 4-symbol copy task (2 layers, width 32, 300 steps)",
    }
    assert "max change before position 12: " in failed["causal"]
    assert float(failed["causal"].rsplit(" ", 1)[1]) > 1e-2


def test_the_cli_prints_the_checklist_and_exits_1_on_a_failure() -> None:
    failing = sepbench("check-mixer", NONCAUSAL)
    assert failing.returncode == 1 and "✗ causal" in failing.stdout
    assert "✓ output shape" in failing.stdout and "3 of 6 checks passed" in failing.stdout
    bad = sepbench("check-mixer", "no_such_module:Thing")
    assert bad.returncode == 2 and "could not import no_such_module" in bad.stderr
    assert "\n" not in bad.stderr.strip()


def _experiment(model: dict) -> dict:
    return {
        "task": {"name": "index_lookup", "length": 8, "params": {"vocab_size": 8}},
        "model": model,
        "train": {"steps": 2, "batch_size": 4, "lr": 1e-3},
    }


def test_a_config_may_name_a_mixer_by_import_path() -> None:
    experiment = experiment_from_dict(_experiment(
        {"width": 16, "layers": [{"mixer": {"name": WINDOW, "window": 4}}, "lstm"]}
    ))
    layers = experiment.resolved()["model"]["layers"]
    assert layers[0]["mixer"] == {"name": WINDOW, "heads": 4, "window": 4}
    model = experiment.build_model(experiment.build_task())
    assert model.positions is not None  # the class says it needs positions
    other = experiment_from_dict(_experiment(
        {"width": 16, "layers": [{"mixer": {"name": WINDOW, "window": 8}}, "lstm"]}
    ))
    assert other.config_hash() != experiment.config_hash()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_module:Thing", "could not import no_such_module (ModuleNotFoundError"),
        (f"{EXAMPLES}/absent.py:Thing", "no such file"),
        (f"{EXAMPLES}/noncausal_mixer.py:Absent", "has no class 'Absent'"),
    ],
)
def test_a_bad_import_path_is_one_line(name: str, message: str) -> None:
    with pytest.raises(SepbenchError) as caught:
        experiment_from_dict(_experiment({"name": name, "width": 16, "layers": 1}))
    assert message in str(caught.value) and "\n" not in str(caught.value)
