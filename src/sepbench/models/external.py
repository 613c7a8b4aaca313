"""Mixers from outside the package: a layer may name ``package.module:ClassName`` or
``path/to/file.py:ClassName`` instead of a registered mixer (bring your own architecture).

The class is called as ``Class(width, **params)`` and must keep the mixer contract of
:mod:`sepbench.models.base` (``forward(x, state) -> (y, state)``, ``state_size(seq_len)``);
``sepbench check-mixer`` checks that it does. Optional class attributes as on
:class:`~sepbench.models.base.Mixer`: ``default_feedforward`` (default ``"mlp"``) and
``needs_positions`` (default False).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from sepbench.errors import SepbenchError

_LOADED: dict[str, type] = {}


def is_import_path(name: str) -> bool:
    return ":" in name


def load_class(path: str) -> type:
    """The class an import path names; one-line error naming what could not be imported."""
    if path in _LOADED:
        return _LOADED[path]
    where, _, attribute = path.rpartition(":")
    if not where or not attribute:
        raise SepbenchError(f"mixer {path!r}: write package.module:ClassName or file.py:ClassName")
    try:
        module = _load_file(where) if where.endswith(".py") else importlib.import_module(where)
    except SepbenchError:
        raise
    except Exception as error:  # any failure inside the user's module is reported in one line
        raise SepbenchError(
            f"mixer {path!r}: could not import {where} ({type(error).__name__}: {error})"
        ) from None
    cls = getattr(module, attribute, None)
    if not isinstance(cls, type):
        raise SepbenchError(f"mixer {path!r}: {where} has no class {attribute!r}")
    _LOADED[path] = cls
    return cls


def _load_file(where: str) -> Any:
    file = Path(where)
    if not file.is_file():
        raise SepbenchError(f"mixer {where}:...: no such file {file}")
    name = "sepbench_external_" + hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise SepbenchError(f"mixer {where}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def source_digest(path: str) -> str:
    """sha256 (16 hex digits) of the file that defines an imported class: its provenance."""
    cls = load_class(path)
    source = sys.modules[cls.__module__].__file__
    if source is None:
        return "unknown"
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]
