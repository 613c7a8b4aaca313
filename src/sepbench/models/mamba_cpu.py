"""Mamba's CPU kernels in C: the fast path of :mod:`sepbench.models.mamba` on a CPU.

Two pieces of the Mamba block (papers.md §1 and §2 use Mamba), forward and backward, in
``mamba_cpu.c`` beside this file: the selective scan (:class:`CompiledScan`, the recurrence of
:func:`sepbench.models.mamba.selective_step`) and the causal depthwise convolution with its
SiLU (:class:`CausalConv`). They are compiled on first use with the system C compiler (``$CC``,
else ``cc``; about 0.3 s) into a temporary directory and loaded with ctypes; nothing is kept on
disk. Where there is no compiler, or the compile fails, or ``SEPBENCH_MAMBA_KERNELS=0`` is set,
:func:`enabled` is False and Mamba runs its pure-torch code, which stays the reference these
kernels are tested against.

Why plain C through ctypes: gcc vectorises ``expf`` through glibc's vector math library where
numba calls the scalar one, and a ``torch.utils.cpp_extension.load_inline`` build of the same
code compiles torch's headers on first use (tens of seconds on a fresh CI machine) where this
one compiles a single C file.

The kernels run rows of the batch on ``torch.get_num_threads()`` Python threads (ctypes
releases the GIL). Each row's parameter gradient is written apart and the rows are summed in
order, so results do not depend on timing; they may differ from the torch scans in the last
bits (fp32 round-off, a different summation order).
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

SOURCE = Path(__file__).with_name("mamba_cpu.c")
FLAG_SETS = (["-O3", "-ffast-math", "-march=native"], ["-O3", "-ffast-math"])
"""Tried in order. -ffast-math lets gcc call glibc's vector ``expf``; it is given to the compile
step only, so the link does not add gcc's crtfastmath (which would flush denormals to zero for
the whole process)."""
DISABLE_VARIABLE = "SEPBENCH_MAMBA_KERNELS"
_POINTER = ctypes.c_void_p
_SIZE = ctypes.c_int64


def enabled() -> bool:
    """Whether Mamba should use these kernels: they load, and the environment allows it."""
    return os.environ.get(DISABLE_VARIABLE, "1") != "0" and library() is not None


def unavailable_reason() -> str | None:
    """Why the kernels did not load (None when they did)."""
    return _build()[1]


def library() -> ctypes.CDLL | None:
    """The loaded kernels, compiled on the first call; None where they cannot be built."""
    return _build()[0]


@functools.cache
def _build() -> tuple[ctypes.CDLL | None, str | None]:
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        return None, f"no C compiler found ({os.environ.get('CC', 'cc')})"
    errors = []
    with tempfile.TemporaryDirectory(prefix="sepbench-scan-") as folder:
        shared = Path(folder) / "selective_scan.so"
        for flags in FLAG_SETS:
            error = _compile(compiler, flags, Path(folder), shared)
            if error is None:
                return _declare(ctypes.CDLL(str(shared))), None
            errors.append(error)
    return None, f"{compiler} failed: {errors[-1]}"


def _compile(compiler: str, flags: list[str], folder: Path, shared: Path) -> str | None:
    """Compile and link; the last line of the compiler's complaint, or None on success."""
    obj = folder / "selective_scan.o"
    steps = (
        [compiler, *flags, "-fPIC", "-c", str(SOURCE), "-o", str(obj)],
        [compiler, "-shared", str(obj), "-o", str(shared), "-lm"],
    )
    for command in steps:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            return str(error)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            return lines[-1] if lines else f"exit code {done.returncode}"
    return None


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.selective_scan_forward.argtypes = [_SIZE] * 4 + [_POINTER] * 8
    lib.selective_scan_forward.restype = None
    lib.selective_scan_backward.argtypes = [_SIZE] * 4 + [_POINTER] * 14
    lib.selective_scan_backward.restype = ctypes.c_int
    lib.causal_conv_forward.argtypes = [_SIZE] * 5 + [_POINTER] * 4
    lib.causal_conv_forward.restype = None
    lib.causal_conv_backward.argtypes = [_SIZE] * 5 + [_POINTER] * 7
    lib.causal_conv_backward.restype = ctypes.c_int
    return lib


def _address(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="sepbench-scan")


