"""The serial tasks of Zhang et al. §3 (src/sepbench/tasks/{serial,counting,reversal,
multiplication,parity,state_tracking}.py): answers against solvers written here, CoT traces
replayed step by step, filler controls, parameters, label balance and training lengths."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepbench import tasks
from sepbench.errors import SepbenchError
from sepbench.tasks.multiplication import propagate_carries
from sepbench.tasks.state_tracking import PERMUTATION_TOKENS

SERIAL = ["counting", "reversal", "multiplication", "parity", "state_tracking"]
MODES = [{}, {"cot": True}, {"filler": True}]

Tokens = list[str]


def split(tokens: Tokens, separator: str) -> list[Tokens]:
    groups: list[Tokens] = [[]]
    for token in tokens:
        if token == separator:
            groups.append([])
        else:
            groups[-1].append(token)
    return groups


def little_endian(bits: Tokens) -> int:
    return int("".join(reversed(bits)), 2)


# -- answers from the prompt, by means other than the tasks' own --------------------------


def answer_counting(prompt: Tokens) -> Tokens:
    return [*str(prompt[2:-1].count(prompt[0])), "[EOS]"]


def answer_reversal(prompt: Tokens) -> Tokens:
    return prompt[-2::-1]


def answer_multiplication(prompt: Tokens) -> Tokens:
    length = (len(prompt) - 2) // 2
    product = little_endian(prompt[:length]) * little_endian(prompt[length + 1 : -1])
    return [*list(format(product, f"0{2 * length}b"))[::-1], "[EOS]"]


def answer_parity(prompt: Tokens) -> Tokens:
    return ["[TRUE]" if prompt.count("1") % 2 else "[FALSE]"]


def matrix(permutation: str) -> np.ndarray:
    """Permutation matrix M with M e_i = e_sigma(i), for a token such as ``p20134``."""
    return np.eye(5, dtype=int)[:, [int(d) for d in permutation[1:]]]


def name_of(m: np.ndarray) -> str:
    return "p" + "".join(str(int(np.argmax(m[:, i]))) for i in range(5))


def answer_state_tracking(prompt: Tokens) -> Tokens:
    total = np.eye(5, dtype=int)
    for sigma in prompt[:-1]:
        total = matrix(sigma) @ total  # sigma_1 applied first
    return [name_of(total)]


# -- CoT traces replayed one step at a time ---------------------------------------------


def replay_counting(prompt: Tokens, trace: Tokens) -> None:
    *steps, rest = split(trace, "|")
    assert rest == [] and len(steps) == len(prompt) - 3
    previous = 0
    for symbol, step in zip(prompt[2:-1], steps):
        assert step == list(str(previous + (symbol == prompt[0])))
        previous = int("".join(step))


def replay_reversal(prompt: Tokens, trace: Tokens) -> None:
    """The linear trace: depth and symbol after each push, then after each pop."""
    *steps, rest = split(trace, "|")
    inputs = prompt[:-1]
    assert rest == [] and len(steps) == 2 * len(inputs)
    depth = 0
    for step in steps[: len(inputs)]:
        depth += 1
        assert step == [*str(depth), inputs[depth - 1]]
    for step in steps[len(inputs) :]:
        assert step == [*str(depth), inputs[depth - 1]]
        depth -= 1
    assert depth == 0


def replay_reversal_full(prompt: Tokens, trace: Tokens) -> None:
    *steps, rest = split(trace, "|")
    assert rest == [] and len(steps) == len(prompt) - 1
    previous: Tokens = []
    for symbol, step in zip(prompt[:-1], steps):
        assert step == [symbol, *previous]
        previous = step


def replay_multiplication(prompt: Tokens, trace: Tokens) -> None:
    """The linear trace: column k's total = its bit pairs + the carry out of column k - 1."""
    length = (len(prompt) - 2) // 2
    a, b = (prompt[:length], prompt[length + 1 : -1])
    *steps, rest = split(trace, "|")
    assert rest == [] and len(steps) == 2 * length
    carry = 0
    for k, step in enumerate(steps):
        pairs = sum(a[i] == b[k - i] == "1" for i in range(length) if 0 <= k - i < length)
        assert little_endian(step) == pairs + carry
        assert step[-1] == "1" or step == ["0"]  # no leading zeros
        carry = little_endian(step) >> 1
    assert carry == 0


