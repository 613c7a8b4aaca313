"""sepbench.export: every format reloads, and every reloaded example passes the task's own
check; the vocabulary beside it decodes the ids; a failed export leaves what was there."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sepbench import export, tasks
from sepbench.errors import SepbenchError
from sepbench.extras import MissingExtra
from sepbench.tasks.base import Task

READERS = {"parquet": "pyarrow.parquet", "hf": "datasets"}


def reader(format_: str) -> Any:
    """The format's reader module; skips (saying so) when its extra is not installed."""
    if format_ not in READERS:
        return None
    module = READERS[format_]
    return pytest.importorskip(module, reason=f"{module} comes with .[dev]; install it")

CASES = [  # one task per family of completion: a single token, a CoT, a retrieval trace
    ("index_lookup", {"vocab_size": 8}, 12),
    ("dyck", {"cot": True}, 8),
    ("is_tree", {"mode": "retrieval"}, 6),
]


def reload(exported: export.Exported) -> list[dict[str, Any]]:
    """The records as written, read back with the format's own reader."""
    module = reader(exported.format)
    if exported.format == "jsonl":
        return [json.loads(line) for line in exported.path.read_text().splitlines()]
    if exported.format == "parquet":
        return module.read_table(exported.path).to_pylist()
    return list(module.load_from_disk(str(exported.path)))


def check_examples(task: Task, exported: export.Exported, n: int, length: int, seed: int) -> None:
    records = reload(exported)
    vocab = json.loads(exported.vocab_path.read_text())
    tokens = sorted(vocab, key=vocab.__getitem__)
    batch = task.sample(np.random.default_rng(seed), n, length)
    assert len(records) == n and tokens == list(task.vocab.tokens)
    for i, record in enumerate(records):
        assert set(record) == set(export.COLUMNS)
        prompt = record["tokens"][: record["prompt_length"]]
        completion = record["tokens"][record["prompt_length"] :]
        assert task.check(prompt, completion), record
        assert [tokens[t] for t in prompt] == record["prompt"].split()
        assert [tokens[t] for t in completion] == record["completion"].split()
        assert record["tokens"] == batch.tokens[i, : batch.lengths[i]].tolist()
        assert record["loss_mask"] == batch.loss_mask[i, : batch.lengths[i]].tolist()
        assert record["answer"] == batch.answers[i]


@pytest.mark.parametrize("format_", export.FORMATS)
@pytest.mark.parametrize(("name", "params", "length"), CASES)
def test_every_format_reloads_and_every_example_checks(
    format_: str, name: str, params: dict[str, Any], length: int, tmp_path: Path
) -> None:
    reader(format_)
    task = tasks.get(name, **params)
    out = tmp_path / ("data" if format_ == "hf" else f"data.{format_}")
    exported = export.export(task, out, n=16, length=length, seed=5, format=format_)
    assert exported.path == out and exported.examples == 16
    check_examples(task, exported, 16, length, 5)


def test_retrieved_tokens_are_not_trained(tmp_path: Path) -> None:
    reader("parquet")
    task = tasks.get("is_tree", mode="retrieval")
    exported = export.export(task, tmp_path / "t.parquet", n=4, length=6)
    for record in reload(exported):
        completion_mask = record["loss_mask"][record["prompt_length"] :]
        assert not any(record["loss_mask"][: record["prompt_length"]])
        assert any(completion_mask) and not all(completion_mask)  # search results are given


@pytest.mark.parametrize("name", tasks.names())
def test_every_task_exports_checkable_jsonl(name: str, tmp_path: Path) -> None:
    task = tasks.get(name)
    length = max(task.min_length, 6)
    exported = export.export(task, tmp_path / f"{name}.jsonl", n=8, length=length, seed=1)
    assert exported.vocab_path == tmp_path / f"{name}.vocab.json"
    check_examples(task, exported, 8, length, 1)


def test_the_format_comes_from_the_suffix(tmp_path: Path) -> None:
    reader("parquet")
    reader("hf")
    task = tasks.get("parity")
    assert export.export(task, tmp_path / "a.parquet", n=2).format == "parquet"
    assert export.export(task, tmp_path / "a.jsonl", n=2).format == "jsonl"
    hf = export.export(task, tmp_path / "a", n=2, format="hf")
    assert hf.vocab_path == tmp_path / "a" / "vocab.json"


@pytest.mark.parametrize(
    ("out", "kwargs", "message"),
    [
        ("a.txt", {}, "cannot tell the format from 'a.txt'"),
        ("a.jsonl", {"format": "xml"}, "format must be one of jsonl, parquet, hf"),
        ("a.jsonl", {"n": 0}, "n must be"),
        ("folder", {"format": "jsonl"}, "is a folder"),
        ("file.jsonl", {"format": "hf"}, "is a file"),
    ],
)
def test_bad_arguments_get_one_line(
    out: str, kwargs: dict[str, Any], message: str, tmp_path: Path
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.jsonl").write_text("kept\n")
    with pytest.raises(SepbenchError, match=message):
        export.export(tasks.get("parity"), tmp_path / out, **kwargs)
    assert (tmp_path / "file.jsonl").read_text() == "kept\n"


@pytest.mark.parametrize("format_", export.FORMATS)
def test_a_failed_export_leaves_the_existing_output_untouched(
    format_: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader(format_)
    task = tasks.get("parity")
    out = tmp_path / ("data" if format_ == "hf" else f"data.{format_}")
    first = export.export(task, out, n=3, seed=0, format=format_)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def broken(path: Path, tokens: dict[str, int]) -> None:
        path.write_text("half a vocab")
        raise OSError("disk full")

    monkeypatch.setattr(export, "_write_vocab", broken)
    with pytest.raises(OSError, match="disk full"):
        export.export(task, out, n=5, seed=1, format=format_)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # no partial file left, nothing overwritten
    assert len(reload(first)) == 3


def test_an_hf_export_replaces_an_older_folder(tmp_path: Path) -> None:
    reader("hf")
    task = tasks.get("parity")
    export.export(task, tmp_path / "data", n=3, format="hf")
    exported = export.export(task, tmp_path / "data", n=5, seed=2, format="hf")
    check_examples(task, exported, 5, task.min_length, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.parametrize(("format_", "module", "extra"), [
    ("parquet", "pyarrow", "analysis"), ("hf", "datasets", "datasets"),
])
def test_a_missing_extra_is_named_in_one_line(
    format_: str, module: str, extra: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(MissingExtra, match=rf"pip install 'sepbench\[{extra}\]'") as raised:
        export.export(tasks.get("parity"), tmp_path / "x", n=2, format=format_)
    assert isinstance(raised.value, ImportError) and "\n" not in str(raised.value)
    assert not list(tmp_path.iterdir())
