"""Measure a mixer's recurrence class (papers.md §3) from its state updates, in float64.

What "the state" is: every tensor a mixer carries between chunks. Two kinds of carried tensor
are not a recurrence and are handled as such:

- windows of the input (Mamba's conv buffer, RWKV's token shift x_{t-1}): the prefixes whose
  states are mixed share their last ``WINDOW`` inputs, so the windows agree and only the
  recurrent part differs;
- appended rows (a KV cache): an update that only appends rows computed from the input and the
  state is judged by the rows it appends; rows carried unchanged are not an update.

The classes, as measured:

- ``none``: one token appends to the state and rewrites nothing, and the appended rows depend on
  the old rows without a cycle (leaf j's new rows may read leaf i's old rows only if i comes
  earlier in some order: attention's keys and values read nothing old; a looped layer's second
  cache reads the first), so a position's serial depth is bounded;
- ``linear``: otherwise, and the one-token update is affine in the state:
  f(a·s1 + (1−a)·s2, x) = a·f(s1, x) + (1−a)·f(s2, x);
- ``complete``: otherwise (not affine);
- ``block`` (mixers with ``block_length`` > 1): a token inside a block is processed as by a
  ``none`` mixer, and the update over a whole block is not affine.

RWKV stores its sums as (num, den) · e^m with a running maximum m; its chart maps the state to
the true sums (num·e^m, den·e^m, m = 0), the coordinates in which the update is affine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from sepbench.models.base import MIXERS, Mixer

WIDTH = 16
WINDOW = 4
PREFIX = 7
BATCH = 3
MIXES = (0.5, 2.0)
AFFINE_BELOW = 1e-9
"""Relative deviation from affinity below which an update counts as affine (float64)."""
CHANGED_ABOVE = 1e-12
"""A difference above this means an appended row read a perturbed leaf (float64)."""


def rwkv_chart(state: Any) -> Any:
    previous, num, den, m = state
    scale = m.exp()
    return previous, num * scale, den * scale, torch.zeros_like(m)


CHARTS: dict[str, Callable[[Any], Any]] = {"rwkv": rwkv_chart}


def build(name: str, seed: int = 0) -> Mixer:
    torch.manual_seed(seed)
    cls = MIXERS[name]
    return cls(WIDTH, **({"depth": 2} if cls.stack else {})).double().eval()


def leaves(state: Any) -> list[Any]:
    """The tensors and ints of a nested state, in order (None dropped)."""
    if state is None:
        return []
    if isinstance(state, (tuple, list)):
        return [leaf for item in state for leaf in leaves(item)]
    if isinstance(state, (Tensor, int)):
        return [state]
    raise TypeError(f"unexpected state leaf {type(state).__name__}")


def rebuild(state: Any, new: list[Any]) -> Any:
    """``state`` with its leaves replaced, in order, by ``new`` (consumed from the front)."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return type(state)(rebuild(item, new) for item in state)
    return new.pop(0)


def combine(a: Any, b: Any, tensors: Callable[[Tensor, Tensor], Tensor]) -> Any:
    """Leaf-wise ``tensors(a, b)``; ints must agree."""
    pairs = zip(leaves(a), leaves(b), strict=True)
    out = []
    for x, y in pairs:
        if isinstance(x, Tensor):
            out.append(tensors(x, y))
        else:
            assert x == y, "states of different positions"
            out.append(x)
    return rebuild(a, out)


class Probe:
    """A mixer fed random inputs: prefixes, states and the update f(state, next tokens)."""

    def __init__(self, mixer: Mixer, chart: Callable[[Any], Any] = lambda s: s) -> None:
        self.mixer, self.chart = mixer, chart
        self.generator = torch.Generator().manual_seed(1)

    def inputs(self, length: int) -> Tensor:
        shape = (BATCH, length, WIDTH)
        return torch.randn(shape, generator=self.generator, dtype=torch.float64)

    def state(self, x: Tensor, state: Any = None) -> Any:
        with torch.no_grad():
            return self.chart(self.mixer(x, state)[1])

    def prefix_pair(self, length: int) -> tuple[Any, Any]:
        """States after two prefixes that differ except in their last ``WINDOW`` inputs."""
        shared = self.inputs(WINDOW)
        first, second = (torch.cat((self.inputs(length - WINDOW), shared), 1) for _ in "ab")
        return self.state(first), self.state(second)


