"""Nearest neighbour with two attention layers (Bhattamishra et al., papers.md §2), after a
gathering layer that turns sepbench's token-per-coordinate points into the theorem's
vector-per-token input.

The theorem: a two-layer Transformer with m, p = O(log N) outputs the label of the earlier
point most similar to the query, x_1, y_1, .., x_{N}, y_{N}, x_q, where any recurrent model
needs m >= N/(2p). Its layer 1 attends from the query to the most similar earlier point (score
⟨x_q, x_i⟩ + 3 for points, <= -5 for labels and the query itself) and copies that point's
position code; layer 2 uses the copied code to attend to the label that follows the point.

How sepbench's format maps onto the theorem's input: sepbench writes each point as ``dim``
tokens ``+``/``-`` (one per coordinate) and then its label, so there is no token holding a
whole point. The point's last coordinate token stands for the theorem's x_i token (the label
follows it, as y_i follows x_i), and a gathering layer writes the point there first: ``dim``
heads, head c attending from a point's last coordinate (position t) to its c-th coordinate
(position t - dim + c) with the nearly orthogonal codes T, value the coordinate's sign; the
feed-forward layer then clamps 2·(the averaged sign) to [-1, 1], which is the sign itself once
the head's weight on its target is >= 3/4. The model is gathering layer + the theorem's two
layers: three attention layers in all.

Choices the paper leaves open, made here:

- Points are ±1 vectors; the score of layer 1 is ⟨x_q, x_i⟩/dim + 3 for labelled points'
  last coordinates (in [2, 4]) and r = -6 for every other position (the query's own point
  included), which keeps it <= -5 whatever the gathered vector holds there (|x̃| <= 1).
- Only the query's row asks in layers 1 and 2 (a positional flag on the query): the other
  rows' queries are zero, so they average uniformly, and their layer-1 output, which no later
  query reads, is not computed.
- Layer 2's key of the label at position s is T(s - 1), the code of the point before it; other
  positions have key 0. Values: the label as ±1 (``[TRUE]`` +1). The output is ``[TRUE]`` iff
  the attended label is positive.
- Scales, with L the prompt length and γ <= 1/4: the gathering heads η = (4/3) ln(3L)
  (weight >= 3/4 on the target); layer 1 η₁ = (dim/2) ln(8L), since the nearest point beats
  the next by at least 2/dim (the task redraws ties), giving it weight about 7/8; layer 2
  η₂ = 4 ln(3L). ``k`` defaults to the theorem's ⌈128 ln 2L⌉.
- The construction is built for one N, since the positions of the points follow from it.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from sepbench.constructions.base import (
    PRECISION_KNOBS,
    CacheState,
    Construction,
    attend_rows,
    causal_attention,
    largest_overlap,
    position_codes,
    start_state,
    theorem_width,
)
from sepbench.errors import check_int
from sepbench.tasks.base import Task

PLUS, MINUS, TRUE, FALSE = "+", "-", "[TRUE]", "[FALSE]"


class NearestNeighborAttention(Construction):
    """A gathering layer (dim heads) and the theorem's two layers (module docstring)."""

    name = "nearest_neighbor_attention"
    theorem = "Bhattamishra et al. (nearest neighbour): a 2-layer Transformer, papers.md §2"
    tasks = ("nearest_neighbor",)
    knobs: ClassVar[dict[str, Any]] = {"k": None, **PRECISION_KNOBS}

    def __init__(
        self,
        task: Task,
        length: int,
        *,
        seed: int = 0,
        k: int | None = None,
        precision: int | None = None,
        rounding: str = "fixed",
    ) -> None:
        super().__init__(task, length, precision, rounding)
        dim = self.dim = task.dim
        prompt = length * (dim + 1) + dim
        self.rows = prompt + 1
        self.k = theorem_width(prompt) if k is None else check_int(self.name, "k", k, 1)
        codes = position_codes(self.rows, self.k, seed)
        self.etas = (4 / 3 * math.log(3 * prompt), dim / 2 * math.log(8 * prompt),
                     4 * math.log(3 * prompt))
        position = torch.arange(self.rows)
        ends = position[(position % (dim + 1) == dim - 1) & (position < prompt)]
        labels = position[(position % (dim + 1) == dim) & (position < prompt)]
        self.register_buffer("ends", ends, persistent=False)
        self.register_buffer("labels", labels, persistent=False)
        self.query_row = prompt - 1
        offsets = ends[:, None] - dim + 1 + torch.arange(dim)
        self.gather_code = self.constant(self.etas[0] * codes[offsets])  # (ends, dim, k)
        role = torch.full((self.rows, 1), -6.0)
        role[ends[:-1]] = 3.0
        label_key = torch.zeros(self.rows, self.k)
        label_key[labels] = codes[labels - 1]
        self.key_code = self.constant(codes)
        self.role = self.constant(role)
        self.label_key = self.constant(label_key)
        sign = torch.zeros(self.vocab_size, 2)
        ids = task.vocab.ids([PLUS, MINUS, TRUE, FALSE])
        sign[ids[0], 0], sign[ids[1], 0], sign[ids[2], 1], sign[ids[3], 1] = 1, -1, 1, -1
        self.token_code = self.constant(sign)
        self.true_id, self.false_id = ids[2], ids[3]

    def forward(self, tokens: Tensor, state: CacheState | None = None) -> tuple[Tensor, CacheState]:
        state, start, end = start_state(state, tokens)
        self.check_fits(end, self.rows)
        rounded = self.precision
        code = rounded(self.token_code[tokens])
        gathered = state.extend("points", self._gather(code[..., :1], state, start, end))
        labels = state.extend("labels", code[..., 1:])
        asks = torch.arange(start, end, device=tokens.device) == self.query_row
        rows = asks.nonzero()[:, 0]
        queries = torch.zeros(tokens.shape[0], len(rows), self.k, device=tokens.device)
        if len(rows):
            query = gathered[:, self.query_row : self.query_row + 1]
            point = torch.cat([query / self.dim, torch.ones_like(query[..., :1])], dim=-1)
            keys = torch.cat([gathered, self.role[:end].expand(len(gathered), -1, -1)], dim=-1)
            found = attend_rows(
                rounded(self.etas[1] * point), rows, rounded(keys), rounded(self.key_code[:end]),
                start, rounded,
            )
            queries = rounded(self.etas[2] * found)
        keys = rounded(self.label_key[:end])
        label = causal_attention(queries, rows, keys, labels, start, rounded)
        logits = label.new_full((*tokens.shape, self.vocab_size), -2.0)
        logits[..., self.true_id] = label[..., 0]
        logits[..., self.false_id] = -label[..., 0]
        return logits, state

    def _gather(self, signs: Tensor, state: CacheState, start: int, end: int) -> Tensor:
        """Each point's coordinates at its last coordinate token, as ±1 (B, n, dim)."""
        values = state.extend("signs", signs)
        chosen = ((self.ends >= start) & (self.ends < end)).nonzero()[:, 0]
        rows = self.ends[chosen] - start
        keys = self.precision(self.key_code[:end])
        heads = [
            causal_attention(
                self.precision(self.gather_code[chosen, c]), rows, keys, values, start,
                self.precision,
            )
            for c in range(self.dim)
        ]
        averaged = torch.cat(heads, dim=-1)
        return self.precision(torch.relu(2 * averaged + 1) - torch.relu(2 * averaged - 1) - 1)

    def state_size(self, seq_len: int) -> int:
        """The key-value cache: the gathering heads' key (k) and value (1), layer 1's key
        (dim + 1) and value (k), layer 2's key (k) and value (1), per token."""
        return seq_len * (3 * self.k + self.dim + 3)

    def size(self) -> dict[str, Any]:
        width = 2 + (self.dim + 2) * self.k + self.dim + 1
        return {
            "layers": 3, "heads": self.dim, "width": width, "k": self.k,
            "gamma": largest_overlap(self.key_code[: self.rows - 1]),
            "precision": self.precision.describe(),
        }
