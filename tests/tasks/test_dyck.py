"""Dyck-(k, m) (src/sepbench/tasks/dyck.py): generator, corruptions, stack trace, parameters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepbench import tasks
from sepbench.errors import SepbenchError
from sepbench.tasks.dyck import BRACKETS

PAIRS = ["()", "[]", "{}", "<>"]


def reduce_pairs(text: str) -> str:
    """Delete adjacent matched pairs until none is left (an independent membership test)."""
    while True:
        shorter = text
        for pair in PAIRS:
            shorter = shorter.replace(pair, "")
        if shorter == text:
            return text
        text = shorter


def depth_profile(text: str) -> list[int]:
    """Open minus close count after each bracket."""
    return np.cumsum([1 if BRACKETS.index(c) % 2 == 0 else -1 for c in text]).tolist()


def member(text: str, max_depth: int) -> bool:
    return reduce_pairs(text) == "" and max(depth_profile(text), default=0) <= max_depth


def as_text(strings: np.ndarray) -> list[str]:
    """Bracket-index rows (0..2k-1) as strings."""
    return ["".join(BRACKETS[b] for b in row) for row in strings]


def prompts_text(task: tasks.Task, batch: tasks.Batch) -> list[str]:
    return ["".join(task.vocab.decode(batch.prompt(i))) for i in range(len(batch))]


@settings(max_examples=25, deadline=None)
@given(
    num_types=st.integers(1, 4),
    max_depth=st.integers(1, 6),
    half=st.integers(2, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_positives_are_members_of_exact_length_within_depth(
    num_types: int, max_depth: int, half: int, seed: int
) -> None:
    task = tasks.get("dyck", num_types=num_types, max_depth=max_depth)
    strings = task._positives(np.random.default_rng(seed), 16, 2 * half)
    assert strings.shape == (16, 2 * half)
    assert strings.min() >= 0 and strings.max() < 2 * num_types
    for text in as_text(strings):
        assert member(text, max_depth), text


@settings(max_examples=25, deadline=None)
@given(
    num_types=st.integers(1, 4),
    max_depth=st.integers(1, 6),
    half=st.integers(2, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_negatives_are_not_members(num_types: int, max_depth: int, half: int, seed: int) -> None:
    task = tasks.get("dyck", num_types=num_types, max_depth=max_depth)
    strings = task._negatives(np.random.default_rng(seed), 16, 2 * half)
    assert strings.shape == (16, 2 * half)
    for text in as_text(strings):
        assert not member(text, max_depth), text


@pytest.mark.parametrize(
    ("length", "max_corruptions", "bound"), [(40, None, 4), (8, None, 1), (40, 1, 1), (20, 7, 7)]
)
def test_corruption_count_is_uniform_in_one_to_bound(
    length: int, max_corruptions: int | None, bound: int
) -> None:
    task = tasks.get("dyck", max_corruptions=max_corruptions)
    rng = np.random.default_rng(0)
    positives = task._positives(rng, 2000, length)
    corrupted, counts = task._corrupt(rng, positives)
    np.testing.assert_array_equal((corrupted != positives).sum(axis=1), counts)
    assert set(counts.tolist()) == set(range(1, bound + 1))
    changed = corrupted != positives  # each corruption: a type swap or a direction flip
    swapped = changed & (corrupted % 2 == positives % 2)
    flipped = changed & (corrupted // 2 == positives // 2)
    assert (swapped ^ flipped)[changed].all()
    assert 0.45 < flipped.sum() / changed.sum() < 0.55


def test_single_type_corruptions_always_flip() -> None:
    task = tasks.get("dyck", num_types=1)
    rng = np.random.default_rng(1)
    positives = task._positives(rng, 200, 40)
    corrupted, _ = task._corrupt(rng, positives)
    np.testing.assert_array_equal(
        corrupted[corrupted != positives], positives[corrupted != positives] ^ 1
    )


@pytest.mark.parametrize("cot", [False, True])
def test_labels_are_balanced_and_match_membership(cot: bool) -> None:
    task = tasks.get("dyck", cot=cot)
    batch = task.sample(np.random.default_rng(4), 2000, 20)
    truth = [member(text, 2) for text in prompts_text(task, batch)]
    assert [a == "[TRUE]" for a in batch.answers] == truth
    assert 0.45 < np.mean(truth) < 0.55


def test_num_types_sets_the_bracket_set() -> None:
    for k in range(1, 5):
        task = tasks.get("dyck", num_types=k)
        assert [t for t in task.vocab.tokens if t in BRACKETS] == list(BRACKETS[: 2 * k])
        batch = task.sample(np.random.default_rng(k), 64, 40)
        used = set("".join(prompts_text(task, batch)))
        assert used == set(BRACKETS[: 2 * k])


@pytest.mark.parametrize("max_depth", [1, 2, 3, 5])
def test_max_depth_is_reached_and_never_exceeded(max_depth: int) -> None:
    task = tasks.get("dyck", max_depth=max_depth)
    strings = task._positives(np.random.default_rng(max_depth), 256, 40)
    deepest = max(max(depth_profile(text)) for text in as_text(strings))
    assert deepest == max_depth


def test_paper_distribution_for_depth_two_closes_only_at_the_end() -> None:
    """For m = 2 the free steps of papers.md §2 never reach a depth the last two cannot close."""
    task = tasks.get("dyck", max_depth=2)
    strings = task._positives(np.random.default_rng(7), 4000, 12)
    depths = np.array([depth_profile(text) for text in as_text(strings)])
    assert set(depths[:, -3].tolist()) == {0, 2}  # after N - 2 steps: balanced or depth 2
    assert set(depths[:, -2].tolist()) == {1}
    balanced = depths[:, -3] == 0  # a fresh uniform pair is appended
    assert 0.4 < (strings[balanced, -2] == 0).mean() < 0.6


def stack_steps(text: str, max_depth: int) -> tuple[list[str], bool]:
    """Expected trace steps by pair reduction of each prefix, and membership."""
    steps = []
    for i in range(1, len(text) + 1):
        rest = reduce_pairs(text[:i])
        if any(BRACKETS.index(c) % 2 for c in rest) or len(rest) > max_depth:
            return steps, False
        steps.append(rest or "[EMPTY]")
    return steps, reduce_pairs(text) == ""


@pytest.mark.parametrize(("num_types", "max_depth"), [(2, 2), (3, 4), (1, 1)])
def test_cot_trace_is_the_stack_after_each_bracket(num_types: int, max_depth: int) -> None:
    task = tasks.get("dyck", num_types=num_types, max_depth=max_depth, cot=True)
    batch = task.sample(np.random.default_rng(5), 200, 16)
    for i, text in enumerate(prompts_text(task, batch)):
        tokens = task.vocab.decode(batch.completion(i))
        *body, label = " ".join(tokens).split(" | ")
        steps, is_member = stack_steps(text, max_depth)
        assert [s.replace(" ", "") for s in body] == steps
        assert label == ("[TRUE]" if is_member else "[FALSE]") == batch.answers[i]
        assert batch.loss_mask[i, batch.prompt_lengths[i] : batch.lengths[i]].all()


def test_cot_trace_stops_at_the_first_invalid_bracket() -> None:
    task = tasks.get("dyck", cot=True)
    prompt = task.vocab.ids(list("([)]"))
    assert task.check(prompt, task.vocab.ids(["(", "|", "(", "[", "|", "[FALSE]"]))
    deep = task.vocab.ids(list("((()))"))
    assert task.check(deep, task.vocab.ids(["(", "|", "(", "(", "|", "[FALSE]"]))
    unbalanced = task.vocab.ids(list("(())(("))
    trace = ["(", "|", "(", "(", "|", "(", "|", "[EMPTY]", "|", "(", "|", "(", "(", "|", "[FALSE]"]
    assert task.check(unbalanced, task.vocab.ids(trace))


def test_check_rejects_a_wrong_label_and_non_bracket_prompts() -> None:
    task = tasks.get("dyck")
    good = task.vocab.ids(list("([])"))
    assert task.check(good, task.vocab.ids(["[TRUE]"]))
    assert not task.check(good, task.vocab.ids(["[FALSE]"]))
    assert not task.check([*good, task.vocab.id("|")], task.vocab.ids(["[TRUE]"]))


def test_completion_cap_and_stop_ids() -> None:
    task = tasks.get("dyck", cot=True, max_depth=3)
    batch = task.sample(np.random.default_rng(6), 200, 30)
    assert (batch.lengths - batch.prompt_lengths).max() <= task.completion_cap(30)
    assert {task.vocab.tokens[i] for i in task.stop_ids} == {"[TRUE]", "[FALSE]"}
    assert tasks.get("dyck").completion_cap(30) == 1


@pytest.mark.parametrize(
    ("params", "length", "word"),
    [
        ({"num_types": 5}, 8, "num_types"),
        ({"num_types": 0}, 8, "num_types"),
        ({"max_depth": 0}, 8, "max_depth"),
        ({"max_corruptions": 0}, 8, "max_corruptions"),
        ({"cot": "yes"}, 8, "cot"),
        ({"cot": True, "filler": True}, 8, "cot and filler exclude each other"),
        ({"trace": "pointer"}, 8, "trace must be one of"),
        ({"train_lengths": "varied"}, 8, "train_lengths must be one of"),
        ({"max_depth": "deep"}, 8, "max_depth"),
        ({}, 7, "length"),
        ({}, 2, "length"),
    ],
)
def test_bad_parameters_raise_one_line(params: dict, length: int, word: str) -> None:
    with pytest.raises(SepbenchError, match=word) as error:
        tasks.get("dyck", **params).sample(np.random.default_rng(0), 2, length)
    assert "\n" not in str(error.value)


def depth_steps(text: str, max_depth: int | None) -> tuple[list[str], bool]:
    """Expected steps of the depth trace: the top of each reduced prefix and its length."""
    steps, is_member = stack_steps(text, max_depth or len(text))
    return [f"{s[-1]} {len(s)}" if s != "[EMPTY]" else "[EMPTY] 0" for s in steps], is_member


@pytest.mark.parametrize(("num_types", "max_depth"), [(2, 2), (2, None), (1, None), (3, 4)])
def test_depth_trace_is_the_top_and_depth_after_each_bracket(
    num_types: int, max_depth: int | None
) -> None:
    task = tasks.get("dyck", num_types=num_types, max_depth=max_depth, cot=True, trace="depth")
    batch = task.sample(np.random.default_rng(8), 200, 24)
    for i, text in enumerate(prompts_text(task, batch)):
        *body, label = " ".join(task.vocab.decode(batch.completion(i))).split(" | ")
        steps, is_member = depth_steps(text, max_depth)
        assert [" ".join([s.split(" ")[0], "".join(s.split(" ")[1:])]) for s in body] == steps
        assert label == ("[TRUE]" if is_member else "[FALSE]") == batch.answers[i]


def test_depth_trace_writes_depths_in_decimal() -> None:
    task = tasks.get("dyck", num_types=1, max_depth="none", cot=True, trace="depth")
    prompt = task.vocab.ids(list("(" * 11 + ")" * 11))
    expected = [f"( {' '.join(str(d))} |" for d in [*range(1, 12), *range(10, 0, -1)]]
    completion = " ".join([*expected, "[EMPTY] 0 |", "[TRUE]"]).split()
    assert task.check(prompt, task.vocab.ids(completion))
    assert task.trace_length(22) == 2 * 22 + 9 + 2 * 13  # step t: top, digits of t, "|"
    assert task.completion_cap(22) == task.trace_length(22) + 1


@pytest.mark.parametrize("max_depth", [None, "none"])
def test_unbounded_depth_is_reached_and_labels_stay_balanced(max_depth: object) -> None:
    task = tasks.get("dyck", max_depth=max_depth)
    assert task.max_depth is None
    rng = np.random.default_rng(9)
    positives = as_text(task._positives(rng, 256, 60))
    assert all(member(text, 60) for text in positives)
    assert max(max(depth_profile(text)) for text in positives) > 8
    assert not any(member(text, 60) for text in as_text(task._negatives(rng, 256, 60)))
    batch = task.sample(rng, 2000, 60)
    truth = [member(text, 60) for text in prompts_text(task, batch)]
    assert [a == "[TRUE]" for a in batch.answers] == truth and 0.45 < np.mean(truth) < 0.55


@pytest.mark.parametrize("trace", ["stack", "depth"])
def test_filler_is_as_long_as_the_longest_trace(trace: str) -> None:
    """The all-open string keeps every step as deep as the bound allows (unbounded here)."""
    cot = tasks.get("dyck", max_depth=None, cot=True, trace=trace)
    filler = tasks.get("dyck", max_depth=None, filler=True, trace=trace)
    deepest = cot._expected_completion(cot.vocab.ids(list("(" * 30)))
    assert len(deepest) - 1 == cot.trace_length(30) == filler.trace_length(30)
    batch = filler.sample(np.random.default_rng(10), 64, 30)
    for i in range(len(batch)):
        completion = filler.vocab.decode(batch.completion(i))
        assert completion == ["[FILL]"] * filler.trace_length(30) + [batch.answers[i]]
    traced = cot.sample(np.random.default_rng(10), 64, 30)
    assert (traced.lengths - traced.prompt_lengths).max() <= cot.completion_cap(30)
    assert filler.vocab.tokens == cot.vocab.tokens == tasks.get("dyck", max_depth=None).vocab.tokens


def test_uniform_train_lengths_cover_the_even_lengths_up_to_n() -> None:
    task = tasks.get("dyck", max_depth=None, train_lengths="uniform")
    lengths = task.train_lengths(np.random.default_rng(11), 3000, 20)
    assert set(lengths.tolist()) == set(range(4, 21, 2))
    batch = task.sample(np.random.default_rng(11), 300, 20, train=True)
    assert set(batch.prompt_lengths.tolist()) == set(range(4, 21, 2))
    assert all(task.check(batch.prompt(i), batch.completion(i)) for i in range(len(batch)))
    exact = tasks.get("dyck").sample(np.random.default_rng(11), 300, 20, train=True)
    assert set(exact.prompt_lengths.tolist()) == {20}
