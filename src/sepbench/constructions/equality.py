"""String equality with two attention layers (Bhattamishra et al., papers.md §2).

The theorem: a two-layer Transformer with m, p = O(log N) decides whether the two halves of a
string are equal, where any recurrent model needs mp >= N/2. The construction:

- token i embeds as [x_i, 0, T(i), T(i′), 1]: x_i the symbol's code in {±1}^b, an empty slot
  for the copy, its position code and its partner's, with i′ = i in the first half and
  i′ = i - N/2 in the second;
- layer 1: query [T(i′), 1], key [T(j), -½], scaled by η: score η/2 at j = i′ and at most
  η(γ - ½) elsewhere, hard attention that copies x_{i′} into the empty slot; the feed-forward
  layer writes d_i = Σ_bits relu(x_i - c_i - 1) + relu(c_i - x_i - 1), the XOR of x_i and
  its partner (0 when they agree, about 1 per differing bit);
- layer 2: a zero query, i.e. uniform attention, averages the d_j; the output is "not equal"
  iff the average exceeds a threshold below 1/N.

How sepbench's format maps onto the theorem's input, and the other choices made here:

- sepbench writes ``w [SEP] w'`` and reads the answer after the last symbol: with h = N/2,
  the first half sits at positions 1..h, ``[SEP]`` at h+1 and the second half at h+2..N+1,
  so a second-half token at position i has partner i′ = i - h - 1. ``[SEP]`` has code 0 and
  partner itself, so it contributes d = 0. The partner code T(i′) is a positional embedding,
  so the construction is built for one N (the theorem's setting).
- Symbols of any alphabet: x_i is the b = ⌈log2 |Σ|⌉-bit binary code of the symbol in ±1
  (b = 1 for the ``random`` variant's binary alphabet), and d_i counts the differing bits.
  The ``copy`` variant is next-token prediction, not a decision, and is not built here.
- ``eta`` defaults to (4/3) ln(3(N+1)): with γ <= 1/4 the target scores at least 3η/4 above
  every other key, which leaves weight >= 3/4 on it among the N+1 keys.
- ``k`` defaults to the theorem's ⌈128 ln 2N⌉ (γ = 1/4), as for index lookup.
- The threshold: "not equal" (``[FALSE]``) iff the average of d over the N+1 positions
  exceeds 1/(8(N+1)). If every first-half row puts weight >= 1/2 on itself and every
  second-half row weight w > 9/16 on its partner, a differing symbol gives d >= 2w - 1 > 1/8
  and an equal one d = 0, so the decision is right on every input: :meth:`certificate`
  checks exactly this on the built weights.
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
    binary_codes,
    causal_attention,
    largest_overlap,
    position_codes,
    positive_number,
    start_state,
    theorem_width,
)
from sepbench.errors import SepbenchError, check_int
from sepbench.tasks.base import Task

TRUE, FALSE = "[TRUE]", "[FALSE]"


class EqualityAttention(Construction):
    """Two attention layers, one head each: string equality at length N (module docstring)."""

    name = "equality_attention"
    theorem = "Bhattamishra et al. (equality): a 2-layer Transformer, m, p = O(log N), papers.md §2"
    tasks = ("string_equality",)
    knobs: ClassVar[dict[str, Any]] = {"k": None, "eta": None, **PRECISION_KNOBS}

    def __init__(
        self,
        task: Task,
        length: int,
        *,
        seed: int = 0,
        k: int | None = None,
        eta: float | None = None,
        precision: int | None = None,
        rounding: str = "fixed",
    ) -> None:
        super().__init__(task, length, precision, rounding)
        if task.variant == "copy":
            raise SepbenchError(
                f"{self.name}: builds for the random and one_off variants (a decision); "
                "copy is next-token prediction"
            )
        self.k = theorem_width(length) if k is None else check_int(self.name, "k", k, 1)
        default_eta = 4 / 3 * math.log(3 * (length + 1))
        self.eta = default_eta if eta is None else positive_number(self.name, "eta", eta)
        self.bits = max(1, math.ceil(math.log2(task.vocab_size)))
        half, self.rows = length // 2, length + 2
        codes = position_codes(self.rows, self.k, seed)
        partner = torch.arange(self.rows)
        partner[half + 1 :] -= half + 1
        code = torch.zeros(self.vocab_size, self.bits)
        symbols = torch.arange(task.vocab_size) + task.symbol0
        code[symbols] = 2 * binary_codes(task.vocab_size, self.bits) - 1
        ones = torch.ones(self.rows, 1)
        self.symbol_code = self.constant(code)
        self.query_code = self.constant(self.eta * torch.cat([codes[partner], ones], dim=1))
        self.key_code = self.constant(torch.cat([codes, -0.5 * ones], dim=1))
        self.threshold = 1 / (8 * (length + 1))
        self.true_id, self.false_id = task.vocab.ids([TRUE, FALSE])

    def forward(self, tokens: Tensor, state: CacheState | None = None) -> tuple[Tensor, CacheState]:
        state, start, end = start_state(state, tokens)
        self.check_fits(end, self.rows)
        rounded = self.precision
        symbols = rounded(self.symbol_code[tokens])
        values = state.extend("symbols", symbols)
        rows = torch.arange(tokens.shape[1], device=tokens.device)
        queries = rounded(self.query_code[start:end])
        keys = rounded(self.key_code[:end])
        copied = causal_attention(queries, rows, keys, values, start, rounded)
        hidden = rounded(torch.relu(symbols - copied - 1) + torch.relu(copied - symbols - 1))
        differ = state.extend("differences", rounded(hidden.sum(dim=-1, keepdim=True)))
        average = causal_attention(queries[:0], rows[:0], keys, differ, start, rounded)
        logits = average.new_full((*tokens.shape, self.vocab_size), -1.0)
        logits[..., self.true_id] = 0.0
        logits[..., self.false_id] = average[..., 0] / self.threshold - 1
        return logits, state

    def partner_weights(self) -> Tensor:
        """Each row's layer-1 attention weight on its partner (float32, as built)."""
        end = self.length + 1
        scores = self.query_code[:end] @ self.key_code[:end].T
        future = torch.ones(end, end, dtype=torch.bool).triu(1)
        weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        partner = torch.arange(end)
        partner[self.length // 2 + 1 :] -= self.length // 2 + 1
        return weights[torch.arange(end), partner]

    def certificate(self) -> dict[str, Any]:
        """Whether the built weights are right on every input of length N (module docstring);
        None under a precision knob, which the argument does not cover."""
        if self.precision.bits is not None:
            return {"certified": None}
        weights = self.partner_weights()
        half = self.length // 2
        first, second = float(weights[: half + 1].min()), float(weights[half + 1 :].min())
        return {
            "certified": first >= 0.5 and second > 9 / 16,
            "smallest_partner_weight": min(first, second),
        }

    def state_size(self, seq_len: int) -> int:
        """The key-value cache: layer 1 a key (k+1) and a value (b), layer 2 a value (1)."""
        return seq_len * (self.k + 1 + self.bits + 1)

    def size(self) -> dict[str, Any]:
        return {
            "layers": 2, "heads": 1, "width": 2 * self.bits + 2 * self.k + 1, "k": self.k,
            "eta": self.eta,
            "gamma": largest_overlap(self.key_code[: self.length + 1, :-1]),
            "precision": self.precision.describe(),
        }
