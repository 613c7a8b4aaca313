"""Checkpoint files that say whether they can be trusted.

A checkpoint is a header line and a ``torch.save`` payload::

    sepbench-checkpoint
    {"format": 1, "config_hash": "...", "bytes": N, "sha256": "..."}
    <N bytes of torch.save>

:func:`load` refuses (with :class:`CheckpointError`, one line) a file that is truncated or
altered (length, sha256), written for another config (``config_hash``), or in another format
(an older sepbench wrote plain ``torch.save`` files, without this header). :func:`save` writes
a temporary file and renames it over the old one, so a process killed or a disk filling up
mid-write leaves the previous checkpoint, never half of a new one. The temporary name is the
writer's own, so two processes saving one run (a cancelled worker not yet stopped beside the
one resuming it) never rename each other's file away.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path
from typing import Any

import torch

from sepbench.store import StoreError

MAGIC = b"sepbench-checkpoint\n"
FORMAT = 1


class CheckpointError(Exception):
    """A checkpoint that cannot be trusted; the message says why, in a few words."""


def save(state: dict[str, Any], path: Path, config_hash: str) -> None:
    """Write ``state`` atomically; a file system error names the path (:class:`StoreError`)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = {
        "format": FORMAT,
        "config_hash": config_hash,
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with partial.open("wb") as handle:
            handle.write(MAGIC + json.dumps(header).encode() + b"\n")
            handle.write(payload)
        partial.replace(path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise StoreError(f"checkpoint: cannot write {path} ({error.strerror})") from None


def load(path: Path, config_hash: str) -> dict[str, Any]:
    """The state saved in ``path`` for ``config_hash``; :class:`CheckpointError` if it cannot
    be trusted."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"unreadable ({error.strerror})") from None
    if not data.startswith(MAGIC):
        raise CheckpointError("not a sepbench checkpoint of this format (an older one?)")
    line, _, payload = data[len(MAGIC) :].partition(b"\n")
    try:
        header = json.loads(line)
    except ValueError:
        raise CheckpointError("its header is damaged") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"format {header.get('format')}, this sepbench reads {FORMAT}")
    if header.get("config_hash") != config_hash:
        raise CheckpointError(f"written for config {header.get('config_hash')}, not this one")
    if len(payload) != header.get("bytes"):
        raise CheckpointError(f"truncated: {len(payload)} of {header.get('bytes')} bytes")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CheckpointError("checksum mismatch")
    try:
        return torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as error:  # a payload that passed the checksum yet does not unpickle
        raise CheckpointError(f"unreadable ({type(error).__name__})") from None
