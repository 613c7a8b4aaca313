"""Speed of sepbench's Mamba mixer against Hugging Face's pure-torch ``MambaMixer``, on CPU.

Run with ``python benchmarks/mamba_reference_speed.py [--quick]``. Prints; never asserts. Uses
``torch.set_num_threads(2)`` (the CI and demo machines have two cores) and fp32; needs
``transformers`` (a test-only dependency).

1. Forward+backward time of one mixer (d_state 16, expand 2, conv 4, batch 8) at widths 64 and
   256 and lengths 256 and 512 (``--lengths`` to change): ours (the chunked scan) against
   ``transformers``' MambaMixer with the same weights, forced onto its pure-torch path (the
   per-step loop that runs when neither mamba_ssm nor causal_conv1d is installed). Floor: ours
   >= 2x faster. Their backward grows quadratically with length (each step indexes the
   full-length tensors, and autograd answers every index with a full-length zero gradient),
   so at length 1,024 and width 256 it alone takes many minutes.
2. Forward+backward at length 1,024 of one chunked call against stepping token by token with
   the carried state (the exact recurrence). Floor: chunked >= 5x faster.

The median of a few repeats after a warm-up is printed.
"""

from __future__ import annotations

import argparse
import inspect
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from sepbench.cpu import keep_freed_memory
from sepbench.models.mamba import Mamba
from timing import seconds

BATCH = 8




def hugging_face_mixer(ours: Mamba, width: int) -> nn.Module:
    """transformers' MambaMixer with our weights, its kernel hooks replaced by the torch code."""
    from transformers import MambaConfig
    from transformers.models.mamba import modeling_mamba
    from transformers.utils import logging

    logging.set_verbosity_error()
    for hooked in ("causal_conv1d_fn", "causal_conv1d_update", "mamba_selective_scan"):
        setattr(modeling_mamba, hooked, inspect.unwrap(getattr(modeling_mamba, hooked)))
    config = MambaConfig(
        hidden_size=width,
        state_size=ours.d_state,
        expand=ours.inner // width,
        conv_kernel=ours.conv_width,
        time_step_rank=ours.dt_rank,
        use_bias=False,
        use_conv_bias=True,
        use_mambapy=False,
    )
    theirs = modeling_mamba.MambaMixer(config, layer_idx=0)
    theirs.load_state_dict(ours.state_dict())
    return theirs


def backward(mixer: Callable[[Tensor], Tensor | tuple], x: Tensor) -> Callable[[], None]:
    """One forward+backward of a mean-square loss; a tuple output counts by its first item."""

    def run() -> None:
        y = mixer(x)
        (y[0] if isinstance(y, tuple) else y).square().mean().backward()

    return run


def stepped(ours: Mamba, x: Tensor) -> Tensor:
    state, outputs = None, []
    for t in range(x.shape[1]):
        y, state = ours(x[:, t : t + 1], state)
        outputs.append(y)
    return torch.cat(outputs, dim=1)


def against_hugging_face(widths: list[int], lengths: list[int], repeats: int) -> None:
    print("1. forward+backward, one mixer, batch 8: ours vs transformers MambaMixer (torch path)")
    print(f"{'width':>6} {'length':>7} {'ours ms':>9} {'HF ms':>9} {'HF/ours':>8}")
    for width in widths:
        torch.manual_seed(0)
        ours = Mamba(width)
        theirs = hugging_face_mixer(ours, width)
        for length in lengths:
            x = torch.randn(BATCH, length, width)
            mine = seconds(backward(ours, x), repeats)
            reference = seconds(backward(theirs, x), repeats)
            print(
                f"{width:>6} {length:>7} {1e3 * mine:>9.1f} {1e3 * reference:>9.1f} "
                f"{reference / mine:>7.1f}x"
            )


def chunked_against_steps(width: int, length: int, repeats: int) -> None:
    print(f"2. forward+backward at width {width}, length {length}, batch 8: chunked vs stepped")
    torch.manual_seed(0)
    ours = Mamba(width)
    x = torch.randn(BATCH, length, width)
    chunked = seconds(backward(ours, x), repeats)
    steps = seconds(backward(lambda v: stepped(ours, v), x), max(1, math.ceil(repeats / 2)))
    print(
        f"chunked {1e3 * chunked:.1f} ms, stepped {1e3 * steps:.1f} ms, "
        f"ratio {steps / chunked:.1f}x (floor 5x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="width 64, length 256 only")
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512])
    args = parser.parse_args()
    torch.set_num_threads(2)
    keep_freed_memory()  # as the engine does on CPU (sepbench.cpu)
    widths, lengths = ([64], [256]) if args.quick else (args.widths, args.lengths)
    repeats = 1 if args.quick else 3
    against_hugging_face(widths, lengths, repeats)
    chunked_against_steps(64, 256 if args.quick else 1024, repeats)


if __name__ == "__main__":
    main()
