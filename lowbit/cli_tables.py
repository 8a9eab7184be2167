"""Small helpers shared by the ``lowbit`` subcommands: rich tables and comma-separated integer arguments."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def print_rich_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]], digits: int = 3) -> None:
    """Print a table with rich; floats to ``digits`` significant digits."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title), title_justify="left")
    for h in header:
        table.add_column(escape(str(h)), overflow="fold")
    for r in rows:
        table.add_row(*(escape(f"{c:.{digits}g}" if isinstance(c, float) else str(c)) for c in r))
    Console(width=200).print(table)


def int_list(text: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]`` for argparse ``type=``; positive integers only."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values