def replay_multiplication_full(prompt: Tokens, trace: Tokens) -> None:
    length = (len(prompt) - 2) // 2
    a, b_bits = little_endian(prompt[:length]), prompt[length + 1 : -1]
    *steps, rest = split(trace, "|")
    assert rest == [] and len(steps) == length
    running = 0
    for i, (bit, step) in enumerate(zip(b_bits, steps)):
        row, total = split(step, ";")
        assert len(row) == length + i and len(total) == length + i + 1
        assert little_endian(row) == (a << i) * int(bit)
        assert little_endian(total) == running + little_endian(row)
        running = little_endian(total)


def replay_parity(prompt: Tokens, trace: Tokens) -> None:
    assert len(trace) == len(prompt) - 1
    previous = 0
    for bit, step in zip(prompt[:-1], trace):
        assert step == str(previous ^ int(bit))
        previous = int(step)


def replay_state_tracking(prompt: Tokens, trace: Tokens) -> None:
    assert len(trace) == len(prompt) - 1
    previous = np.eye(5, dtype=int)
    for sigma, step in zip(prompt[:-1], trace):
        assert step == name_of(matrix(sigma) @ previous)
        previous = matrix(step)


ANSWER: dict[str, Callable[[Tokens], Tokens]] = {
    "counting": answer_counting,
    "reversal": answer_reversal,
    "multiplication": answer_multiplication,
    "parity": answer_parity,
    "state_tracking": answer_state_tracking,
}
REPLAY: dict[str, Callable[[Tokens, Tokens], None]] = {
    "counting": replay_counting,
    "reversal": replay_reversal,
    "multiplication": replay_multiplication,
    "parity": replay_parity,
    "state_tracking": replay_state_tracking,
    "reversal-full": replay_reversal_full,
    "multiplication-full": replay_multiplication_full,
}
TRACED = ["reversal", "multiplication"]  # the tasks with a linear and a full trace


FULL_MODES = [(name, {**mode, "trace": "full"}) for name in TRACED for mode in MODES[1:]]


@pytest.mark.parametrize(
    ("name", "mode"),
    [(name, mode) for name in SERIAL for mode in MODES] + FULL_MODES,
    ids=lambda value: value if isinstance(value, str) else "-".join(map(str, value.values())),
)
@settings(max_examples=8, deadline=None)
@given(length=st.integers(1, 14), seed=st.integers(0, 2**32 - 1))
def test_completions_match_independent_solvers(name: str, mode: dict, length: int, seed: int):
    task = tasks.get(name, **mode)
    batch = task.sample(np.random.default_rng(seed), 6, length)
    replay = REPLAY[name + ("-full" if mode.get("trace") == "full" else "")]
    for i in range(len(batch)):
        prompt = task.vocab.decode(batch.prompt(i))
        completion = task.vocab.decode(batch.completion(i))
        answer = ANSWER[name](prompt)
        assert completion[len(completion) - len(answer) :] == answer
        assert batch.answers[i] == " ".join(t for t in answer if t != "[EOS]")
        trace = completion[: len(completion) - len(answer)]
        if task.cot:
            replay(prompt, trace)
        else:
            assert trace == ["[FILL]"] * (task.trace_length(length) if task.filler else 0)
        assert len(completion) <= task.completion_cap(length)
        assert task.check(batch.prompt(i), batch.completion(i))


