"""Evaluation: teacher-forced exact match, greedy free generation, and the live retriever.

Two metrics, one per meaning of "correct":

- ``exact``: the example is right in full, trace and answer. Teacher-forced, the argmax at
  every supervised position equals the target; generated, ``task.check`` (the task's own
  independent solver) accepts the whole completion.
- ``answer``: the generated completion's final answer is right, whatever its trace
  (``task.answer_check``; Wen et al.'s metric, papers.md §1: decode to the first ``[EOS]``,
  then the label). For a task without a trace it equals ``exact``. It is a generation metric:
  teacher forcing feeds the gold trace, so it has no ``answer``.

Entry points:

- :func:`accuracy` scores one :class:`~sepbench.tasks.base.Batch` (``exact``);
  :func:`scores` gives every metric of the mode from one decoding.
- :func:`generate` is batched greedy decoding that carries the model state: the prompts are fed
  once and then one token per step, never re-running the prefix.
- :func:`evaluate_metrics` samples fresh test batches at each length (length generalisation,
  papers.md §3) and reports each metric per length; :func:`evaluate` is its ``exact`` part;
  :func:`length_scores` sums a metric up as its in- and out-of-distribution means.

Live in-context retrieval (papers.md §1): Wen et al. insert oracle search results while
training and their published code runs no retriever at evaluation time. Here, when a task has
``search_ids``, the decoder reads the query the model writes between the search tokens, asks
``task.answer_query`` with everything seen so far, and feeds the result to the model as given
(forced) tokens before decoding on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from sepbench.errors import SepbenchError, check_choice, check_int
from sepbench.tasks.base import Batch, Task

MODES = ("teacher_forced", "generate")
FAILED = "[FAILED]"
QUERY_CAP = 16
"""The most query tokens the retriever reads; a longer or never-closed query gets ``[FAILED]``.

