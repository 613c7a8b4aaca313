"""Test-wide settings: one torch thread per test process (pytest -n 2 runs one process per
core; more threads than cores slow every small op down), and the CPU allocator setting the
engine uses (sepbench.cpu)."""

import torch

from sepbench.cpu import keep_freed_memory

torch.set_num_threads(1)
keep_freed_memory()
