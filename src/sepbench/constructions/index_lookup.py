"""Index lookup with one attention layer (Bhattamishra et al. Thm 1, papers.md §2).

The theorem: a one-layer Transformer of width O(log N) and precision O(log N) solves index
lookup at length N, where any recurrent model needs m >= N/p. The construction:

- nearly orthogonal position codes T(i) ∈ {±1/√k}^k (:func:`~sepbench.constructions.base.
  position_codes`) and a b = ⌈log2 |Σ|⌉-bit binary code ρ(s) of each symbol;
- a data token s at position i embeds as [ρ(s), 0_k, T(i)], the position token ``@p`` as
  [0_b, T(p), 0_k];
- W_Q = η · (select the middle block), W_K = (select the last block), W_V = (select the first):
  the query ``@p`` scores η at i = p and at most ηγ elsewhere, γ the largest |⟨T(i), T(j)⟩|;
- a ReLU threshold at ½ on each bit of the averaged value returns ρ(s_p), and the output layer
  scores each symbol by the number of bits its code shares with it.

Choices the paper leaves open, made here:

- The embedding is token embedding plus positional embedding, as in any Transformer, so the
  query token ``@p`` also carries its own position code T(N+1) in the last block: one more
  non-target key, which the analysis below already counts.
- ``eta`` defaults to 2 ln(3(N+1)): with γ <= 1/4 the N+1 keys a query sees leave weight
  >= 3/4 on position p (the paper's η > 2 ln 3N, counting the query's own key).
- ``k`` defaults to the theorem's ⌈(8/γ²) ln 2N⌉ with γ = 1/4, i.e. ⌈128 ln 2N⌉ (856 at
  N = 400). The union bound is loose: the paper solves N = 400, |Σ| = 64 with k = 128, and
  the size ladder of the ``constructions`` preset measures the smallest k that still gives
  100 % at each N.
- The threshold is the ReLU ramp relu(2a - ½) - relu(2a - 3/2): 0 for a <= 1/4, 1 for
  a >= 3/4, linear between. Non-symbol tokens get logit -1, below every symbol's.
- The codes are drawn from ``seed`` (torch's generator), for positions 1 .. N+2 (the symbols,
  the query and the answer token); position tokens beyond N+2 have no code.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from sepbench.constructions.base import (
    OVERLAP_WORK,
    PRECISION_KNOBS,
    ROW_BLOCK_ELEMENTS,
    CacheState,
    Construction,
    binary_codes,
    causal_attention,
    largest_overlap,
    position_codes,
    positive_number,
    query_rows,
    start_state,
    symbol_logits,
    theorem_width,
)
from sepbench.errors import check_int
from sepbench.tasks.base import Task


class IndexLookupAttention(Construction):
    """One attention layer, one head, width b + 2k: index lookup at length N (module docstring)."""

    name = "index_lookup_attention"
    theorem = "Bhattamishra et al. Thm 1: a 1-layer Transformer, m, p = O(log N), papers.md §2"
    tasks = ("index_lookup",)
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
        self.k = theorem_width(length) if k is None else check_int(self.name, "k", k, 1)
        default_eta = 2 * math.log(3 * (length + 1))
        self.eta = default_eta if eta is None else positive_number(self.name, "eta", eta)
        self.bits = max(1, math.ceil(math.log2(task.vocab_size)))
        self.rows = length + 2
        codes = position_codes(self.rows, self.k, seed)
        symbols = torch.arange(task.vocab_size) + task.symbol0
        value_code = torch.zeros(self.vocab_size, self.bits)
        value_code[symbols] = binary_codes(task.vocab_size, self.bits)
        query_code = torch.zeros(self.vocab_size, self.k)
        coded = min(self.rows, task.positions)
        query_code[task.position1 : task.position1 + coded] = codes[:coded]
        self.symbol0 = task.symbol0
        self.value_code = self.constant(value_code)
        self.query_code = self.constant(query_code)
        self.key_code = self.constant(codes)
        self.register_buffer("asks", query_code.abs().sum(dim=1) > 0, persistent=False)
        self.head_weight = self.constant(2 * value_code[symbols] - 1)
        self.head_bias = self.constant((1 - value_code[symbols]).sum(dim=1))

    def forward(self, tokens: Tensor, state: CacheState | None = None) -> tuple[Tensor, CacheState]:
        state, start, end = start_state(state, tokens)
        self.check_fits(end, self.rows)
        rounded = self.precision
        values = state.extend("values", rounded(self.value_code[tokens]))
        rows = query_rows(self.asks[tokens])
        queries = rounded(self.eta * self.query_code[tokens[:, rows]])
        keys = rounded(self.key_code[:end])
        mixed = causal_attention(queries, rows, keys, values, start, rounded)
        bits = rounded(torch.relu(2 * mixed - 0.5) - torch.relu(2 * mixed - 1.5))
        scores = bits.flatten(0, 1) @ self.head_weight.T + self.head_bias
        scores = scores.view(*bits.shape[:2], -1)
        return symbol_logits(scores, self.vocab_size, self.symbol0, -1.0), state

    def certificate(self) -> dict[str, Any]:
        """Right on every input of length N iff, for every p, the query ``@p`` puts weight
        > 1/2 on position p: each averaged bit then lies on the right side of 1/2 whatever the
        other symbols are, so every bit of the ramp's output agrees with ρ(s_p) and s_p has the
        unique largest score. Float32 only (None under a precision knob, or when the N x N
        scores take more than OVERLAP_WORK multiply-adds)."""
        keys, n = self.key_code[: self.length + 1], self.length
        if self.precision.bits is not None or n * n * self.k > OVERLAP_WORK:
            return {"certified": None}
        smallest, block = 1.0, max(1, ROW_BLOCK_ELEMENTS // (n + 1))
        for first in range(0, n, block):
            weights = torch.softmax(self.eta * keys[first : first + block] @ keys.T, dim=-1)
            own = torch.arange(first, min(first + block, n))
            smallest = min(smallest, float(weights[own - first, own].min()))
        return {"certified": smallest > 0.5, "smallest_target_weight": smallest}

    def state_size(self, seq_len: int) -> int:
        """The key-value cache: a key (k) and a value (b) per token."""
        return seq_len * (self.k + self.bits)

    def size(self) -> dict[str, Any]:
        return {
            "layers": 1, "heads": 1, "width": self.bits + 2 * self.k, "k": self.k,
            "eta": self.eta,
            "gamma": largest_overlap(self.key_code[: self.length + 1]),
            "precision": self.precision.describe(),
        }
