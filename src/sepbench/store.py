"""The results store: one embedded SQLite file, one row per run, provenance on every row.

A run is keyed by the hash of its fully resolved config (../shared/design.md, "Store"). A
finished run (``done``, or ``diverged`` with the step it diverged at) is served from here
instead of being recomputed. Every write is one transaction, so a process killed at any moment
leaves either the old row or the new one, never half of one. Several processes may write at
once: WAL journaling, a busy timeout and retries.

A run's life: :meth:`Store.claim` atomically either serves a finished run, reports that a live
process is training the config (``busy``), or opens a ``running`` row; the row ends ``done``,
``diverged``, ``failed`` (an error, or its worker was killed) or ``interrupted`` (stopped by a
signal; its checkpoints are kept and the next attempt resumes from them).

Liveness of a ``running`` row: on the same host, its process id is checked; from another host,
its heartbeat (written by training at every log point, :data:`sepbench.train.LOG_INTERVAL`
steps) must be younger than :data:`STALE_AFTER_S`. A row whose owner is gone is marked
``interrupted`` by the next claim of its config.

Stores written before the ``interrupted`` status existed (schema 0) are migrated in place when
opened; their rows and curves are kept.
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

STATUSES = ("running", "done", "diverged", "failed", "interrupted")
FINISHED = ("done", "diverged")
"""Outcomes that are served instead of recomputed (the same config gives the same outcome)."""
DEFAULT_PATH = Path("runs") / "sepbench.sqlite"
STALE_AFTER_S = 3600  # a running row from another host with no heartbeat for this long
SCHEMA_VERSION = 1

_RUNS_COLUMNS = f"""
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    config_hash     TEXT NOT NULL,
    task            TEXT NOT NULL,
    model           TEXT NOT NULL,
    config          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ({", ".join(f"'{s}'" for s in STATUSES)})),
    metrics         TEXT NOT NULL DEFAULT '{{}}',
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
"""
SCHEMA = [
    f"CREATE TABLE runs ({_RUNS_COLUMNS})",
    "CREATE INDEX runs_by_hash ON runs (config_hash, status)",
    """CREATE TABLE curves (
        run_id       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step         INTEGER NOT NULL,
        loss         REAL,
        val_accuracy REAL,
        PRIMARY KEY (run_id, step)
    )""",
]
MIGRATIONS = {
    # 0 -> 1: the status check admits 'interrupted' (SQLite cannot alter a check: rebuild).
    0: [
        f"CREATE TABLE runs_v1 ({_RUNS_COLUMNS})",
        "INSERT INTO runs_v1 SELECT * FROM runs",
        "DROP TABLE runs",
        "ALTER TABLE runs_v1 RENAME TO runs",
        "CREATE INDEX IF NOT EXISTS runs_by_hash ON runs (config_hash, status)",
    ],
}


class StoreError(SepbenchError):
    """The store (or a checkpoint beside it) cannot be written: read-only, disk full, gone."""


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


@dataclass(frozen=True)
class Claim:
    """The answer of :meth:`Store.claim`: ``state`` is ``new`` (a ``running`` row was opened
    for this process), ``finished`` (``record`` is the stored outcome) or ``busy`` (a live
    process is training this config in run ``run_id``)."""

    state: str
    run_id: int
    record: RunRecord | None = None


class Store:
    """The embedded results store (SQLite). Each method opens its own short connection, so a
    Store can be shared by forked worker processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise SepbenchError(f"store: {self.path} is a directory; give a .sqlite file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = error.strerror
            raise StoreError(f"store: cannot create {self.path.parent} ({reason})") from None
        self._ensure_schema()

    @classmethod
    def default(cls) -> Store:
        """``$SEPBENCH_STORE`` if set, else runs/sepbench.sqlite under the working directory."""
        return cls(os.environ.get("SEPBENCH_STORE") or DEFAULT_PATH)

    @contextmanager
    def _connect(self, foreign_keys: bool = True) -> Iterator[sqlite3.Connection]:
        db = None
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            yield db
        except sqlite3.DatabaseError as error:
            raise self._explain(error) from error
        finally:
            if db is not None:
                db.close()

    def _explain(self, error: sqlite3.DatabaseError) -> Exception:
        """One line naming the path: a file that is not a store, or one that cannot be written."""
        message = str(error)
        if isinstance(error, sqlite3.OperationalError):
            if "locked" in message or "busy" in message:
                return error
            return StoreError(
                f"store: cannot write {self.path} ({message}: is its folder read-only or the "
                "disk full?)"
            )
        return StoreError(f"store: {self.path} is not a sepbench store ({message})")

    @contextmanager
    def _transaction(self, foreign_keys: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it lands, or none of it (a kill mid-way rolls back)."""
        with self._connect(foreign_keys) as db:
            for attempt in range(10):
                try:
                    db.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as error:
                    if attempt == 9 or "locked" not in str(error):
                        raise
                    time.sleep(0.2 * (attempt + 1))
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _read(self, query: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        """One SELECT: a consistent snapshot without taking the write lock."""
        with self._connect() as db:
            return db.execute(query, parameters).fetchall()

    def _ensure_schema(self) -> None:
        """Create the tables of a new store, or migrate an older one in one transaction."""
        with self._connect() as db:
            if _schema_version(db) == SCHEMA_VERSION:
                return
        with self._transaction(foreign_keys=False) as db:  # a rebuild must not touch curves
            version = _schema_version(db)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store: {self.path} has schema {version}, newer than this sepbench "
                    f"reads ({SCHEMA_VERSION}); upgrade sepbench"
                )
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "runs" not in tables:
                statements = SCHEMA
            else:
                statements = [s for v in range(version, SCHEMA_VERSION) for s in MIGRATIONS[v]]
            for statement in statements:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- the run life cycle ------------------------------------------------------------

    def lookup_done(self, config_hash: str) -> RunRecord | None:
        """The newest ``done`` run of this config, if any."""
        return self._newest(config_hash, ("done",))

    def lookup_finished(self, config_hash: str) -> RunRecord | None:
        """The newest finished (``done`` or ``diverged``) run of this config, if any."""
        return self._newest(config_hash, FINISHED)

    def latest(self, config_hash: str, *, pid: int | None = None) -> RunRecord | None:
        """The newest row of this config, of any status (of process ``pid`` on this host)."""
        query, parameters = "SELECT * FROM runs WHERE config_hash = ?", (config_hash,)
        if pid is not None:
            query += " AND pid = ? AND host = ?"
            parameters += (pid, socket.gethostname())
        rows = self._read(query + " ORDER BY id DESC LIMIT 1", parameters)
        return RunRecord.from_row(rows[0]) if rows else None

    def _newest(self, config_hash: str, statuses: tuple[str, ...]) -> RunRecord | None:
        marks = ", ".join("?" * len(statuses))
        rows = self._read(
            f"SELECT * FROM runs WHERE config_hash = ? AND status IN ({marks}) "
            "ORDER BY id DESC LIMIT 1",
            (config_hash, *statuses),
        )
        return RunRecord.from_row(rows[0]) if rows else None

    def claim(
        self,
        config_hash: str,
        config: dict[str, Any],
        info: dict[str, Any],
        *,
        reuse: bool = True,
    ) -> Claim:
        """In one transaction: serve a finished run (when ``reuse``), report a live owner, or
        open a ``running`` row for this process. Rows whose owner died become ``interrupted``."""
        with self._transaction() as db:
            _reap(db, config_hash)
            if reuse:
                row = db.execute(
                    "SELECT * FROM runs WHERE config_hash = ? AND status IN ('done', 'diverged') "
                    "ORDER BY id DESC LIMIT 1",
                    (config_hash,),
                ).fetchone()
                if row is not None:
                    return Claim("finished", row["id"], RunRecord.from_row(row))
            owner = db.execute(
                "SELECT id FROM runs WHERE config_hash = ? AND status = 'running'", (config_hash,)
            ).fetchone()
            if owner is not None:
                return Claim("busy", owner["id"])
            return Claim("new", _insert(db, config_hash, config, info))

    def start(self, config_hash: str, config: dict[str, Any], info: dict[str, Any]) -> int:
        """Open a ``running`` row for a new attempt and return its id; raise when a live
        process is already running this config."""
        claim = self.claim(config_hash, config, info, reuse=False)
        if claim.state == "busy":
            owner = self.get(claim.run_id)
            raise SepbenchError(
                f"store: config {config_hash} is already running "
                f"(run {owner.id}, pid {owner.pid} on {owner.host})"
            )
        return claim.run_id

    def heartbeat(self, run_id: int) -> None:
        """The run's process is alive (read by other hosts, see :data:`STALE_AFTER_S`)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET heartbeat_at = ? WHERE id = ? AND status = 'running'",
                (time.time(), run_id),
            )

    def finish(
        self,
        run_id: int,
        status: str,
        metrics: dict[str, Any],
        info: dict[str, Any],
        curve: list[dict[str, Any]],
    ) -> None:
        """Write the outcome, the metrics and the training curve in one transaction."""
        if status not in FINISHED:
            raise ValueError(f"finish status must be one of {FINISHED}, got {status!r}")
        columns = [k for k in INFO_COLUMNS if k in info]
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET status = ?, metrics = ?, error = NULL, finished_at = ?, "
                "heartbeat_at = ?" + "".join(f", {k} = ?" for k in columns) + " WHERE id = ?",
                (status, json.dumps(metrics, sort_keys=True), now(), time.time(),
                 *(info[k] for k in columns), run_id),
            )
            db.execute("DELETE FROM curves WHERE run_id = ?", (run_id,))
            db.executemany(
                "INSERT INTO curves (run_id, step, loss, val_accuracy) VALUES (?, ?, ?, ?)",
                [(run_id, p["step"], p.get("loss"), p.get("val_accuracy")) for p in curve],
            )

    def fail(self, run_id: int, error: str) -> None:
        self.end(run_id, "failed", error)

    def end(self, run_id: int, status: str, error: str) -> None:
        """Close a ``running`` row as ``failed`` or ``interrupted``, with its cause."""
        if status not in ("failed", "interrupted"):
            raise ValueError(f"end status must be failed or interrupted, got {status!r}")
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET status = ?, error = ?, finished_at = ? "
                "WHERE id = ? AND status = 'running'",
                (status, error[:2000], now(), run_id),
            )

    def abandon(self, pid: int, status: str, error: str) -> list[int]:
        """Close every ``running`` row of process ``pid`` on this host (a worker that died or
        was stopped) as ``failed`` or ``interrupted``; the ids closed."""
        if status not in ("failed", "interrupted"):
            raise ValueError(f"abandon status must be failed or interrupted, got {status!r}")
        with self._transaction() as db:
            ids = [
                row["id"]
                for row in db.execute(
                    "SELECT id FROM runs WHERE status = 'running' AND pid = ? AND host = ?",
                    (pid, socket.gethostname()),
                )
            ]
            db.executemany(
                "UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE id = ?",
                [(status, error[:2000], now(), run_id) for run_id in ids],
            )
        return ids

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


