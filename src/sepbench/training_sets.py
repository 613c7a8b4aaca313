"""Fixed training sets at scale: Wen et al. train on a 1M-example set (papers.md §1), which
as padded int64 rows would take about 20 GB at N = 64 with retrieval traces.

A :class:`TrainingSet` keeps its examples ragged: one flat token array of the smallest
unsigned type that holds the vocabulary (uint8 up to 256 ids), the offsets of the examples in
it, their prompt lengths and their answers (codes into a table of distinct answers). The loss
mask is not stored: by the Task contract (``sepbench.tasks.base``) it is the completion minus
the token after each search-end token, and every generated chunk is checked against that rule.

Determinism and sharing:
- the set is generated in chunks of ``spec.chunk`` examples; chunk c draws from its own seed,
  the c-th child of the data child of the training stream (``SeedSequence(seed)``'s child 0,
  as in ``sepbench.train.data_streams``), so the set is the same for any number of worker
  processes and never overlaps the validation and test streams;
- the epoch order is a function of (seed, epoch) alone, so the batch at any step can be
  rebuilt without replaying the steps before it (:meth:`TrainingSet.batches` takes the step
  to start from; resuming needs no RNG state);
- on disk (:func:`load_or_build`) a set lives in one directory named by the hash of its
  :class:`TrainingSetSpec`, :data:`GENERATOR_VERSION` and a fingerprint of the task's
  generator (the tokens and answers of two examples drawn with seed 0), so two runs share it
  and a changed generator misses it; the directory is written under a temporary name and
  renamed into place, so a killed build leaves no half-written set (at most a
  ``*.partial-*`` folder that nothing reads) and concurrent builders of one set agree.
  Deleting the cache is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from sepbench.cpu import keep_freed_memory
from sepbench.errors import SepbenchError, check_int
from sepbench.tasks.base import Batch, Task

GENERATOR_VERSION = 1
"""Bump when the chunking, seeding or layout below changes the stored examples."""

CHUNK = 4096
"""Examples per generated chunk (one ``task.sample`` call)."""

DATA, ORDER = 0, 1  # children of the training stream's seed: the examples, the epoch orders
TRAIN_STREAM = 0  # the training stream's index in SeedSequence(seed).spawn(3)


@dataclass(frozen=True)
class TrainingSetSpec:
    """What determines a training set: the task (name and resolved parameters), its length,
    whether lengths follow the task's training distribution (``varied``), the seed, the size
    and the chunk size."""

    task: str
    params: dict[str, Any]
    length: int
    varied: bool
    seed: int
    size: int
    chunk: int = CHUNK

    def key(self, task: Task) -> str:
        """Hash of the spec, :data:`GENERATOR_VERSION` and the generator's fingerprint."""
        drawn = task.sample(np.random.default_rng(0), 2, self.length, train=self.varied)
        fingerprint = drawn.tokens.tobytes() + "\n".join(drawn.answers).encode()
        identity = {
            **asdict(self),
            "version": GENERATOR_VERSION,
            "fingerprint": hashlib.sha256(fingerprint).hexdigest(),
        }
        canonical = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _seed(seed: int, *key: int) -> np.random.SeedSequence:
    """The child ``key`` of the training stream's seed (``SeedSequence(seed).spawn``'s)."""
    return np.random.SeedSequence(seed, spawn_key=(TRAIN_STREAM, *key))


@dataclass
class _Chunk:
    tokens: np.ndarray  # flat, the set's token dtype
    lengths: np.ndarray
    prompt_lengths: np.ndarray
    answers: list[str]


