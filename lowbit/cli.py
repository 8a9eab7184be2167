"""The ``lowbit`` command-line tool.

Subcommands are contributed by capability subpackages: each ``lowbit/<capability>/command.py`` defines
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the parsed
``argparse.Namespace`` and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lowbit import __version__
from lowbit._discovery import capability_modules, command_names


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser: with only the module of the subcommand ``argv`` names when it is known (so a
    command loads only what it needs), else with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="lowbit",
        description="Low-precision LLM work, fast and checked: LoPT tokenization, MSD quantized GEMMs, "
        "AMLA attention rescaling, AIS RL correction.",
        epilog="Run `lowbit COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"lowbit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    first = next((a for a in (argv or []) if not a.startswith("-")), None)
    known = command_names()
    if first in known:
        importlib.import_module(known[first]).register(sub)
    else:
        for module in capability_modules("command"):
            module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:
        print(f"lowbit {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
