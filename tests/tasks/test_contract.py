"""The Task contract, checked for every registered task (../shared/design.md, "Contracts").

Each task runs at its minimum length and at a moderate one, and in every documented mode
(CoT, retrieval, variants), so a mode that breaks the contract cannot hide behind the defaults.
"""

from __future__ import annotations

import numpy as np
import pytest

from sepbench import tasks
from sepbench.errors import SepbenchError
from sepbench.evaluate import accuracy
from tests.test_evaluate import oracle

# Extra configurations beyond the defaults: every mode a task documents.
MODES: dict[str, list[dict]] = {
    "string_equality": [{"variant": "one_off"}, {"variant": "copy"}],
    "dyck": [
        {"cot": True},
        {"num_types": 3, "max_depth": 4},
        {"max_depth": None, "cot": True, "trace": "depth"},
        {"max_depth": "none", "cot": True},
        {"max_depth": None, "filler": True, "trace": "depth"},
        {"filler": True, "train_lengths": "uniform"},
    ],
    "is_tree": [{"mode": "cot"}, {"mode": "retrieval"}],
    "counting": [{"cot": True}, {"filler": True}],
    "reversal": [{"cot": True}, {"cot": True, "trace": "full"}, {"filler": True}],
    "multiplication": [{"cot": True}, {"cot": True, "trace": "full"}, {"filler": True}],
    "parity": [{"cot": True}, {"filler": True}, {"cot": "interleaved"}, {"filler": "interleaved"}],
    "state_tracking": [
        {"cot": True}, {"filler": True}, {"cot": "interleaved"}, {"filler": "interleaved"},
    ],
    "associative_recall": [{"num_queries": 4}, {"mode": "retrieval", "num_queries": 3}],
    "index_lookup": [{"last_queries": 0.25}, {"mode": "retrieval", "last_queries": 0.25}],
}


def configurations() -> list[tuple[str, dict]]:
    return [(name, params) for name in tasks.names() for params in [{}, *MODES.get(name, [])]]


def config_id(config: tuple[str, dict]) -> str:
    name, params = config
    return name + "".join(f"-{k}={v}" for k, v in params.items())


CONFIGS = configurations()


def lengths_for(task: tasks.Task) -> list[int]:
    top = task.max_length()
    moderate = max(task.min_length, 12)
    if top is not None:
        moderate = min(moderate, top)
    return sorted({task.min_length, moderate})


