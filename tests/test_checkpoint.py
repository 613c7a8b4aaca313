"""Checkpoint files: a round trip, and every way one can fail to be trustworthy."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from sepbench import checkpoint
from sepbench.checkpoint import CheckpointError
from sepbench.store import StoreError

STATE = {"step": 7, "weights": torch.arange(6.0).reshape(2, 3), "rng": {"state": 2**100 + 3}}


def saved(tmp_path: Path) -> Path:
    path = tmp_path / "last.pt"
    checkpoint.save(STATE, path, "abc")
    return path


def test_round_trip_keeps_tensors_and_big_ints(tmp_path: Path) -> None:
    loaded = checkpoint.load(saved(tmp_path), "abc")
    assert loaded["step"] == 7 and loaded["rng"] == {"state": 2**100 + 3}
    assert torch.equal(loaded["weights"], STATE["weights"])
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[:-10], "truncated"),
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "checksum mismatch"),
        (lambda data: data.replace(b'"format": 1', b'"format": 0'), "format 0"),
        (lambda data: data.replace(b'"config_hash": "abc"', b'"config_hash": "xyz"'),
         "written for config xyz"),
        (lambda data: data.replace(b'{"format"', b'{"form'), "header is damaged"),
    ],
)
def test_a_damaged_or_foreign_checkpoint_is_refused(
    tmp_path: Path, damage: object, reason: str
) -> None:
    path = saved(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=reason):
        checkpoint.load(path, "abc")


def test_an_older_plain_torch_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    torch.save({"step": 3, "model": {}}, path)  # what sepbench wrote before checkpoints had headers
    with pytest.raises(CheckpointError, match="older"):
        checkpoint.load(path, "abc")


def test_a_failed_write_keeps_the_old_checkpoint_and_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = saved(tmp_path)
    before = path.read_bytes()
    real_open = Path.open

    def full_disk(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        if self.name.endswith(".partial"):
            handle = real_open(self, mode, *args, **kwargs)
            handle.write(b"half")
            handle.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full_disk)
    with pytest.raises(StoreError, match=f"cannot write {path} \\(No space left on device\\)"):
        checkpoint.save({"step": 8}, path, "abc")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert checkpoint.load(path, "abc")["step"] == 7


def test_two_writers_of_one_checkpoint_never_undo_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled worker still saving beside the one that resumes its run (the Ray stop)."""
    path = tmp_path / "last.pt"
    real_replace = Path.replace

    def other_writer_saves_first(self: Path, target: Path) -> Path:
        monkeypatch.setattr(Path, "replace", real_replace)
        checkpoint.save({"step": 9}, path, "abc")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", other_writer_saves_first)
    checkpoint.save({"step": 8}, path, "abc")
    assert checkpoint.load(path, "abc")["step"] == 8  # the last rename wins, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
