"""Shared by the mixer tests: feed a sequence in chunks, carrying the state."""

from __future__ import annotations

from typing import Any

import torch


def run_in_chunks(
    module: torch.nn.Module, x: torch.Tensor, sizes: list[int]
) -> tuple[torch.Tensor, Any]:
    """Outputs of ``module`` on ``x`` split into chunks of ``sizes`` along time, and the
    state after the last chunk."""
    assert sum(sizes) == x.shape[1]
    pieces, state, start = [], None, 0
    for size in sizes:
        y, state = module(x[:, start : start + size], state)
        pieces.append(y)
        start += size
    return torch.cat(pieces, 1), state
