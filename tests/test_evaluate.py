"""Tests of sepbench.evaluate: exact match, carried-state generation, the live retriever."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from sepbench import models, tasks
from sepbench.errors import SepbenchError
from sepbench.evaluate import QUERY_CAP, accuracy, evaluate, evaluate_metrics, generate, scores
from sepbench.models.base import MIXERS, ModelState
from sepbench.tasks.base import Batch, Task, Vocab

# -- stand-ins ---------------------------------------------------------------------------------


class Reverse(Task):
    """Toy task: symbols then [SEP]; completion: the symbols reversed, then [EOS]."""

    name = "test_reverse"
    paper = "test stand-in"
    summary = "reverse a string"
    length_meaning = "symbols"

    def __init__(self) -> None:
        self.vocab = Vocab(["a0", "a1", "a2", "a3", "a4", "[SEP]", "[EOS]"])
        self.symbols = self.vocab.ids(["a0", "a1", "a2", "a3", "a4"])
        self.sep, self.eos = self.vocab.id("[SEP]"), self.vocab.id("[EOS]")
        self.stop_ids = frozenset({self.eos})
        self.params = {}

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        words = rng.choice(self.symbols, size=(batch_size, length))
        prompts = np.concatenate([words, np.full((batch_size, 1), self.sep)], axis=1)
        completions = np.concatenate([words[:, ::-1], np.full((batch_size, 1), self.eos)], axis=1)
        return Batch.from_arrays(prompts, completions, [self.vocab.text(c) for c in completions])

    def check(self, prompt: Sequence[int], completion: Sequence[int]) -> bool:
        return list(completion) == [*list(prompt)[-2::-1], self.eos]

    def completion_cap(self, length: int) -> int:
        return length + 1

    def chance(self, length: int) -> float:
        return len(self.symbols) ** -length

    def train_lengths(self, rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray:
        return rng.integers(1, length + 1, batch_size)


class Search(Reverse):
    """Reverse with a retriever: the query ``x`` answers the token after the first ``x``."""

    name = "test_search"

    def __init__(self) -> None:
        super().__init__()
        self.vocab = Vocab([*self.vocab.tokens, "[STARTSEARCH]", "[ENDSEARCH]", "[FAILED]", "boom"])
        self.search_ids = (self.vocab.id("[STARTSEARCH]"), self.vocab.id("[ENDSEARCH]"))

    def answer_query(self, context: Sequence[int], query: Sequence[int]) -> list[int]:
        words = self.vocab.decode(query)
        if words == ["boom"]:
            raise RuntimeError("a broken retriever")
        if words == ["a4"]:
            return [len(self.vocab) + 3]
        if len(query) != 1 or query[0] not in context:
            return [self.vocab.id("[FAILED]")]
        return [context[list(context).index(query[0]) + 1]]


class FunctionModel(nn.Module):
    """SequenceModel calling convention; the next token is ``next_token(tokens seen so far)``.

    Its state keeps each row's tokens, so it decodes with carried state like a real model.
    """

    def __init__(self, vocab_size: int, next_token: Callable[[list[int]], int]) -> None:
        super().__init__()
        self.vocab_size, self.next_token = vocab_size, next_token

    def forward(self, tokens: Tensor, state: ModelState | None = None) -> tuple[Tensor, ModelState]:
        seen = [[] for _ in tokens] if state is None else state.blocks
        logits = torch.zeros(*tokens.shape, self.vocab_size)
        for b, (row, history) in enumerate(zip(tokens.tolist(), seen)):
            for t, token in enumerate(row):
                history.append(token)
                logits[b, t, self.next_token(history)] = 1.0
        position = 0 if state is None else state.position
        return logits, ModelState(position + tokens.shape[1], seen)


def oracle(batch: Batch, vocab_size: int, *, blind: bool = False, wrong: Sequence[int] = ()):
    """A model that continues every stored example with its gold completion.

    It emits garbage ([PAD]) once the tokens it has seen leave the gold sequence. ``blind``:
    it cannot predict retrieved tokens either (garbage there), so it needs the live retriever.
    ``wrong``: for these examples its last supervised prediction is garbage.
    """
    gold = {}
    for b in range(len(batch)):
        tokens = batch.tokens[b, : batch.lengths[b]].tolist()
        given = (~batch.loss_mask[b, : batch.lengths[b]]).tolist()
        given[: batch.prompt_lengths[b]] = [False] * int(batch.prompt_lengths[b])
        last = int(np.flatnonzero(batch.loss_mask[b])[-1]) if b in wrong else -1
        gold[tuple(batch.prompt(b).tolist())] = (tokens, given, last)
    prompt_lengths = sorted({int(n) for n in batch.prompt_lengths})

    def next_token(seen: list[int]) -> int:
        for n in prompt_lengths:
            if tuple(seen[:n]) in gold:
                tokens, given, last = gold[tuple(seen[:n])]
                k = len(seen)
                on_track = k < len(tokens) and seen == tokens[:k] and k != last
                if on_track and not (blind and given[k]):
                    return tokens[k]
        return 0

    return FunctionModel(vocab_size, next_token)


def reverse_solver(task: Reverse, up_to: int = 10**6) -> FunctionModel:
    """Solves Reverse from the prompt alone, for prompts of at most ``up_to`` symbols."""

    def next_token(seen: list[int]) -> int:
        if task.sep not in seen or seen.index(task.sep) > up_to:
            return 0
        symbols = seen[: seen.index(task.sep)]
        done = len(seen) - len(symbols) - 1
        return symbols[-1 - done] if done < len(symbols) else task.eos

    return FunctionModel(len(task.vocab), next_token)


def greedy_reference(model: nn.Module, task: Task, prompt: Sequence[int], cap: int) -> list[int]:
    """The slow way: re-run the whole prefix for every new token."""
    sequence, completion = list(prompt), []
    with torch.no_grad():
        while len(completion) < cap:
            logits, _ = model(torch.tensor([sequence]))
            token = int(logits[0, -1].argmax())
            sequence.append(token)
            completion.append(token)
            if token in task.stop_ids:
                break
    return completion


def tiny_model(name: str, vocab_size: int) -> nn.Module:
    torch.manual_seed(0)
    if name == "hybrid":
        pair = ["lstm", "attention"]
        mixers = pair if set(pair) <= set(MIXERS) else sorted(MIXERS)[:2]
        return models.build(name, vocab_size, 16, mixers=mixers)
    return models.build(name, vocab_size, 16, 2)


# -- generation with carried state ----------------------------------------------------------------


@pytest.mark.parametrize("stop", [(), ("a1",)], ids=["to-the-cap", "rows-stop-early"])
@pytest.mark.parametrize("name", models.names())
def test_carried_state_matches_rerunning_the_prefix(name: str, stop: tuple[str, ...]) -> None:
    task = copy.copy(Reverse())
    task.stop_ids = frozenset(task.vocab.ids(stop))
    batch = task.sample(np.random.default_rng(1), 6, 6, train=True)
    prompts = [batch.prompt(i).tolist() for i in range(len(batch))]
    assert len({len(p) for p in prompts}) > 2
    model = tiny_model(name, len(task.vocab)).eval()
    expected = [greedy_reference(model, task, p, 7) for p in prompts]
    assert generate(model, task, prompts, max_new_tokens=7) == expected


def test_generate_feeds_the_prefix_once_then_one_token_per_step() -> None:
    task = Reverse()
    batch = task.sample(np.random.default_rng(0), 5, 4, train=True)
    prompts = [batch.prompt(i).tolist() for i in range(len(batch))]
    model = reverse_solver(task)
    chunks = []
    model.register_forward_pre_hook(lambda module, args: chunks.append(args[0].shape[1]))
    completions = generate(model, task, prompts, length=4)
    assert completions == [[*p[-2::-1], task.eos] for p in prompts]
    common, longest = min(map(len, prompts)), max(map(len, prompts))
    assert chunks[0] == common and set(chunks[1:]) == {1}
    # the last row to finish: its prompt remainder, then its completion minus the stop token
    assert len(chunks) - 1 == max(len(p) - common + len(p) - 1 for p in prompts)
    assert longest > common


def test_generate_caps_and_restores_training_mode() -> None:
    task = Reverse()
    never_stops = FunctionModel(len(task.vocab), lambda seen: task.symbols[0])
    never_stops.train()
    assert generate(never_stops, task, [[1, 2, task.sep]], max_new_tokens=3) == [[1, 1, 1]]
    assert generate(never_stops, task, [[1, task.sep]], length=4) == [[1] * 5]
    assert never_stops.training
    assert generate(never_stops, task, [], length=2) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda m, t: generate(m, t, [[1, 2]]),
        lambda m, t: generate(m, t, [[1, 2]], max_new_tokens=0),
        lambda m, t: generate(m, t, [[1], []], max_new_tokens=2),
        lambda m, t: generate(m, t, [[1]], length=0),
        lambda m, t: accuracy(m, t, t.sample(np.random.default_rng(0), 2, 2), mode="beam"),
        lambda m, t: evaluate(
            m, t, lengths=[2], examples=0, mode="generate", rng=np.random.default_rng(0)
        ),
        lambda m, t: evaluate(
            m, t, lengths=[], examples=2, mode="generate", rng=np.random.default_rng(0)
        ),
    ],
)
def test_bad_parameters_raise_one_line_errors(call: Callable) -> None:
    task = Reverse()
    with pytest.raises(SepbenchError) as error:
        call(reverse_solver(task), task)
    assert "\n" not in str(error.value)


# -- the live retriever -----------------------------------------------------------------------


def scripted(task: Task, prompt_length: int, script: list[str]) -> FunctionModel:
    """Emits ``script[k]`` as the k-th completion token (whatever was actually fed)."""
    ids = task.vocab.ids(script)
    eos = task.vocab.id("[EOS]")
    return FunctionModel(
        len(task.vocab), lambda seen: ids[k] if (k := len(seen) - prompt_length) < len(ids) else eos
    )


S, E, F = "[STARTSEARCH]", "[ENDSEARCH]", "[FAILED]"
OVER = ["a0"] * (QUERY_CAP + 1)
AT_CAP = ["a2"] * QUERY_CAP


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ([S, "a0", E, "a3", "[EOS]"], [S, "a0", E, "a1", "[EOS]"]),  # answered: a1 follows a0
        ([S, E, "a3", "[EOS]"], [S, E, F, "[EOS]"]),  # empty
        ([S, "a0", "a1", E, "a3", "[EOS]"], [S, "a0", "a1", E, F, "[EOS]"]),  # malformed
        ([S, "boom", E, "a3", "[EOS]"], [S, "boom", E, F, "[EOS]"]),  # answer_query raises
        ([S, "a4", E, "a3", "[EOS]"], [S, "a4", E, F, "[EOS]"]),  # answer is no vocab id
        ([S, *AT_CAP, E, "a3", "[EOS]"], [S, *AT_CAP, E, F, "[EOS]"]),  # longest allowed
        ([S, *OVER, "a3", "a3", "[EOS]"], [S, *OVER, E, F, "[EOS]"]),  # overlong: cut
        ([S, *OVER, *["a0"] * 20], [S, *OVER, E, F, *["a0"] * 8]),  # never closed, then capped
    ],
)
def test_retriever_answers_or_fails_without_crashing(script: list[str], expected: list[str]):
    task = Search()
    prompt = task.vocab.ids(["a0", "a1", "[SEP]"])
    model = scripted(task, len(prompt), script)
    [completion] = generate(model, task, [prompt], max_new_tokens=len(OVER) + 11)
    assert task.vocab.decode(completion) == expected


@pytest.fixture(scope="module")
def is_tree() -> tuple[Task, Batch]:
    task = tasks.get("is_tree", mode="retrieval")
    return task, task.sample(np.random.default_rng(0), 8, 5)


def test_oracle_needing_the_retriever_solves_is_tree(is_tree: tuple[Task, Batch]) -> None:
    task, batch = is_tree
    retrieved = [
        ~batch.loss_mask[b, batch.prompt_lengths[b] : batch.lengths[b]] for b in range(len(batch))
    ]
    assert all(r.any() for r in retrieved)  # every trace does call the retriever
    model = oracle(batch, len(task.vocab), blind=True)
    assert accuracy(model, task, batch, "generate", length=5) == 1.0
    assert accuracy(model, task, batch, "generate") == 1.0
    assert accuracy(model, task, batch, "teacher_forced") == 1.0  # retrieved tokens not judged


def test_without_the_retriever_the_blind_oracle_fails(is_tree: tuple[Task, Batch]) -> None:
    task, batch = is_tree
    no_retriever = copy.copy(task)
    no_retriever.search_ids = None
    model = oracle(batch, len(task.vocab), blind=True)
    assert accuracy(model, no_retriever, batch, "generate") == 0.0
    seeing = oracle(batch, len(task.vocab))
    assert accuracy(seeing, no_retriever, batch, "generate") == 1.0


@pytest.mark.parametrize(
    "params",
    [{"name": "index_lookup", "max_length": 20}, {"name": "associative_recall", "num_queries": 3}],
    ids=["index_lookup", "associative_recall"],
)
def test_the_live_retriever_solves_the_lookup_tasks_for_a_blind_oracle(params: dict) -> None:
    """The oracle cannot see the retrieved symbol: only the retriever can hand it in."""
    name, params = params["name"], {k: v for k, v in params.items() if k != "name"}
    task = tasks.get(name, mode="retrieval", **params)
    batch = task.sample(np.random.default_rng(4), 8, 12)
    blind = oracle(batch, len(task.vocab), blind=True)
    assert scores(blind, task, batch, "generate", length=12) == {"exact": 1.0, "answer": 1.0}
    no_retriever = copy.copy(task)
    no_retriever.search_ids = None
    assert accuracy(blind, no_retriever, batch, "generate", length=12) == 0.0


# -- accuracy and evaluate ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["teacher_forced", "generate"])
def test_accuracy_is_exact_match_per_example(mode: str) -> None:
    task = Reverse()
    batch = task.sample(np.random.default_rng(0), 6, 5, train=True)
    assert accuracy(oracle(batch, len(task.vocab)), task, batch, mode) == 1.0
    all_wrong = oracle(batch, len(task.vocab), wrong=range(6))
    assert accuracy(all_wrong, task, batch, mode) == 0.0
    half_wrong = oracle(batch, len(task.vocab), wrong=[0, 2, 4])
    assert accuracy(half_wrong, task, batch, mode) == 0.5


def test_generate_mode_is_judged_by_task_check() -> None:
    task = Reverse()
    batch = task.sample(np.random.default_rng(3), 8, 4)
    model = oracle(batch, len(task.vocab), wrong=[1, 5])
    prompts = [batch.prompt(i).tolist() for i in range(len(batch))]
    judged = [task.check(p, c) for p, c in zip(prompts, generate(model, task, prompts, length=4))]
    assert judged == [b not in (1, 5) for b in range(8)]
    assert accuracy(model, task, batch, "generate", length=4) == np.mean(judged)


@pytest.mark.parametrize("mode", ["teacher_forced", "generate"])
def test_evaluate_reports_each_length_on_fresh_test_batches(mode: str) -> None:
    task = Reverse()
    model = reverse_solver(task, up_to=4)
    result = evaluate(
        model,
        task,
        lengths=[3, 6],
        examples=5,
        mode=mode,
        rng=np.random.default_rng(0),
        batch_size=2,
    )
    assert result == {3: 1.0, 6: 0.0}


# -- the answer metric --------------------------------------------------------------------------


def replaying(batch: Batch, vocab_size: int, completions: list[list[int]]) -> FunctionModel:
    """Emits ``completions[b]`` after prompt b, one token per step, whatever it is fed."""
    by_prompt = {tuple(batch.prompt(b).tolist()): c for b, c in enumerate(completions)}

    def next_token(seen: list[int]) -> int:
        for prompt, completion in by_prompt.items():
            k = len(seen) - len(prompt)
            if tuple(seen[: len(prompt)]) == prompt and k < len(completion):
                return completion[k]
        return 0

    return FunctionModel(vocab_size, next_token)


def test_answer_metric_judges_the_label_after_the_trace_only() -> None:
    task = tasks.get("is_tree", mode="cot")
    batch = task.sample(np.random.default_rng(5), 8, 6)
    flip = {task.true: task.false, task.false: task.true}
    completions = [batch.completion(b).tolist() for b in range(len(batch))]
    for b in (0, 1, 2):  # a wrong trace, the right label
        completions[b][1] = completions[b][0]
    for b in (3, 4):  # the right trace, the wrong label
        completions[b][-1] = flip[completions[b][-1]]
    completions[5] = completions[5][:-2] + completions[5][-1:]  # no [EOS]: no answer
    model = replaying(batch, len(task.vocab), completions)
    assert scores(model, task, batch, "generate", length=6) == {"exact": 2 / 8, "answer": 5 / 8}
    assert scores(model, task, batch, "teacher_forced") == {"exact": 2 / 8}


@pytest.mark.parametrize("mode", ["teacher_forced", "generate"])
def test_evaluate_metrics_reports_answer_only_when_generating(mode: str) -> None:
    task = Reverse()
    model = reverse_solver(task, up_to=4)
    kwargs = {"lengths": [3, 6], "examples": 5, "mode": mode, "batch_size": 2}
    result = evaluate_metrics(model, task, rng=np.random.default_rng(0), **kwargs)
    expected = {"exact": {3: 1.0, 6: 0.0}}
    if mode == "generate":  # Reverse has no trace: its answer is its completion
        expected["answer"] = expected["exact"]
    assert result == expected
    assert evaluate(model, task, rng=np.random.default_rng(0), **kwargs) == expected["exact"]


@pytest.mark.parametrize("mode", ["cot", "retrieval"])
def test_teacher_forced_exact_equals_generated_exact_on_is_tree(mode: str) -> None:
    """IsTree has one correct trace per prompt and the retriever is an oracle, so
    ``train.val_mode: teacher_forced`` validates a generating run with the same ``exact``."""
    task = tasks.get("is_tree", mode=mode)
    batch = task.sample(np.random.default_rng(1), 8, 6)
    model = oracle(batch, len(task.vocab), blind=mode == "retrieval", wrong=[1, 4])
    forced = accuracy(model, task, batch, "teacher_forced")
    assert forced == accuracy(model, task, batch, "generate", length=6) == 0.75
