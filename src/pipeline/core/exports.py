"""Lazy re-exports for a package ``__init__`` (PEP 562).

A family's ``__init__`` only re-exports its modules' public names. Importing them eagerly would make
``import pipeline.dynamics.paths`` (which the Snakefile does on every invocation) load torch, pandas
and scipy through the sibling modules; resolving each name on first use keeps light imports light.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[list[str], Callable, Callable]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` whose public names live in the
    submodules ``exports`` maps them to (name -> module path).

    An export may share its name with a submodule (``pipeline.arithmetic.train``, the function, in
    the module ``train``): the import system binds a submodule to its package once it is loaded,
    which would replace the export by the module; the package's class refuses that binding."""
    names = sorted(exports)
    sys.modules[package].__class__ = _exporting_package(frozenset(exports))
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


def _exporting_package(exported: frozenset[str]) -> type:
    class ExportingPackage(types.ModuleType):
        def __setattr__(self, name: str, value) -> None:
            if name in exported and isinstance(value, types.ModuleType):
                return  # keep the export, not the submodule of the same name
            super().__setattr__(name, value)

    return ExportingPackage