Wen et al. leave it open (their queries have 1-3 tokens); 16 leaves room for any query of the
IsTree trace while bounding a model that never closes its search call."""


def accuracy(
    model: nn.Module,
    task: Task,
    batch: Batch,
    mode: str = "teacher_forced",
    *,
    length: int | None = None,
) -> float:
    """Fraction of the batch's examples that are fully correct (``exact``).

    ``teacher_forced``: one forward pass over the padded batch; an example is correct when the
    argmax at every position where ``loss_mask[:, 1:]`` is True equals the next token (retrieved
    tokens carry no loss, so they are not judged). An example without supervised tokens counts
    as correct.

    ``generate``: greedy free generation from each prompt (:func:`generate`, with the live
    retriever), judged by ``task.check``. The completion cap is ``task.completion_cap(length)``
    when ``length`` is given, else the longest stored completion of the batch (no correct
    completion is longer than the task's own, and it keeps validation of an untrained model
    that never stops cheap).
    """
    return scores(model, task, batch, mode, length=length)["exact"]


def scores(
    model: nn.Module,
    task: Task,
    batch: Batch,
    mode: str = "teacher_forced",
    *,
    length: int | None = None,
) -> dict[str, float]:
    """Every metric of ``mode`` on one batch: ``exact`` (see :func:`accuracy`), and with
    ``generate`` also ``answer`` (``task.answer_check`` on the same completions)."""
    check_choice("accuracy", "mode", mode, MODES)
    if len(batch) == 0:
        raise SepbenchError("accuracy: batch must hold at least 1 example")
    if mode == "teacher_forced":
        return {"exact": _teacher_forced(model, batch)}
    if not task.generates:
        raise SepbenchError(
            f"accuracy: {task.describe()} hands its input in inside the completion; "
            "score it teacher_forced"
        )
    prompts = [batch.prompt(i) for i in range(len(batch))]
    cap = None if length is not None else int((batch.lengths - batch.prompt_lengths).max())
    completions = generate(model, task, prompts, max_new_tokens=cap, length=length)
    pairs = list(zip(prompts, completions))
    return {
        "exact": float(np.mean([task.check(p, c) for p, c in pairs])),
        "answer": float(np.mean([task.answer_check(p, c) for p, c in pairs])),
    }


def generate(
    model: nn.Module,
    task: Task,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int | None = None,
    length: int | None = None,
) -> list[list[int]]:
    """Greedy completions of ``prompts``, decoded in one batch with the model state carried.

    The common prefix (the shortest prompt's length) is fed as one chunk; then every example
    advances one token per step in lockstep. An example still inside its prompt is fed its next
    prompt token instead of its prediction, and a finished one is fed ``[PAD]`` (its outputs
    are ignored), so all rows sit at the same position and ``ModelState.position`` is uniform.

    An example stops after emitting a token of ``task.stop_ids`` or when its completion reaches
    the cap: ``max_new_tokens`` if given, else ``task.completion_cap(length)``. The returned
    completion is everything after the prompt (emitted and retrieved tokens), up to and
    including the stop token. With ``task.search_ids`` set, search calls are answered live
    (see :class:`_Example`). Runs under ``torch.no_grad()`` and ``model.eval()`` on the
    model's device; the model's training mode is restored afterwards.
    """
    cap = _completion_cap(task, max_new_tokens, length)
    if not prompts:
        return []
    if min(len(p) for p in prompts) == 0:
        raise SepbenchError("generate: every prompt needs at least 1 token")
    if task.search_ids is not None and FAILED not in task.vocab:
        raise SepbenchError(f"generate: {task.name} has search_ids but no {FAILED} token")
    common = min(len(p) for p in prompts)
    examples = [_Example(task, p, cap, fed=common) for p in prompts]
    with _inference(model) as device:
        chunk = torch.tensor([list(p[:common]) for p in prompts], dtype=torch.long, device=device)
        logits, state = model(chunk)
        while True:
            predictions = logits[:, -1].argmax(-1).tolist()
            inputs = [example.advance(int(p)) for example, p in zip(examples, predictions)]
            if all(example.done for example in examples):
                break
            step = torch.tensor(inputs, dtype=torch.long, device=device)[:, None]
            logits, state = model(step, state)
    return [example.completion for example in examples]


def evaluate(
    model: nn.Module,
    task: Task,
    *,
    lengths: Sequence[int],
    examples: int,
    mode: str,
    rng: np.random.Generator,
    batch_size: int = 256,
) -> dict[int, float]:
    """``exact`` accuracy at each test length (:func:`evaluate_metrics`)."""
    return evaluate_metrics(
        model, task, lengths=lengths, examples=examples, mode=mode, rng=rng, batch_size=batch_size
    )["exact"]


def evaluate_metrics(
    model: nn.Module,
    task: Task,
    *,
    lengths: Sequence[int],
    examples: int,
    mode: str,
    rng: np.random.Generator,
    batch_size: int = 256,
) -> dict[str, dict[int, float]]:
    """Each metric of ``mode`` (see :func:`scores`) at each test length, on ``examples``
    freshly sampled test examples: ``{"exact": {length: accuracy}, "answer": {...}}``.

    Test batches come from ``task.sample(rng, n, length)`` (the test distribution, exactly
    ``length``), at most ``batch_size`` at a time; free generation is capped by
    ``task.completion_cap(length)``. Lengths are visited in the given order, so ``rng`` fixes
    the data.
    """
    check_choice("evaluate", "mode", mode, MODES)
    check_int("evaluate", "examples", examples, 1)
    check_int("evaluate", "batch_size", batch_size, 1)
    if not lengths:
        raise SepbenchError("evaluate: lengths must list at least 1 length")
    totals: dict[str, dict[int, float]] = {}
    for length, batch in sample_test_set(task, lengths, examples, rng, batch_size):
        for metric, value in scores(model, task, batch, mode, length=length).items():
            per_length = totals.setdefault(metric, {})
            per_length[length] = per_length.get(length, 0.0) + len(batch) * value
    return {
        metric: {length: total / examples for length, total in per_length.items()}
        for metric, per_length in totals.items()
    }


def sample_test_set(
    task: Task, lengths: Sequence[int], examples: int, rng: np.random.Generator, batch_size: int
) -> Iterator[tuple[int, Batch]]:
    """The test set: ``examples`` at each length in turn, ``batch_size`` at a time."""
    for length in lengths:
        for start in range(0, examples, batch_size):
            yield int(length), task.sample(rng, min(batch_size, examples - start), length)


def length_scores(
    per_length: dict[int, float], train_max: int, name: str = "accuracy"
) -> dict[str, float]:
    """The summary scores of the length-generalisation protocol (papers.md §3, Delétang et al.):
    ``ood_<name>``, the mean over the test lengths beyond ``train_max`` of a per-length
    metric (each length weighs the same, however many examples it had), and ``id_<name>``, the
    same over the lengths up to ``train_max``. A score with no lengths on its side is left out.
    """
    sides = {
        f"id_{name}": [a for n, a in per_length.items() if n <= train_max],
        f"ood_{name}": [a for n, a in per_length.items() if n > train_max],
    }
    return {key: float(np.mean(values)) for key, values in sides.items() if values}


# -- helpers -----------------------------------------------------------------------------------


def _teacher_forced(model: nn.Module, batch: Batch) -> float:
    with _inference(model) as device:
        tokens = torch.from_numpy(batch.tokens).to(device)
        logits, _ = model(tokens[:, :-1])
        supervised = torch.from_numpy(batch.loss_mask[:, 1:]).to(device)
        wrong = (logits.argmax(-1) != tokens[:, 1:]) & supervised
        return float((~wrong.any(dim=1)).float().mean())


def _completion_cap(task: Task, max_new_tokens: int | None, length: int | None) -> int:
    if max_new_tokens is not None:
        return check_int("generate", "max_new_tokens", max_new_tokens, 1)
    if length is None:
        raise SepbenchError("generate: give max_new_tokens (>= 1) or the task length")
    return task.completion_cap(task.validate_length(length))


@contextmanager
def _inference(model: nn.Module) -> Iterator[torch.device]:
    """``model.eval()`` and ``torch.no_grad()`` for the block; yields the model's device."""
    was_training = model.training
    parameter = next(model.parameters(), None)
    model.eval()
    try:
        with torch.no_grad():
            yield parameter.device if parameter is not None else torch.device("cpu")
    finally:
        model.train(was_training)


class _Example:
    """One row of lockstep decoding: what to feed next, the completion, the search call.

    :meth:`advance` takes the model's prediction after the last fed token and returns the next
    token to feed, in this order of precedence: the rest of the prompt; retrieved tokens
    waiting to be fed; otherwise the prediction itself, which is emitted into the completion.

    The retriever (papers.md §1): an emitted ``[STARTSEARCH]`` opens a query; the tokens
    emitted up to ``[ENDSEARCH]`` are the query; the answer ``task.answer_query(context,
    query)``, with context = prompt + completion up to and including ``[ENDSEARCH]``, is fed as
    given tokens. An empty query, or an answer_query that raises or returns no valid token
    ids, yields ``[FAILED]``. A query that grows past :data:`QUERY_CAP` tokens is closed by the
    decoder, which feeds ``[ENDSEARCH] [FAILED]`` (so the trace keeps its grammar). Retrieved
    tokens count toward the completion cap and never stop decoding.
    """

    def __init__(self, task: Task, prompt: Sequence[int], cap: int, *, fed: int) -> None:
        self.task, self.prompt, self.cap = task, [int(t) for t in prompt], cap
        self.fed = fed  # prompt tokens already fed
        self.completion: list[int] = []
        self.given: deque[int] = deque()
        self.query: list[int] | None = None
        self.done = cap < 1

    def advance(self, prediction: int) -> int:
        if self.done:
            return 0
        if self.fed < len(self.prompt):
            self.fed += 1
            return self.prompt[self.fed - 1]
        if self.given:
            token = self.given.popleft()
            self.completion.append(token)
        else:
            token = prediction
            self.completion.append(token)
            self.done = token in self.task.stop_ids
            if self.task.search_ids is not None and not self.done:
                self._search(token)
        self.done = self.done or len(self.completion) >= self.cap
        return token

    def _search(self, token: int) -> None:
        start, end = self.task.search_ids
        if self.query is None:
            if token == start:
                self.query = []
        elif token == end:
            self.given.extend(self._answer(self.query))
            self.query = None
        elif len(self.query) < QUERY_CAP:
            self.query.append(token)
        else:
            self.given.extend([end, self.task.vocab.id(FAILED)])
            self.query = None

    def _answer(self, query: list[int]) -> list[int]:
        failed = [self.task.vocab.id(FAILED)]
        if not query:
            return failed
        try:
            answer = [int(t) for t in self.task.answer_query(self.prompt + self.completion, query)]
        except Exception:  # a broken query must never end the run: it is a failed search
            return failed
        if not answer or not all(0 <= t < len(self.task.vocab) for t in answer):
            return failed
        return answer
