"""The results store as pandas DataFrames, for notebooks and the field's own tools
(:func:`results` and :func:`curves` are ``sepbench.results`` and ``sepbench.curves``).

::

    import sepbench
    runs = sepbench.results(task="index_lookup", status="done")
    runs.groupby("model.mixers")["test_accuracy@100"].mean()

:func:`results` gives one row per stored run. Its columns, in this order:

- identity: ``run_id``, ``config_hash``, ``name``, ``status``;
- the resolved config (../shared/design.md, "Config describes"), flattened into dotted columns:
  ``task.name``, ``task.length``, ``task.params.vocab_size``, ``train.lr``, ``eval.lengths``
  (lists stay lists), ..., ``dtype``, and ``device_requested`` (the config's ``device``,
  ``auto`` included; ``device`` is where the run ran);
- the model's per-layer spec (:mod:`sepbench.models.spec`) as a few comparable columns:
  ``model.name``, ``model.width``, ``model.depth`` (layers), ``model.mixers``
  (``mamba+mamba+attention``), ``model.feedforwards`` (``none+none+mlp``), one column per
  mixer kind and keyword, ``model.mamba.d_state``, and per feed-forward keyword,
  ``model.feedforward.ratio`` (a value shared by every layer that has the keyword; when the
  layers differ, their values in layer order joined by ``+``, as text), and
  ``model.params.*`` (embedding, positions, norm...). The whole config is in ``config`` (JSON);
- metrics: a number stays one column (``best_val_accuracy``, ``steps_run``); a per-length map
  becomes one column per length, ``test_accuracy@100``, and one column at the run's own
  ``task.length``, ``test_accuracy`` (the length it trained for; the demo's table is
  ``runs.pivot_table(index="model.mixers", columns="task.length", values="test_accuracy")``);
- sizes and provenance: ``num_parameters``, ``state_size``, ``wall_time_s``, ``tokens_per_s``,
  ``device``, ``git_sha``, ``package_version``, ``torch_version``, ``python_version``,
  ``host``, ``pid``, ``started_at`` and ``finished_at`` (UTC timestamps), ``error``.

A column holds one type: integers with gaps are pandas' nullable ``Int64``; a column whose runs
disagree in type (``dt_rank`` is ``auto`` in one run and 8 in another) is text. So every frame
writes to Parquet as it is (:func:`write_parquet`).

:func:`curves` gives the training curves in long format (``run_id``, ``step``, ``loss``,
``val_accuracy``), for the same filters; ``curves.merge(runs, on="run_id")`` labels them.

pandas (and pyarrow for Parquet) come with the ``analysis`` extra (:mod:`sepbench.extras`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sepbench.errors import SepbenchError
from sepbench.extras import require
from sepbench.store import RunRecord, Store

if TYPE_CHECKING:
    import pandas as pd

SECTIONS = ("task", "model", "train", "eval")
"""Config sections in column order; any other section follows, then the top-level fields."""
STORE_FILTERS = {"task": "task.name", "model": "model.name", "status": "status"}
"""Filters the store answers itself (a single name), and the column each one matches."""
SIZE_COLUMNS = ("num_parameters", "state_size", "wall_time_s", "tokens_per_s", "device")
PROVENANCE_COLUMNS = (
    "git_sha", "package_version", "torch_version", "python_version", "host", "pid",
    "started_at", "finished_at", "error",
)
TIME_COLUMNS = ("started_at", "finished_at")
CURVE_COLUMNS = ("run_id", "step", "loss", "val_accuracy")


def results(store: Store | str | Path | None = None, **filters: Any) -> pd.DataFrame:
    """One row per stored run (columns: see the module docstring), oldest first.

    ``store``: a :class:`~sepbench.store.Store` or its path (default :meth:`Store.default`).
    ``filters`` keep the runs whose column equals the value, or is one of the values of a list:
    ``task``, ``model`` (names) and ``status``, or any column with ``__`` for each dot,
    ``train__seed=0``, ``model__mixers=["lstm", "mamba+attention"]``.
    """
    pandas = require("pandas", "analysis", "sepbench.results()")
    opened = store if isinstance(store, Store) else _open(store)
    in_store = {k: filters.pop(k) for k in list(filters) if _store_filter(k, filters[k])}
    records = opened.runs(**in_store)
    frame = _frame(pandas, [_row(record) for record in records])
    return _select(frame, filters)


def curves(store: Store | str | Path | None = None, **filters: Any) -> pd.DataFrame:
    """The training curves of the runs :func:`results` selects with the same arguments, long
    format: one row per logged step, columns ``run_id``, ``step``, ``loss``, ``val_accuracy``
    (NaN between validation points)."""
    pandas = require("pandas", "analysis", "sepbench.curves()")
    opened = store if isinstance(store, Store) else _open(store)
    points = [
        {"run_id": run_id, **point}
        for run_id in results(opened, **filters)["run_id"].tolist()
        for point in opened.curve(run_id)
    ]
    frame = pandas.DataFrame(points, columns=list(CURVE_COLUMNS))
    return frame.astype({"run_id": "int64", "step": "int64", "loss": "float64",
                         "val_accuracy": "float64"})


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path`` as Parquet, atomically: a failed write leaves whatever was at
    ``path`` untouched (the file is written beside it, then renamed over it)."""
    require("pyarrow", "analysis", "Parquet output")
    path = Path(path)
    if path.is_dir():
        raise SepbenchError(f"parquet: {path} is a directory; give a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        frame.to_parquet(partial, index=False)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _select(frame: pd.DataFrame, filters: dict[str, Any]) -> pd.DataFrame:
    """Keep the rows whose column matches each filter (see :func:`results`)."""
    for key, wanted in filters.items():
        column = STORE_FILTERS.get(key, key.replace("__", "."))
        if frame.empty:
            return frame
        if column not in frame:
            raise SepbenchError(
                f"results: no column {column!r} to filter on (write each dot as __); "
                f"columns: {', '.join(frame.columns)}"
            )
        keep = frame[column].isna() if wanted is None else frame[column].isin(_listed(wanted))
        frame = frame[keep.to_numpy(dtype=bool)]
    return frame.reset_index(drop=True)


def _listed(wanted: Any) -> list[Any]:
    return list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]


