"""The results store: one embedded SQLite file, one row per run, provenance on every row.

A run is keyed by the hash of its fully resolved config (../shared/design.md, "Store"). A
finished (``done``) run is served from here instead of being recomputed. Every write is one
transaction, so a process killed at any moment leaves either the old row or the new one, never
half of one; a ``running`` row whose process has died is detected and superseded by a new
attempt. Several processes may write at once: WAL journaling, a busy timeout and retries.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sepbench.errors import SepbenchError

STATUSES = ("running", "done", "diverged", "failed")
DEFAULT_PATH = Path("runs") / "sepbench.sqlite"
STALE_AFTER_S = 6 * 3600  # a running row from another host with no heartbeat for this long

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    config_hash     TEXT NOT NULL,
    task            TEXT NOT NULL,
    model           TEXT NOT NULL,
    config          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('running', 'done', 'diverged', 'failed')),
    metrics         TEXT NOT NULL DEFAULT '{}',
    num_parameters  INTEGER,
    state_size      INTEGER,
    wall_time_s     REAL,
    tokens_per_s    REAL,
    device          TEXT,
    git_sha         TEXT,
    package_version TEXT,
    torch_version   TEXT,
    python_version  TEXT,
    host            TEXT,
    pid             INTEGER,
    error           TEXT,
    started_at      TEXT NOT NULL,
    heartbeat_at    REAL NOT NULL,
    finished_at     TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_hash ON runs (config_hash, status);
CREATE TABLE IF NOT EXISTS curves (
    run_id       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step         INTEGER NOT NULL,
    loss         REAL,
    val_accuracy REAL,
    PRIMARY KEY (run_id, step)
);
"""

INFO_COLUMNS = ("num_parameters", "state_size", "wall_time_s", "tokens_per_s", "device")


@dataclass
class RunRecord:
    """One row of the store, decoded."""

    id: int
    config_hash: str
    task: str
    model: str
    config: dict[str, Any]
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    num_parameters: int | None = None
    state_size: int | None = None
    wall_time_s: float | None = None
    tokens_per_s: float | None = None
    device: str | None = None
    git_sha: str | None = None
    package_version: str | None = None
    torch_version: str | None = None
    python_version: str | None = None
    host: str | None = None
    pid: int | None = None
    error: str | None = None
    started_at: str = ""
    heartbeat_at: float = 0.0
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        values = dict(row)
        values["config"] = json.loads(values["config"])
        values["metrics"] = json.loads(values["metrics"])
        return cls(**values)


