"""Datasets out: a task's examples in the formats other frameworks read.

Every task is a causal-LM problem (../shared/design.md, "Contracts"), so one record shape
serves them all. Each example is a record of

- ``prompt``, ``completion``: the token strings, space-separated (:meth:`Vocab.text`);
- ``answer``: the final answer (the completion may hold a chain of thought before it);
- ``tokens``: the token ids, prompt then completion, unpadded;
- ``loss_mask``: one bool per token, True at the completion tokens a model is trained to
  predict (tokens handed in by a retriever, papers.md §1, are False);
- ``prompt_length``: the number of prompt tokens, so ``tokens[:prompt_length]`` is the prompt.

Formats: ``jsonl`` (one JSON object per line), ``parquet`` (one row per example) and ``hf`` (a
Hugging Face ``datasets`` folder written by ``save_to_disk``; ``datasets.load_from_disk`` reads
it). The tokenizer vocabulary is written as ``{token: id}`` JSON (id 0 is ``[PAD]``): beside a
file as ``<stem>.vocab.json``, inside an ``hf`` folder as ``vocab.json``.

Writes are atomic: the data goes to ``<out>.partial`` and is renamed over ``out`` only when
complete, so a failed export leaves an existing file or folder as it was.

``parquet`` needs the ``analysis`` extra (pyarrow), ``hf`` the ``datasets`` extra.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sepbench.errors import SepbenchError, check_choice, check_int
from sepbench.extras import require
from sepbench.tasks.base import Batch, Task

FORMATS = ("jsonl", "parquet", "hf")
SUFFIXES = {".jsonl": "jsonl", ".parquet": "parquet"}
COLUMNS = ("prompt", "completion", "answer", "tokens", "loss_mask", "prompt_length")


@dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote."""

    path: Path
    vocab_path: Path
    format: str
    examples: int


def export(
    task: Task,
    out: str | Path,
    *,
    n: int = 1000,
    length: int | None = None,
    seed: int = 0,
    format: str | None = None,
) -> Exported:
    """Write ``n`` examples of ``task`` at ``length`` (default: the task's minimum), drawn
    from ``numpy.random.default_rng(seed)``, to ``out`` with the vocabulary beside it.

    ``format``: ``jsonl``, ``parquet`` or ``hf``; None takes it from the suffix of ``out``
    (``.jsonl``, ``.parquet``).
    """
    out = Path(out)
    chosen = _format(out, format)
    writer = _WRITERS[chosen]
    check_int("export", "n", n, 1)
    _check_target(out, folder=chosen == "hf")
    length = task.min_length if length is None else length
    batch = task.sample(np.random.default_rng(seed), n, length)
    vocab_path = out / "vocab.json" if chosen == "hf" else out.with_name(f"{out.stem}.vocab.json")
    writer(records(task, batch), out, vocab_path, vocab(task))
    return Exported(out, vocab_path, chosen, len(batch))


def records(task: Task, batch: Batch) -> dict[str, list[Any]]:
    """The batch as export columns (see the module docstring), one entry per example."""
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for i in range(len(batch)):
        end = int(batch.lengths[i])
        columns["prompt"].append(task.vocab.text(batch.prompt(i)))
        columns["completion"].append(task.vocab.text(batch.completion(i)))
        columns["answer"].append(batch.answers[i])
        columns["tokens"].append(batch.tokens[i, :end].tolist())
        columns["loss_mask"].append(batch.loss_mask[i, :end].tolist())
        columns["prompt_length"].append(int(batch.prompt_lengths[i]))
    return columns


def vocab(task: Task) -> dict[str, int]:
    """The tokenizer vocabulary, ``{token: id}``."""
    return {token: i for i, token in enumerate(task.vocab.tokens)}


def _format(out: Path, format: str | None) -> str:
    if format is not None:
        return str(check_choice("export", "format", format, FORMATS))
    if out.suffix in SUFFIXES:
        return SUFFIXES[out.suffix]
    raise SepbenchError(
        f"export: cannot tell the format from {out.name!r}; "
        f"give a format ({', '.join(FORMATS)}) or end the name in .jsonl or .parquet"
    )


def _check_target(out: Path, *, folder: bool) -> None:
    if folder and out.is_file():
        raise SepbenchError(f"export: {out} is a file; the hf format writes a folder")
    if not folder and out.is_dir():
        raise SepbenchError(f"export: {out} is a folder; give a file path")


# -- writers ---------------------------------------------------------------------------------


def _write_jsonl(
    columns: dict[str, list[Any]], out: Path, vocab_path: Path, tokens: dict[str, int]
) -> None:
    def write(partial: Path) -> None:
        rows = zip(*(columns[name] for name in COLUMNS))
        with partial.open("w") as handle:
            for row in rows:
                handle.write(json.dumps(dict(zip(COLUMNS, row))) + "\n")

    _atomic_file(out, write, _vocab_beside(vocab_path, tokens))


def _write_parquet(
    columns: dict[str, list[Any]], out: Path, vocab_path: Path, tokens: dict[str, int]
) -> None:
    pyarrow = require("pyarrow", "analysis", "export --format parquet")
    parquet = require("pyarrow.parquet", "analysis", "export --format parquet")
    table = pyarrow.table(columns)
    _atomic_file(
        out,
        lambda partial: parquet.write_table(table, partial),
        _vocab_beside(vocab_path, tokens),
    )


def _write_hf(
    columns: dict[str, list[Any]], out: Path, vocab_path: Path, tokens: dict[str, int]
) -> None:
    datasets = require("datasets", "datasets", "export --format hf")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    quiet = not datasets.are_progress_bars_disabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        datasets.Dataset.from_dict(columns).save_to_disk(str(partial))
        _write_vocab(partial / vocab_path.name, tokens)
        _replace_folder(partial, out)
    finally:
        if quiet:
            datasets.enable_progress_bars()
        shutil.rmtree(partial, ignore_errors=True)


_WRITERS: dict[str, Callable[[dict[str, list[Any]], Path, Path, dict[str, int]], None]] = {
    "jsonl": _write_jsonl,
    "parquet": _write_parquet,
    "hf": _write_hf,
}


def _write_vocab(path: Path, tokens: dict[str, int]) -> None:
    path.write_text(json.dumps(tokens, indent=1) + "\n")


def _vocab_beside(path: Path, tokens: dict[str, int]) -> Callable[[], None]:
    """Write the vocabulary file atomically (called before the data file is renamed)."""
    return lambda: _atomic_file(path, lambda partial: _write_vocab(partial, tokens))


def _atomic_file(
    out: Path, write: Callable[[Path], None], before_rename: Callable[[], None] = lambda: None
) -> None:
    """``write(partial)``, then ``before_rename()``, then rename the partial file over ``out``;
    on any failure ``out`` is left as it was and the partial file is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        write(partial)
        before_rename()
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


def _replace_folder(partial: Path, out: Path) -> None:
    """Put the complete folder ``partial`` at ``out``; an old ``out`` is moved aside first and
    deleted after (a folder cannot be renamed over a non-empty one)."""
    if not out.exists():
        partial.rename(out)
        return
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    out.rename(old)
    partial.rename(out)
    shutil.rmtree(old)
