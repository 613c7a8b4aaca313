"""The task library: every separation task of ../shared/papers.md, with independent checkers.

``get(name, **params)`` builds a task; ``names()`` lists them. Every module in this package
registers its tasks on import.
"""

import importlib
import pkgutil

from sepbench.tasks.base import Batch, Task, Vocab, get, names, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Batch", "Task", "Vocab", "get", "names", "register"]