@pytest.mark.parametrize("name", SERIAL)
def test_modes_share_the_vocabulary_and_differ_only_in_the_trace(name: str) -> None:
    plain, cot, filler = (tasks.get(name, **mode) for mode in MODES)
    assert plain.vocab.tokens == cot.vocab.tokens == filler.vocab.tokens
    draws = [t.sample(np.random.default_rng(0), 8, 9) for t in (plain, cot, filler)]
    np.testing.assert_array_equal(draws[0].prompt_lengths, draws[1].prompt_lengths)
    assert draws[0].answers == draws[1].answers == draws[2].answers
    completion_lengths = [d.lengths - d.prompt_lengths for d in draws]
    assert (completion_lengths[1] > completion_lengths[0]).all()
    assert (completion_lengths[2] == completion_lengths[0] + cot.trace_length(9)).all()


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("parity", {}),
        ("state_tracking", {}),
        ("reversal", {}),
        ("reversal", {"trace": "full"}),
        ("multiplication", {"trace": "full"}),
    ],
)
def test_filler_is_as_long_as_the_cot_where_that_is_fixed(name: str, params: dict) -> None:
    cot = tasks.get(name, cot=True, **params)
    batch = cot.sample(np.random.default_rng(1), 8, 7)
    answer_length = cot.answer_length(7)
    traces = batch.lengths - batch.prompt_lengths - answer_length
    assert (traces == cot.trace_length(7)).all()
    assert tasks.get(name, filler=True, **params).trace_length(7) == cot.trace_length(7)


@pytest.mark.parametrize(
    ("name", "prompt_of"),
    [
        ("counting", lambda n: ["s1", ":", *["s1"] * n, "="]),
        ("multiplication", lambda n: [*"1" * n, "*", *"1" * n, "="]),
    ],
)
def test_filler_is_the_longest_cot_where_that_varies(name: str, prompt_of) -> None:
    task = tasks.get(name, cot=True)
    for length in (1, 2, 9, 10, 11, 31, 32, 99, 100):
        trace, answer, _ = task._solve(task.vocab.ids(prompt_of(length)))
        assert len(trace) == task.trace_length(length)
        assert len(answer) == task.answer_length(length) == task.completion_cap(length) - len(trace)
        batch = task.sample(np.random.default_rng(length), 64, length)
        assert (batch.lengths - batch.prompt_lengths).max() <= task.completion_cap(length)


@pytest.mark.parametrize(
    ("name", "linear", "full"), [("reversal", 784, 5150), ("multiplication", 1546, 30200)]
)
def test_linear_traces_fit_where_full_ones_do_not(name: str, linear: int, full: int) -> None:
    """At N = 100 (papers.md §3's CPU test range) the linear trace fits a 2,048-token model."""
    assert tasks.get(name, cot=True).trace_length(100) == linear
    assert tasks.get(name, cot=True, trace="full").trace_length(100) == full
    with pytest.raises(SepbenchError, match=r"trace must be one of .*linear"):
        tasks.get(name, trace="quadratic")


@pytest.mark.parametrize(
    ("name", "prompt", "completion"),
    [
        ("counting", "s1 : s1 s0 s1 =", "1 | 1 | 2 | 2 [EOS]"),
        ("reversal", "s0 s1 s1 =", "1 s0 | 2 s1 | 3 s1 | 3 s1 | 2 s1 | 1 s0 | s1 s1 s0"),
        ("reversal-full", "s0 s1 s1 =", "s0 | s1 s0 | s1 s1 s0 | s1 s1 s0"),
        ("multiplication", "1 1 * 0 1 =", "0 | 1 | 1 | 0 | 0 1 1 0 [EOS]"),  # 3 * 2 = 6
        ("multiplication", "1 1 * 1 1 =", "1 | 0 1 | 0 1 | 1 | 1 0 0 1 [EOS]"),  # 3 * 3 = 9
        (
            "multiplication-full",
            "1 1 * 0 1 =",
            "0 0 ; 0 0 0 | 0 1 1 ; 0 1 1 0 | 0 1 1 0 [EOS]",
        ),
        ("parity", "1 0 1 1 =", "1 1 0 1 [TRUE]"),
        ("state_tracking", "p10234 p02134 =", "p10234 p20134 p20134"),  # swap 0 1, then 1 2
    ],
)
def test_documented_examples(name: str, prompt: str, completion: str) -> None:
    name, _, full = name.partition("-")
    task = tasks.get(name, cot=True, **({"trace": "full"} if full else {}))
    assert task.check(task.vocab.ids(prompt.split()), task.vocab.ids(completion.split()))


