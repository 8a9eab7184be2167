"""The ``lowbit`` command-line tool.

Subcommands are contributed by capability subpackages: each ``lowbit/<capability>/command.py`` defines
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the parsed
``argparse.Namespace`` and returning an exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lowbit import __version__
from lowbit._discovery import capability_modules


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="lowbit",
        description="Low-precision LLM work, fast and checked: LoPT tokenization, MSD quantized GEMMs, "
        "AMLA attention rescaling, AIS RL correction.",
    )
    parser.add_argument("--version", action="version", version=f"lowbit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in capability_modules("command"):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the process exit code."""
    parser = build_parser()
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
