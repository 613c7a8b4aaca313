"""The model zoo: one chunk-and-state contract, pure PyTorch (../shared/design.md).

``build(name, vocab_size, width, layers, **params)`` builds a model; ``names()`` lists them.
Every module in this package registers its mixers on import.
"""

import importlib
import pkgutil

from sepbench.models.base import (
    Block,
    Mixer,
    ModelState,
    SequenceModel,
    build,
    names,
    register_feedforward,
    register_mixer,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "Block",
    "Mixer",
    "ModelState",
    "SequenceModel",
    "build",
    "names",
    "register_feedforward",
    "register_mixer",
]
