"""Finite precision as a knob: every activation a construction produces, rounded to p bits.

The theorems of papers.md §2 hold for models whose numbers carry p = O(log N) bits. A
construction built with ``precision=p`` rounds, after every operation it performs, the tensor
that operation produced: embeddings, queries, keys and values, attention scores, attention
weights (after the softmax), attention outputs, feed-forward activations and recurrent states.
Sums inside one matrix product are accumulated in float32 and rounded once (the products of one
dot product are not rounded one by one); the logits the evaluation takes the argmax of are left
unrounded, so that rounding never manufactures a tie. Weights are exact.

Two simulations (``rounding``):

- ``fixed`` (default): fixed point with p fraction bits. A value becomes the nearest multiple of
  2^-p and saturates at ±2^p, so the p-bit number can hold both N and 1/N for N <= 2^p, the
  log-precision model behind the theorems' p = O(log N): an average over N positions, whose
  weights are 1/N, needs p >= log2 N bits before any weight rounds to zero.
- ``float``: a float with a p-bit significand (the leading bit included) and an unbounded
  exponent, so only relative precision is limited.

``None`` (no ``precision``) computes in plain float32.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from sepbench.errors import check_choice, check_int

ROUNDINGS = ("fixed", "float")
Rounding = Literal["fixed", "float"]


class Precision:
    """Round tensors to ``bits`` bits (None: leave them as they are); see the module docstring."""

    def __init__(self, bits: int | None = None, rounding: str = "fixed", owner: str = "") -> None:
        owner = owner or "precision"
        if bits is not None:
            check_int(owner, "precision", bits, 1, 60)
        self.bits = bits
        self.rounding = str(check_choice(owner, "rounding", rounding, ROUNDINGS))

    def __call__(self, x: Tensor) -> Tensor:
        if self.bits is None:
            return x
        if self.rounding == "fixed":
            scale = float(2**self.bits)
            return (torch.round(x * scale) / scale).clamp(-scale, scale)
        mantissa, exponent = torch.frexp(x)
        scale = float(2**self.bits)
        return torch.ldexp(torch.round(mantissa * scale) / scale, exponent)

    def describe(self) -> str:
        if self.bits is None:
            return "float32"
        return f"{self.bits}-bit {self.rounding}"

