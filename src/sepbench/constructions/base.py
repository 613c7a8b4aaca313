"""What every construction shares: the model contract, nearly orthogonal position codes, and
causal softmax attention with a key-value cache, all under a :class:`Precision`.

A construction is an ``nn.Module`` with the :class:`~sepbench.models.base.SequenceModel`
interface (../shared/design.md, "Construction"): ``logits, state = model(tokens, state=None)``
over a chunk of any length, continuing from ``state``; ``state_size(seq_len)``;
``num_parameters()``. Its weights are set from a theorem, never trained; they are parameters
with ``requires_grad=False``, so that ``.to(device)`` moves them and the evaluation finds the
model's device as it does for a trained model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sepbench.constructions.precision import Precision
from sepbench.errors import SepbenchError
from sepbench.tasks.base import Task

PRECISION_KNOBS: dict[str, Any] = {"precision": None, "rounding": "fixed"}
"""The knobs every construction has: bits of precision (None: float32) and the rounding
(:mod:`~sepbench.constructions.precision`)."""

ROW_BLOCK_ELEMENTS = 2**24
"""Attention scores computed at once (rows x keys x batch); bounds the memory of long inputs."""


class Construction(nn.Module):
    """Base class: a hand-built model for one task at one length N.

    Subclasses set ``name``, ``theorem`` (the papers.md statement it realises), ``tasks`` (the
    task names it accepts) and ``knobs`` (its size and precision keywords with their defaults;
    None means "the theorem's value at this N"), and implement ``forward``, ``state_size`` and
    ``size``.
    """

    name: ClassVar[str]
    theorem: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    knobs: ClassVar[dict[str, Any]]
    any_length: ClassVar[bool] = False
    """True when the model is right at every length, not only the one it was built for."""

    def __init__(self, task: Task, length: int, precision: int | None, rounding: str) -> None:
        super().__init__()
        if task.name not in self.tasks:
            raise SepbenchError(
                f"{self.name}: builds for task {', '.join(self.tasks)}, not {task.name!r}"
            )
        self.length = task.validate_length(length)
        self.vocab_size = len(task.vocab)
        self.precision = Precision(precision, rounding, owner=self.name)

    def constant(self, value: Tensor) -> nn.Parameter:
        """A constructed weight: a parameter that no optimiser may change."""
        return nn.Parameter(value, requires_grad=False)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Scalars in the constructed weights (none of them trainable)."""
        return 0 if trainable_only else sum(p.numel() for p in self.parameters())

    def state_size(self, seq_len: int) -> int:
        raise NotImplementedError

    def size(self) -> dict[str, Any]:
        """The construction's size as the theorem counts it (layers, width, heads, ...)."""
        raise NotImplementedError

    def certificate(self) -> dict[str, Any]:
        """Whether the built weights are provably right on every input (``certified``: True,
        False, or None where the construction has no such check)."""
        return {"certified": None}

    def check_fits(self, end: int, rows: int) -> None:
        if end > rows:
            raise SepbenchError(
                f"{self.name}: built for length {self.length}, whose sequences have at most "
                f"{rows} tokens; got {end}. Build it for the longer length"
            )


@dataclass
class CacheState:
    """Tokens consumed so far and, per attention layer, the cached values (B, t, dim)."""

    position: int
    values: dict[str, Tensor]

    def extend(self, name: str, new: Tensor) -> Tensor:
        """The cache of ``name`` with ``new`` appended (stored back)."""
        old = self.values.get(name)
        self.values[name] = new if old is None else torch.cat([old, new], dim=1)
        return self.values[name]


def start_state(state: CacheState | None, tokens: Tensor) -> tuple[CacheState, int, int]:
    """(the state to extend, the first position of this chunk, the position after it)."""
    state = CacheState(0, {}) if state is None else CacheState(state.position, dict(state.values))
    start = state.position
    state.position = start + tokens.shape[1]
    return state, start, state.position


OVERLAP_WORK = 2**36


def position_codes(rows: int, k: int, seed: int) -> Tensor:
    """T(1), .., T(rows): i.i.d. uniform vectors in {±1/√k}^k (papers.md §2, "Constructions").

    ⟨T(i), T(i)⟩ = 1 and, for k of order log N, every |⟨T(i), T(j)⟩| is small: the nearly
    orthogonal codes every construction addresses positions with. Row r - 1 is T(r).
    """
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (rows, k), generator=generator, dtype=torch.int64) * 2 - 1
    return signs.float() / math.sqrt(k)


