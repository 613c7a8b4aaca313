"""IsTree (Wen et al. §1): decide whether a graph is a tree, without CoT, with a DFS tour, or
with a DFS that reads the graph through search calls to an in-context retriever."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sepbench.errors import check_choice, check_int
from sepbench.tasks.base import Batch, Task, Vocab, register

BOS, EOS, DASH, TILDE = "[BOS]", "[EOS]", "-", "~"
TRUE, FALSE = "[TRUE]", "[FALSE]"
START, END, FAILED = "[STARTSEARCH]", "[ENDSEARCH]", "[FAILED]"
MODES = ("none", "cot", "retrieval")
NO_NODE = -1  # stands for [FAILED] where a node is expected (no parent, no next neighbour)


@register
class IsTree(Task):
    """Is the graph on ``length`` = N nodes (0..N-1) a tree? Label ``[TRUE]``/``[FALSE]``.

    Graphs are the published two-star generator (papers.md §1): a random permutation ``perm``;
    perm[2..N-1] each join perm[0] or perm[1] (1/2 each); one extra edge joins perm[i] and
    perm[i+1], i ~ U{2..N-2}. The N - 1 edges form a tree exactly when those two leaves sit in
    different stars (else: a triangle plus a separate component), so labels are ~50/50.
    Prompt: ``[BOS] u - v ... [EOS]``, one ``u - v`` (u > v) per edge, edges in random order.
    Training and test graphs both have exactly N nodes; 4 <= N <= ``max_nodes`` (<= 256: the
    node tokens are ``0`` .. ``max_nodes - 1``, and the checker's DFS recurses once per node).

    ``mode`` picks the completion (all modes share one vocabulary):

    - ``none``: the label.
    - ``cot``: a DFS (Euler) tour from node 0, then ``[EOS]`` and the label. Neighbours are
      taken in prompt order; a node is written on entry and after returning from each child;
      at the first visited neighbour other than the parent (a cycle) the tour stops without
      writing it. A tree gives 2N - 1 nodes; a forest whose component of 0 is a tree gives
      that component's tour.
    - ``retrieval``: the search-call DFS of papers.md §1. Each step, with v on top of the
      stack, writes ``v`` (the tour node, as in the published generator) then the search calls
      of §1; ``[FAILED]`` stands for "no parent" and "no next neighbour". Choices the paper
      leaves open: the skip-the-parent call is made only when v has a parent (at the root the
      parent is ``[FAILED]``, and a ``[FAILED]`` neighbour means "pop"); node 0, the root, has
      no parent record, so ``S 0 ~ E`` retrieves ``[FAILED]`` and reaching 0 from a non-parent
      is a cycle (the published generator does the same). The trace ends after the retrieved
      token that reveals a cycle, or after the root is popped; then ``[EOS]`` and the label.
      The token after each ``[ENDSEARCH]`` is retrieved, hence given (not trained).
    """

    name = "is_tree"
    paper = "Wen et al. §1"
    summary = "graph connectivity by DFS: needs in-context retrieval, which CoT alone cannot give"
    length_meaning = "graph nodes"
    min_length = 4

    def __init__(self, *, mode: str = "none", max_nodes: int = 64) -> None:
        self.mode = str(check_choice(self.name, "mode", mode, MODES))
        self.max_nodes = check_int(self.name, "max_nodes", max_nodes, self.min_length, 256)
        nodes = [str(i) for i in range(self.max_nodes)]
        self.vocab = Vocab([BOS, *nodes, DASH, EOS, TRUE, FALSE, START, END, TILDE, FAILED])
        self.node0 = self.vocab.id("0")  # node k has id node0 + k
        self.bos, self.eos, self.dash, self.tilde, self.start, self.end, self.failed = (
            self.vocab.ids([BOS, EOS, DASH, TILDE, START, END, FAILED])
        )
        self.true, self.false = self.vocab.ids([TRUE, FALSE])
        self.stop_ids = frozenset((self.true, self.false))
        self.traced = self.mode != "none"
        if self.mode == "retrieval":
            self.search_ids = (self.start, self.end)

    def max_length(self) -> int:
        return self.max_nodes

    def completion_cap(self, length: int) -> int:
        """Tour: 2N - 1 nodes; retrieval: at most 2N - 1 steps of at most 26 tokens each."""
        steps = 2 * length - 1
        return {"none": 1, "cot": steps + 2, "retrieval": 26 * steps + 2}[self.mode]

    def chance(self, length: int) -> float:
        """1/2 for ``none`` (tree or not is a fair coin of the generator). With a trace, the
        likeliest completions are those of a root cut off from almost everything, whose trace
        does not depend on the rest of the graph: node 0 a centre with an empty star (2/N ·
        2^-(N-2)), or node 0's component a single edge to a given node x (0 a centre whose only
        leaf is x, or x a centre whose only leaf is 0, the leaf off the extra edge:
        4/N · (N-4)/(N-1) · 2^-(N-2)). Every other trace is rarer (tested by sampling)."""
        self.validate_length(length)
        if self.mode == "none":
            return 0.5
        isolated = 2 / length
        single_edge = 4 / length * (length - 4) / (length - 1)
        return max(isolated, single_edge) * 2.0 ** -(length - 2)

    # -- generation ---------------------------------------------------------------------

    def generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        self.validate_length(length)
        big, small, trees = self._graphs(rng, batch_size, length)
        prompts = np.empty((batch_size, 3 * (length - 1) + 2), np.int64)
        prompts[:, 0], prompts[:, -1] = self.bos, self.eos
        prompts[:, 1:-1:3], prompts[:, 2:-1:3], prompts[:, 3:-1:3] = (
            big + self.node0,
            self.dash,
            small + self.node0,
        )
        labels = np.where(trees, self.true, self.false)
        answers = [TRUE if tree else FALSE for tree in trees]
        if self.mode == "none":
            return Batch.from_arrays(prompts, labels[:, None], answers)
        if self.mode == "retrieval":
            return self._with_search_traces(prompts, big, small, labels, answers)
        completions = [
            [*self._tour(u, v, length), self.eos, label]
            for u, v, label in zip(big.tolist(), small.tolist(), labels.tolist())
        ]
        return Batch.from_rows(prompts, completions, answers)

    @staticmethod
    def _graphs(
        rng: np.random.Generator, batch: int, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Edges (u, v), u > v, in prompt order, each (B, N - 1), and the tree flags (B,)."""
        rows = np.arange(batch)
        perm = np.argsort(rng.random((batch, n)), axis=1)
        first_star = rng.random((batch, n - 2)) < 0.5
        i = rng.integers(2, n - 1, batch)
        ends_a = np.concatenate([perm[:, 2:], perm[rows, i, None]], axis=1)
        centres = np.where(first_star, perm[:, :1], perm[:, 1:2])
        ends_b = np.concatenate([centres, perm[rows, i + 1, None]], axis=1)
        order = np.argsort(rng.random((batch, n - 1)), axis=1)
        big = np.take_along_axis(np.maximum(ends_a, ends_b), order, axis=1)
        small = np.take_along_axis(np.minimum(ends_a, ends_b), order, axis=1)
        trees = first_star[rows, i - 2] != first_star[rows, i - 1]
        return big, small, trees

    @staticmethod
    def _adjacency(big: list[int], small: list[int], n: int) -> list[list[int]]:
        adjacency: list[list[int]] = [[] for _ in range(n)]
        for u, v in zip(big, small):
            adjacency[u].append(v)
            adjacency[v].append(u)
        return adjacency

    def _tour(self, big: list[int], small: list[int], n: int) -> list[int]:
        """Euler tour from node 0 (token ids) with an explicit stack; stops at a cycle."""
        adjacency = self._adjacency(big, small, n)
        visited = [False] * n
        visited[0] = True
        tour = [0]
        frames = [[0, NO_NODE, 0]]  # node, its parent, index of the next neighbour to try
        while frames:
            frame = frames[-1]
            node, parent, k = frame
            if k == len(adjacency[node]):
                frames.pop()
                if frames:
                    tour.append(frames[-1][0])
                continue
            frame[2] = k + 1
            child = adjacency[node][k]
            if child == parent:
                continue
            if visited[child]:
                break
            visited[child] = True
            tour.append(child)
            frames.append([child, node, 0])
        return [self.node0 + x for x in tour]

    def _with_search_traces(
        self,
        prompts: np.ndarray,
        big: np.ndarray,
        small: np.ndarray,
        labels: np.ndarray,
        answers: list[str],
    ) -> Batch:
        """Prompts, then the retrieval traces, ``[EOS]`` and the labels; the token after each
        ``[ENDSEARCH]`` is retrieved, hence not trained."""
        slots, written = self._search_steps(big, small, big.shape[1] + 1)
        batch, prompt_len = prompts.shape
        rows, traced = np.arange(batch), prompt_len + written.sum(axis=1)
        tokens = np.zeros((batch, int(traced.max()) + 2), np.int64)
        tokens[:, :prompt_len] = prompts
        columns = np.arange(tokens.shape[1])
        in_trace = (columns >= prompt_len) & (columns < traced[:, None])
        tokens[in_trace] = slots[written]  # both row-major: each row's trace in order
        tokens[rows, traced], tokens[rows, traced + 1] = self.eos, labels
        retrieved = np.zeros(tokens.shape, bool)
        retrieved[:, 1:] = (tokens[:, :-1] == self.end) & in_trace[:, :-1]
        lengths = traced + 2
        loss_mask = (columns >= prompt_len) & (columns < lengths[:, None]) & ~retrieved
        return Batch(tokens, loss_mask, np.full(batch, prompt_len, np.int64), lengths, answers)

    def _search_steps(
        self, big: np.ndarray, small: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The retrieval DFS of papers.md §1 for a batch of graphs, searches answered from the
        adjacency: each step's candidate tokens (B, 26 * steps) and which of them were written
        (same shape); ``slots[b][written[b]]`` is trace b.

        Every row takes the same step at once (one stack top, at most 26 tokens; finished
        rows write nothing), so the Python loop runs at most 2N - 1 times per batch. The
        checker (:meth:`_replay`) re-derives a trace through the retriever, one example at a
        time.
        """
        batch, rows = len(big), np.arange(len(big))
        after = self._next_neighbours(big, small, n)
        parent = np.full((batch, n), NO_NODE, np.int64)
        seen = np.zeros((batch, n), bool)
        seen[:, 0] = True
        stack = np.zeros((batch, n), np.int64)
        depth = np.ones(batch, np.int64)
        prev = np.full(batch, NO_NODE, np.int64)
        active = np.ones(batch, bool)
        constants = {t: np.full(batch, t) for t in (self.start, self.end, self.dash, self.tilde)}
        steps: list[tuple[np.ndarray, np.ndarray]] = []
        while active.any():
            v = stack[rows, depth - 1]
            p = parent[rows, v]
            first = prev == p
            nx = after[rows, v, np.where(first, n, prev)]
            skip = (nx == p) & (p != NO_NODE)
            nxt = np.where(skip, after[rows, v, p], nx)
            pop = nxt == NO_NODE
            target = np.where(pop, 0, nxt)
            cycle = ~pop & seen[rows, target]
            push = ~pop & ~cycle
            slots = self._step_slots(constants, v, p, prev, nx, nxt, parent[rows, target])
            written = np.stack([active, active, skip, ~pop, push], axis=1)
            keep = written.repeat([6, 6, 6, 5, 3], axis=1) & active[:, None]
            keep[:, 9] &= ~first
            steps.append((slots, keep))
            pushed = np.flatnonzero(active & push)
            parent[pushed, target[pushed]] = v[pushed]
            seen[pushed, target[pushed]] = True
            stack[pushed, depth[pushed]] = target[pushed]
            depth += (active & push).astype(np.int64) - (active & pop)
            prev = np.where(active & ~cycle, v, prev)
            active &= ~cycle & (depth > 0)
            depth = np.maximum(depth, 1)
        return (
            np.concatenate([s for s, _ in steps], axis=1),
            np.concatenate([k for _, k in steps], axis=1),
        )

    def _step_slots(
        self,
        constants: dict[int, np.ndarray],
        v: np.ndarray,
        p: np.ndarray,
        prev: np.ndarray,
        nx: np.ndarray,
        nxt: np.ndarray,
        nxt_parent: np.ndarray,
    ) -> np.ndarray:
        """Token ids (B, 26) of every call one DFS step may write; the caller keeps those
        written: ``v S v ~ E <p>`` (columns 0-5, always); ``S v - prev E <nx>`` (6-11, with
        ``prev`` (9) only when prev is not the parent); ``S v - p E <nxt>`` (12-17, when nx is
        the parent); ``S nxt ~ E <parent of nxt>`` (18-22, unless popping); ``nxt ~ v``
        (23-25, on a push). ``constants`` maps the search, dash and tilde ids to (B,) arrays.
        """

        def tok(x: np.ndarray) -> np.ndarray:
            return np.where(x == NO_NODE, self.failed, self.node0 + x)

        s, e, dash, tilde = (constants[t] for t in (self.start, self.end, self.dash, self.tilde))
        tv, tp, tnxt = tok(v), tok(p), tok(nxt)
        columns = [
            *(tv, s, tv, tilde, e, tp),
            *(s, tv, dash, tok(prev), e, tok(nx)),
            *(s, tv, dash, tp, e, tnxt),
            *(s, tnxt, tilde, e, tok(nxt_parent)),
            *(tnxt, tilde, tv),
        ]
        return np.stack(columns, axis=1, dtype=np.int16)

    @staticmethod
    def _next_neighbours(big: np.ndarray, small: np.ndarray, n: int) -> np.ndarray:
        """``table[b, v, w]``: the neighbour of v after w in prompt order, ``table[b, v, n]``
        the first one; NO_NODE where there is none (w not adjacent to v, or w was the last)."""
        batch, edges = big.shape
        node = np.concatenate([big, small], axis=1)  # one entry per edge end
        other = np.concatenate([small, big], axis=1)
        order = np.argsort(node * edges + np.tile(np.arange(edges), 2), axis=1)
        node, other = np.take_along_axis(node, order, 1), np.take_along_axis(other, order, 1)
        same = node[:, 1:] == node[:, :-1]  # the next entry is the same node's next neighbour
        table = np.full((batch, n, n + 1), NO_NODE, np.int8 if n < 128 else np.int16)
        rows = np.arange(batch)[:, None]
        table[rows, node[:, :-1], other[:, :-1]] = np.where(same, other[:, 1:], NO_NODE)
        heads_b, heads_j = np.nonzero(np.concatenate([np.ones((batch, 1), bool), ~same], axis=1))
        table[heads_b, node[heads_b, heads_j], n] = other[heads_b, heads_j]
        return table

    # -- retriever ----------------------------------------------------------------------

    def answer_query(self, context: Sequence[int], query: Sequence[int]) -> list[int]:
        """Answer ``v ~``, ``v -`` or ``v - w`` over ``context`` (papers.md §1).

        ``v ~``: y of the first record ``v ~ y`` after the prompt (never for the root, node 0).
        ``v -``: the other end of the first prompt edge containing v. ``v - w``: the other end
        of the next prompt edge containing v after the first edge {v, w}. The prompt is the
        context up to its first ``[EOS]``. Anything else, or no match, gives ``[FAILED]``.
        """
        failed = [self.failed]
        ctx = np.asarray([int(t) for t in context], np.int64)
        q = [int(t) for t in query]
        if not q or not self._is_node(q[0]):
            return failed
        v = q[0]
        eos = np.flatnonzero(ctx == self.eos)
        split = int(eos[0]) if len(eos) else len(ctx)
        if q[1:] == [self.tilde]:
            records = self._triples(ctx[split:], self.tilde)
            hits = np.flatnonzero(records[0] == v)
            return failed if v == self.node0 or not len(hits) else [int(records[1][hits[0]])]
        a, b = self._triples(ctx[:split], self.dash)
        incident = np.flatnonzero((a == v) | (b == v))
        if q[1:] == [self.dash]:
            start = 0
        elif len(q) == 3 and q[1] == self.dash and self._is_node(q[2]):
            w = q[2]
            edge = np.flatnonzero(((a == v) & (b == w)) | ((a == w) & (b == v)))
            if not len(edge):
                return failed
            start = int(np.searchsorted(incident, edge[0], side="right"))
        else:
            return failed
        if start >= len(incident):
            return failed
        j = incident[start]
        return [int(b[j] if a[j] == v else a[j])]

    def _is_node(self, token: int) -> bool:
        return self.node0 <= token < self.node0 + self.max_nodes

    def _triples(self, ids: np.ndarray, middle: int) -> tuple[np.ndarray, np.ndarray]:
        """Left and right ends of every ``node middle node`` window of ``ids``."""
        if len(ids) < 3:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        left, right = ids[:-2], ids[2:]
        nodes = (self.node0 <= ids) & (ids < self.node0 + self.max_nodes)
        hit = np.flatnonzero((ids[1:-1] == middle) & nodes[:-2] & nodes[2:])
        return left[hit], right[hit]

    # -- final answer -------------------------------------------------------------------

    def final_answer(self, completion: Sequence[int]) -> str | None:
        """The token right after the completion's first ``[EOS]``, if it is a label (Wen et
        al.'s generation metric, papers.md §1); None otherwise. Without a trace, the label.

        Decoding stops at the first label, so a label written before ``[EOS]`` ends the
        completion without an answer (Wen et al.'s decoder would read on to the ``[EOS]``).
        """
        ids = [int(t) for t in completion]
        if self.traced:
            ids = ids[ids.index(self.eos) + 1 :] if self.eos in ids else []
        if not ids or ids[0] not in (self.true, self.false):
            return None
        return TRUE if ids[0] == self.true else FALSE

    def solution(self, prompt: Sequence[int]) -> str | None:
        edges = self._parse([int(t) for t in prompt])
        if edges is None:
            return None
        return TRUE if self._is_tree(edges) else FALSE

    # -- independent checker ------------------------------------------------------------

    def check(self, prompt: Sequence[int], completion: Sequence[int]) -> bool:
        prompt, completion = [int(t) for t in prompt], [int(t) for t in completion]
        edges = self._parse(prompt)
        if edges is None:
            return False
        label = self.true if self._is_tree(edges) else self.false
        if self.mode == "none":
            expected = [label]
        elif self.mode == "cot":
            expected = [*self._recursive_tour(edges), self.eos, label]
        else:
            expected = [*self._replay(prompt, len(completion)), self.eos, label]
        return completion == expected

    def _parse(self, prompt: list[int]) -> list[tuple[int, int]] | None:
        """Edges of a well-formed prompt on nodes 0..len(edges), else None."""
        body = prompt[1:-1]
        if len(prompt) < 5 or prompt[0] != self.bos or prompt[-1] != self.eos or len(body) % 3:
            return None
        triples = [body[j : j + 3] for j in range(0, len(body), 3)]
        n = len(triples) + 1
        for u, dash, v in triples:
            if dash != self.dash or not (0 <= u - self.node0 < n and 0 <= v - self.node0 < n):
                return None
        return [(u - self.node0, v - self.node0) for u, _, v in triples]

    @staticmethod
    def _is_tree(edges: list[tuple[int, int]]) -> bool:
        """Union-find: n - 1 edges on n nodes with no cycle."""
        root = list(range(len(edges) + 1))

        def find(x: int) -> int:
            while root[x] != x:
                root[x] = root[root[x]]
                x = root[x]
            return x

        for u, v in edges:
            ru, rv = find(u), find(v)
            if ru == rv:
                return False
            root[ru] = rv
        return True

    def _recursive_tour(self, edges: list[tuple[int, int]]) -> list[int]:
        tour: list[int] = []
        seen = {0}

        def visit(x: int, parent: int) -> bool:
            """Append x's subtree tour; False once a cycle is met (the tour stops there)."""
            tour.append(self.node0 + x)
            for u, v in edges:
                if x not in (u, v):
                    continue
                y = v if u == x else u
                if y == parent:
                    continue
                if y in seen:
                    return False
                seen.add(y)
                if not visit(y, x):
                    return False
                tour.append(self.node0 + x)
            return True

        visit(0, NO_NODE)
        return tour

    def _replay(self, prompt: list[int], budget: int) -> list[int]:
        """Re-derive the retrieval trace asking :meth:`answer_query` at every search call.

        The parent comes from the retriever, not a stack: popping v moves to v's retrieved
        parent. Stops early once longer than ``budget`` (the completion cannot match then).
        """
        out: list[int] = []

        def search(query: list[int]) -> int:
            out.extend([self.start, *query, self.end])
            out.append(self.answer_query(prompt + out, query)[0])
            return out[-1]

        node, prev = self.node0, self.failed
        while len(out) <= budget:
            out.append(node)
            parent = search([node, self.tilde])
            nxt = search([node, self.dash] if prev == parent else [node, self.dash, prev])
            if nxt == parent != self.failed:
                nxt = search([node, self.dash, parent])
            if nxt == self.failed:
                if parent == self.failed:
                    break
                node, prev = parent, node
                continue
            if search([nxt, self.tilde]) != self.failed or nxt == self.node0:
                break
            out += [nxt, self.tilde, node]
            node, prev = nxt, node
        return out
