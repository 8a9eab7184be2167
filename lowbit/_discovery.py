"""Find the per-capability plug-in modules (CLI commands, report sections).

Every capability subpackage ``lowbit.<name>`` may hold modules named ``command.py`` or ``command_*.py``
(CLI subcommands) and ``report_section.py`` or ``report_section_*.py`` (sections of ``lowbit report``).
They are found by name, so adding a capability never edits a shared list. A module that exists but fails
to import is an error, never skipped.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import lowbit


def capability_modules(prefix: str) -> list[ModuleType]:
    """Import every ``lowbit.<pkg>.<prefix>`` and ``lowbit.<pkg>.<prefix>_*`` module, sorted by name."""
    found: list[ModuleType] = []
    for pkg in sorted(pkgutil.iter_modules(lowbit.__path__), key=lambda i: i.name):
        if not pkg.ispkg:
            continue
        package = importlib.import_module(f"lowbit.{pkg.name}")
        for mod in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if mod.name == prefix or mod.name.startswith(prefix + "_"):
                found.append(importlib.import_module(f"lowbit.{pkg.name}.{mod.name}"))
    return found
