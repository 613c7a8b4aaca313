"""In-context retrieval: index lookup (Bhattamishra et al. §2), associative recall (Wen et al.
§1, with Zoology's multi-query form) and nearest neighbour (Bhattamishra et al. §2).

Each needs exact access to one earlier token chosen by the query, which a recurrent model with
o(N) bits of state cannot provide (the INDEX communication bound of papers.md §1 and §2).

Wen et al.'s remedy (papers.md §1) is in-context retrieval: the model writes a query between
``[STARTSEARCH]`` and ``[ENDSEARCH]``, a retriever searches the context and hands the result
in as a given token, and the model then writes the answer. Index lookup and associative recall
take ``mode: retrieval`` for it: one search call per answer, ``[STARTSEARCH] query
[ENDSEARCH] <result> answer``, the result untrained, answered live by :meth:`answer_query`
during decoding (``sepbench.evaluate``). The search tokens join the vocabulary only in that
mode, so ``mode: none`` keeps the papers' vocabulary and data exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sepbench.errors import SepbenchError, check_choice, check_int
from sepbench.tasks.base import Batch, Task, Vocab, register

SEP, TRUE, FALSE, PLUS, MINUS = "[SEP]", "[TRUE]", "[FALSE]", "+", "-"
START, END, FAILED = "[STARTSEARCH]", "[ENDSEARCH]", "[FAILED]"
MODES = ("none", "retrieval")
SEARCH_CALL = ("start", "query", "end", "retrieved", "answer")
"""The completion of one answer in ``retrieval`` mode, by role; ``none`` writes the answer."""


def _search_tokens(task: Task, mode: str) -> list[str]:
    """Validate ``mode``; the search tokens it adds to the vocabulary (none for ``none``)."""
    check_choice(task.name, "mode", mode, MODES)
    return [START, END, FAILED] if mode == "retrieval" else []


def _enable_search(task: Task, mode: str) -> None:
    """Set ``mode``, ``traced`` and ``search_ids`` (the vocabulary must be built)."""
    task.mode, task.traced = mode, mode == "retrieval"
    if task.traced:
        task.search_ids = (task.vocab.id(START), task.vocab.id(END))


def _roles(task: Task) -> tuple[str, ...]:
    return SEARCH_CALL if task.traced else ("answer",)


def _fill_calls(
    task: Task,
    tokens: np.ndarray,
    rows: np.ndarray,
    column: np.ndarray,
    query: np.ndarray,
    answer: np.ndarray,
) -> None:
    """Write one answer's completion (see :data:`SEARCH_CALL`) at ``tokens[rows, column:]``."""
    values = {"query": query, "retrieved": answer, "answer": answer}
    if task.traced:
        values["start"], values["end"] = task.vocab.ids([START, END])
    for j, role in enumerate(_roles(task)):
        tokens[rows, column + j] = values[role]


def _outside_searches(task: Task, completion: Sequence[int]) -> str | None:
    """The completion without its search calls (``[STARTSEARCH] .. [ENDSEARCH] <result>``, an
    unclosed one to the end): the answer it commits to, whether it searched or not."""
    ids, kept, j = [int(t) for t in completion], [], 0
    start, end = task.vocab.ids([START, END])
    while j < len(ids):
        if ids[j] != start:
            kept.append(ids[j])
            j += 1
            continue
        j = ids.index(end, j) + 2 if end in ids[j:] else len(ids)
    return Task.final_answer(task, kept)


def _distinct(rng: np.random.Generator, batch: int, population: int, count: int) -> np.ndarray:
    """(batch, count) distinct draws from range(population) per row, in random order."""
    return np.argsort(rng.random((batch, population)), axis=1)[:, :count]


