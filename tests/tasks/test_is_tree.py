"""IsTree (src/sepbench/tasks/is_tree.py): graphs, labels, tours, retrieval traces, retriever."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepbench import tasks
from sepbench.errors import SepbenchError

EXAMPLE_EDGES = "3 - 2 5 - 3 4 - 2 7 - 3 3 - 0 6 - 4 3 - 1"
EXAMPLE_TOUR = "0 3 2 4 6 4 2 3 5 3 7 3 1 3 0 [EOS] [TRUE]"


def prompt_ids(task: tasks.Task, edges: str) -> list[int]:
    return task.vocab.ids(["[BOS]", *edges.split(), "[EOS]"])


def edges_of(task: tasks.Task, prompt: np.ndarray) -> list[tuple[int, int]]:
    words = task.vocab.decode(prompt[1:-1])
    return [(int(words[j]), int(words[j + 2])) for j in range(0, len(words), 3)]


def union_find_tree(edges: list[tuple[int, int]], n: int) -> bool:
    """n - 1 edges joining n nodes without a cycle."""
    owner = list(range(n))

    def root(x: int) -> int:
        return x if owner[x] == x else root(owner[x])

    for u, v in edges:
        if root(u) == root(v):
            return False
        owner[root(u)] = root(v)
    return len(edges) == n - 1


def test_published_example() -> None:
    task = tasks.get("is_tree", mode="cot")
    prompt = prompt_ids(task, EXAMPLE_EDGES)
    assert task.check(prompt, task.vocab.ids(EXAMPLE_TOUR.split()))
    edges = edges_of(task, np.array(prompt))
    tour = task._tour([u for u, _ in edges], [v for _, v in edges], 8)
    assert task.vocab.text(tour) == EXAMPLE_TOUR.split(" [EOS]")[0]


@pytest.mark.parametrize("length", [4, 9, 32])
def test_graphs_follow_the_two_star_generator(length: int) -> None:
    task = tasks.get("is_tree")
    batch = task.sample(np.random.default_rng(length), 500, length)
    assert (batch.prompt_lengths == 3 * (length - 1) + 2).all()
    trees = []
    for i in range(len(batch)):
        edges = edges_of(task, batch.prompt(i))
        assert len(edges) == length - 1 and all(u > v >= 0 and u < length for u, v in edges)
        assert len(set(edges)) == length - 1
        degrees = np.bincount(np.array(edges).ravel(), minlength=length)
        assert sorted(degrees)[-3] <= 2  # two star centres; leaves have degree 1 or 2
        trees.append(union_find_tree(edges, length))
    assert [a == "[TRUE]" for a in batch.answers] == trees
    assert 0.4 < np.mean(trees) < 0.6


def test_labels_are_balanced() -> None:
    batch = tasks.get("is_tree").sample(np.random.default_rng(0), 2000, 16)
    assert 0.45 < np.mean([a == "[TRUE]" for a in batch.answers]) < 0.55


def test_tour_has_2n_minus_1_nodes_exactly_for_trees() -> None:
    task = tasks.get("is_tree", mode="cot")
    batch = task.sample(np.random.default_rng(1), 300, 12)
    for i in range(len(batch)):
        tour = task.vocab.decode(batch.completion(i))[:-2]
        if batch.answers[i] == "[TRUE]":
            assert len(tour) == 23 and sorted(set(tour), key=int) == [str(k) for k in range(12)]
            assert tour[0] == tour[-1] == "0"
        else:
            assert len(set(tour)) < 12


def search_calls(task: tasks.Task, prompt: np.ndarray, completion: np.ndarray):
    """(query, result, context) for every search call of a retrieval trace."""
    start, end = task.search_ids
    ids = completion.tolist()
    calls = []
    for j, token in enumerate(ids):
        if token == start:
            close = ids.index(end, j)
            context = [*prompt.tolist(), *ids[: close + 1]]
            calls.append((ids[j + 1 : close], ids[close + 1], context))
    return calls


def test_retrieved_tokens_equal_answer_query_on_the_prefix_and_are_not_trained() -> None:
    task = tasks.get("is_tree", mode="retrieval")
    batch = task.sample(np.random.default_rng(2), 40, 10)
    start, end = task.search_ids
    assert task.vocab.decode([start, end]) == ["[STARTSEARCH]", "[ENDSEARCH]"]
    for i in range(len(batch)):
        completion = batch.completion(i)
        calls = search_calls(task, batch.prompt(i), completion)
        assert len(calls) >= 3
        for query, result, context in calls:
            assert task.answer_query(context, query) == [result]
        trained = batch.loss_mask[i, batch.prompt_lengths[i] : batch.lengths[i]]
        after_end = np.r_[False, completion[:-1] == end]
        np.testing.assert_array_equal(trained, ~after_end)
        assert after_end.sum() == len(calls)


def test_retrieval_steps_walk_the_same_tour_as_cot() -> None:
    cot, retrieval = tasks.get("is_tree", mode="cot"), tasks.get("is_tree", mode="retrieval")
    a = cot.sample(np.random.default_rng(3), 60, 9)
    b = retrieval.sample(np.random.default_rng(3), 60, 9)
    np.testing.assert_array_equal(a.tokens[:, : a.prompt_lengths[0]], b.tokens[:, :26])
    start = retrieval.vocab.id("[STARTSEARCH]")
    for i in range(len(a)):
        completion = b.completion(i)
        trained = b.loss_mask[i, b.prompt_lengths[i] : b.lengths[i]]
        leads = [
            int(t)
            for j, t in enumerate(completion[:-1])
            if trained[j] and completion[j + 1] == start and j and completion[j - 1] != start
        ]
        steps = [int(completion[0]), *leads]
        tour = a.completion(i)[:-2].tolist()
        if a.answers[i] == "[TRUE]":
            assert steps == tour
        assert b.answers[i] == a.answers[i]


def test_root_on_a_cycle_stops_the_retrieval_trace() -> None:
    """Node 0 has no parent record; reaching it from a non-parent is a cycle (papers.md §1)."""
    task = tasks.get("is_tree", mode="retrieval")
    prompt = prompt_ids(task, "1 - 0 2 - 1 2 - 0")
    slots, written = task._search_steps(np.array([[1, 2, 2]]), np.array([[0, 1, 0]]), 4)
    trace = slots[0][written[0]].tolist()
    words = task.vocab.decode(trace)
    assert words[-5:] == ["[STARTSEARCH]", "0", "~", "[ENDSEARCH]", "[FAILED]"]
    assert task.check(prompt, [*trace, *task.vocab.ids(["[EOS]", "[FALSE]"])])
    assert not task.check(prompt, [*trace, *task.vocab.ids(["[EOS]", "[TRUE]"])])
    as_unvisited = task.vocab.ids(["0", "~", "2", "[EOS]", "[FALSE]"])
    assert not task.check(prompt, [*trace, *as_unvisited])


def test_answer_query_forms() -> None:
    task = tasks.get("is_tree", mode="retrieval")
    records = ["0", "3", "~", "0", "2", "~", "3", "0", "~", "5"]  # trace: 3 ~ 0, 2 ~ 3, 0 ~ 5
    context = prompt_ids(task, EXAMPLE_EDGES) + task.vocab.ids(records)

    def ask(query: str) -> str:
        return task.vocab.text(task.answer_query(context, task.vocab.ids(query.split())))

    assert [ask("3 -"), ask("3 - 2"), ask("3 - 7"), ask("3 - 1")] == ["2", "5", "0", "[FAILED]"]
    assert [ask("2 -"), ask("2 - 3"), ask("2 - 4"), ask("6 -")] == ["3", "4", "[FAILED]", "4"]
    assert [ask("3 - 6"), ask("9 -"), ask("9 - 3")] == ["[FAILED]"] * 3
    assert [ask("3 ~"), ask("2 ~"), ask("7 ~"), ask("0 ~")] == ["0", "3", "[FAILED]", "[FAILED]"]


@pytest.mark.parametrize(
    "query",
    ["", "-", "~", "3", "3 3", "3 ~ 2", "3 - [FAILED]", "[FAILED] ~", "3 - 2 5", "- 3", "[EOS]"],
)
def test_answer_query_malformed_gives_failed(query: str) -> None:
    task = tasks.get("is_tree", mode="retrieval")
    context = prompt_ids(task, EXAMPLE_EDGES)
    assert task.answer_query(context, task.vocab.ids(query.split())) == [task.failed]


@settings(max_examples=40, deadline=None)
@given(
    context=st.lists(st.integers(-5, 100), max_size=40),
    query=st.lists(st.integers(-5, 100), max_size=5),
)
def test_answer_query_never_raises(context: list[int], query: list[int]) -> None:
    task = tasks.get("is_tree", mode="retrieval")
    answer = task.answer_query(context, query)
    assert len(answer) == 1 and 0 < answer[0] < len(task.vocab)


@settings(max_examples=30, deadline=None)
@given(
    mode=st.sampled_from(["none", "cot", "retrieval"]),
    length=st.integers(4, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_check_accepts_every_stored_completion(mode: str, length: int, seed: int) -> None:
    task = tasks.get("is_tree", mode=mode)
    batch = task.sample(np.random.default_rng(seed), 8, length)
    for i in range(len(batch)):
        assert task.check(batch.prompt(i), batch.completion(i))
        assert (batch.lengths[i] - batch.prompt_lengths[i]) <= task.completion_cap(length)


def test_mode_and_max_nodes_take_effect() -> None:
    lengths = {
        mode: tasks.get("is_tree", mode=mode).sample(np.random.default_rng(0), 4, 8).lengths
        for mode in ("none", "cot", "retrieval")
    }
    assert (lengths["none"] == 24).all()
    assert (lengths["none"] < lengths["cot"]).all() and (
        lengths["cot"] < lengths["retrieval"]
    ).all()
    small = tasks.get("is_tree", max_nodes=8)
    assert small.max_length() == 8 and "7" in small.vocab and "8" not in small.vocab
    with pytest.raises(SepbenchError, match="length"):
        small.sample(np.random.default_rng(0), 2, 9)
    assert tasks.get("is_tree").search_ids is None
    assert tasks.get("is_tree", mode="retrieval").search_ids is not None


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"mode": "bfs"}, "mode"),
        ({"max_nodes": 3}, "max_nodes"),
        ({"max_nodes": 1000}, "max_nodes"),
    ],
)
def test_bad_parameters_raise_one_line(params: dict, word: str) -> None:
    with pytest.raises(SepbenchError, match=word) as error:
        tasks.get("is_tree", **params)
    assert "\n" not in str(error.value)


def test_check_rejects_malformed_prompts() -> None:
    task = tasks.get("is_tree", mode="cot")
    completion = task.vocab.ids(EXAMPLE_TOUR.split())
    assert not task.check(prompt_ids(task, "3 - 2 5 - 3"), completion)
    assert not task.check(prompt_ids(task, "3 ~ 2 5 - 3 4 - 2 7 - 3 3 - 0 6 - 4 3 - 1"), completion)
    assert not task.check(prompt_ids(task, "9 - 2 5 - 3 4 - 2 7 - 3 3 - 0 6 - 4 3 - 1"), completion)
    assert not task.check(prompt_ids(task, EXAMPLE_EDGES)[1:], completion)


def test_retrieval_traces_at_the_papers_largest_size_pass_the_checker() -> None:
    """N = 64 (papers.md §1): the lockstep generator against the checker's replay."""
    task = tasks.get("is_tree", mode="retrieval")
    batch = task.sample(np.random.default_rng(7), 6, 64)
    for i in range(len(batch)):
        assert task.check(batch.prompt(i), batch.completion(i))
    trees = [i for i in range(len(batch)) if batch.answers[i] == "[TRUE]"]
    assert trees and all(batch.lengths[i] - batch.prompt_lengths[i] > 1000 for i in trees)
