"""``Task.chance``: the computed chance level of every task and mode against a sampled one.

Chance is the probability of the most likely whole completion (the best guess that ignores the
prompt), so the sampled estimate is the frequency of the commonest completion among fresh
examples. Tiny values (long traces) are only checked to be within sampling error of 0.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest

from sepbench import tasks

EXAMPLES = 4000

CASES: list[tuple[str, dict[str, Any], list[int]]] = [
    ("index_lookup", {"vocab_size": 8}, [5, 20]),
    ("associative_recall", {"num_values": 4}, [4]),
    ("associative_recall", {"num_queries": 2, "num_values": 4}, [6]),
    ("nearest_neighbor", {"dim": 4}, [3, 8]),
    ("string_equality", {"variant": "random"}, [6]),
    ("string_equality", {"variant": "one_off", "vocab_size": 8}, [6]),
    ("string_equality", {"variant": "copy", "vocab_size": 3}, [4, 6]),
    ("disjointness", {"vocab_size": 16}, [8]),
    ("dyck", {}, [8]),
    ("dyck", {"cot": True}, [4, 8, 12, 20]),
    ("dyck", {"cot": True, "num_types": 1}, [8]),
    ("is_tree", {"mode": "none"}, [6]),
    ("is_tree", {"mode": "cot"}, [4, 5, 6, 8]),
    ("is_tree", {"mode": "retrieval"}, [5, 8]),
    ("counting", {}, [4, 20]),
    ("counting", {"cot": True}, [4, 8]),
    ("counting", {"filler": True, "vocab_size": 3}, [6]),
    ("reversal", {}, [3]),
    ("reversal", {"cot": True}, [3]),
    ("reversal", {"vocab_size": 3, "filler": True}, [2]),
    ("multiplication", {}, [1, 3]),
    ("multiplication", {"cot": True}, [2]),
    ("multiplication", {"filler": True}, [2]),
    ("parity", {}, [5]),
    ("parity", {"cot": True}, [4]),
    ("parity", {"filler": True}, [4]),
    ("state_tracking", {}, [3]),
    ("state_tracking", {"cot": True}, [1, 2]),
    ("state_tracking", {"filler": True}, [2]),
]


def commonest_completion_share(task: tasks.Task, length: int) -> float:
    batch = task.sample(np.random.default_rng(7), EXAMPLES, length)
    counts = Counter(tuple(batch.completion(i).tolist()) for i in range(len(batch)))
    return counts.most_common(1)[0][1] / EXAMPLES


@pytest.mark.parametrize(
    ("name", "params", "length"),
    [(name, params, n) for name, params, lengths in CASES for n in lengths],
    ids=lambda value: str(value),
)
def test_chance_matches_the_commonest_sampled_completion(
    name: str, params: dict[str, Any], length: int
) -> None:
    task = tasks.get(name, **params)
    chance = task.chance(length)
    sampled = commonest_completion_share(task, length)
    tolerance = 4 * math.sqrt(chance * (1 - chance) / EXAMPLES) + 2 / EXAMPLES
    assert abs(sampled - chance) <= tolerance, (chance, sampled)


def test_every_task_has_a_chance_case() -> None:
    assert {name for name, _, _ in CASES} == set(tasks.names())


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("index_lookup", {"vocab_size": 64}, 1 / 64),
        ("parity", {}, 0.5),
        ("parity", {"cot": True}, 2.0**-40),
        ("state_tracking", {}, 1 / 120),
        ("reversal", {"vocab_size": 2}, 2.0**-40),
    ],
)
def test_chance_states_the_papers_levels(name: str, params: dict, expected: float) -> None:
    """papers.md §2: |Σ| = 64 gives chance 1.6 %; a trace judged whole is near 0 (§3)."""
    assert tasks.get(name, **params).chance(40) == pytest.approx(expected)


def test_chance_rejects_a_bad_length() -> None:
    with pytest.raises(ValueError, match="length"):
        tasks.get("dyck").chance(5)


TRACED = [(name, params, n) for name, params, lengths in CASES for n in lengths[:1]]
TRACED = [case for case in TRACED if tasks.get(case[0], **case[1]).traced]


@pytest.mark.parametrize(("name", "params", "length"), TRACED, ids=lambda value: str(value))
def test_answer_chance_matches_the_commonest_sampled_answer(
    name: str, params: dict[str, Any], length: int
) -> None:
    """The ``answer`` metric's chance: the commonest final answer, whatever the trace."""
    task = tasks.get(name, **params)
    chance = task.answer_chance(length)
    batch = task.sample(np.random.default_rng(11), EXAMPLES, length)
    sampled = Counter(batch.answers).most_common(1)[0][1] / EXAMPLES
    tolerance = 4 * math.sqrt(chance * (1 - chance) / EXAMPLES) + 2 / EXAMPLES
    assert abs(sampled - chance) <= tolerance, (chance, sampled)


def test_is_tree_answer_chance_is_a_coin_in_every_mode() -> None:
    """papers.md §1: chance for the generation metric is 1/2 with or without a trace."""
    for mode in ("none", "cot", "retrieval"):
        assert tasks.get("is_tree", mode=mode).answer_chance(16) == 0.5
