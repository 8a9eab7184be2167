"""Find the per-capability plug-in modules (CLI commands, report sections).

Every capability subpackage ``lowbit.<name>`` may hold a ``command`` module (CLI subcommand) and a
``report_section`` module (a section of ``lowbit report``). They are found by name, so adding a capability
never edits a shared list. A module that exists but fails to import is an error, never skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from types import ModuleType

import lowbit


def capability_modules(submodule: str) -> list[ModuleType]:
    """Import ``lowbit.<pkg>.<submodule>`` for every subpackage that has one, sorted by package name."""
    found: list[ModuleType] = []
    for info in sorted(pkgutil.iter_modules(lowbit.__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        name = f"lowbit.{info.name}.{submodule}"
        if importlib.util.find_spec(name) is None:
            continue
        found.append(importlib.import_module(name))
    return found
