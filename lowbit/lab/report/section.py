"""What a report section is: a named function from a :class:`SectionContext` to a :class:`SectionOutput`."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Section:
    """A report section. ``order`` sorts sections (lower first); ``run`` does the work."""

    name: str
    title: str
    order: int
    run: Callable[[SectionContext], SectionOutput]


def format_cell(value: Any) -> str:
    """Render one table cell: floats to 4 significant digits, everything else with ``str``."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> str:
    """An HTML table with an optional caption; cell text is escaped."""
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_cell(c))}</td>" for c in row) + "</tr>" for row in rows)
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