class TrainingSet:
    """``len(self)`` examples, ragged; :meth:`batch` rebuilds padded rows, :meth:`batches`
    visits them in shuffled epochs."""

    def __init__(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        prompt_lengths: np.ndarray,
        answer_codes: np.ndarray,
        answer_table: Sequence[str],
        search_end: int | None,
    ) -> None:
        self.tokens, self.offsets, self.prompt_lengths = tokens, offsets, prompt_lengths
        self.answer_codes, self.answer_table = answer_codes, list(answer_table)
        self.search_end = search_end

    def __len__(self) -> int:
        return len(self.prompt_lengths)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays (the answer table aside)."""
        arrays = (self.tokens, self.offsets, self.prompt_lengths, self.answer_codes)
        return sum(a.nbytes for a in arrays)

    def batch(self, rows: np.ndarray) -> Batch:
        """Examples ``rows`` as a right-padded int64 :class:`Batch`."""
        starts = self.offsets[rows]
        lengths = (self.offsets[rows + 1] - starts).astype(np.int64)
        columns = np.arange(int(lengths.max()))
        inside = columns < lengths[:, None]
        index = np.where(inside, starts[:, None] + columns, 0)
        tokens = np.where(inside, self.tokens[index], 0).astype(np.int64)
        prompt_lengths = self.prompt_lengths[rows].astype(np.int64)
        loss_mask = derived_loss_mask(tokens, prompt_lengths, lengths, self.search_end)
        answers = [self.answer_table[c] for c in self.answer_codes[rows]]
        return Batch(tokens, loss_mask, prompt_lengths, lengths, answers)

    def batches(self, batch_size: int, seed: int, start_step: int = 0) -> Iterator[Batch]:
        """Batch after batch from step ``start_step`` (0-based) on, through the epochs.

        Epoch e visits the set in the order :func:`epoch_order` (seed, e); the batches take
        consecutive runs of ``batch_size`` examples of the epochs laid end to end, so step s
        reads positions s * batch_size .. (s + 1) * batch_size - 1 of that sequence.
        """
        check_int("dataset", "batch_size", batch_size, 1)
        orders: dict[int, np.ndarray] = {}
        step = start_step
        while True:
            positions = np.arange(step * batch_size, (step + 1) * batch_size)
            epochs, index = np.divmod(positions, len(self))
            for stale in [e for e in orders if e < epochs[0]]:
                del orders[stale]
            for epoch in np.unique(epochs).tolist():
                if epoch not in orders:
                    orders[epoch] = epoch_order(seed, epoch, len(self))
            rows = np.array([orders[e][i] for e, i in zip(epochs.tolist(), index.tolist())])
            yield self.batch(rows)
            step += 1


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The permutation of ``range(size)`` that epoch ``epoch`` visits (a function of
    ``seed`` and ``epoch`` only)."""
    return np.random.default_rng(_seed(seed, ORDER, epoch)).permutation(size)


def derived_loss_mask(
    tokens: np.ndarray, prompt_lengths: np.ndarray, lengths: np.ndarray, search_end: int | None
) -> np.ndarray:
    """The Task contract's loss mask: the completion, minus each token right after a
    completion token ``search_end`` (a retrieved token)."""
    columns = np.arange(tokens.shape[1])
    completion = (columns >= prompt_lengths[:, None]) & (columns < lengths[:, None])
    if search_end is None:
        return completion
    retrieved = np.zeros(tokens.shape, bool)
    retrieved[:, 1:] = (tokens[:, :-1] == search_end) & completion[:, :-1]
    return completion & ~retrieved


# -- building -------------------------------------------------------------------------------


def build(task: Task, spec: TrainingSetSpec, *, workers: int = 1) -> TrainingSet:
    """Generate the set of ``spec`` in memory (``workers`` processes; same set for any)."""
    chunks = list(_chunks(task, spec, workers))
    table: dict[str, int] = {}
    return TrainingSet(
        np.concatenate([c.tokens for c in chunks]),
        _offsets([c.lengths for c in chunks]),
        np.concatenate([c.prompt_lengths for c in chunks]),
        np.concatenate([_encode(c.answers, table) for c in chunks]),
        list(table),
        _search_end(task),
    )


def load_or_build(
    task: Task, spec: TrainingSetSpec, cache: str | Path, *, workers: int = 1
) -> TrainingSet:
    """The set of ``spec`` from ``cache``, generated and stored there first if missing.

    Tokens are memory-mapped read-only, so processes training on one set share its pages.
    """
    folder = Path(cache) / f"{spec.task}-{spec.key(task)}"
    if not (folder / "meta.json").is_file():
        _write(task, spec, folder, workers)
    return _load(folder)


def cache_dir(run_dir: str | Path) -> Path:
    """Where training sets are stored: ``$SEPBENCH_TRAINING_SETS`` if set, else
    ``training_sets/`` beside the store's ``checkpoints/`` folder that holds ``run_dir``."""
    beside_store = Path(run_dir).parent.parent / "training_sets"
    return Path(os.environ.get("SEPBENCH_TRAINING_SETS") or beside_store)


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type holding ids ``0 .. vocab_size - 1``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise SepbenchError(f"dataset: a vocabulary of {vocab_size} tokens is too large to store")


