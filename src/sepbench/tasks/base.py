"""The Task contract (../shared/design.md, "Contracts"): every task is a causal-LM problem.

An example is a *prompt* followed by a *completion* (a chain-of-thought trace if any, then the
answer). A :class:`Batch` holds right-padded int64 token rows; ``loss_mask`` is aligned with
``tokens`` and is True exactly at the completion tokens the model is trained to predict (all of
the completion, minus tokens handed in by a retriever). A training loop therefore predicts
``tokens[:, 1:]`` from ``tokens[:, :-1]`` and weighs the loss by ``loss_mask[:, 1:]``.

Each task draws its data from a ``numpy.random.Generator``, so a seed fixes the data; judges a
completion with :meth:`Task.check`, an independent solver that never looks at the stored
completion, and its final answer alone with :meth:`Task.answer_check`; states its chance level
(:meth:`Task.chance`); and, if it has a retrieval trace, answers search calls with
:meth:`Task.answer_query`.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from sepbench.errors import SepbenchError, check_int, unknown_name

PAD = "[PAD]"


class Vocab:
    """Token strings <-> ids. Id 0 is always ``[PAD]``."""

    def __init__(self, tokens: Iterable[str]) -> None:
        tokens = [PAD, *[t for t in tokens if t != PAD]]
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be distinct")
        self.tokens: tuple[str, ...] = tuple(tokens)
        self._ids = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._ids

    def id(self, token: str) -> int:
        return self._ids[token]

    def ids(self, tokens: Iterable[str]) -> list[int]:
        return [self._ids[t] for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def text(self, ids: Iterable[int]) -> str:
        """Space-separated token strings, the export format."""
        return " ".join(self.decode(ids))


@dataclass
class Batch:
    """Right-padded examples: ``tokens`` is prompt then completion, padded with id 0.

    ``loss_mask[b, t]`` is True when ``tokens[b, t]`` is a trained completion token.
    ``answers[b]`` is the final answer as a string (token strings joined by spaces).
    """

    tokens: np.ndarray  # (B, T) int64
    loss_mask: np.ndarray  # (B, T) bool
    prompt_lengths: np.ndarray  # (B,) int64
    lengths: np.ndarray  # (B,) int64, prompt + completion
    answers: list[str]

    def __len__(self) -> int:
        return len(self.answers)

    def prompt(self, i: int) -> np.ndarray:
        return self.tokens[i, : self.prompt_lengths[i]]

    def completion(self, i: int) -> np.ndarray:
        return self.tokens[i, self.prompt_lengths[i] : self.lengths[i]]

    @classmethod
    def from_rows(
        cls,
        prompts: Sequence[Sequence[int]],
        completions: Sequence[Sequence[int]],
        answers: Sequence[str],
        given: Sequence[Sequence[bool]] | None = None,
    ) -> Batch:
        """Build a batch from per-example id lists (for tasks that cannot be vectorised).

        ``given[b][j]`` marks completion token j as handed in (retrieved), hence not trained.
        """
        lengths = np.array([len(p) + len(c) for p, c in zip(prompts, completions)], np.int64)
        width = int(lengths.max()) if len(lengths) else 0
        tokens = np.zeros((len(prompts), width), np.int64)
        loss_mask = np.zeros((len(prompts), width), bool)
        for b, (p, c) in enumerate(zip(prompts, completions)):
            tokens[b, : len(p)] = p
            tokens[b, len(p) : len(p) + len(c)] = c
            trained = np.ones(len(c), bool) if given is None else ~np.asarray(given[b], bool)
            loss_mask[b, len(p) : len(p) + len(c)] = trained
        prompt_lengths = np.array([len(p) for p in prompts], np.int64)
        return cls(tokens, loss_mask, prompt_lengths, lengths, list(answers))

    @classmethod
    def from_arrays(
        cls, prompts: np.ndarray, completions: np.ndarray, answers: Sequence[str]
    ) -> Batch:
        """Build a batch from equal-length prompts (B, P) and completions (B, C)."""
        batch, prompt_len = prompts.shape
        tokens = np.concatenate([prompts, completions], axis=1).astype(np.int64)
        loss_mask = np.zeros(tokens.shape, bool)
        loss_mask[:, prompt_len:] = True
        return cls(
            tokens,
            loss_mask,
            np.full(batch, prompt_len, np.int64),
            np.full(batch, tokens.shape[1], np.int64),
            list(answers),
        )

    @classmethod
    def concat(cls, batches: Sequence[Batch]) -> Batch:
        """Stack batches, right-padding to the longest row."""
        rows = sum(len(b) for b in batches)
        width = max(b.tokens.shape[1] for b in batches)
        tokens = np.zeros((rows, width), np.int64)
        loss_mask = np.zeros((rows, width), bool)
        start = 0
        for b in batches:
            end = start + len(b)
            tokens[start:end, : b.tokens.shape[1]] = b.tokens
            loss_mask[start:end, : b.tokens.shape[1]] = b.loss_mask
            start = end
        return cls(
            tokens,
            loss_mask,
            np.concatenate([b.prompt_lengths for b in batches]),
            np.concatenate([b.lengths for b in batches]),
            [a for b in batches for a in b.answers],
        )


TRACE_OFF = {"cot": False, "filler": False, "mode": "none"}
"""The task parameters that turn a trace on, each at its value without one."""


class Task(ABC):
    """A separation task. Subclasses set the class attributes and implement three methods.

    Class attributes:
      ``name``            registry name.
      ``paper``           the source, as a papers.md section, e.g. "Bhattamishra et al. §2".
      ``summary``         what the task tests, one line.
      ``length_meaning``  what ``length`` counts (tokens, nodes, bits, digits...).
      ``min_length``      the smallest allowed ``length``.

    Instance attributes set by ``__init__``: ``vocab``; ``stop_ids`` (free generation ends after
    emitting one of these); optionally ``search_ids`` = (start id, end id) for retrieval traces;
    ``traced`` is True when the completion holds a trace before its final answer (CoT,
    retrieval calls, filler), so that :meth:`answer_check` judges the answer alone;
    ``generates`` is False when free generation cannot run the task (input tokens are handed in
    inside the completion: the serial tasks' interleaved layout), so only teacher forcing
    scores it.
    ``params`` holds the resolved constructor parameters.
    """

    name: ClassVar[str]
    paper: ClassVar[str]
    summary: ClassVar[str]
    length_meaning: ClassVar[str]
    min_length: ClassVar[int] = 1

    vocab: Vocab
    stop_ids: frozenset[int] = frozenset()
    search_ids: tuple[int, int] | None = None
    traced: bool = False
    generates: bool = True
    params: dict[str, Any]

    # -- what subclasses implement ------------------------------------------------------

    @abstractmethod
    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        """``batch_size`` examples at exactly ``length`` (vectorised where the task allows)."""

    @abstractmethod
    def check(self, prompt: Sequence[int], completion: Sequence[int]) -> bool:
        """Solve ``prompt`` independently and judge ``completion``; never raises on junk."""

    @abstractmethod
    def completion_cap(self, length: int) -> int:
        """The most completion tokens free generation may emit at this ``length``."""

    @abstractmethod
    def chance(self, length: int) -> float:
        """Chance accuracy at test ``length``: the accuracy of the best guess that does not
        read the prompt, i.e. the probability of the most likely judged completion (prompt
        excluded; trace and answer together, as scored). For a one-token answer this is the
        majority answer (1/|Σ| for a uniform symbol, 1/2 for a balanced label); for a trace
        it is the most likely whole trace, usually close to 0 (teacher forcing shows a model
        the true trace so far, so there a model blind to the prompt can score above it).
        Computed from the generator's distribution, never sampled; every task's value is tested
        against a sampled estimate.
        """

    def answer_chance(self, length: int) -> float:
        """Chance of the ``answer`` metric (the final answer alone, whatever the trace): the
        :meth:`chance` of the same task without its trace. A trace (CoT, filler, retrieval
        calls) is written after the prompt, so it leaves the prompts and their answers as they
        are; for IsTree it is 1/2 (papers.md §1)."""
        if not self.traced:
            return self.chance(length)
        untraced = {key: TRACE_OFF.get(key, value) for key, value in self.params.items()}
        return type(self)(**untraced).chance(length)

    def max_length(self) -> int | None:
        """The largest allowed ``length`` (None: unbounded). Override when the vocab caps it."""
        return None

    def train_lengths(self, rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray:
        """Per-example training lengths for test length ``length``. Default: exactly ``length``."""
        return np.full(batch_size, length, np.int64)

    def answer_query(self, context: Sequence[int], query: Sequence[int]) -> list[int]:
        """Answer a search call; ``context`` is every token so far. Retrieval tasks override."""
        raise NotImplementedError(f"{self.name} has no retrieval trace")

    # -- the final answer (the ``answer`` metric) -----------------------------------------

    def final_answer(self, completion: Sequence[int]) -> str | None:
        """The answer ``completion`` commits to, as token strings joined by spaces (the format
        of ``Batch.answers``); None when it commits to none. Default: the whole completion.
        Tasks whose completion holds more than the answer (a trace, an end token) override it.
        """
        ids = [int(t) for t in completion]
        if not ids or not all(0 < t < len(self.vocab) for t in ids):
            return None
        return self.vocab.text(ids)

    def solution(self, prompt: Sequence[int]) -> str | None:
        """The prompt's answer by the task's independent solver, in the format of
        :meth:`final_answer`; None for a malformed prompt. Tasks with ``traced`` implement it."""
        raise NotImplementedError(f"{self.name} has no trace: its answer is the completion")

    def answer_check(self, prompt: Sequence[int], completion: Sequence[int]) -> bool:
        """Is the final answer right, whatever the trace before it (the ``answer`` metric of
        papers.md §1: Wen et al. score the label after the trace)? Without ``traced`` the
        completion is the answer, so this is :meth:`check`. Never raises on junk."""
        if not self.traced:
            return self.check(prompt, completion)
        answer = self.final_answer(completion)
        return answer is not None and answer == self.solution(prompt)

    # -- shared behaviour --------------------------------------------------------------

    def validate_length(self, length: int) -> int:
        return check_int(self.name, "length", length, self.min_length, self.max_length())

    def generate_lengths(self, rng: np.random.Generator, lengths: np.ndarray) -> Batch:
        """Examples of per-example ``lengths``. Default: one :meth:`generate` call per distinct
        length (ascending); tasks override it with a single vectorised pass where they can."""
        values, counts = np.unique(lengths, return_counts=True)
        return Batch.concat([self.generate(rng, int(n), int(k)) for k, n in zip(values, counts)])

    def sample(
        self, rng: np.random.Generator, batch_size: int, length: int, *, train: bool = False
    ) -> Batch:
        """A batch at test ``length``; with ``train=True`` lengths follow :meth:`train_lengths`.

        The order of examples within a batch carries no information.
        """
        self.validate_length(length)
        check_int(self.name, "batch_size", batch_size, 1)
        if not train:
            return self.generate(rng, batch_size, length)
        return self.generate_lengths(rng, self.train_lengths(rng, batch_size, length))

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({params})"


_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator adding a task to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_REGISTRY)


def task_class(name: str) -> type[Task]:
    if name not in _REGISTRY:
        raise unknown_name("task", name, _REGISTRY)
    return _REGISTRY[name]


def allowed_params(cls: type[Task] | Callable[..., Any]) -> dict[str, Any]:
    """Keyword parameters (with defaults) that a task's constructor accepts."""
    signature = inspect.signature(cls)
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def get(name: str, **params: Any) -> Task:
    """Build task ``name``; unknown or out-of-range parameters raise a one-line error."""
    cls = task_class(name)
    allowed = allowed_params(cls)
    for key in params:
        if key not in allowed:
            raise SepbenchError(
                f"{name}: unknown parameter {key!r}; allowed: {', '.join(allowed) or 'none'}"
            )
    task = cls(**params)
    task.params = {**allowed, **params}
    return task