def provenance() -> dict[str, Any]:
    """Where a result came from: code version, library versions, host and process."""
    import torch

    from sepbench import __version__

    return {
        "git_sha": git_sha(),
        "package_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def git_sha() -> str | None:
    """The project's commit (``+dirty`` when the tree has changes), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def process_alive(host: str | None, pid: int | None, heartbeat_at: float) -> bool:
    """Is the process that owns a ``running`` row still there?"""
    if host != socket.gethostname():
        return time.time() - heartbeat_at < STALE_AFTER_S
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    """The embedded results store (SQLite). Each method opens its own short connection, so a
    Store can be shared by forked worker processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise SepbenchError(f"store: {self.path} is a directory; give a .sqlite file path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    @classmethod
    def default(cls) -> Store:
        """``$SEPBENCH_STORE`` if set, else runs/sepbench.sqlite under the working directory."""
        return cls(os.environ.get("SEPBENCH_STORE") or DEFAULT_PATH)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
                raise
            raise SepbenchError(f"store: {self.path} is not a sepbench store ({error})") from error
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it lands, or none of it (a kill mid-way rolls back)."""
        with self._connect() as db:
            for attempt in range(10):
                try:
                    db.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError:
                    if attempt == 9:
                        raise
                    time.sleep(0.2 * (attempt + 1))
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _read(self, query: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        with self._transaction() as db:
            return db.execute(query, parameters).fetchall()

    # -- the run life cycle ------------------------------------------------------------

    def lookup_done(self, config_hash: str) -> RunRecord | None:
        """The newest ``done`` run of this config, if any."""
        rows = self._read(
            "SELECT * FROM runs WHERE config_hash = ? AND status = 'done' ORDER BY id DESC LIMIT 1",
            (config_hash,),
        )
        return RunRecord.from_row(rows[0]) if rows else None

    def start(self, config_hash: str, config: dict[str, Any], info: dict[str, Any]) -> int:
        """Open a ``running`` row for a new attempt and return its id.

        A ``running`` row of the same config whose process is gone is marked ``failed``
        (interrupted) first; one whose process is alive makes this raise.
        """
        record = {**provenance(), **{k: info.get(k) for k in INFO_COLUMNS}}
        with self._transaction() as db:
            for row in db.execute(
                "SELECT id, host, pid, heartbeat_at FROM runs "
                "WHERE config_hash = ? AND status = 'running'",
                (config_hash,),
            ).fetchall():
                if process_alive(row["host"], row["pid"], row["heartbeat_at"]):
                    raise SepbenchError(
                        f"store: config {config_hash} is already running "
                        f"(run {row['id']}, pid {row['pid']} on {row['host']})"
                    )
                db.execute(
                    "UPDATE runs SET status = 'failed', error = ?, finished_at = ? WHERE id = ?",
                    (f"interrupted: process {row['pid']} died", now(), row["id"]),
                )
            cursor = db.execute(
                "INSERT INTO runs (config_hash, task, model, config, status, num_parameters, "
                "state_size, wall_time_s, tokens_per_s, device, git_sha, package_version, "
                "torch_version, python_version, host, pid, started_at, heartbeat_at) "
                "VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    config_hash,
                    config["task"]["name"],
                    (config.get("model") or config["construction"])["name"],
                    json.dumps(config, sort_keys=True),
                    *(record[k] for k in INFO_COLUMNS),
                    *(record[k] for k in (
                        "git_sha", "package_version", "torch_version", "python_version",
                        "host", "pid",
                    )),
                    now(),
                    time.time(),
                ),
            )
            return int(cursor.lastrowid)

    def heartbeat(self, run_id: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (time.time(), run_id))

    def finish(
        self,
        run_id: int,
        status: str,
        metrics: dict[str, Any],
        info: dict[str, Any],
        curve: list[dict[str, Any]],
    ) -> None:
        """Write the outcome, the metrics and the training curve in one transaction."""
        if status not in STATUSES[1:]:
            raise ValueError(f"finish status must be one of {STATUSES[1:]}, got {status!r}")
        columns = [k for k in INFO_COLUMNS if k in info]
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET status = ?, metrics = ?, finished_at = ?, heartbeat_at = ?"
                + "".join(f", {k} = ?" for k in columns)
                + " WHERE id = ?",
                (status, json.dumps(metrics, sort_keys=True), now(), time.time(),
                 *(info[k] for k in columns), run_id),
            )
            db.execute("DELETE FROM curves WHERE run_id = ?", (run_id,))
            db.executemany(
                "INSERT INTO curves (run_id, step, loss, val_accuracy) VALUES (?, ?, ?, ?)",
                [(run_id, p["step"], p.get("loss"), p.get("val_accuracy")) for p in curve],
            )

    def fail(self, run_id: int, error: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET status = 'failed', error = ?, finished_at = ? WHERE id = ?",
                (error[:2000], now(), run_id),
            )

    # -- reading -----------------------------------------------------------------------

    def get(self, run_id: int) -> RunRecord:
        rows = self._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise SepbenchError(f"store: no run with id {run_id} in {self.path}")
        return RunRecord.from_row(rows[0])

    def runs(
        self, task: str | None = None, model: str | None = None, status: str | None = None
    ) -> list[RunRecord]:
        """Stored runs, oldest first, filtered by task name, model name and status."""
        if status is not None and status not in STATUSES:
            raise SepbenchError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
        clauses, parameters = [], []
        for column, value in (("task", task), ("model", model), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                parameters.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(f"SELECT * FROM runs{where} ORDER BY id", tuple(parameters))
        return [RunRecord.from_row(row) for row in rows]

    def curve(self, run_id: int) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT step, loss, val_accuracy FROM curves WHERE run_id = ? ORDER BY step",
            (run_id,),
        )
        return [dict(row) for row in rows]

    def run_dir(self, config_hash: str) -> Path:
        """Where a config's checkpoints live: beside the store file."""
        return self.path.parent / "checkpoints" / config_hash
