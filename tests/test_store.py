"""The results store: life cycle, resume, kill safety, concurrent writers, bad files."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sepbench.errors import SepbenchError
from sepbench.store import SCHEMA_VERSION, STALE_AFTER_S, Claim, Store, StoreError
from tests.files import read_only

CONFIG = {"task": {"name": "index_lookup"}, "model": {"name": "lstm"}}


def test_life_cycle_and_lookup(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    assert store.lookup_done("h1") is None
    run_id = store.start("h1", CONFIG, {"device": "cpu", "num_parameters": 10})
    assert store.get(run_id).status == "running"
    assert store.lookup_done("h1") is None
    curve = [{"step": 10, "loss": 1.5, "val_accuracy": 0.2}, {"step": 20, "loss": 0.5}]
    store.finish(run_id, "done", {"test_accuracy": {"16": 1.0}}, {"wall_time_s": 2.5}, curve)
    record = store.lookup_done("h1")
    assert record is not None and record.id == run_id
    assert record.metrics == {"test_accuracy": {"16": 1.0}}
    assert (record.num_parameters, record.wall_time_s, record.device) == (10, 2.5, "cpu")
    assert record.torch_version and record.python_version and record.started_at
    assert store.curve(run_id) == [
        {"step": 10, "loss": 1.5, "val_accuracy": 0.2},
        {"step": 20, "loss": 0.5, "val_accuracy": None},
    ]
    assert [r.id for r in store.runs(task="index_lookup", status="done")] == [run_id]
    assert store.runs(model="transformer") == []


def test_failed_and_diverged_are_not_served(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.fail(store.start("h", CONFIG, {}), "boom")
    store.finish(store.start("h", CONFIG, {}), "diverged", {}, {}, [])
    assert store.lookup_done("h") is None
    assert [r.status for r in store.runs()] == ["failed", "diverged"]
    assert store.runs(status="failed")[0].error == "boom"


def test_a_live_running_row_blocks_a_second_start(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.start("h", CONFIG, {})  # owned by this (live) process
    with pytest.raises(SepbenchError, match="already running"):
        store.start("h", CONFIG, {})


def test_a_killed_process_leaves_a_consistent_store_and_is_rerun(tmp_path: Path) -> None:
    """SIGKILL inside an open write transaction: the half-done update never lands."""
    path = tmp_path / "s.sqlite"
    script = textwrap.dedent(
        f"""
        import sys, time
        from sepbench.store import Store
        store = Store({str(path)!r})
        run_id = store.start("h", {CONFIG!r}, {{}})
        with store._transaction() as db:
            db.execute("UPDATE runs SET status = 'done', metrics = '{{\\"half\\": 1}}'")
            print("in transaction", flush=True)
            time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "in transaction"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    store = Store(path)
    (record,) = store.runs()
    assert record.status == "running" and record.metrics == {}
    assert store.lookup_done("h") is None
    new_id = store.start("h", CONFIG, {})  # the dead owner is detected
    old, new = store.runs()
    assert old.status == "interrupted" and "died" in old.error
    assert new.id == new_id and new.status == "running"


def _write_runs(path: str, worker: int) -> None:
    store = Store(path)
    for i in range(10):
        run_id = store.start(f"w{worker}-{i}", CONFIG, {})
        store.finish(run_id, "done", {"i": i}, {}, [{"step": s, "loss": 1.0} for s in range(20)])