def _open(path: str | Path | None) -> Store:
    if path is not None and not Path(path).is_file():
        raise SepbenchError(f"results: no store at {path}")
    return Store(path) if path is not None else Store.default()


def _store_filter(key: str, value: Any) -> bool:
    return key in STORE_FILTERS and (value is None or isinstance(value, str))


# -- one run -> one row ----------------------------------------------------------------------


def _row(record: RunRecord) -> dict[tuple[Any, ...], dict[str, Any]]:
    """A run's columns in groups; the group keys sort into the column order."""
    config = record.config
    groups: dict[tuple[Any, ...], dict[str, Any]] = {
        (0,): {
            "run_id": record.id,
            "config_hash": record.config_hash,
            "name": config.get("name"),
            "status": record.status,
        }
    }
    for key, section in config.items():
        if not isinstance(section, dict):
            continue
        rank = SECTIONS.index(key) if key in SECTIONS else len(SECTIONS)
        parts = model_columns(section) if key == "model" else [flatten(section, key)]
        groups.update({(1, rank, key, part): columns for part, columns in enumerate(parts)})
    groups[(2,)] = {
        ("device_requested" if k == "device" else k): v
        for k, v in config.items()
        if not isinstance(v, dict) and k != "name"
    }
    groups[(3,)] = metric_columns(record.metrics, config.get("task", {}).get("length"))
    groups[(4,)] = {k: getattr(record, k) for k in SIZE_COLUMNS + PROVENANCE_COLUMNS}
    groups[(5,)] = {"config": json.dumps(config, sort_keys=True)}
    return groups