def _schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _reap(db: sqlite3.Connection, config_hash: str) -> None:
    """Mark the ``running`` rows of this config whose process is gone as ``interrupted``."""
    for row in db.execute(
        "SELECT id, host, pid, heartbeat_at FROM runs WHERE config_hash = ? AND status = 'running'",
        (config_hash,),
    ).fetchall():
        if not process_alive(row["host"], row["pid"], row["heartbeat_at"]):
            db.execute(
                "UPDATE runs SET status = 'interrupted', error = ?, finished_at = ? WHERE id = ?",
                (f"interrupted: process {row['pid']} on {row['host']} died", now(), row["id"]),
            )


def _insert(
    db: sqlite3.Connection, config_hash: str, config: dict[str, Any], info: dict[str, Any]
) -> int:
    """A new ``running`` row owned by this process, with its provenance."""
    record = {**provenance(), **{k: info.get(k) for k in INFO_COLUMNS}}
    columns = ("config_hash", "task", "model", "config", "status", *INFO_COLUMNS,
               "git_sha", "package_version", "torch_version", "python_version", "host", "pid",
               "started_at", "heartbeat_at")
    model = config.get("model") or config["construction"]
    values = (config_hash, config["task"]["name"], model["name"],
              json.dumps(config, sort_keys=True), "running", *(record[k] for k in columns[5:-2]),
              now(), time.time())
    cursor = db.execute(
        f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        values,
    )
    return int(cursor.lastrowid)
