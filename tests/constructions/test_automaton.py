"""The automata of Dyck, parity and counting, and their compilation into RNNs (papers.md §2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sepbench import constructions, evaluate, tasks
from sepbench.constructions.automaton import automaton_for
from sepbench.errors import SepbenchError
from tests.constructions.helpers import chunked_matches_whole, prompt_tokens, test_accuracy

INSTANCES = [
    ("dyck", {}),
    ("dyck", {"num_types": 1, "max_depth": 4}),
    ("parity", {}),
    ("counting", {"vocab_size": 3}),
]


@pytest.mark.parametrize(("name", "params"), INSTANCES)
def test_the_automaton_predicts_every_completion_token(name: str, params: dict) -> None:
    """Fed prompt and completion, the automaton's prediction at each completion position is
    the next token, which the task's own independent checker accepts."""
    task = tasks.get(name, **params)
    automaton = automaton_for(task, 12)
    batch = task.sample(np.random.default_rng(3), 200, 12)
    for i in range(len(batch)):
        tokens = batch.tokens[i, : batch.lengths[i]].tolist()
        start = int(batch.prompt_lengths[i])
        predicted = automaton.predictions(tokens)[start - 1 : len(tokens) - 1]
        assert predicted == tokens[start:]
        assert task.check(tokens[:start], predicted)


def test_dyck_2_2_has_the_papers_seven_states_and_bounded_counting_is_dyck_1() -> None:
    assert len(automaton_for(tasks.get("dyck"), 8).names) == 7
    counter = automaton_for(tasks.get("dyck", num_types=1, max_depth=5), 8)
    assert sorted(len(stack) for stack in counter.names) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(("task_name", "width"), [("dyck", 12), ("parity", 4)])
def test_100_percent_at_length_10000_with_a_width_independent_of_n(
    task_name: str, width: int
) -> None:
    task = tasks.get(task_name)
    batch = task.sample(np.random.default_rng(5), 24, 10_000)
    for name in ("dfa_elman", "dfa_lstm"):
        model = constructions.build(name, task, 10_000)
        assert model.width == constructions.build(name, task, 10).width == width
        assert evaluate.accuracy(model, task, batch) == 1.0
        assert model.certificate()["certified"]


@pytest.mark.parametrize(
    "knobs",
    [{"activation": "step"}, {"activation": "tanh"}, {"activation": "tanh", "precision": 3}],
)
def test_every_elman_cell_is_certified_and_right(knobs: dict) -> None:
    task = tasks.get("dyck")
    model = constructions.build("dfa_elman", task, 40, **knobs)
    assert model.certificate()["certified"]
    assert test_accuracy(model, task, 40, 300, mode="generate") == 1.0


def test_the_fused_kernel_matches_the_step_by_step_reference() -> None:
    task = tasks.get("parity")
    tokens = prompt_tokens(task, 30, 8)
    for name in ("dfa_elman", "dfa_lstm"):
        knobs = {"activation": "tanh"} if name == "dfa_elman" else {}
        model = constructions.build(name, task, 30, **knobs)
        with torch.no_grad():
            fused, _ = model(tokens)
            hidden, _ = model.stepwise(tokens, model.initial_state(len(tokens), tokens.device))
        reference = model.decode(hidden) @ model.readout.T + model.readout_bias
        torch.testing.assert_close(fused, reference)
        chunked_matches_whole(model, tokens, [5, 1, 25])


def test_the_running_state_is_the_trace_a_chain_of_thought_writes() -> None:
    """Zhang et al. §3: the parity CoT writes the running parity, the Dyck CoT the stack."""
    parity = tasks.get("parity", cot=True)
    batch = parity.sample(np.random.default_rng(0), 6, 20)
    model = constructions.build("dfa_elman", tasks.get("parity"), 20)
    states = model.states(torch.from_numpy(batch.tokens[:, :20]))
    for i, running in enumerate(states):
        written = parity.vocab.decode(batch.tokens[i, 21:41])
        assert [("1" if odd else "0") for odd in running] == written
    dyck = tasks.get("dyck", cot=True)
    batch = dyck.sample(np.random.default_rng(0), 6, 12)
    model = constructions.build("dfa_lstm", tasks.get("dyck"), 12)
    for row, stacks in zip(batch.tokens, model.states(torch.from_numpy(batch.tokens[:, :12]))):
        opens = "([{<"
        written = []
        for stack in stacks:
            if stack is None:
                break
            written += [opens[t] for t in stack] or ["[EMPTY]"]
            written.append("|")
        assert dyck.vocab.decode(row[12 : 12 + len(written)]) == written


def test_counting_is_exact_up_to_its_bound_and_grows_with_it() -> None:
    task = tasks.get("counting", vocab_size=2)
    exact = constructions.build("dfa_elman", task, 24)
    assert test_accuracy(exact, task, 24, 200, mode="generate") == 1.0
    short = constructions.build("dfa_elman", task, 24, bound=4)
    assert test_accuracy(short, task, 24, 200) < 0.2
    assert short.width < exact.width < constructions.build("dfa_elman", task, 48).width


def test_formats_no_automaton_can_read_are_refused_in_one_line() -> None:
    with pytest.raises(SepbenchError, match="cot or filler writes its trace after the whole"):
        constructions.build("dfa_elman", tasks.get("parity", cot=True), 8)
    with pytest.raises(SepbenchError, match="bound applies to counting only"):
        constructions.build("dfa_lstm", tasks.get("parity"), 8, bound=3)
    with pytest.raises(SepbenchError, match="more units than 8192; lower the bound"):
        constructions.build("dfa_elman", tasks.get("counting", vocab_size=8), 300)
    with pytest.raises(SepbenchError, match="activation must be one of step, tanh"):
        constructions.build("dfa_elman", tasks.get("parity"), 8, activation="relu")