@register
class IndexLookup(Task):
    """Index lookup: symbols s_1 .. s_N then a position token p; the answer is s_p.

    Format (papers.md §2, appendix H): ``a<i>`` are the ``vocab_size`` symbols (i.i.d.
    uniform), ``@<p>`` the position tokens for p in 1 .. ``max_length``; prompt
    ``s_1 .. s_N @p``, completion the single token s_p. ``length`` = N, the number of symbols.
    Test length exactly N with p ~ U{1..N}. Training lengths are k ~ U{10..N} (U{1..N} when
    N < 10, a choice the paper leaves open) with p ~ U{1..k}, the paper's sampling. Under it
    position j is queried with probability ∝ Σ_{k ≥ j} 1/k: at N = 100 the last position is
    trained about 240 times less often than the first, and a learned position table leaves the tail
    untrained (the demo preset's header gives the measurement). ``last_queries`` is the
    fraction of training examples that query their last symbol instead (p = k), which gives
    every position j ≥ 10 at least that fraction of the k = j examples and leaves the length
    distribution as it is. Drawing p uniformly over 1..N and k ≥ p instead removes the short
    examples that let attention find the positions at all.

    ``max_length`` sizes the position vocabulary and bounds N.

    ``mode: retrieval`` (Wen et al.'s in-context RAG, papers.md §1, applied to this task):
    the completion is ``[STARTSEARCH] @p [ENDSEARCH] <s_p> s_p``; the retriever answers
    ``@p`` with the p-th symbol of the context, so the model only has to copy the query and
    then the retrieved symbol. Measured at N = 100 (|Σ| = 64, last_queries 0.25, batch 64, lr
    1e-3): a one-layer LSTM of width 64 reached 1.000 by free generation with the live
    retriever after 400 steps, and 0.028 without retrieval after 1,000 steps (chance 0.016).
    """

    name = "index_lookup"
    paper = "Bhattamishra et al. §2"
    summary = "return the symbol at a queried position: exact retrieval from the context"
    length_meaning = "symbols before the position token"
    min_length = 1

    def __init__(
        self,
        *,
        vocab_size: int = 64,
        max_length: int = 512,
        last_queries: float = 0.0,
        mode: str = "none",
    ) -> None:
        self.vocab_size = check_int(self.name, "vocab_size", vocab_size, 2)
        self.positions = check_int(self.name, "max_length", max_length, 1)
        if isinstance(last_queries, bool) or not isinstance(last_queries, (int, float)) or not (
            0 <= last_queries <= 1
        ):
            raise SepbenchError(
                f"{self.name}: last_queries must be a fraction in [0, 1], got {last_queries}"
            )
        self.last_queries = float(last_queries)
        symbols = [f"a{i}" for i in range(self.vocab_size)]
        positions = [f"@{p}" for p in range(1, self.positions + 1)]
        self.vocab = Vocab([*symbols, *positions, *_search_tokens(self, mode)])
        _enable_search(self, mode)
        self.symbol0, self.position1 = self.vocab.id("a0"), self.vocab.id("@1")
        self.strings = np.array(self.vocab.tokens, dtype=object)  # id array -> token strings

    def max_length(self) -> int:
        return self.positions

    def completion_cap(self, length: int) -> int:
        return len(_roles(self))

    def chance(self, length: int) -> float:
        """1/|Σ|: the answer is a uniform symbol (test queries never use ``last_queries``)."""
        self.validate_length(length)
        return 1 / self.vocab_size

    def train_lengths(self, rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray:
        low = 10 if length >= 10 else self.min_length
        return rng.integers(low, length + 1, batch_size)

    def sample(
        self, rng: np.random.Generator, batch_size: int, length: int, *, train: bool = False
    ) -> Batch:
        """Training batches re-aim a ``last_queries`` fraction of their queries at p = k."""
        batch = super().sample(rng, batch_size, length, train=train)
        if train and self.last_queries:
            rows = np.flatnonzero(rng.random(len(batch)) < self.last_queries)
            last = batch.prompt_lengths[rows] - 2  # index of s_k
            query, answers = last + self.position1, batch.tokens[rows, last]
            batch.tokens[rows, last + 1] = query
            _fill_calls(self, batch.tokens, rows, last + 2, query, answers)
            for row, answer in zip(rows, answers):
                batch.answers[row] = self.strings[answer]
        return batch

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        self.validate_length(length)
        return self.generate_lengths(rng, np.full(batch_size, length))

    def generate_lengths(self, rng: np.random.Generator, lengths: np.ndarray) -> Batch:
        """One vectorised pass for any mix of lengths: ``s_1 .. s_k @p`` then the completion
        (``s_p``, or its search call then ``s_p``), right-padded."""
        batch_size, longest = len(lengths), int(lengths.max())
        roles = _roles(self)
        rows, columns = np.arange(batch_size), np.arange(longest + 1 + len(roles))
        symbols = rng.integers(0, self.vocab_size, (batch_size, longest)) + self.symbol0
        positions = rng.integers(0, lengths)
        tokens = np.zeros((batch_size, len(columns)), np.int64)
        tokens[:, :longest] = np.where(columns[:longest] < lengths[:, None], symbols, 0)
        answers = symbols[rows, positions]
        tokens[rows, lengths] = positions + self.position1
        _fill_calls(self, tokens, rows, lengths + 1, positions + self.position1, answers)
        trained = [j for j, role in enumerate(roles) if role != "retrieved"]
        loss_mask = np.isin(columns - (lengths + 1)[:, None], trained)
        prompt_lengths = lengths + 1
        return Batch(
            tokens,
            loss_mask,
            prompt_lengths,
            prompt_lengths + len(roles),
            self.strings[answers].tolist(),
        )

    def check(self, prompt: Sequence[int], completion: Sequence[int]) -> bool:
        """Solve the prompt; with retrieval, replay the search call through the retriever."""
        tokens = [int(t) for t in prompt]
        answer = self._solve(tokens)
        if answer is None:
            return False
        expected = [answer]
        if self.traced:
            start, end = self.vocab.ids([START, END])
            call = [start, tokens[-1], end]
            expected = [*call, *self.answer_query(tokens + call, tokens[-1:]), answer]
        return [int(t) for t in completion] == expected

    def _solve(self, prompt: list[int]) -> int | None:
        """s_p for a well-formed prompt ``s_1 .. s_N @p``, else None."""
        if len(prompt) < 2:
            return None
        *symbols, query = prompt
        p = query - self.position1 + 1
        if not 1 <= p <= len(symbols) or not all(map(self._is_symbol, symbols)):
            return None
        return symbols[p - 1]

    def _is_symbol(self, token: int) -> bool:
        return self.symbol0 <= token < self.symbol0 + self.vocab_size

    def answer_query(self, context: Sequence[int], query: Sequence[int]) -> list[int]:
        """``@p`` -> the p-th symbol of the context (of its leading run of symbols); any
        other query, or p past that run, gives ``[FAILED]``."""
        q = [int(t) for t in query]
        failed = [self.vocab.id(FAILED)]
        if len(q) != 1 or not 0 <= q[0] - self.position1 < self.positions:
            return failed
        p = q[0] - self.position1 + 1
        leading = [int(t) for t in context[:p]]
        if len(leading) < p or not all(map(self._is_symbol, leading)):
            return failed
        return [leading[-1]]

    def final_answer(self, completion: Sequence[int]) -> str | None:
        """The completion without its search call (:func:`_outside_searches`)."""
        if not self.traced:
            return super().final_answer(completion)
        return _outside_searches(self, completion)

    def solution(self, prompt: Sequence[int]) -> str | None:
        answer = self._solve([int(t) for t in prompt])
        return None if answer is None else self.vocab.tokens[answer]


@register
class AssociativeRecall(Task):
    """Associative recall: key-value pairs, then queried keys; answer each key's value.

    Format (our decision; papers.md §1 states single-query AR, Zoology's MQAR has several
    queries): ``k1 v1 .. kN vN [SEP] q1 .. qm`` -> ``v(q1) .. v(qm)``. Keys ``k<i>`` are
    N distinct draws from ``num_keys`` symbols; values ``v<j>`` are i.i.d. uniform over
    ``num_values`` symbols (a value may repeat); the key and value sets are disjoint. The
    m = ``num_queries`` queries are distinct keys of the prompt in random order; with m = 1 this
    is exactly the papers' AR. ``length`` = N, the number of pairs, with m <= N <= ``num_keys``.
    Training and test both use exactly N pairs (the papers fix no training distribution).

    ``mode: retrieval`` (in-context RAG, papers.md §1): for each query in turn the completion is
    ``[STARTSEARCH] q [ENDSEARCH] <v(q)> v(q)``; the retriever answers a key with the value
    of its pair (searching the pairs before ``[SEP]``).
    """

    name = "associative_recall"
    paper = "Wen et al. §1"
    summary = "recall the value bound to each queried key: exact in-context retrieval"
    length_meaning = "key-value pairs"
    min_length = 1

    def __init__(
        self,
        *,
        num_queries: int = 1,
        num_keys: int = 64,
        num_values: int = 64,
        mode: str = "none",
    ) -> None:
        self.num_queries = check_int(self.name, "num_queries", num_queries, 1)
        self.num_keys = check_int(self.name, "num_keys", num_keys, self.num_queries)
        self.num_values = check_int(self.name, "num_values", num_values, 2)
        self.min_length = self.num_queries
        keys = [f"k{i}" for i in range(self.num_keys)]
        values = [f"v{i}" for i in range(self.num_values)]
        self.vocab = Vocab([*keys, *values, SEP, *_search_tokens(self, mode)])
        _enable_search(self, mode)
        self.key0, self.value0, self.sep = self.vocab.ids(["k0", "v0", SEP])
        self.strings = np.array(self.vocab.tokens, dtype=object)  # id array -> token strings

    def max_length(self) -> int:
        return self.num_keys

    def validate_length(self, length: int) -> int:
        check_int(self.name, "length", length, self.min_length)
        if length > self.num_keys:
            raise SepbenchError(
                f"{self.name}: alphabet too small for the requested length: length {length} "
                f"needs num_keys >= {length}, got {self.num_keys}"
            )
        return length

    def completion_cap(self, length: int) -> int:
        return self.num_queries * len(_roles(self))

    def chance(self, length: int) -> float:
        """(1/``num_values``)^m: the m queried values are independent uniform symbols."""
        self.validate_length(length)
        return self.num_values**-self.num_queries

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        self.validate_length(length)
        keys = _distinct(rng, batch_size, self.num_keys, length) + self.key0
        values = rng.integers(0, self.num_values, (batch_size, length)) + self.value0
        asked = _distinct(rng, batch_size, length, self.num_queries)
        prompts = np.empty((batch_size, 2 * length + 1 + self.num_queries), np.int64)
        prompts[:, 0 : 2 * length : 2], prompts[:, 1 : 2 * length : 2] = keys, values
        prompts[:, 2 * length] = self.sep
        queries = np.take_along_axis(keys, asked, axis=1)
        prompts[:, 2 * length + 1 :] = queries
        recalled = np.take_along_axis(values, asked, axis=1)
        answers = [" ".join(row) for row in self.strings[recalled].tolist()]
        if not self.traced:
            return Batch.from_arrays(prompts, recalled, answers)
        width, rows = len(SEARCH_CALL), np.arange(batch_size)
        completions = np.empty((batch_size, width * self.num_queries), np.int64)
        for i in range(self.num_queries):
            _fill_calls(self, completions, rows, i * width, queries[:, i], recalled[:, i])
        batch = Batch.from_arrays(prompts, completions, answers)
        retrieved = prompts.shape[1] + SEARCH_CALL.index("retrieved")
        batch.loss_mask[:, retrieved::width] = False
        return batch

    def check(self, prompt: Sequence[int], completion: Sequence[int]) -> bool:
        """Solve the prompt; with retrieval, replay each search call through the retriever."""
        tokens = [int(t) for t in prompt]
        solved = self._solve(tokens)
        if solved is None:
            return False
        queries, values = solved
        if not self.traced:
            return [int(t) for t in completion] == values
        start, end = self.vocab.ids([START, END])
        expected: list[int] = []
        for query, value in zip(queries, values):
            expected += [start, query, end]
            expected += [*self.answer_query(tokens + expected, [query]), value]
        return [int(t) for t in completion] == expected

    def _solve(self, prompt: list[int]) -> tuple[list[int], list[int]] | None:
        """(queries, their values) of a well-formed prompt, else None."""
        if self.sep not in prompt:
            return None
        split = prompt.index(self.sep)
        pairs, queries = prompt[:split], prompt[split + 1 :]
        if not pairs or len(pairs) % 2 or len(queries) != self.num_queries:
            return None
        table: dict[int, int] = {}
        for key, value in zip(pairs[0::2], pairs[1::2]):
            is_key = 0 <= key - self.key0 < self.num_keys
            is_value = 0 <= value - self.value0 < self.num_values
            if not (is_key and is_value) or key in table:
                return None
            table[key] = value
        if any(q not in table for q in queries):
            return None
        return queries, [table[q] for q in queries]

    def answer_query(self, context: Sequence[int], query: Sequence[int]) -> list[int]:
        """A key -> the token after its first occurrence among the context's pairs (before the
        first ``[SEP]``, at a key position); anything else gives ``[FAILED]``."""
        ctx, q = [int(t) for t in context], [int(t) for t in query]
        pairs = ctx[: ctx.index(self.sep)] if self.sep in ctx else ctx
        if len(q) == 1 and 0 <= q[0] - self.key0 < self.num_keys:
            for j in range(0, len(pairs) - 1, 2):
                if pairs[j] == q[0]:
                    return [pairs[j + 1]]
        return [self.vocab.id(FAILED)]

    def final_answer(self, completion: Sequence[int]) -> str | None:
        """The completion without its search calls (:func:`_outside_searches`)."""
        if not self.traced:
            return super().final_answer(completion)
        return _outside_searches(self, completion)

    def solution(self, prompt: Sequence[int]) -> str | None:
        solved = self._solve([int(t) for t in prompt])
        return None if solved is None else self.vocab.text(solved[1])


@register
class NearestNeighbor(Task):
    """Nearest neighbour: labelled ±1 points, then a query point; answer the nearest's label.

    Format (papers.md §2, x_1, y_1, .., x_{k-1}, y_{k-1}, x_k): each point is ``dim`` tokens
    ``+``/``-`` (one per coordinate, i.i.d. uniform) followed by its label ``[TRUE]``/``[FALSE]``
    (i.i.d. uniform, so answers are balanced); then the query point's ``dim`` tokens. The
    completion is the label of the earlier point with the largest inner product with the query.
    ``length`` = N, the number of labelled points; training and test both use exactly N.
    Choices the paper leaves open: instances whose maximum is tied are redrawn whole (only the
    tied rows), so every example has one nearest point; N <= 2**dim, since beyond it the query
    has more than one exact copy in expectation and ties make rejection sampling stall.
    """

    name = "nearest_neighbor"
    paper = "Bhattamishra et al. §2"
    summary = "copy the label of the most similar earlier point: retrieval by content"
    length_meaning = "labelled points before the query"
    min_length = 1

    def __init__(self, *, dim: int = 8) -> None:
        self.dim = check_int(self.name, "dim", dim, 1)
        self.vocab = Vocab([PLUS, MINUS, TRUE, FALSE])
        self.plus, self.minus, self.true, self.false = self.vocab.ids([PLUS, MINUS, TRUE, FALSE])

    def max_length(self) -> int:
        return 2**self.dim

    def completion_cap(self, length: int) -> int:
        return 1

    def chance(self, length: int) -> float:
        """1/2: labels are uniform and drawn independently of the points."""
        self.validate_length(length)
        return 0.5

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        self.validate_length(length)
        points, queries, labels = self._untied(rng, batch_size, length)
        rows = np.arange(batch_size)
        nearest = labels[rows, np.argmax(points @ queries[:, :, None], axis=1)[:, 0]]
        coords = np.where(points > 0, self.plus, self.minus)
        label_ids = np.where(labels, self.true, self.false)
        body = np.concatenate([coords, label_ids[:, :, None]], axis=2).reshape(batch_size, -1)
        prompts = np.concatenate([body, np.where(queries > 0, self.plus, self.minus)], axis=1)
        completions = np.where(nearest, self.true, self.false)[:, None]
        return Batch.from_arrays(prompts, completions, np.where(nearest, TRUE, FALSE).tolist())

    def _untied(
        self, rng: np.random.Generator, batch: int, length: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Points (B, N, dim) and queries (B, dim) in ±1, labels (B, N) bool; no tied maximum."""
        points = np.empty((batch, length, self.dim), np.int64)
        queries = np.empty((batch, self.dim), np.int64)
        labels = rng.random((batch, length)) < 0.5
        todo = np.arange(batch)
        while len(todo):
            points[todo] = 2 * rng.integers(0, 2, (len(todo), length, self.dim)) - 1
            queries[todo] = 2 * rng.integers(0, 2, (len(todo), self.dim)) - 1
            scores = (points[todo] @ queries[todo, :, None])[:, :, 0]
            tied = (scores == scores.max(axis=1, keepdims=True)).sum(axis=1) > 1
            todo = todo[tied]
        return points, queries, labels

    def check(self, prompt: Sequence[int], completion: Sequence[int]) -> bool:
        tokens = [int(t) for t in prompt]
        d = self.dim
        if len(tokens) < 2 * d + 1 or (len(tokens) - d) % (d + 1) or len(completion) != 1:
            return False
        if any(t not in (self.plus, self.minus) for t in tokens[-d:]):
            return False
        query, labels, agreements = tokens[-d:], [], []
        for start in range(0, len(tokens) - d, d + 1):
            point, label = tokens[start : start + d], tokens[start + d]
            if label not in (self.true, self.false) or any(
                t not in (self.plus, self.minus) for t in point
            ):
                return False
            labels.append(label)
            agreements.append(sum(a == b for a, b in zip(point, query)))
        top = max(agreements)
        if agreements.count(top) != 1:
            return False
        return int(completion[0]) == labels[agreements.index(top)]
