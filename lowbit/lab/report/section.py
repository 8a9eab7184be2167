"""What a report section is: a named function from a :class:`SectionContext` to a :class:`SectionOutput`."""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lowbit._timing import NOISY_SPREAD, Timing
from lowbit.lab.report.stored import ResultsSource, packaged_results


@dataclass(frozen=True)
class SectionContext:
    """What a section may use: the quick flag, a seed, a folder for any extra files it writes, and the stored results.

    ``results`` is where stored benchmark results are read (``lowbit report --results DIR``; by default the copies
    packaged with lowbit), never a path relative to the package or the current folder.
    """

    quick: bool
    seed: int
    out_dir: Path
    results: ResultsSource = field(default_factory=packaged_results)


@dataclass
class SectionOutput:
    """HTML blocks (in order) and a JSON-serialisable summary of the figures the section measured."""

    blocks: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def text(self, paragraph: str) -> None:
        """Add a paragraph of plain text (escaped)."""
        self.blocks.append(f"<p>{html.escape(paragraph)}</p>")

    def html(self, fragment: str) -> None:
        """Add a trusted HTML fragment as is."""
        self.blocks.append(fragment)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> None:
        """Add a table; floats are shown with 4 significant digits."""
        self.blocks.append(html_table(header, rows, caption))

    def figure(self, fig: Any, caption: str = "") -> None:
        """Embed a matplotlib figure as a base64 PNG and close it."""
        self.blocks.append(figure_html(fig, caption))

    @staticmethod
    def timing(t: Timing | Mapping[str, Any], unit: str | None = None) -> str:
        """A table cell for a live timing: median, spread and a noisy mark (see :func:`timing_cell`)."""
        return timing_cell(t, unit)


@dataclass(frozen=True)
class Section:
    """A report section. ``order`` sorts sections (lower first); ``run`` does the work."""

    name: str
    title: str
    order: int
    run: Callable[[SectionContext], SectionOutput]


_UNITS = (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9))


def timing_cell(t: Timing | Mapping[str, Any], unit: str | None = None) -> str:
    """Render a timing as ``"<median> <unit> ±<half spread>%"``, with ``" (noisy)"`` when the spread is large.

    Rule: the figure is the median of the samples, ``±`` is half of :attr:`~lowbit._timing.Timing.spread` (half of
    ``(max - min) / median``), and "noisy" marks a spread above :data:`~lowbit._timing.NOISY_SPREAD`. ``t`` is a
    :class:`~lowbit._timing.Timing` or its :meth:`~lowbit._timing.Timing.as_dict` (e.g. read back from JSON).
    ``unit`` is one of s, ms, µs, ns (default: the largest unit that keeps the median >= 1).

    >>> timing_cell(Timing((0.0123, 0.0118, 0.0128)))
    '12.3 ms ±4%'
    >>> timing_cell(Timing((0.010, 0.013, 0.016)), unit="s")
    '0.013 s ±23% (noisy)'
    >>> timing_cell({"median_s": 2.5e-6, "spread": 0.1})
    '2.5 µs ±5%'
    """
    if isinstance(t, Timing):
        median, spread, noisy = t.median, t.spread, t.noisy
    else:
        median, spread = float(t["median_s"]), float(t["spread"])
        noisy = bool(t.get("noisy", spread > NOISY_SPREAD))
    scales = dict(_UNITS)
    if unit is None:
        unit = next((u for u, f in _UNITS if median >= f), _UNITS[-1][0])
    if unit not in scales:
        raise ValueError(f"unit must be one of {list(scales)}, got {unit!r}")
    return f"{median / scales[unit]:.3g} {unit} ±{spread / 2:.0%}" + (" (noisy)" if noisy else "")


@dataclass(frozen=True)
class Link:
    """A table cell that links to ``href`` (e.g. ``"#msd"``, a section of the same page)."""

    text: str
    href: str

    def __str__(self) -> str:
        return self.text


def format_cell(value: Any) -> str:
    """Render one table cell: floats to 4 significant digits, everything else with ``str``.

    >>> format_cell(3.14159), format_cell(7), format_cell("int8 x2")
    ('3.142', '7', 'int8 x2')
    """
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


_NUMBER = re.compile(r"^[-+−±]?\.?\d")


def is_numeric(value: Any) -> bool:
    """Whether a cell is a number and so right-aligned: an int or float (not a bool), or text that starts with a
    digit after an optional sign (``"12.3 ms ±4%"``, ``"2.5x"``, ``"15/15"``); other text is left-aligned.

    >>> [is_numeric(v) for v in (3, 2.5, True, "12.3 ms ±4%", "2.5x", "15/15", "int8 x2", "-", "e5m2")]
    [True, True, False, True, True, True, False, False, False]
    """
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and bool(_NUMBER.match(value.strip()))


def numeric_columns(rows: Sequence[Sequence[Any]], width: int) -> list[bool]:
    """Per column: every non-empty cell (ignoring ``""`` and ``"-"``) is numeric, and at least one is."""
    out = []
    for j in range(width):
        cells = [r[j] for r in rows if j < len(r) and r[j] not in ("", "-", None)]
        out.append(bool(cells) and all(is_numeric(c) for c in cells))
    return out


_NUM = " class='num'"


def _td(value: Any, numeric: bool) -> str:
    cls = _NUM if numeric else ""
    if isinstance(value, Link):
        return f'<td{cls}><a href="{html.escape(value.href)}">{html.escape(value.text)}</a></td>'
    return f"<td{cls}>{html.escape(format_cell(value))}</td>"


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> str:
    """An HTML table with an optional caption; cell text is escaped, :class:`Link` cells become links.

    Alignment: text columns left, numbers right (class ``num``; rule in :func:`is_numeric`); the header of a
    column whose every cell is numeric is right-aligned too.

    >>> print(html_table(["scheme", "bits"], [["int8 x2", 15.98]]).replace("<tr>", "\\n<tr>"))
    <table><thead>
    <tr><th>scheme</th><th class='num'>bits</th></tr></thead><tbody>
    <tr><td>int8 x2</td><td class='num'>15.98</td></tr></tbody></table>
    """
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    numeric = numeric_columns(rows, len(header))
    head = "".join(
        f"<th{_NUM if num else ''}>{html.escape(str(h))}</th>" for h, num in zip(header, numeric, strict=True)
    )
    body = "".join("<tr>" + "".join(_td(c, is_numeric(c)) for c in row) + "</tr>" for row in rows)
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure_html(fig: Any, caption: str = "") -> str:
    """Serialise a matplotlib figure to an inline ``<img>`` and close the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">{cap}</figure>'