def largest_overlap(codes: Tensor) -> float | None:
    """max over i != j of |⟨T(i), T(j)⟩| (the γ of papers.md §2), by blocks of rows; None when
    that takes more than OVERLAP_WORK multiply-adds."""
    rows, largest = codes.shape[0], 0.0
    if rows * rows * codes.shape[1] > OVERLAP_WORK:
        return None
    block = max(1, ROW_BLOCK_ELEMENTS // max(rows, 1))
    for first in range(0, rows, block):
        products = codes[first : first + block] @ codes.T
        own = torch.arange(first, min(first + block, rows))
        products[own - first, own] = 0.0
        largest = max(largest, float(products.abs().max()))
    return largest


def causal_attention(
    queries: Tensor,
    rows: Tensor,
    keys: Tensor,
    values: Tensor,
    start: int,
    precision: Precision,
) -> Tensor:
    """Softmax attention of the chunk's rows (positions start .. end-1) over positions 0 .. end-1.

    ``rows``: the chunk-relative indices of the rows whose query is not zero, and ``queries``
    their queries (see :func:`attend_rows`); every other row's query is zero. ``values``:
    (B, end, e), the cache included. Row i sees positions j <= i. A zero query scores every
    position 0, so its softmax is the uniform average of the values the row sees: computed as
    a running sum (weight 1/(i+1), rounded like any weight), the same numbers without the
    (rows x keys) scores. Returns (B, n, e).
    """
    end = values.shape[1]
    positions = torch.arange(start, end, device=values.device)
    weight = precision(1.0 / (positions + 1).to(values.dtype))
    output = precision(weight[None, :, None] * values.cumsum(dim=1)[:, start:end])
    if len(rows):
        output[:, rows] = attend_rows(queries, rows, keys, values, start, precision)
    return output


def attend_rows(
    queries: Tensor,
    rows: Tensor,
    keys: Tensor,
    values: Tensor,
    start: int,
    precision: Precision,
) -> Tensor:
    """Softmax attention of the chunk rows ``rows`` (chunk-relative; at positions start + rows)
    over the positions up to each: ``queries`` (B, R, d), or (R, d) when they depend on position
    only; ``keys`` (end, d) or (B, end, d); ``values`` (B, end, e) or (end, e). Scores, weights
    and outputs are rounded by ``precision``. Returns (B, R, e), B = 1 when nothing depends on
    the example."""
    end = keys.shape[-2]
    positions = start + rows
    batch = max(t.shape[0] if t.dim() == 3 else 1 for t in (queries, keys, values))
    block = max(1, ROW_BLOCK_ELEMENTS // (end * batch))
    outputs = []
    for first in range(0, len(rows), block):
        query = queries[..., first : first + block, :]
        scores = precision(query @ keys.transpose(-1, -2))
        seen = positions[first : first + block, None]
        future = torch.arange(end, device=keys.device)[None, :] > seen
        weights = precision(torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1))
        outputs.append(precision(weights @ values))
    output = torch.cat(outputs, dim=-2)
    return output if output.dim() == 3 else output[None]


def query_rows(mask: Tensor) -> Tensor:
    """Chunk-relative indices of the rows where any example has a non-zero query."""
    return mask.any(dim=0).nonzero()[:, 0]


def symbol_logits(scores: Tensor, vocab_size: int, first: int, floor: float) -> Tensor:
    """Logits over the whole vocabulary: ``scores`` (..., S) for the S tokens from id ``first``
    on, ``floor`` for every other token (below every score the construction can give)."""
    logits = scores.new_full((*scores.shape[:-1], vocab_size), floor)
    logits[..., first : first + scores.shape[-1]] = scores
    return logits


def theorem_width(length: int) -> int:
    """k = ⌈(8/γ²) ln 2N⌉ with γ = 1/4 (papers.md §2)."""
    return math.ceil(128 * math.log(2 * length))


def positive_number(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise SepbenchError(f"{owner}: {name} must be a number > 0 or null, got {value!r}")
    return float(value)


def binary_codes(count: int, bits: int) -> Tensor:
    """(count, bits): row j is j in binary, most significant bit first, as 0/1 floats."""
    powers = 2 ** torch.arange(bits - 1, -1, -1)
    return ((torch.arange(count)[:, None] // powers) % 2).float()