def test_concurrent_writers(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite")
    Store(path)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_runs, args=(path, w)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
        assert process.exitcode == 0
    runs = Store(path).runs(status="done")
    assert len(runs) == 40
    assert all(len(Store(path).curve(r.id)) == 20 for r in runs[:5])


def test_a_file_that_is_not_a_store_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("precious notes\n" * 50)
    with pytest.raises(SepbenchError, match="not a sepbench store"):
        Store(path)
    assert path.read_text() == "precious notes\n" * 50
    with pytest.raises(SepbenchError, match="directory"):
        Store(tmp_path)


def test_default_path_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEPBENCH_STORE", str(tmp_path / "env.sqlite"))
    assert Store.default().path == tmp_path / "env.sqlite"
    monkeypatch.delenv("SEPBENCH_STORE")
    monkeypatch.chdir(tmp_path)
    assert Store.default().path == Path("runs") / "sepbench.sqlite"
    assert (tmp_path / "runs" / "sepbench.sqlite").exists()


SCHEMA_0 = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, config_hash TEXT NOT NULL, task TEXT NOT NULL,
    model TEXT NOT NULL, config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'diverged', 'failed')),
    metrics TEXT NOT NULL DEFAULT '{}', num_parameters INTEGER, state_size INTEGER,
    wall_time_s REAL, tokens_per_s REAL, device TEXT, git_sha TEXT, package_version TEXT,
    torch_version TEXT, python_version TEXT, host TEXT, pid INTEGER, error TEXT,
    started_at TEXT NOT NULL, heartbeat_at REAL NOT NULL, finished_at TEXT
);
CREATE INDEX runs_by_hash ON runs (config_hash, status);
CREATE TABLE curves (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE, step INTEGER NOT NULL,
    loss REAL, val_accuracy REAL, PRIMARY KEY (run_id, step)
);
INSERT INTO runs (config_hash, task, model, config, status, metrics, started_at, heartbeat_at)
VALUES ('old', 'dyck', 'lstm', '{}', 'done', '{"steps_run": 5}', '2024-01-01', 0);
INSERT INTO curves VALUES (1, 5, 0.5, 0.25);
"""


def test_a_store_written_before_interrupted_existed_opens_and_keeps_its_runs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_0)
    store = Store(path)
    (record,) = store.runs()
    assert (record.config_hash, record.status, record.metrics) == ("old", "done", {"steps_run": 5})
    assert store.curve(record.id) == [{"step": 5, "loss": 0.5, "val_accuracy": 0.25}]
    run_id = store.start("new", CONFIG, {})
    store.end(run_id, "interrupted", "interrupted by SIGTERM")
    assert [r.status for r in Store(path).runs()] == ["done", "interrupted"]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_store_from_a_newer_sepbench_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SepbenchError, match="newer than this sepbench reads"):
        Store(path)


def test_claim_serves_finished_runs_reports_live_owners_and_reaps_dead_ones(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.sqlite")
    first = store.claim("h", CONFIG, {})
    assert first.state == "new" and store.get(first.run_id).pid == os.getpid()
    assert store.claim("h", CONFIG, {}) == Claim("busy", first.run_id)
    store.finish(first.run_id, "diverged", {"diverged_at_step": 7}, {}, [])
    served = store.claim("h", CONFIG, {})
    assert (served.state, served.run_id, served.record.metrics) == (
        "finished", first.run_id, {"diverged_at_step": 7}
    )
    assert store.claim("h", CONFIG, {}, reuse=False).state == "new"  # --force

    dead = store.claim("g", CONFIG, {}).run_id
    with sqlite3.connect(store.path) as db:  # owned by a process that no longer exists
        db.execute("UPDATE runs SET pid = 2147483647 WHERE id = ?", (dead,))
    again = store.claim("g", CONFIG, {})
    assert again.state == "new" and again.run_id != dead
    assert store.get(dead).status == "interrupted" and "died" in store.get(dead).error


def test_rows_from_another_host_are_alive_while_their_heartbeat_is_fresh(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.sqlite")
    run_id = store.claim("h", CONFIG, {}).run_id
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET host = 'elsewhere', heartbeat_at = 0 WHERE id = ?", (run_id,))
    store.heartbeat(run_id)  # a fresh heartbeat: the other host's process is alive
    assert store.claim("h", CONFIG, {}).state == "busy"
    stale = time.time() - STALE_AFTER_S - 1
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (stale, run_id))
    assert store.claim("h", CONFIG, {}).state == "new"
    assert store.get(run_id).status == "interrupted"


def test_abandon_closes_only_the_running_rows_of_that_process(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    mine = store.claim("a", CONFIG, {}).run_id
    finished = store.claim("b", CONFIG, {}).run_id
    store.finish(finished, "done", {}, {}, [])
    assert store.abandon(os.getpid(), "failed", "worker killed by signal 9") == [mine]
    assert store.get(mine).status == "failed" and store.get(mine).error.endswith("signal 9")
    assert store.get(finished).status == "done"
    assert store.abandon(os.getpid(), "interrupted", "again") == []


def test_a_read_only_store_gives_one_line_naming_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    store = Store(folder / "s.sqlite")
    done = store.claim("h", CONFIG, {}).run_id
    store.finish(done, "done", {"x": 1}, {}, [])
    with read_only(folder):
        with pytest.raises(StoreError, match=f"cannot write {folder / 's.sqlite'}") as error:
            store.claim("g", CONFIG, {})
        assert "\n" not in str(error.value)
    assert [(r.id, r.status, r.metrics) for r in store.runs()] == [(done, "done", {"x": 1})]
