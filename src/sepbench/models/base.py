"""The model contract (../shared/design.md, "Contracts"): mixers, blocks, one SequenceModel.

A **mixer** mixes information across time. ``forward(x, state=None) -> (y, state)`` takes a
chunk ``x`` of shape (batch, time, width) of any length and continues from ``state`` (None:
the start of a sequence). Training is one chunk, decoding is chunks of one token, feeding a
retrieved token is a chunk: whole-sequence, chunked and token-by-token results agree to fp32
round-off. ``state_size(seq_len)`` counts the scalars per example the mixer carries after
``seq_len`` tokens. A **feed-forward** has the same interface (most carry no state; RWKV's
channel mixing carries the previous token).

A :class:`SequenceModel` is embedding -> blocks (norm -> mixer -> residual, norm -> feed-forward
-> residual) -> norm -> head, called as ``logits, state = model(tokens, state=None)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sepbench.errors import SepbenchError


class Mixer(nn.Module):
    """Base class of sequence mixers. Subclasses take ``(width, *, **params)``.

    ``default_feedforward`` names the feed-forward a block uses with this mixer when the model's
    ``mlp`` option is left at its default (None: no feed-forward, as in Mamba).
    ``needs_positions``: the mixer has no sense of order of its own (attention, linear
    attention), so a model with it adds learned absolute positions unless ``positional`` says
    otherwise.
    ``recurrence``: the mixer's class in Zhang et al.'s sense (papers.md §3), one of
    :data:`RECURRENCE`: ``complete`` (the state update h_t = g(h_{t-1}, x_t) is nonlinear in
    h_{t-1}, so serial depth grows with the length), ``block`` (complete, but the state is updated
    once per block of ``block_length`` tokens), ``linear`` (the update is affine in the state: a
    parallel prefix scan) or ``none`` (no state rewritten over time: a fixed number of layers per
    position). Each mixer's docstring gives the reason; tests/models/test_recurrence.py checks it.
    ``stack``: the mixer is a whole multi-layer design whose layers cannot be separate blocks
    (they share weights, a memory or a state that crosses layers); it takes ``depth``, and
    ``build(name, ..., layers=L)`` makes a model of one block holding a depth-L stack.
    """

    name: ClassVar[str]
    recurrence: ClassVar[str]
    default_feedforward: ClassVar[str | None] = "mlp"
    needs_positions: ClassVar[bool] = False
    stack: ClassVar[bool] = False

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def state_size(self, seq_len: int) -> int:
        raise NotImplementedError


RECURRENCE = ("complete", "block", "linear", "none")
MIXERS: dict[str, type[Mixer]] = {}
FEEDFORWARDS: dict[str, Callable[..., nn.Module]] = {}


def register_mixer(cls: type[Mixer]) -> type[Mixer]:
    MIXERS[cls.name] = cls
    return cls


def register_feedforward(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        FEEDFORWARDS[name] = cls
        return cls

    return decorate


@register_feedforward("mlp")
class MLP(nn.Module):
    """GELU MLP, hidden width ``ratio * width`` (GPT-2's feed-forward)."""

    def __init__(self, width: int, ratio: int = 4) -> None:
        super().__init__()
        self.up = nn.Linear(width, ratio * width)
        self.down = nn.Linear(ratio * width, width)

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, None]:
        return self.down(nn.functional.gelu(self.up(x))), None

    def state_size(self, seq_len: int) -> int:
        return 0


@register_feedforward("swiglu")
class SwiGLU(nn.Module):
    """LLaMA's gated feed-forward (Wen et al.'s Transformer, papers.md §1)."""

    def __init__(self, width: int, ratio: int = 4) -> None:
        super().__init__()
        self.gate = nn.Linear(width, ratio * width, bias=False)
        self.up = nn.Linear(width, ratio * width, bias=False)
        self.down = nn.Linear(ratio * width, width, bias=False)

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, None]:
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x)), None

    def state_size(self, seq_len: int) -> int:
        return 0


NORMS: dict[str, type[nn.Module]] = {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}


class Block(nn.Module):
    """Pre-norm residual block: x + mixer(norm(x)), then x + feedforward(norm(x))."""

    def __init__(self, mixer: Mixer, feedforward: nn.Module | None, width: int, norm: str):
        super().__init__()
        self.mixer_norm = NORMS[norm](width)
        self.mixer = mixer
        self.feedforward_norm = NORMS[norm](width) if feedforward is not None else None
        self.feedforward = feedforward

    def forward(self, x: Tensor, state: tuple[Any, Any] | None = None) -> tuple[Tensor, Any]:
        mixer_state, feedforward_state = state if state is not None else (None, None)
        y, mixer_state = self.mixer(self.mixer_norm(x), mixer_state)
        x = x + y
        if self.feedforward is not None:
            y, feedforward_state = self.feedforward(self.feedforward_norm(x), feedforward_state)
            x = x + y
        return x, (mixer_state, feedforward_state)

    def state_size(self, seq_len: int) -> int:
        size = self.mixer.state_size(seq_len)
        if self.feedforward is not None:
            size += self.feedforward.state_size(seq_len)
        return size


