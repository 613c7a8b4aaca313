"""Test helper: make a folder read-only for a while, also for root (who ignores permission
bits): there the folder and its files are marked immutable with ``chattr +i``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _everything(folder: Path) -> list[Path]:
    """The folder and what it holds, except SQLite's shared-memory index (``*-shm``): the store's
    processes have it mapped, and a write through a mapping of an immutable file is a SIGBUS,
    which is not what a folder turned read-only does to files already open (chmod leaves open
    mappings alone)."""
    return [folder, *sorted(p for p in folder.rglob("*") if not p.name.endswith("-shm"))]


def _chattr(flag: str, folder: Path) -> None:
    """``chattr flag`` on everything in the folder, pass after pass until one meets every file
    of the listing before it: a sweep may still rename a checkpoint in a subfolder that is
    not frozen yet, so a listed file can vanish, or a new one appear, mid-pass."""
    previous: list[Path] = []
    for _ in range(10):
        paths = _everything(folder)
        ran = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True)
        if ran.returncode == 0 and paths == previous:
            return
        previous = paths
    raise AssertionError(f"chattr {flag} {folder}: {ran.stderr.strip()}")


def make_read_only(folder: Path) -> None:
    if os.geteuid() == 0:
        _chattr("+i", folder)
    else:
        for path in _everything(folder):
            path.chmod(path.stat().st_mode & ~0o222)


def make_writable(folder: Path) -> None:
    if os.geteuid() == 0:
        _chattr("-i", folder)
    else:
        for path in _everything(folder):
            path.chmod(path.stat().st_mode | 0o200)


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    make_read_only(folder)
    try:
        yield
    finally:
        make_writable(folder)