def flatten(value: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` under ``prefix`` -> ``{"prefix.a.b": 1}``; lists stay values; a
    ``name`` comes first."""
    columns: dict[str, Any] = {}
    for key, item in sorted(value.items(), key=lambda pair: pair[0] != "name"):
        name = f"{prefix}.{key}"
        if isinstance(item, dict):
            columns.update(flatten(item, name))
        else:
            columns[name] = item
    return columns


def model_columns(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """A per-layer model spec as comparable columns (see the module docstring), in three
    groups: the whole model, the layers' keywords, the model options. A config that is not a
    per-layer spec (a store written before specs) is flattened as it is."""
    layers = spec.get("layers")
    if not (isinstance(layers, list) and layers and all(isinstance(x, dict) for x in layers)):
        return [flatten(spec, "model")]
    mixers = [layer["mixer"] for layer in layers]
    feedforwards = [layer.get("feedforward") for layer in layers]
    columns: dict[str, Any] = {
        "model.name": spec.get("name"),
        "model.width": spec.get("width"),
        "model.depth": len(layers),
        "model.mixers": "+".join(mixer["name"] for mixer in mixers),
        "model.feedforwards": "+".join(ff["name"] if ff else "none" for ff in feedforwards),
    }
    keywords: dict[str, Any] = {}
    for kind in dict.fromkeys(mixer["name"] for mixer in mixers):
        keywords.update(_shared_keywords([m for m in mixers if m["name"] == kind], f"model.{kind}"))
    keywords.update(_shared_keywords([ff for ff in feedforwards if ff], "model.feedforward"))
    options = {k: v for k, v in spec.items() if k not in ("name", "width", "layers")}
    return [columns, keywords, flatten(options, "model")]


def _shared_keywords(entries: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    """One column per keyword of these layer entries (``name`` aside): the value they share,
    or their values in layer order joined by ``+`` when they differ."""
    columns: dict[str, Any] = {}
    for key in dict.fromkeys(k for entry in entries for k in entry if k != "name"):
        values = [entry.get(key) for entry in entries]
        same = all(v == values[0] for v in values)
        columns[f"{prefix}.{key}"] = values[0] if same else "+".join(map(str, values))
    return columns


def metric_columns(metrics: dict[str, Any], own_length: int | None = None) -> dict[str, Any]:
    """A number stays one column; a map (length -> accuracy) becomes ``name@key`` columns,
    lengths in numeric order, and ``name``, its value at ``own_length`` (None if absent)."""
    columns: dict[str, Any] = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            columns[name] = value.get(str(own_length))
            for key in sorted(value, key=_numeric_first):
                columns[f"{name}@{key}"] = value[key]
        else:
            columns[name] = value
    return columns


def _numeric_first(key: str) -> tuple[int, float, str]:
    try:
        return (0, float(key), "")
    except ValueError:
        return (1, 0.0, key)


# -- rows -> one typed frame -----------------------------------------------------------------


def _frame(pandas: Any, rows: list[dict[tuple[Any, ...], dict[str, Any]]]) -> pd.DataFrame:
    """Columns in group order (first appearance within a group); one type per column."""
    rank: dict[str, tuple[tuple[Any, ...], int]] = {}
    for row in rows:
        for group, columns in row.items():
            for name in columns:
                rank.setdefault(name, (group, len(rank)))
    records = [{k: v for columns in row.values() for k, v in columns.items()} for row in rows]
    names = sorted(rank, key=rank.__getitem__)
    frame = pandas.DataFrame(
        {name: _column(pandas, [record.get(name) for record in records]) for name in names}
    )
    for name in TIME_COLUMNS:
        if name in frame:
            frame[name] = pandas.to_datetime(frame[name], utc=True, format="ISO8601")
    return frame


def _column(pandas: Any, values: list[Any]) -> pd.Series:
    """A series of one type: see the module docstring."""
    kinds = {_kind(v) for v in values if v is not None}
    gaps = any(v is None for v in values)
    if not kinds:
        return pandas.Series(values, dtype="object")
    if kinds == {"int"}:
        return pandas.Series(values, dtype="Int64" if gaps else "int64")
    if kinds == {"bool"}:
        return pandas.Series(values, dtype="boolean" if gaps else "bool")
    if kinds <= {"int", "float"}:
        return pandas.Series(values, dtype="float64")
    if kinds == {"str"}:
        return pandas.Series(values)
    if kinds == {"list"}:
        return pandas.Series(values, dtype="object")
    return pandas.Series([None if v is None else _text(v) for v in values])


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list) and _scalars(value):
        return "list"
    return "other"


def _scalars(values: Iterable[Any]) -> bool:
    kinds = {_kind(v) for v in values}
    return kinds <= {"int", "float"} or kinds in ({"str"}, {"bool"})


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