def test_state_tracking_applies_the_first_permutation_first() -> None:
    task = tasks.get("state_tracking")
    prompt = task.vocab.ids(["p10234", "p02134", "="])  # swap 0 1, then swap 1 2
    assert task.check(prompt, task.vocab.ids(["p20134"]))  # i -> second(first(i))
    assert not task.check(prompt, task.vocab.ids(["p12034"]))  # the other order


@pytest.mark.parametrize("vocab_size", [2, 3, 7])
@pytest.mark.parametrize("name", ["counting", "reversal"])
def test_vocab_size_sets_the_alphabet(name: str, vocab_size: int) -> None:
    task = tasks.get(name, vocab_size=vocab_size)
    batch = task.sample(np.random.default_rng(2), 64, 20)
    used = {t for i in range(len(batch)) for t in task.vocab.decode(batch.prompt(i))}
    assert {t for t in used if t.startswith("s")} == {f"s{k}" for k in range(vocab_size)}
    assert sum(t.startswith("s") for t in task.vocab.tokens) == vocab_size


@pytest.mark.parametrize("name", SERIAL)
@pytest.mark.parametrize("length", [1, 5, 13])
def test_length_sets_the_input_size(name: str, length: int) -> None:
    task = tasks.get(name)
    extra = {"counting": 3, "multiplication": length + 2}.get(name, 1)  # markers (+ operand b)
    batch = task.sample(np.random.default_rng(3), 4, length)
    assert (batch.prompt_lengths == length + extra).all()


@pytest.mark.parametrize("name", SERIAL)
def test_train_lengths_cover_one_to_n(name: str) -> None:
    task = tasks.get(name)
    lengths = task.train_lengths(np.random.default_rng(4), 2000, 12)
    assert set(lengths.tolist()) == set(range(1, 13))
    assert np.bincount(lengths)[1:].min() > 2000 / 12 * 0.6
    batch = task.sample(np.random.default_rng(4), 200, 12, train=True)
    prompt_lengths = set(batch.prompt_lengths.tolist())
    assert len(prompt_lengths) == 12 and len(set(batch.answers)) > 1


def test_parity_labels_are_balanced() -> None:
    for mode in MODES:
        batch = tasks.get("parity", **mode).sample(np.random.default_rng(5), 2000, 17)
        share = np.mean([a == "[TRUE]" for a in batch.answers])
        assert 0.45 <= share <= 0.55


def test_state_tracking_answers_cover_s5() -> None:
    batch = tasks.get("state_tracking").sample(np.random.default_rng(6), 3000, 3)
    counts = np.unique(batch.answers, return_counts=True)[1]
    assert len(counts) == len(PERMUTATION_TOKENS) and counts.min() > 5


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=12))
def test_propagate_carries_writes_the_binary_number(columns: list[int]) -> None:
    width = len(columns) + 6  # room for the carries out of the given columns
    padded = np.array([[*columns, *[0] * 6]])
    value = sum(c << k for k, c in enumerate(columns))
    bits = propagate_carries(padded)[0]
    assert sum(int(b) << k for k, b in enumerate(bits)) == value and len(bits) == width


