"""The model zoo: one chunk-and-state contract, pure PyTorch (../shared/design.md).

``build(name, vocab_size, width, layers, **params)`` builds a model from a short form;
``resolve`` turns a short form into the per-layer spec ``build_spec`` builds from (spec.py);
``names()`` lists the models.
Every module in this package registers its mixers on import.
"""

import importlib
import pkgutil

from sepbench.models.base import (
    Block,
    Mixer,
    ModelState,
    SequenceModel,
    register_feedforward,
    register_mixer,
)
from sepbench.models.spec import build, build_spec, names, resolve

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "spec"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "Block",
    "Mixer",
    "ModelState",
    "SequenceModel",
    "build",
    "build_spec",
    "names",
    "register_feedforward",
    "register_mixer",
    "resolve",
]
