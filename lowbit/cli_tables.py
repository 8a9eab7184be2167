"""Small helpers shared by the ``lowbit`` subcommands: rich tables and comma-separated integer arguments.

:func:`print_rich_table` is the one place the CLI prints a table (``lowbit formats``, ``cost``, ``attention``,
``bits``, the verdicts at the end of ``report``): numbers right-aligned, text left-aligned, sized to the terminal.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

_NUMBER = re.compile(r"^[-+−±]?\.?\d")


def cell_text(value: object, digits: int = 3) -> str:
    """One cell: floats to ``digits`` significant digits, None as ``-``, everything else with ``str``.

    >>> cell_text(3.14159), cell_text(3.14159, 6), cell_text(None), cell_text("int8 x2")
    ('3.14', '3.14159', '-', 'int8 x2')
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _numeric(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or (isinstance(value, str) and bool(_NUMBER.match(value.strip())))


def numeric_column(rows: Sequence[Sequence[object]], j: int) -> bool:
    """Whether column ``j`` holds numbers only (ignoring empty and ``-`` cells): an int or float that is not a bool,
    or text starting with a digit after an optional sign (``"2.5x"``, ``"15/15"``).

    >>> numeric_column([[1, "a"], ["2.5x", "b"], ["-", "c"]], 0), numeric_column([[1, "a"]], 1)
    (True, False)
    """
    cells = [r[j] for r in rows if j < len(r) and r[j] not in ("", "-", None)]
    return bool(cells) and all(_numeric(c) for c in cells)


def rich_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]], digits: int = 3) -> Any:
    """A ``rich.table.Table``: floats to ``digits`` significant digits, numeric columns right-justified, long
    cells folded; markup in the text is escaped."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title) if title else None, title_justify="left")
    for j, h in enumerate(header):
        table.add_column(escape(str(h)), overflow="fold", justify="right" if numeric_column(rows, j) else "left")
    for r in rows:
        table.add_row(*(escape(cell_text(c, digits)) for c in r))
    return table


def print_rich_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]], digits: int = 3) -> None:
    """Print a table with rich, sized to the terminal.

    On a terminal the table takes at most the terminal's width (rich folds long cells to fit); when the output is
    not a terminal (a pipe, a file, a test's capture) the table is printed at its natural width, unfolded, so each
    row stays on one line for grep.
    """
    from rich.cells import cell_len
    from rich.console import Console
    from rich.measure import Measurement

    table = rich_table(title, header, rows, digits)
    console = Console()
    if not console.is_terminal:
        width = Measurement.get(console, console.options.update_width(10_000), table).maximum
        console = Console(width=max(console.width, width, cell_len(title)))
    console.print(table)


def int_list(text: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]`` for argparse ``type=``; positive integers only.

    >>> int_list("1,8,32")
    [1, 8, 32]
    """
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values
