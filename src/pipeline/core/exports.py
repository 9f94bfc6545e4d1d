"""Lazy re-exports for a package ``__init__`` (PEP 562).

A family's ``__init__`` only re-exports its modules' public names. Importing them eagerly would make
``import pipeline.dynamics.paths`` (which the Snakefile does on every invocation) load torch, pandas
and scipy through the sibling modules; resolving each name on first use keeps light imports light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[list[str], Callable, Callable]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` whose public names live in the
    submodules ``exports`` maps them to (name -> module path)."""
    names = sorted(exports)
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value  # resolved once
        return value

    def __dir__() -> list[str]:
        return names

    return names, __getattr__, __dir__