def _search_end(task: Task) -> int | None:
    return None if task.search_ids is None else task.search_ids[1]


def _chunks(task: Task, spec: TrainingSetSpec, workers: int) -> Iterator[_Chunk]:
    """The chunks of ``spec`` in order, generated here or in ``workers`` processes (which
    keep freed memory for reuse, ``sepbench.cpu``: the chunks' large temporaries)."""
    check_int("dataset", "size", spec.size, 1)
    check_int("dataset", "chunk", spec.chunk, 1)
    check_int("dataset", "workers", workers, 1)
    count = -(-spec.size // spec.chunk)
    if workers == 1 or count == 1:
        yield from map(_chunk, repeat(task), repeat(spec), range(count))
        return
    spawn = get_context("spawn")
    with ProcessPoolExecutor(
        min(workers, count), mp_context=spawn, initializer=keep_freed_memory
    ) as pool:
        yield from pool.map(_chunk, repeat(task), repeat(spec), range(count))


def _chunk(task: Task, spec: TrainingSetSpec, index: int) -> _Chunk:
    """Chunk ``index``: ``task.sample`` from its own seed, flattened; the loss mask checked."""
    rng = np.random.default_rng(_seed(spec.seed, DATA, index))
    count = min(spec.chunk, spec.size - index * spec.chunk)
    batch = task.sample(rng, count, spec.length, train=spec.varied)
    stored = derived_loss_mask(batch.tokens, batch.prompt_lengths, batch.lengths, _search_end(task))
    if not np.array_equal(stored, batch.loss_mask):
        raise SepbenchError(
            f"dataset: {task.name}'s loss mask is not its completion minus retrieved tokens, "
            "so a fixed training set cannot store it; leave train.dataset_size unset"
        )
    inside = np.arange(batch.tokens.shape[1]) < batch.lengths[:, None]
    return _Chunk(
        batch.tokens[inside].astype(token_dtype(len(task.vocab))),
        batch.lengths.astype(np.int64),
        batch.prompt_lengths.astype(np.uint32),
        batch.answers,
    )


def _encode(answers: Sequence[str], table: dict[str, int]) -> np.ndarray:
    """Each answer's index in ``table`` (distinct answers in order of appearance; grown)."""
    return np.array([table.setdefault(a, len(table)) for a in answers], np.uint32)


def _offsets(lengths: Sequence[np.ndarray]) -> np.ndarray:
    """Where each example starts in the flat token array, and the total at the end."""
    lengths = np.concatenate(lengths)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _write(task: Task, spec: TrainingSetSpec, folder: Path, workers: int) -> None:
    """Generate into a temporary sibling directory, then rename it to ``folder``."""
    partial = folder.with_name(f"{folder.name}.partial-{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    try:
        lengths, prompt_lengths, codes, table = [], [], [], {}
        with open(partial / "tokens.bin", "wb") as flat:
            for chunk in _chunks(task, spec, workers):
                flat.write(chunk.tokens.tobytes())
                lengths.append(chunk.lengths)
                prompt_lengths.append(chunk.prompt_lengths)
                codes.append(_encode(chunk.answers, table))
        np.save(partial / "offsets.npy", _offsets(lengths))
        np.save(partial / "prompt_lengths.npy", np.concatenate(prompt_lengths))
        np.save(partial / "answer_codes.npy", np.concatenate(codes))
        meta = {
            "spec": asdict(spec),
            "version": GENERATOR_VERSION,
            "dtype": token_dtype(len(task.vocab)).name,
            "search_end": _search_end(task),
            "answers": list(table),
        }
        (partial / "meta.json").write_text(json.dumps(meta, default=str))
        _rename_into_place(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _rename_into_place(partial: Path, folder: Path) -> None:
    """Atomic rename; if another builder got there first, keep theirs (the same set)."""
    try:
        os.rename(partial, folder)
    except OSError:
        if not (folder / "meta.json").is_file():
            raise


def _load(folder: Path) -> TrainingSet:
    meta = json.loads((folder / "meta.json").read_text())
    offsets = np.load(folder / "offsets.npy")
    tokens = np.memmap(folder / "tokens.bin", np.dtype(meta["dtype"]), "r", shape=(offsets[-1],))
    return TrainingSet(
        tokens,
        offsets,
        np.load(folder / "prompt_lengths.npy"),
        np.load(folder / "answer_codes.npy"),
        meta["answers"],
        meta["search_end"],
    )