def _over_rows(kernel, batch: int, sizes: tuple[int, ...], *tensors: Tensor | None) -> list:
    """Call ``kernel(rows, *sizes, *addresses)`` on row slices of every (batch-major) tensor,
    one slice per torch thread, in parallel; returns what each call returned."""
    threads = max(1, min(torch.get_num_threads(), batch))
    bounds = [batch * k // threads for k in range(threads + 1)]

    def call(start: int, stop: int):
        sliced = (None if t is None else t[start:stop] for t in tensors)
        return kernel(stop - start, *sizes, *(_address(t) for t in sliced))

    if threads == 1:
        return [call(0, batch)]
    return list(_pool(threads).map(call, bounds[:-1], bounds[1:]))


class CompiledScan(torch.autograd.Function):
    """:func:`sepbench.models.mamba.selective_scan`'s recurrence in C (float32, CPU).

    Same arguments and results as :class:`sepbench.models.mamba.StepwiseScan`. Forward keeps
    no state history; backward replays each (row, channel)'s forward into a small buffer. It
    differentiates once: a second derivative through it is refused by autograd.
    """

    @staticmethod
    def forward(ctx, x, dt, a, b, c, h0):
        lib = library()
        x, dt, a, b, c = (t.contiguous() for t in (x, dt, a, b, c))
        h0 = None if h0 is None else h0.contiguous()
        batch, time, inner = x.shape
        y, last = torch.empty_like(x), x.new_empty(batch, inner, a.shape[1])
        sizes = (time, inner, a.shape[1])
        a_rows = a.expand(batch, *a.shape)  # the same a for every row slice
        _over_rows(lib.selective_scan_forward, batch, sizes, x, dt, a_rows, b, c, h0, y, last)
        ctx.save_for_backward(x, dt, a, b, c, h0)
        return y, last

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, glast):
        lib = library()
        x, dt, a, b, c, h0 = ctx.saved_tensors
        batch, time, inner = x.shape
        gy, glast = gy.contiguous(), glast.contiguous()
        gx, gdt = torch.empty_like(x), torch.empty_like(x)
        gb, gc = torch.zeros_like(b), torch.zeros_like(c)
        ga_rows = x.new_zeros(batch, *a.shape)
        gh0 = None if h0 is None else torch.empty_like(h0)
        a_rows = a.expand(batch, *a.shape)
        failed = _over_rows(
            lib.selective_scan_backward, batch, (time, inner, a.shape[1]),
            x, dt, a_rows, b, c, h0, gy, glast, gx, gdt, ga_rows, gb, gc, gh0,
        )
        if any(failed):
            raise MemoryError("selective scan backward: could not allocate its work buffer")
        return gx, gdt, ga_rows.sum(0), gb, gc, gh0


class CausalConv(torch.autograd.Function):
    """SiLU(causal depthwise conv1d) from a zero history, in C (float32, CPU).

    ``x`` (batch, time, inner), contiguous along channels (a slice of a wider tensor is read in
    place); ``weight`` (inner, 1, width) and ``bias`` (inner) as :class:`torch.nn.Conv1d`
    stores them. Returns (batch, time, inner). Backward recomputes the pre-activation.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        if x.stride(2) != 1 or x.stride(0) != x.shape[1] * x.stride(1):
            x = x.contiguous()
        batch, time, inner = x.shape
        taps = weight[:, 0, :].t().contiguous()  # (width, inner): channels contiguous
        y = x.new_empty(batch, time, inner)
        sizes = (time, inner, taps.shape[0], x.stride(1))
        every_row = (taps.expand(batch, *taps.shape), bias.expand(batch, inner))
        _over_rows(library().causal_conv_forward, batch, sizes, x, *every_row, y)
        ctx.save_for_backward(x, taps, bias)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, taps, bias = ctx.saved_tensors
        batch, time, inner = x.shape
        gx = x.new_empty(batch, time, inner)
        gtaps, gbias = x.new_zeros(batch, *taps.shape), x.new_zeros(batch, inner)
        sizes = (time, inner, taps.shape[0], x.stride(1))
        every_row = (taps.expand(batch, *taps.shape), bias.expand(batch, inner))
        failed = _over_rows(
            library().causal_conv_backward, batch, sizes,
            x, *every_row, gy.contiguous(), gx, gtaps, gbias,
        )
        if any(failed):
            raise MemoryError("causal conv backward: could not allocate its work buffer")
        return gx, gtaps.sum(0).t()[:, None, :], gbias.sum(0)
