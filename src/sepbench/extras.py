"""Optional dependencies, imported only by the feature that needs them.

The core package (tasks, models, training, the store, the CLI) needs none of these; each extra
of ``pyproject.toml`` unlocks one feature::

    analysis     pandas, pyarrow  sepbench.results(), runs/export --format parquet
    datasets     datasets         export --format hf (a Hugging Face dataset on disk)
    tensorboard  tensorboard      train.log: tensorboard
    ray          ray              sweep / demo --backend ray (runs as Ray tasks)

A module that needs one calls :func:`require` inside the function that uses it, never at import
time, so ``import sepbench`` and ``sepbench --help`` work without any of them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sepbench.errors import SepbenchError


class MissingExtra(SepbenchError, ImportError):
    """An optional dependency is not installed: the one line names the extra that brings it.

    An ImportError to Python code, a one-line bad-input error (exit code 2) to the CLI.
    """


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtra` naming the install that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtra(
            f"{purpose} needs {module.split('.')[0]}, which is not installed; "
            f"install it with: pip install 'sepbench[{extra}]'"
        ) from error
