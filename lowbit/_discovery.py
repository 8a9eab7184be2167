"""Find the plug-in modules (CLI commands, report sections) of the library and of the lab.

Every capability subpackage ``lowbit.<name>`` (the library) and every subpackage ``lowbit.lab.<name>`` (studies,
experiments, the report) may hold modules named ``command.py`` or ``command_*.py`` (CLI subcommands) and
``report_section.py`` or ``report_section_*.py`` (sections of ``lowbit report``, lab only by convention). They
are found by name, so adding a capability never edits a shared list. A module that exists but fails to import
is an error, never skipped.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

import lowbit

LAB = "lab"


def _packages() -> list[tuple[str, Path]]:
    """``(dotted name, folder)`` of every library capability package, then every lab package."""
    root = Path(lowbit.__path__[0])
    found = []
    for base, folder in (("lowbit", root), (f"lowbit.{LAB}", root / LAB)):
        for pkg in sorted(pkgutil.iter_modules([str(folder)]), key=lambda i: i.name):
            if pkg.ispkg and not (base == "lowbit" and pkg.name == LAB):
                found.append((f"{base}.{pkg.name}", folder / pkg.name))
    return found


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + "_")


def capability_modules(prefix: str) -> list[ModuleType]:
    """Import every ``<pkg>.<prefix>`` and ``<pkg>.<prefix>_*`` module of :func:`_packages`, sorted by name."""
    found: list[ModuleType] = []
    for dotted, folder in _packages():
        for mod in sorted(pkgutil.iter_modules([str(folder)]), key=lambda i: i.name):
            if _matches(mod.name, prefix):
                found.append(importlib.import_module(f"{dotted}.{mod.name}"))
    return found


def command_names() -> dict[str, str]:
    """Subcommand name -> ``lowbit.<pkg>.command*`` module, read from each module's source without importing it.

    Rule: the first positional argument of every ``.add_parser("name", ...)`` call in the module. This lets the
    CLI import only the module of the command it runs (``lowbit tokenize`` does not load torch); the full set of
    modules is still imported for ``lowbit --help``. A module whose source names no parser maps nothing, and the
    CLI then falls back to importing every module.
    """
    names: dict[str, str] = {}
    for dotted, folder in _packages():
        for mod in sorted(pkgutil.iter_modules([str(folder)]), key=lambda i: i.name):
            if not _matches(mod.name, "command"):
                continue
            tree = ast.parse((folder / f"{mod.name}.py").read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "add_parser"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    names[node.args[0].value] = f"{dotted}.{mod.name}"
    return names
