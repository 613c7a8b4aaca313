"""Retrieval tasks (src/sepbench/tasks/retrieval.py): index lookup, associative recall, nearest
neighbour. Answers are re-derived here from the decoded token strings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepbench import tasks
from sepbench.errors import SepbenchError

S, E, F = "[STARTSEARCH]", "[ENDSEARCH]", "[FAILED]"


def decoded(task: tasks.Task, batch: tasks.Batch, i: int) -> tuple[list[str], list[str]]:
    return task.vocab.decode(batch.prompt(i)), task.vocab.decode(batch.completion(i))


# -- index lookup ---------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(vocab_size=st.integers(2, 100), length=st.integers(1, 60), seed=st.integers(0, 2**32 - 1))
def test_index_lookup_answers_the_symbol_at_the_position(
    vocab_size: int, length: int, seed: int
) -> None:
    task = tasks.get("index_lookup", vocab_size=vocab_size, max_length=60)
    batch = task.sample(np.random.default_rng(seed), 8, length)
    for i in range(len(batch)):
        prompt, completion = decoded(task, batch, i)
        *symbols, query = prompt
        assert len(symbols) == length and query.startswith("@")
        assert all(s.startswith("a") and int(s[1:]) < vocab_size for s in symbols)
        position = int(query[1:])
        assert 1 <= position <= length
        assert completion == [symbols[position - 1]] and batch.answers[i] == symbols[position - 1]
        assert task.check(batch.prompt(i), batch.completion(i))


def test_index_lookup_training_lengths_cover_ten_to_n_and_positions_stay_inside() -> None:
    task = tasks.get("index_lookup")
    batch = task.sample(np.random.default_rng(0), 2000, 30, train=True)
    symbols = batch.prompt_lengths - 1
    assert set(symbols.tolist()) == set(range(10, 31))
    for i in range(len(batch)):
        assert int(task.vocab.decode(batch.prompt(i))[-1][1:]) <= symbols[i]
    short = task.train_lengths(np.random.default_rng(0), 500, 6)
    assert set(short.tolist()) == set(range(1, 7))


def queried_positions(task: tasks.Task, batch: tasks.Batch) -> np.ndarray:
    return batch.tokens[np.arange(len(batch)), batch.prompt_lengths - 1] - task.vocab.id("@1") + 1


def test_index_lookup_last_queries_reach_the_tail_and_keep_the_lengths() -> None:
    rng, length, n = np.random.default_rng(0), 40, 40_000
    paper = tasks.get("index_lookup", max_length=length)
    mixed = tasks.get("index_lookup", max_length=length, last_queries=0.25)
    skewed = np.bincount(queried_positions(paper, paper.sample(rng, n, length, train=True)))
    assert skewed[length] < 0.05 * skewed[1]  # the paper's p ~ U{1..k} starves the tail
    batch = mixed.sample(rng, n, length, train=True)
    positions, symbols = queried_positions(mixed, batch), batch.prompt_lengths - 1
    at_end = positions == symbols
    assert 0.25 < at_end.mean() < 0.25 + 0.75 * 0.05  # plus the paper's own p = k draws
    assert np.bincount(positions)[length] > 0.8 * 0.25 * n / 31  # a quarter of the k = N rows
    counts = np.bincount(symbols, minlength=length + 1)[10:]
    assert counts.min() > 0.85 * n / 31 and counts.max() < 1.15 * n / 31  # k ~ U{10..N}
    assert all(mixed.check(batch.prompt(i), batch.completion(i)) for i in range(300))
    assert all(batch.answers[i] == mixed.vocab.decode(batch.completion(i))[0] for i in range(300))
    test = mixed.sample(np.random.default_rng(1), 4000, length)  # test batches are untouched
    expected = paper.sample(np.random.default_rng(1), 4000, length)
    assert np.array_equal(test.tokens, expected.tokens)
    with pytest.raises(SepbenchError, match=r"last_queries must be a fraction in \[0, 1\]"):
        tasks.get("index_lookup", last_queries=1.5)
    with pytest.raises(SepbenchError, match="last_queries must be a fraction"):
        tasks.get("index_lookup", last_queries="half")


def test_index_lookup_positions_are_uniform_and_parameters_take_effect() -> None:
    task = tasks.get("index_lookup", vocab_size=5, max_length=40)
    assert task.max_length() == 40 and len(task.vocab) == 1 + 5 + 40
    batch = task.sample(np.random.default_rng(1), 3000, 40)
    positions = batch.tokens[:, 40] - task.vocab.id("@1")
    assert set(positions.tolist()) == set(range(40))
    symbols = set(task.vocab.ids(f"a{i}" for i in range(5)))
    assert set(batch.tokens[:, :40].ravel().tolist()) == symbols
    with pytest.raises(SepbenchError, match=r"length must be in \[1, 40\]"):
        task.sample(np.random.default_rng(0), 2, 41)
    with pytest.raises(SepbenchError, match="vocab_size"):
        tasks.get("index_lookup", vocab_size=1)


def test_index_lookup_retrieval_searches_the_position_then_copies_the_symbol() -> None:
    plain = tasks.get("index_lookup", max_length=30, last_queries=0.5)
    task = tasks.get("index_lookup", max_length=30, last_queries=0.5, mode="retrieval")
    assert task.vocab.tokens == (*plain.vocab.tokens, S, E, F) and plain.search_ids is None
    assert task.search_ids == tuple(task.vocab.ids([S, E])) and task.completion_cap(30) == 5
    for train in (False, True):
        batch = task.sample(np.random.default_rng(0), 200, 30, train=train)
        same = plain.sample(np.random.default_rng(0), 200, 30, train=train)
        assert batch.answers == same.answers
        for i in range(len(batch)):
            prompt, completion = decoded(task, batch, i)
            assert prompt == plain.vocab.decode(same.prompt(i))
            assert completion == [S, prompt[-1], E, same.answers[i], same.answers[i]]
            trained = batch.loss_mask[i, batch.prompt_lengths[i] : batch.lengths[i]]
            assert trained.tolist() == [True, True, True, False, True]
            assert task.check(batch.prompt(i), batch.completion(i))


def test_index_lookup_retriever_reads_the_leading_symbols_only() -> None:
    task = tasks.get("index_lookup", max_length=8, mode="retrieval")
    context = task.vocab.ids(["a3", "a1", "a4", "@2", S, "@2", E])

    def ask(query: str) -> str:
        return task.vocab.text(task.answer_query(context, task.vocab.ids(query.split())))

    assert [ask("@1"), ask("@2"), ask("@3")] == ["a3", "a1", "a4"]
    assert [ask("@4"), ask("@8"), ask("a1"), ask("@1 @2"), ask(""), ask(E)] == [F] * 6
    assert not task.check(context[:4], task.vocab.ids([S, "@3", E, "a4", "a1"]))
    assert task.check(context[:4], task.vocab.ids([S, "@2", E, "a1", "a1"]))
    assert task.answer_check(context[:4], task.vocab.ids(["a1"]))  # answered without searching
    assert not task.answer_check(context[:4], task.vocab.ids([S, "@2", E, "a1", "a3"]))


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(["index_lookup", "associative_recall"]),
    context=st.lists(st.integers(-5, 300), max_size=40),
    query=st.lists(st.integers(-5, 300), max_size=4),
)
def test_retrievers_never_raise(name: str, context: list[int], query: list[int]) -> None:
    task = tasks.get(name, mode="retrieval")
    answer = task.answer_query(context, query)
    assert len(answer) == 1 and 0 < answer[0] < len(task.vocab)


def test_retrieval_mode_is_checked() -> None:
    for name in ("index_lookup", "associative_recall"):
        with pytest.raises(SepbenchError, match="mode") as error:
            tasks.get(name, mode="cot")
        assert "\n" not in str(error.value) and "retrieval" in str(error.value)


# -- associative recall ----------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(
    num_queries=st.integers(1, 6),
    extra=st.integers(0, 20),
    num_values=st.integers(2, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_associative_recall_answers_each_query_with_its_value(
    num_queries: int, extra: int, num_values: int, seed: int
) -> None:
    length = num_queries + extra
    task = tasks.get(
        "associative_recall", num_queries=num_queries, num_keys=length + 3, num_values=num_values
    )
    batch = task.sample(np.random.default_rng(seed), 8, length)
    for i in range(len(batch)):
        prompt, completion = decoded(task, batch, i)
        assert prompt[2 * length] == "[SEP]" and len(prompt) == 2 * length + 1 + num_queries
        keys, values = prompt[0 : 2 * length : 2], prompt[1 : 2 * length : 2]
        queries = prompt[2 * length + 1 :]
        assert all(k.startswith("k") and int(k[1:]) < length + 3 for k in keys)
        assert all(v.startswith("v") and int(v[1:]) < num_values for v in values)
        assert len(set(keys)) == length and len(set(queries)) == num_queries
        assert completion == [values[keys.index(q)] for q in queries]
        assert batch.answers[i] == " ".join(completion)
        assert task.check(batch.prompt(i), batch.completion(i))


def test_associative_recall_alphabets_and_query_count_take_effect() -> None:
    task = tasks.get("associative_recall", num_queries=3, num_keys=10, num_values=4)
    assert len(task.vocab) == 1 + 10 + 4 + 1 and task.completion_cap(8) == 3
    assert task.min_length == 3 and task.max_length() == 10
    batch = task.sample(np.random.default_rng(0), 500, 10)
    assert batch.tokens.shape == (500, 2 * 10 + 1 + 3 + 3)
    words = set(task.vocab.decode(batch.tokens.ravel()))
    assert words == {*(f"k{i}" for i in range(10)), *(f"v{i}" for i in range(4)), "[SEP]"}
    with pytest.raises(SepbenchError, match="alphabet too small for the requested length"):
        task.sample(np.random.default_rng(0), 2, 11)
    with pytest.raises(SepbenchError, match="length"):
        task.sample(np.random.default_rng(0), 2, 2)
    with pytest.raises(SepbenchError, match="num_keys"):
        tasks.get("associative_recall", num_queries=5, num_keys=4)


def test_associative_recall_queries_are_uniform_over_the_pairs() -> None:
    task = tasks.get("associative_recall", num_keys=8)
    batch = task.sample(np.random.default_rng(3), 4000, 8)
    asked = [
        task.vocab.decode(batch.prompt(i))[0:16:2].index(task.vocab.tokens[batch.tokens[i, 17]])
        for i in range(len(batch))
    ]
    counts = np.bincount(asked, minlength=8)
    assert counts.min() > 400 and counts.max() < 600


def test_associative_recall_retrieval_searches_each_key_then_copies_its_value() -> None:
    plain = tasks.get("associative_recall", num_queries=3, num_keys=12)
    task = tasks.get("associative_recall", num_queries=3, num_keys=12, mode="retrieval")
    assert task.completion_cap(10) == 15
    batch = task.sample(np.random.default_rng(0), 100, 10)
    same = plain.sample(np.random.default_rng(0), 100, 10)
    for i in range(len(batch)):
        prompt, completion = decoded(task, batch, i)
        values = plain.vocab.decode(same.completion(i))
        queries = prompt[-3:]
        assert completion == [t for q, v in zip(queries, values) for t in (S, q, E, v, v)]
        trained = batch.loss_mask[i, batch.prompt_lengths[i] : batch.lengths[i]]
        assert trained.tolist() == [True, True, True, False, True] * 3
        assert batch.answers[i] == same.answers[i] == " ".join(values)
    k1, k2, v1, v2, sep = task.vocab.ids(["k1", "k2", "v1", "v2", "[SEP]"])
    context = [k1, v1, k2, v2, sep, k2, k1, k2, *task.search_ids]
    assert task.answer_query(context, [k2]) == [v2] and task.answer_query(context, [k1]) == [v1]
    failed = [task.vocab.id(F)]
    assert task.answer_query(context, [v1]) == task.answer_query(context, [k1, k2]) == failed
    assert task.answer_query([v1, k1, sep, k2], [k1]) == failed  # k1 at a value position


def test_associative_recall_rejects_a_prompt_with_a_repeated_key() -> None:
    task = tasks.get("associative_recall")
    k1, k2, v1, v2, sep = task.vocab.ids(["k1", "k2", "v1", "v2", "[SEP]"])
    assert task.check([k1, v1, k2, v2, sep, k2], [v2])
    assert not task.check([k1, v1, k1, v2, sep, k1], [v1])
    assert not task.check([k1, v1, k2, v2, sep, k2], [v1])


# -- nearest neighbour -----------------------------------------------------------------------


def nearest_points(task: tasks.Task, batch: tasks.Batch, i: int) -> tuple[list[str], list[int]]:
    """Labels of the points and their Hamming distances to the query, from the text."""
    prompt = task.vocab.decode(batch.prompt(i))
    d = task.dim
    query = prompt[-d:]
    chunks = [prompt[j : j + d + 1] for j in range(0, len(prompt) - d, d + 1)]
    distances = [sum(a != b for a, b in zip(chunk[:d], query)) for chunk in chunks]
    return [chunk[d] for chunk in chunks], distances


@settings(max_examples=20, deadline=None)
@given(dim=st.integers(1, 10), fraction=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_nearest_neighbor_has_one_nearest_point_whose_label_is_the_answer(
    dim: int, fraction: float, seed: int
) -> None:
    task = tasks.get("nearest_neighbor", dim=dim)
    length = 1 + int(fraction * (min(2**dim, 80) - 1))
    batch = task.sample(np.random.default_rng(seed), 8, length)
    assert batch.tokens.shape == (8, length * (dim + 1) + dim + 1)
    for i in range(len(batch)):
        labels, distances = nearest_points(task, batch, i)
        assert len(labels) == length and set(labels) <= {"[TRUE]", "[FALSE]"}
        closest = min(distances)
        assert distances.count(closest) == 1
        assert batch.answers[i] == labels[distances.index(closest)]
        assert task.vocab.decode(batch.completion(i)) == [batch.answers[i]]
        assert task.check(batch.prompt(i), batch.completion(i))


def test_nearest_neighbor_labels_are_balanced_and_dim_bounds_the_length() -> None:
    task = tasks.get("nearest_neighbor", dim=4)
    batch = task.sample(np.random.default_rng(0), 2000, 16)
    assert 0.45 <= np.mean([a == "[TRUE]" for a in batch.answers]) <= 0.55
    assert task.max_length() == 16
    with pytest.raises(SepbenchError, match=r"length must be in \[1, 16\]"):
        task.sample(np.random.default_rng(0), 2, 17)


def test_nearest_neighbor_check_refuses_a_tied_prompt() -> None:
    task = tasks.get("nearest_neighbor", dim=2)
    plus, minus, true, false = task.vocab.ids(["+", "-", "[TRUE]", "[FALSE]"])
    tied = [plus, plus, true, plus, plus, false, plus, plus]
    assert not task.check(tied, [true]) and not task.check(tied, [false])
    unique = [plus, minus, true, plus, plus, false, plus, plus]
    assert task.check(unique, [false]) and not task.check(unique, [true])
