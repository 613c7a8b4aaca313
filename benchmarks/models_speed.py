"""Training speed of every registered model on CPU, the chunked-vs-step ratio, transformer FLOP/s.

Run with ``python benchmarks/models_speed.py [--quick]``. Prints; never asserts. Uses
``torch.set_num_threads(2)`` (the CI and demo machines have two cores) and fp32.

1. Forward+backward tokens/s (cross-entropy on next-token prediction, 2 layers) for every model
   in ``models.names()`` at widths 64 and 256 and lengths 256 and 1,024; the hybrid is one
   recurrent layer (mamba if registered, else lstm) then one attention layer, Wen et al.'s
   hybrid scaled down (papers.md §1). The batch is chosen so one run takes about 0.5 s; the
   median of a few repeats is printed.
2. For the chunked-scan models (mamba, linear_attention, retnet, s4d, where registered): the
   time of stepping one token at a time with the carried state over the time of one chunked
   call at length 1,024, both forward only under ``torch.no_grad``. Floor: 5x.
3. The transformer's achieved training FLOP/s at width 256, length 1,024 against this machine's
   fp32 matmul throughput measured in the same run. Floor: 25 %. FLOPs count the matmuls only
   (6 per parameter-token for the linear maps, causal attention as half of the full L² terms).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn

from sepbench import models
from sepbench.cpu import keep_freed_memory
from sepbench.models.base import MIXERS
from timing import seconds

VOCAB = 64
LAYERS = 2
TARGET_SECONDS = 0.5
MAX_BATCH = 256
SCAN_MODELS = ("mamba", "linear_attention", "retnet", "s4d")


def build(name: str, width: int) -> models.SequenceModel:
    torch.manual_seed(0)
    if name == "hybrid":
        recurrent = "mamba" if "mamba" in MIXERS else "lstm"
        return models.build(name, VOCAB, width, mixers=[recurrent, "attention"], max_length=4096)
    return models.build(name, VOCAB, width, LAYERS, max_length=4096)




def training_step(model: models.SequenceModel, batch: int, length: int) -> Callable[[], None]:
    x = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(0))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        logits, _ = model(x)
        nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1)
        ).backward()

    return step


def calibrated_batch(model: models.SequenceModel, length: int) -> int:
    """The batch whose training step should take about TARGET_SECONDS (from batch 1's time)."""
    elapsed = seconds(training_step(model, 1, length), repeats=2)
    return max(1, min(MAX_BATCH, round(TARGET_SECONDS / elapsed)))


def throughput_table(widths: list[int], lengths: list[int], repeats: int) -> None:
    print(f"\n1. forward+backward tokens/s, {LAYERS} layers, vocab {VOCAB}, median of {repeats}")
    header = "".join(f"{f'w{w} L{n}':>16}" for w in widths for n in lengths)
    print(f"{'model':<18}{header}")
    for name in models.names():
        cells = []
        for width in widths:
            model = build(name, width)
            for length in lengths:
                batch = calibrated_batch(model, length)
                elapsed = seconds(training_step(model, batch, length), repeats)
                cells.append(f"{batch * length / elapsed:>10,.0f} (b{batch})")
        print(f"{name:<18}" + "".join(f"{c:>16}" for c in cells))


def step_ratio(length: int, width: int, batch: int) -> None:
    print(
        f"\n2. token-by-token stepping / one chunked call, forward only (no_grad), "
        f"length {length}, width {width}, batch {batch}, {LAYERS} layers; floor 5x"
    )
    for name in SCAN_MODELS:
        if name not in MIXERS:
            print(f"{name:<18}not registered")
            continue
        model = build(name, width).eval()
        x = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(0))

        def stepped(model: models.SequenceModel = model, x: torch.Tensor = x) -> None:
            state = None
            for t in range(length):
                _, state = model(x[:, t : t + 1], state)

        with torch.no_grad():
            chunked = seconds(lambda model=model, x=x: model(x), repeats=3)
            stepping = seconds(stepped, repeats=1)
        ratio = stepping / chunked
        verdict = "ok" if ratio >= 5 else "BELOW FLOOR"
        print(
            f"{name:<18}chunked {chunked * 1e3:8.1f} ms   stepped {stepping * 1e3:8.1f} ms"
            f"   ratio {ratio:6.1f}x  {verdict}"
        )


def matmul_flops(n: int = 1024, repeats: int = 5) -> float:
    """This machine's fp32 matmul FLOP/s (n x n by n x n, median of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / seconds(lambda: a @ b, repeats)


def transformer_flops(width: int, length: int, repeats: int) -> None:
    model = build("transformer", width)
    batch = calibrated_batch(model, length)
    elapsed = seconds(training_step(model, batch, length), repeats)
    tokens = batch * length
    linear = 2 * tokens * (LAYERS * 12 * width * width + width * VOCAB)
    attention = LAYERS * 2 * batch * length * length * width
    achieved = 3 * (linear + attention) / elapsed
    peak = matmul_flops()
    verdict = "ok" if achieved >= 0.25 * peak else "BELOW FLOOR"
    print(
        f"\n3. transformer training, width {width}, length {length}, batch {batch}: "
        f"{achieved / 1e9:.1f} GFLOP/s achieved; fp32 matmul {peak / 1e9:.1f} GFLOP/s; "
        f"{100 * achieved / peak:.0f} % (floor 25 %) {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="width 64, length 256 only")
    quick = parser.parse_args().quick
    torch.set_num_threads(2)
    keep_freed_memory()  # as the engine does on CPU (sepbench.cpu)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, "
        f"models: {', '.join(models.names())}"
    )
    widths, lengths = ([64], [256]) if quick else ([64, 256], [256, 1024])
    throughput_table(widths, lengths, repeats=3)
    step_ratio(length=256 if quick else 1024, width=64, batch=8)
    transformer_flops(width=256, length=256 if quick else 1024, repeats=3)


if __name__ == "__main__":
    main()
