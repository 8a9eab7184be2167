"""Find the per-capability plug-in modules (CLI commands, report sections).

Every capability subpackage ``lowbit.<name>`` may hold modules named ``command.py`` or ``command_*.py``
(CLI subcommands) and ``report_section.py`` or ``report_section_*.py`` (sections of ``lowbit report``).
They are found by name, so adding a capability never edits a shared list. A module that exists but fails
to import is an error, never skipped.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
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


def command_names() -> dict[str, str]:
    """Subcommand name -> ``lowbit.<pkg>.command*`` module, read from each module's source without importing it.

    Rule: the first positional argument of every ``.add_parser("name", ...)`` call in the module. This lets the
    CLI import only the module of the command it runs (``lowbit tokenize`` does not load torch); the full set of
    modules is still imported for ``lowbit --help``. A module whose source names no parser maps nothing, and the
    CLI then falls back to importing every module.
    """
    names: dict[str, str] = {}
    root = Path(lowbit.__path__[0])
    for pkg in sorted(pkgutil.iter_modules([str(root)]), key=lambda i: i.name):
        if not pkg.ispkg:
            continue
        for mod in sorted(pkgutil.iter_modules([str(root / pkg.name)]), key=lambda i: i.name):
            if mod.name != "command" and not mod.name.startswith("command_"):
                continue
            tree = ast.parse((root / pkg.name / f"{mod.name}.py").read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "add_parser"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    names[node.args[0].value] = f"lowbit.{pkg.name}.{mod.name}"
    return names
