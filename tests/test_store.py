"""The results store: life cycle, resume, kill safety, concurrent writers, bad files."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sepbench.errors import SepbenchError
from sepbench.store import Store

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
