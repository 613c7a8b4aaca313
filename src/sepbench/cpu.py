"""CPU runtime settings that make the pure-PyTorch models fast on a laptop.

Training on the CPU allocates and frees the same large activation buffers every step. glibc's
default returns each freed block above 128 KiB to the operating system, so the next step pays
page faults to get it back: on the scan of a two-layer Mamba this tripled the step time
(benchmarks/results/models_speed_cpu.txt). Raising the mmap and trim thresholds keeps freed
memory in the process for reuse.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed large blocks for reuse; False where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
