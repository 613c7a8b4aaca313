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

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sepbench.errors import SepbenchError, check_choice, check_int, unknown_name


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
        self.embedding = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.embedding.weight, std=0.02)
        if frozen_sinusoidal_embedding:
            self.embedding.weight.data.copy_(sinusoids(vocab_size, width))
            self.embedding.weight.requires_grad_(False)
        self.positions: nn.Module | None = None
        if positional == "learned":
            self.positions = nn.Embedding(max_length, width)
            nn.init.normal_(self.positions.weight, std=0.02)
        elif positional == "sinusoidal":
            self.positions = nn.Embedding.from_pretrained(sinusoids(max_length, width))
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


# -- the registry --------------------------------------------------------------------------

MODEL_TO_MIXER = {"transformer": "attention"}
POSITIONAL = ("learned", "sinusoidal", "rope", "none")


def names() -> list[str]:
    """Model names: one per mixer (``transformer`` for attention), and ``hybrid``."""
    mixer_to_model = {v: k for k, v in MODEL_TO_MIXER.items()}
    return sorted([mixer_to_model.get(m, m) for m in MIXERS] + ["hybrid"])


def mixer_params(cls: type[Mixer]) -> set[str]:
    return {
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def resolve_mixers(name: str, layers: int | None, mixers: list[str] | None) -> list[str]:
    if name == "hybrid":
        if not mixers:
            raise SepbenchError("hybrid: give mixers=[...], e.g. ['mamba', 'mamba', 'attention']")
        for mixer in mixers:
            if mixer not in MIXERS:
                raise unknown_name("mixer", mixer, MIXERS)
        if layers is not None and layers != len(mixers):
            raise SepbenchError(f"hybrid: layers={layers} but {len(mixers)} mixers were given")
        return list(mixers)
    if mixers is not None:
        raise SepbenchError(f"{name}: mixers=[...] is only for the hybrid model")
    if name not in names():
        raise unknown_name("model", name, names())
    check_int(name, "layers", layers, 1, 256)
    mixer = MODEL_TO_MIXER.get(name, name)
    return [mixer] if MIXERS[mixer].stack else [mixer] * layers


def build(
    name: str,
    vocab_size: int,
    width: int,
    layers: int | None = None,
    *,
    mixers: list[str] | None = None,
    mlp: bool | str | None = None,
    mlp_ratio: int = 4,
    norm: str = "layernorm",
    tie_head: bool = True,
    frozen_sinusoidal_embedding: bool = False,
    positional: str | None = None,
    max_length: int = 2048,
    **params: Any,
) -> SequenceModel:
    """Build model ``name`` (see :func:`names`); ``params`` go to every mixer that accepts them.

    ``mlp``: None uses each mixer's default feed-forward; False none; True the mixer's default
    (``mlp`` where it has none); or a feed-forward name (``mlp``, ``swiglu``, ...).
    ``positional`` (default ``learned`` when a mixer ``needs_positions``, else ``none``).
    """
    kinds = resolve_mixers(name, layers, mixers)
    check_int(name, "vocab_size", vocab_size, 2)
    check_int(name, "width", width, 1, 65536)
    check_int(name, "mlp_ratio", mlp_ratio, 1, 64)
    check_int(name, "max_length", max_length, 1)
    check_choice(name, "norm", norm, NORMS)
    classes = [MIXERS[kind] for kind in kinds]
    unordered = any(cls.needs_positions for cls in classes)
    positional = positional or ("learned" if unordered else "none")
    check_choice(name, "positional", positional, POSITIONAL)
    accepted = set().union(*(mixer_params(cls) for cls in classes))
    if positional == "rope":
        if "rope" not in accepted:
            raise SepbenchError(f"{name}: positional=rope needs an attention mixer")
        params["rope"] = True
    if name != "hybrid" and classes[0].stack:
        if "depth" in params:
            raise SepbenchError(f"{name}: set its depth with layers, not depth")
        params["depth"] = layers
    for key in params:
        if key not in accepted:
            raise SepbenchError(
                f"{name}: unknown parameter {key!r}; allowed: "
                f"{', '.join(sorted(accepted | _MODEL_OPTIONS))}"
            )
    blocks = []
    for cls in classes:
        own = {k: v for k, v in params.items() if k in mixer_params(cls)}
        if cls.stack and "depth" not in own:
            raise SepbenchError(f"{name}: the {cls.name} mixer needs depth=<layers in its stack>")
        feedforward = _feedforward(name, mlp, cls.default_feedforward, width, mlp_ratio)
        blocks.append(Block(cls(width, **own), feedforward, width, norm))
    return SequenceModel(
        vocab_size,
        width,
        blocks,
        norm=norm,
        tie_head=tie_head,
        frozen_sinusoidal_embedding=frozen_sinusoidal_embedding,
        positional="none" if positional == "rope" else positional,
        max_length=max_length,
    )


_MODEL_OPTIONS = {
    "mixers", "mlp", "mlp_ratio", "norm", "tie_head", "frozen_sinusoidal_embedding",
    "positional", "max_length",
}


def _feedforward(
    name: str, mlp: bool | str | None, default: str | None, width: int, ratio: int
) -> nn.Module | None:
    if mlp is False or (mlp is None and default is None):
        return None
    kind = (default or "mlp") if mlp is None or mlp is True else mlp
    check_choice(name, "mlp", kind, [*FEEDFORWARDS, True, False])
    factory = FEEDFORWARDS[kind]
    return factory(width, ratio) if "ratio" in inspect.signature(factory).parameters else factory(
        width
    )
