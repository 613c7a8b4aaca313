"""The recurrence-completeness probe preset (papers.md §3): the grid it promises, valid configs,
and no position table that the test lengths would run past."""

from __future__ import annotations

from collections import Counter

from sepbench import sweep_spec
from sepbench.models.base import MIXERS

COMPLETE_OR_BLOCK = {
    "lstm", "recurrent_transformer", "feedback_transformer", "recurrent_memory_transformer",
    "block_recurrent_transformer",
}
LINEAR_OR_NONE = {"linear_attention", "transformer", "universal_transformer"}


def test_probe_runs_every_model_on_both_tasks_with_two_seeds() -> None:
    experiments = sweep_spec.expand(sweep_spec.load("recurrence-probe"))
    runs = Counter((e.task.name, e.model.name) for e in experiments)
    models = COMPLETE_OR_BLOCK | LINEAR_OR_NONE
    assert set(runs) == {(task, m) for task in ("parity", "state_tracking") for m in models}
    assert set(runs.values()) == {2}
    for experiment in experiments:
        mixer = "attention" if experiment.model.name == "transformer" else experiment.model.name
        expected = "complete block" if experiment.model.name in COMPLETE_OR_BLOCK else "linear none"
        assert MIXERS[mixer].recurrence in expected.split()
        assert experiment.model.params["positional"] in ("rope", "none")
        assert not experiment.task.params.get("cot") and not experiment.task.params.get("filler")
        assert max(experiment.eval_lengths) >= 5 * experiment.task.length
        assert experiment.eval.length_generalisation is not None  # ood_accuracy is stored
        assert experiment.train.train_lengths == "task"  # ~ U{1..N}: trained short


def test_probe_claims_name_every_model_by_its_class() -> None:
    claims = sweep_spec.load("recurrence-probe").claims
    named = {(c["where"]["task.name"], m, c["op"]) for c in claims for m in c["where"]["model"]}
    for task in ("parity", "state_tracking"):
        assert {m for t, m, op in named if t == task and op == ">="} == COMPLETE_OR_BLOCK
        assert {m for t, m, op in named if t == task and op == "<="} == LINEAR_OR_NONE


def test_probe_smoke_is_one_seed_of_the_same_grid() -> None:
    smoke = sweep_spec.expand(sweep_spec.load("recurrence-probe"), smoke=True)
    assert len(smoke) == 16 and all(e.train.steps <= 4 for e in smoke)