def test_twelve_tasks_registered() -> None:
    expected = {
        "index_lookup", "associative_recall", "dyck", "string_equality", "disjointness",
        "nearest_neighbor", "is_tree", "counting", "reversal", "multiplication", "parity",
        "state_tracking",
    }
    assert expected <= set(tasks.names())


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_batch_shapes_and_loss_mask_cover_the_completion(config: tuple[str, dict]) -> None:
    name, params = config
    task = tasks.get(name, **params)
    for length in lengths_for(task):
        batch = task.sample(np.random.default_rng(1), 16, length)
        assert batch.tokens.dtype == np.int64 and batch.tokens.shape == batch.loss_mask.shape
        assert len(batch) == 16 and len(batch.answers) == 16
        for i in range(len(batch)):
            start, end = batch.prompt_lengths[i], batch.lengths[i]
            assert 0 < start < end <= batch.tokens.shape[1]
            assert not batch.loss_mask[i, :start].any() and not batch.loss_mask[i, end:].any()
            assert (batch.tokens[i, end:] == 0).all() and (batch.tokens[i, :end] != 0).all()
            given = ~batch.loss_mask[i, start:end]
            if getattr(task, "interleaved", False):  # the inputs x_2 .. x_N and "=" are given
                handed_in = np.arange(end - start) % 2 == 1
                handed_in[2 * length :] = False
                np.testing.assert_array_equal(given, handed_in)
            elif task.search_ids is None:
                assert not given.any()
            else:  # only the token right after each search-end token is handed in
                completion = batch.tokens[i, start:end]
                after_end = np.r_[False, completion[:-1] == task.search_ids[1]]
                np.testing.assert_array_equal(given, after_end)
            assert end - start <= task.completion_cap(length)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_check_accepts_stored_and_rejects_corrupted(config: tuple[str, dict]) -> None:
    name, params = config
    task = tasks.get(name, **params)
    rng = np.random.default_rng(2)
    vocab_size = len(task.vocab)
    for length in lengths_for(task):
        batch = task.sample(rng, 24, length)
        for i in range(len(batch)):
            prompt, completion = batch.prompt(i), batch.completion(i).copy()
            assert task.check(prompt, completion), task.vocab.text(completion)
            trained = np.flatnonzero(batch.loss_mask[i, batch.prompt_lengths[i] : batch.lengths[i]])
            position = rng.choice(trained)
            wrong = completion.copy()
            wrong[position] = (completion[position] - 1 + rng.integers(1, vocab_size - 1)) % (
                vocab_size - 1
            ) + 1  # any other non-pad token
            assert wrong[position] != completion[position]
            assert not task.check(prompt, wrong), task.vocab.text(wrong)
            assert not task.check(prompt, np.r_[completion, completion[-1:]])
            assert not task.check(prompt, completion[:-1])


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_free_generation_of_the_stored_completion_stops_and_is_accepted(
    config: tuple[str, dict],
) -> None:
    """A model that writes the stored completion and then garbage is right in generate mode:
    decoding stops by itself (a stop token, or the cap when the length is fixed). A task that
    hands its input in inside the completion refuses generation instead."""
    name, params = config
    task = tasks.get(name, **params)
    for length in lengths_for(task):
        batch = task.sample(np.random.default_rng(4), 4, length)
        model = oracle(batch, len(task.vocab))
        if not task.generates:
            with pytest.raises(SepbenchError, match="score it teacher_forced"):
                accuracy(model, task, batch, "generate", length=length)
            continue
        assert accuracy(model, task, batch, "generate", length=length) == 1.0


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_check_never_raises_on_junk(config: tuple[str, dict]) -> None:
    name, params = config
    task = tasks.get(name, **params)
    rng = np.random.default_rng(3)
    batch = task.sample(rng, 4, task.min_length)
    for i in range(len(batch)):
        for junk in ([], [0], rng.integers(0, len(task.vocab), size=30).tolist()):
            assert task.check(batch.prompt(i), junk) in (True, False)
            assert task.answer_check(batch.prompt(i), junk) in (True, False)
        assert task.check([], batch.completion(i)) in (True, False)
        assert task.answer_check([], batch.completion(i)) in (True, False)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_final_answer_is_the_stored_answer_and_ignores_the_trace(config: tuple[str, dict]) -> None:
    """``answer_check`` accepts the stored completion, rejects another prompt's answer, and
    (with a trace) accepts a corrupted trace before the right answer, which ``check`` rejects."""
    name, params = config
    task = tasks.get(name, **params)
    rng = np.random.default_rng(4)
    trace_corrupted = 0
    for length in lengths_for(task):
        batch = task.sample(rng, 24, length)
        for i in range(len(batch)):
            prompt, completion = batch.prompt(i), batch.completion(i)
            assert task.final_answer(completion) == batch.answers[i]
            assert task.answer_check(prompt, completion)
            other = next((j for j in range(len(batch)) if batch.answers[j] != batch.answers[i]), i)
            if other != i and len(batch.prompt(other)) == len(prompt) and task.generates:
                assert not task.answer_check(batch.prompt(other), completion)
            if not task.traced:
                continue
            if task.generates:  # (interleaved: the prompt holds the first input only)
                assert task.solution(prompt) == batch.answers[i]
            wrong = next(trace_corruptions(task, completion, batch.answers[i]), None)
            if wrong is not None:
                assert task.answer_check(prompt, wrong) and not task.check(prompt, wrong)
                trace_corrupted += 1
    assert trace_corrupted > 0 or not task.traced


def trace_corruptions(task: tasks.Task, completion: np.ndarray, answer: str):
    """Completions with one token changed that keep the final answer (a corrupted trace)."""
    for position in range(len(completion)):
        for token in range(1, len(task.vocab)):
            wrong = completion.copy()
            wrong[position] = token
            if token != completion[position] and task.final_answer(wrong) == answer:
                yield wrong


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_seed_determines_the_data(config: tuple[str, dict]) -> None:
    name, params = config
    task = tasks.get(name, **params)
    length = lengths_for(task)[-1]

    def draw(seed: int, train: bool = False) -> tasks.Batch:
        return task.sample(np.random.default_rng(seed), 32, length, train=train)

    for train in (False, True):
        first, again, other = draw(5, train), draw(5, train), draw(6, train)
        np.testing.assert_array_equal(first.tokens, again.tokens)
        np.testing.assert_array_equal(first.loss_mask, again.loss_mask)
        assert first.answers == again.answers
        assert first.tokens.shape != other.tokens.shape or (first.tokens != other.tokens).any()


@pytest.mark.parametrize("name", tasks.names())
def test_bad_parameters_fail_with_one_line(name: str) -> None:
    with pytest.raises(SepbenchError, match="unknown parameter 'no_such_param'") as error:
        tasks.get(name, no_such_param=1)
    assert "\n" not in str(error.value)
    task = tasks.get(name)
    with pytest.raises(SepbenchError, match="length") as error:
        task.sample(np.random.default_rng(0), 2, task.min_length - 1)
    assert "\n" not in str(error.value)


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(SepbenchError, match=r"known: .*index_lookup"):
        tasks.get("no_such_task")


@pytest.mark.parametrize("name", tasks.names())
def test_task_documents_itself(name: str) -> None:
    cls = tasks.base.task_class(name)
    for attribute in ("paper", "summary", "length_meaning"):
        assert getattr(cls, attribute).strip()
    assert "§" in cls.paper
    assert cls.__doc__ and len(cls.__doc__) > 100