def grown_axis(old: Tensor, new: Tensor) -> int | None:
    """The one axis along which ``new`` is longer than ``old``, else None."""
    axes = [i for i, (a, b) in enumerate(zip(old.shape, new.shape)) if a != b]
    grew = len(axes) == 1 and new.shape[axes[0]] > old.shape[axes[0]]
    return axes[0] if grew else None


def computed_part(old: Tensor, new: Tensor) -> Tensor:
    """What an update computed in a leaf: the appended rows if it grew, else all of it."""
    axis = grown_axis(old, new)
    if axis is None:
        return new
    return new.narrow(axis, old.shape[axis], new.shape[axis] - old.shape[axis])


def mix(s1: Any, s2: Any, a: float) -> Any:
    return combine(s1, s2, lambda p, q: a * p + (1 - a) * q)


def nonlinearity(probe: Probe, prefix: int, tokens: int) -> float:
    """max |f(mix) − mix(f)| / max |f(s1) − f(s2)| over the parts the update computed (leaves
    carried unchanged are skipped), for every mixing weight a in ``MIXES``."""
    s1, s2 = probe.prefix_pair(prefix)
    x = probe.inputs(tokens)
    f1, f2 = probe.state(x, s1), probe.state(x, s2)
    spread = deviation = 0.0
    for a in MIXES:
        got, want = probe.state(x, mix(s1, s2, a)), mix(f1, f2, a)
        for old, *new in zip(*(leaves(s) for s in (s1, got, want, f1, f2)), strict=True):
            if not isinstance(old, Tensor) or (old.shape == new[2].shape and old.equal(new[2])):
                continue
            got_part, want_part, one, two = (computed_part(old, t) for t in new)
            deviation = max(deviation, (got_part - want_part).abs().max().item())
            spread = max(spread, (one - two).abs().max().item())
    assert spread > 0, "the two prefixes left the same state: nothing to compare"
    return deviation / spread


def appends_without_cycles(probe: Probe, prefix: int) -> bool:
    """One token only appends rows to the state (rewrites nothing), and the appended rows'
    dependencies on the old leaves form no cycle."""
    state = probe.state(probe.inputs(prefix))
    x = probe.inputs(1)
    old, new = leaves(state), leaves(probe.state(x, state))
    tensors = [i for i, leaf in enumerate(old) if isinstance(leaf, Tensor)]
    grown = []
    for i in tensors:
        axis = grown_axis(old[i], new[i])
        kept = new[i] if axis is None else new[i].narrow(axis, 0, old[i].shape[axis])
        if kept.shape != old[i].shape or not torch.equal(kept, old[i]):
            return False
        if axis is not None:
            grown.append(i)
    reads: dict[int, set[int]] = {i: set() for i in grown}
    for source in tensors:
        perturbed = list(old)
        noise = torch.randn(old[source].shape, generator=probe.generator, dtype=torch.float64)
        perturbed[source] = old[source] + noise
        changed = leaves(probe.state(x, rebuild(state, perturbed)))
        for target in grown:
            rows = (computed_part(old[target], t) for t in (changed[target], new[target]))
            if (next(rows) - next(rows)).abs().max().item() > CHANGED_ABOVE:
                reads[target].add(source)
    return acyclic(reads)


def acyclic(reads: dict[int, set[int]]) -> bool:
    """No cycle among the grown leaves when each reads the old rows of ``reads[leaf]``."""
    remaining = {leaf: sources & reads.keys() for leaf, sources in reads.items()}
    while remaining:
        ready = [leaf for leaf, sources in remaining.items() if not sources & remaining.keys()]
        if not ready:
            return False
        for leaf in ready:
            del remaining[leaf]
    return True


def measured_class(mixer: Mixer, chart: Callable[[Any], Any] = lambda s: s) -> tuple[str, float]:
    """The recurrence class the updates show, and the nonlinearity measured on the way."""
    probe = Probe(mixer, chart)
    block = getattr(mixer, "block_length", 1)
    if block > 1:
        inside = appends_without_cycles(probe, prefix=2 * block)
        ratio = nonlinearity(probe, prefix=2 * block, tokens=block)
        return ("block" if inside and ratio > AFFINE_BELOW else "unclassified"), ratio
    if appends_without_cycles(probe, prefix=PREFIX):
        return "none", 0.0
    ratio = nonlinearity(probe, prefix=PREFIX, tokens=1)
    return ("linear" if ratio < AFFINE_BELOW else "complete"), ratio
