"""A mixer that breaks the contract on purpose: every output sees the mean of the whole chunk,
later tokens included. ``sepbench check-mixer`` must reject it, with the size of the leak:

    sepbench check-mixer examples/noncausal_mixer.py:ChunkMeanMixer
"""

from __future__ import annotations

from torch import Tensor, nn


class ChunkMeanMixer(nn.Module):
    """y_t = W (x_t + mean over the chunk): not causal, and chunking changes the result."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mix = nn.Linear(width, width)

    def forward(self, x: Tensor, state: None = None) -> tuple[Tensor, None]:
        return self.mix(x + x.mean(1, keepdim=True)), None

    def state_size(self, seq_len: int) -> int:
        return 0
