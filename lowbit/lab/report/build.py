"""Run the report sections and write a self-contained ``index.html`` and ``summary.json``.

The page opens with the verdict table (one row per paper claim, :mod:`lowbit.lab.report.verdicts`), then the
contents (every section and the machine), then the sections. ``summary.json`` holds the same verdict rows under
``"verdicts"``. The output folder is first written under a temporary name beside ``out`` and then renamed into place,
so a crash never leaves a half-written report that looks whole. A section that raises is shown as
failed in the page and in ``summary.json``, and :func:`build_report` reports failure to its caller.
"""

from __future__ import annotations

import html
import json
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit._atomic import temporary_dir
from lowbit._discovery import capability_modules
from lowbit.lab.report.machine import machine_info
from lowbit.lab.report.section import Link, Section, SectionContext, SectionOutput, html_table
from lowbit.lab.report.stored import ResultsSource, results_source
from lowbit.lab.report.verdicts import VerdictRow, verdict_rows

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #aaa;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em;display:block;overflow-x:auto;max-width:100%}
td,th{border:1px solid #bbb;padding:3px 8px;text-align:left;vertical-align:top}th{background:#eee}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:top;font-weight:bold;text-align:left;padding:4px 0}
figure{margin:1em 0}img{max-width:100%}figcaption{font-size:0.9em;color:#555}
.failed{background:#fdd;border:1px solid #c00;padding:0.5em;white-space:pre-wrap;font-family:monospace}
nav li{margin:0.2em 0}
"""


@dataclass(frozen=True)
class ReportConfig:
    """Options of ``lowbit report``: quick mode, output folder, seed, an optional section filter, and where the
    stored benchmark results are read (``results``: a folder; None means the copies packaged with lowbit)."""

    out: Path = Path("lowbit-report")
    quick: bool = False
    seed: int = 0
    only: tuple[str, ...] = ()
    results: Path | None = None


@dataclass
class SectionResult:
    """One section's outcome."""

    section: Section
    output: SectionOutput | None
    seconds: float
    error: str | None


def discover_sections() -> list[Section]:
    """Every ``SECTION`` of a ``lowbit.lab.<capability>.report_section[_*]`` module, in ``order``."""
    sections = [m.SECTION for m in capability_modules("report_section")]
    names = [s.name for s in sections]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise RuntimeError(f"report sections with duplicate names: {sorted(duplicated)}")
    return sorted(sections, key=lambda s: (s.order, s.name))


def _run_sections(
    sections: list[Section], config: ReportConfig, tmp: Path, source: ResultsSource
) -> list[SectionResult]:
    from rich.progress import Progress

    results = []
    with Progress(transient=True) as progress:
        task = progress.add_task("report", total=len(sections))
        for section in sections:
            progress.update(task, description=f"section: {section.name}")
            ctx = SectionContext(quick=config.quick, seed=config.seed, out_dir=tmp, results=source)
            start = time.perf_counter()
            try:
                output, error = section.run(ctx), None
            except Exception:  # a failed section is reported, never hidden
                output, error = None, traceback.format_exc()
            results.append(SectionResult(section, output, time.perf_counter() - start, error))
            progress.advance(task)
    return results


MACHINE_ANCHOR = "machine"
VERDICT_HEADER = ("paper", "claim", "paper's figure", "lowbit measured", "verdict", "why", "section")


def verdict_cells(row: VerdictRow) -> list[Any]:
    """One verdict row as table cells (in :data:`VERDICT_HEADER` order); the section links to its anchor."""
    section = Link(row.section, f"#{row.section}") if row.linked else f"{row.section} (not in this report)"
    return [row.paper, row.claim, row.paper_figure, row.measured, row.verdict, row.why, section]


def _render(
    results: list[SectionResult],
    machine: dict[str, Any],
    config: ReportConfig,
    source: ResultsSource,
    verdicts: list[VerdictRow],
) -> str:
    nav = "".join(
        f'<li><a href="#{r.section.name}">{html.escape(r.section.title)}</a>'
        f"{' (FAILED)' if r.error else ''} ({r.seconds:.1f} s)</li>"
        for r in results
    )
    nav += f'<li><a href="#{MACHINE_ANCHOR}">Machine and versions</a></li>'
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>lowbit report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>lowbit report</h1>",
        f"<p>Mode: {'quick' if config.quick else 'full'}; seed {config.seed}; "
        f"generated {html.escape(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}. Live figures are measured on this "
        f"machine; stored benchmark figures are read from {html.escape(source.describe())} and each section "
        "says which machine measured them.</p>",
        "<h2 id='verdicts'>What lowbit found: the papers' claims</h2>",
        html_table(
            VERDICT_HEADER,
            [verdict_cells(v) for v in verdicts],
            caption="reproduced: within the stated threshold; explained: missed, but a stated model gives the "
            "paper's figure; not reproduced: missed; not measurable here: needs hardware or a scale this machine "
            "lacks; not measured: the section failed or was not run",
        ),
        "<h2 id='contents'>Contents</h2>",
        f"<nav><ul>{nav}</ul></nav>",
    ]
    for r in results:
        parts.append(f'<h2 id="{r.section.name}">{html.escape(r.section.title)}</h2>')
        if r.error is not None:
            parts.append(f"<div class='failed'>This section FAILED:\n{html.escape(r.error)}</div>")
        else:
            assert r.output is not None
            parts.extend(r.output.blocks)
    rows = [(k, v if not isinstance(v, (list, dict)) else json.dumps(v)) for k, v in machine.items()]
    parts.append(f"<h2 id='{MACHINE_ANCHOR}'>Machine and versions</h2>" + html_table(["item", "value"], rows))
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(config: ReportConfig) -> tuple[Path, bool]:
    """Write the report to ``config.out``; return the path of ``index.html`` and whether all sections passed."""
    sections = discover_sections()
    if config.only:
        known = {s.name for s in sections}
        unknown = [n for n in config.only if n not in known]
        if unknown:
            raise ValueError(f"unknown report section(s) {unknown}; known sections: {sorted(known)}")
        sections = [s for s in sections if s.name in config.only]
    source = results_source(config.results)
    out = config.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_dir(out.parent, f".{out.name}.tmp-")  # the umask's mode, not mkdtemp's 0700
    try:
        machine = machine_info()
        results = _run_sections(sections, config, tmp, source)
        sections = {
            r.section.name: {
                "title": r.section.title,
                "status": "failed" if r.error else "ok",
                "seconds": round(r.seconds, 3),
                "error": r.error,
                "summary": r.output.summary if r.output else None,
            }
            for r in results
        }
        # the verdicts read the summaries as summary.json stores them (JSON types), so a rerun from the file agrees
        verdicts = verdict_rows(json.loads(json.dumps(sections, default=str)))
        summary = {
            "quick": config.quick,
            "seed": config.seed,
            "results": {"path": str(source.path), "packaged": source.packaged},
            "machine": machine,
            "verdicts": [v.as_dict() for v in verdicts],
            "sections": sections,
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        (tmp / "index.html").write_text(_render(results, machine, config, source, verdicts), encoding="utf-8")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{time.time_ns()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html", all(r.error is None for r in results)