@dataclass
class ModelState:
    """What a SequenceModel carries between chunks: tokens consumed so far, per-block states."""

    position: int
    blocks: list[Any]


EMBEDDING_STD = 0.02
"""Initial standard deviation of token embeddings and learned positions (GPT-2's)."""


def sinusoids(rows: int, width: int) -> Tensor:
    """The Transformer's sinusoid table: row i is (sin, cos)(i / 10000^(2j/width))."""
    position = torch.arange(rows, dtype=torch.float32)[:, None]
    frequency = torch.exp(-math.log(10000.0) * torch.arange(0, width, 2) / width)
    table = torch.zeros(rows, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table


class SequenceModel(nn.Module):
    """Embedding -> blocks -> norm -> head, with chunk-and-state semantics.

    ``positional`` adds absolute positions to the embedding (``learned`` or ``sinusoidal``,
    up to ``max_length`` tokens); RoPE lives inside the attention mixer. With
    ``frozen_sinusoidal_embedding`` the token embedding is the sinusoid of the token id, frozen,
    and the head is tied to it (Wen et al.'s set-up, papers.md §1).

    Scales: token embeddings and a learned table start at N(0, ``EMBEDDING_STD``²). The
    sinusoidal table is scaled to the token embeddings, each coordinate's root mean square
    ``EMBEDDING_STD`` (the raw sinusoids, of root mean square 1/√2, would outweigh a token
    embedding 35 to 1 and leave the first block reading positions alone); beside frozen
    sinusoidal token embeddings, of that same size, it stays as it is.
    """

    def __init__(
        self,
        vocab_size: int,
        width: int,
        blocks: list[Block],
        *,
        norm: str = "layernorm",
        tie_head: bool = True,
        frozen_sinusoidal_embedding: bool = False,
        positional: str = "none",
        max_length: int = 2048,
    ) -> None:
        super().__init__()
        self.vocab_size, self.width, self.max_length = vocab_size, width, max_length
        self.positional = positional
        self.embedding = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.embedding.weight, std=EMBEDDING_STD)
        if frozen_sinusoidal_embedding:
            self.embedding.weight.data.copy_(sinusoids(vocab_size, width))
            self.embedding.weight.requires_grad_(False)
        self.positions: nn.Module | None = None
        if positional == "learned":
            self.positions = nn.Embedding(max_length, width)
            nn.init.normal_(self.positions.weight, std=EMBEDDING_STD)
        elif positional == "sinusoidal":
            token_rms = 1 / math.sqrt(2) if frozen_sinusoidal_embedding else EMBEDDING_STD
            table = sinusoids(max_length, width) * (token_rms * math.sqrt(2))
            self.positions = nn.Embedding.from_pretrained(table)
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = NORMS[norm](width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        if tie_head or frozen_sinusoidal_embedding:
            self.head.weight = self.embedding.weight

    def forward(self, tokens: Tensor, state: ModelState | None = None) -> tuple[Tensor, ModelState]:
        """Logits (batch, time, vocab) for ``tokens`` (batch, time), continuing from ``state``."""
        hidden, state = self.features(tokens, state)
        return self.head(hidden), state

    def features(
        self, tokens: Tensor, state: ModelState | None = None
    ) -> tuple[Tensor, ModelState]:
        """The final-normed hidden states the head reads; training applies the head only where
        the loss is taken (for a one-token answer, one position in a hundred)."""
        start = 0 if state is None else state.position
        block_states = [None] * len(self.blocks) if state is None else state.blocks
        x = self.embedding(tokens)
        if self.positions is not None:
            end = start + tokens.shape[1]
            if end > self.max_length:
                raise SepbenchError(
                    f"sequence of {end} tokens exceeds max_length={self.max_length} "
                    "of the positional table; raise max_length"
                )
            x = x + self.positions(torch.arange(start, end, device=tokens.device))
        new_states = []
        for block, block_state in zip(self.blocks, block_states):
            x, block_state = block(x, block_state)
            new_states.append(block_state)
        return self.final_norm(x), ModelState(start + tokens.shape[1], new_states)

    def state_size(self, seq_len: int) -> int:
        """Scalars per example carried after ``seq_len`` tokens (attention grows with it)."""
        return sum(block.state_size(seq_len) for block in self.blocks)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(
            p.numel() for p in self.parameters() if p.requires_grad or not trainable_only
        )
