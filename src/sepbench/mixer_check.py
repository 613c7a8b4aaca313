"""The mixer contract, checked on any mixer class: what ``sepbench check-mixer`` prints.

Before a contributed mixer's numbers are trusted, it must keep the contract every mixer of the
zoo keeps (../shared/design.md, "Contracts"): the right output shape; whole-sequence, chunked
and token-by-token runs that agree to fp32 round-off; causality (later tokens never change
earlier outputs); a ``state_size`` that counts the state it really carries; finite gradients;
and enough expressiveness to learn a 4-symbol copy task in a small model.

Each check returns the number it measured beside its verdict, so a failure says by how much.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from sepbench.models.base import Block, SequenceModel
from sepbench.models.spec import mixer_class

TOLERANCE = 1e-4
"""Largest absolute difference between whole, chunked and stepped outputs (fp32)."""
COPY_TARGET = 0.9
"""Accuracy a 2-layer width-32 model with the mixer must reach on the copy task."""
WIDTH, LENGTH, COPY_STEPS = 32, 24, 300


@dataclasses.dataclass
class Check:
    """One line of the checklist."""

    name: str
    passed: bool
    measured: str


def check_mixer(
    name: str, params: dict[str, Any] | None = None, *, learn: bool = True
) -> list[Check]:
    """Run the contract on mixer ``name`` (registered, or an import path) built with
    ``params``; ``learn=False`` skips the copy task (the slowest check)."""
    cls = mixer_class(name)
    params = dict(params or {})

    def make() -> nn.Module:
        torch.manual_seed(0)
        return cls(WIDTH, **params)

    checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
        ("output shape: (y, state), y shaped like x", lambda: _shape(make())),
        ("whole = chunked = token-by-token", lambda: _chunks(make())),
        ("causal: later tokens leave earlier outputs alone", lambda: _causal(make())),
        ("state_size = scalars carried per example", lambda: _state_size(make())),
        ("finite gradients at length 256", lambda: _gradients(make())),
    ]
    if learn:
        copy_task = f"learns a 4-symbol copy task (2 layers, width {WIDTH}, {COPY_STEPS} steps)"
        checks.append((copy_task, lambda: _copy_task(make, cls)))
    return [_run_check(label, check) for label, check in checks]


def _run_check(label: str, check: Callable[[], tuple[bool, str]]) -> Check:
    """A check that raises fails, with the exception as its measurement."""
    try:
        passed, measured = check()
    except Exception as error:  # the user's code may raise anything: report it and go on
        return Check(label, False, f"raised {type(error).__name__}: {error}")
    return Check(label, passed, measured)


def _inputs(batch: int = 2, length: int = LENGTH, seed: int = 0) -> Tensor:
    return torch.randn(batch, length, WIDTH, generator=torch.Generator().manual_seed(seed))


def _run(mixer: nn.Module, x: Tensor, sizes: list[int]) -> tuple[Tensor, Any]:
    pieces, state, start = [], None, 0
    for size in sizes:
        y, state = mixer(x[:, start : start + size], state)
        pieces.append(y)
        start += size
    return torch.cat(pieces, 1), state


def _shape(mixer: nn.Module) -> Check:
    x = _inputs()
    with torch.no_grad():
        out = mixer(x)
    ok = isinstance(out, tuple) and len(out) == 2 and tuple(out[0].shape) == tuple(x.shape)
    got = tuple(out[0].shape) if isinstance(out, tuple) else type(out).__name__
    return ok, f"{got} for input {tuple(x.shape)}"


def _chunks(mixer: nn.Module) -> Check:
    mixer.eval()
    x = _inputs()
    with torch.no_grad():
        whole, _ = mixer(x)
        chunked, _ = _run(mixer, x, [5, 1, 7, LENGTH - 13])
        stepped, _ = _run(mixer, x, [1] * LENGTH)
    gap = max((chunked - whole).abs().max().item(), (stepped - whole).abs().max().item())
    return gap <= TOLERANCE, f"max |diff| {gap:.2e}"


def _causal(mixer: nn.Module) -> Check:
    mixer.eval()
    x, cut = _inputs(), LENGTH // 2
    y = x.clone()
    y[:, cut:] = _inputs(seed=1)[:, cut:]
    with torch.no_grad():
        a, _ = mixer(x)
        b, _ = mixer(y)
    leak = (a[:, :cut] - b[:, :cut]).abs().max().item()
    return leak <= TOLERANCE, f"max change before position {cut}: {leak:.2e}"


def _state_size(mixer: nn.Module) -> Check:
    mixer.eval()
    found = []
    for length in (8, 16):
        with torch.no_grad():
            _, state = mixer(_inputs(batch=2, length=length))
        found.append((length, mixer.state_size(length), _scalars(state) // 2))
    ok = all(reported == carried for _, reported, carried in found)
    text = "; ".join(f"after {n}: reports {r}, carries {c}" for n, r, c in found)
    return ok, text


def _scalars(state: Any) -> int:
    """Scalars in a state: tensors anywhere in tuples, lists, dicts or dataclasses."""
    if isinstance(state, Tensor):
        return state.numel()
    if isinstance(state, (tuple, list)):
        return sum(_scalars(s) for s in state)
    if isinstance(state, dict):
        return sum(_scalars(s) for s in state.values())
    if dataclasses.is_dataclass(state):
        return sum(_scalars(getattr(state, f.name)) for f in dataclasses.fields(state))
    return 0


def _gradients(mixer: nn.Module) -> Check:
    x = _inputs(length=256).requires_grad_(True)
    y, _ = mixer(x)
    y.square().mean().backward()
    grads = [p.grad for p in mixer.parameters() if p.requires_grad] + [x.grad]
    finite = all(g is not None and torch.isfinite(g).all() for g in grads)
    missing = sum(g is None for g in grads)
    return finite, f"{missing} parameters without a gradient"


def _copy_task(make: Callable[[], nn.Module], cls: type) -> tuple[bool, str]:
    """``a b c d | a b c d`` over 4 symbols: the second half is trained and judged. Mixers
    with no sense of order get learned positions, as in the zoo."""
    torch.manual_seed(0)
    blocks = [Block(make(), None, WIDTH, "layernorm") for _ in range(2)]
    positional = "learned" if getattr(cls, "needs_positions", False) else "none"
    model = SequenceModel(7, WIDTH, blocks, positional=positional, max_length=16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(COPY_STEPS):
        loss = _copy_loss(model, _copy_batch(64, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        batch = _copy_batch(512, generator)
        logits, _ = model(batch[:, :-1])
        right = (logits[:, 4:].argmax(-1) == batch[:, 5:]).all(-1).float().mean().item()
    seconds = time.perf_counter() - start
    return right >= COPY_TARGET, f"accuracy {right:.3f} (needs {COPY_TARGET}) in {seconds:.1f} s"


def _copy_batch(size: int, generator: torch.Generator) -> Tensor:
    symbols = torch.randint(1, 5, (size, 4), generator=generator)
    separator = torch.full((size, 1), 5)
    return torch.cat([symbols, separator, symbols], 1)


def _copy_loss(model: nn.Module, batch: Tensor) -> Tensor:
    logits, _ = model(batch[:, :-1])
    return nn.functional.cross_entropy(logits[:, 4:].reshape(-1, 7), batch[:, 5:].reshape(-1))