@pytest.mark.parametrize("name", SERIAL)
def test_bad_parameters_fail_with_one_line(name: str) -> None:
    with pytest.raises(SepbenchError, match="cot and filler") as error:
        tasks.get(name, cot=True, filler=True)
    assert "\n" not in str(error.value)
    with pytest.raises(SepbenchError, match="cot"):
        tasks.get(name, cot="yes")


@pytest.mark.parametrize("name", ["counting", "reversal"])
@pytest.mark.parametrize("vocab_size", [1, 1025, 2.5])
def test_bad_vocab_size_names_the_range(name: str, vocab_size: object) -> None:
    with pytest.raises(SepbenchError, match=r"vocab_size must be .*\[2, 1024\]"):
        tasks.get(name, vocab_size=vocab_size)


@pytest.mark.parametrize("name", SERIAL)
def test_check_rejects_malformed_prompts(name: str) -> None:
    task = tasks.get(name, cot=True)
    batch = task.sample(np.random.default_rng(7), 1, 4)
    prompt, completion = batch.prompt(0), batch.completion(0)
    assert task.check(prompt, completion)
    assert not task.check(prompt[:-1], completion)  # no "=" marker
    assert not task.check(np.r_[prompt[:-1], prompt[-1:], prompt[-1:]], completion)
    assert not task.check([10**9, -1, *prompt.tolist()], completion)


@pytest.mark.parametrize("mode", MODES, ids=["plain", "cot", "filler"])
@pytest.mark.parametrize("name", SERIAL)
def test_training_batches_hold_valid_examples_of_mixed_lengths(name: str, mode: dict) -> None:
    task = tasks.get(name, **mode)
    batch = task.sample(np.random.default_rng(8), 48, 9, train=True)
    assert len(set(batch.prompt_lengths.tolist())) > 3
    columns = np.arange(batch.tokens.shape[1])
    trained = (columns >= batch.prompt_lengths[:, None]) & (columns < batch.lengths[:, None])
    np.testing.assert_array_equal(batch.loss_mask, trained)
    assert (batch.tokens[~(columns < batch.lengths[:, None])] == 0).all()
    for i in range(len(batch)):
        assert task.check(batch.prompt(i), batch.completion(i))
        answer = ANSWER[name](task.vocab.decode(batch.prompt(i)))
        assert batch.answers[i] == " ".join(t for t in answer if t != "[EOS]")


@pytest.mark.parametrize(
    ("name", "params", "sequence"),
    [
        ("parity", {"cot": "interleaved"}, "1 1 0 1 1 0 1 1 = [TRUE]"),
        ("parity", {"filler": "interleaved"}, "1 [FILL] 0 [FILL] 1 [FILL] = [FALSE]"),
        ("state_tracking", {"cot": "interleaved"}, "p10234 p10234 p02134 p20134 = p20134"),
    ],
)
def test_interleaved_layout_writes_each_state_after_its_input(
    name: str, params: dict, sequence: str
) -> None:
    task = tasks.get(name, **params)
    ids = task.vocab.ids(sequence.split())
    assert task.check(ids[:1], ids[1:]) and not task.generates
    assert not task.check(ids[:1], [*ids[1:-1], ids[-2]])


@pytest.mark.parametrize("name", SERIAL)
def test_interleaved_layout_where_the_task_offers_it(name: str) -> None:
    """Where it is offered, x_1 .. x_N and "=" are given (N + 1 of the 2N + 2 tokens)."""
    if tasks.get(name).interleavable:
        task = tasks.get(name, cot="interleaved")
        batch = task.sample(np.random.default_rng(0), 8, 5, train=True)
        given = ~batch.loss_mask & (np.arange(batch.tokens.shape[1]) < batch.lengths[:, None])
        assert (batch.prompt_lengths == 1).all() and (given.sum(1) == batch.lengths // 2).all()
    else:
        with pytest.raises(SepbenchError, match="cot must be one of False, True; got 'interl"):
            tasks.get(name, cot="interleaved")
