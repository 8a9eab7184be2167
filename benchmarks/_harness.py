"""Shared helpers for the benchmark scripts: robust timing and atomic JSON results.

Speed is measured here, never asserted in tests. Quote ratios against a baseline measured in the same run:
machines are shared and noisy, lone absolute times are not comparable.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from lowbit._atomic import atomic_write_text
from lowbit._timing import measure, median_time  # noqa: F401  (re-exported for the bench scripts)
from lowbit.lab.report.machine import machine_info

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically, with the machine description added (CPU flags, and
    for benchmarks that use torch the INT8 kernel profiles of :func:`lowbit.msd.isa.profile_report`)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    data = {"benchmark": name, "machine": machine_info(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **payload}
    if "torch" in sys.modules:  # the INT8 kernel each backend runs here (CPU features, ISA caps, profiles)
        from lowbit.msd.isa import profile_report

        data["machine"]["int8_kernels"] = profile_report()
    atomic_write_text(path, json.dumps(data, indent=2, default=str))
    return path


def print_table(header: list[str], rows: list[list[Any]]) -> None:
    """Print a plain-text table (floats to 4 significant digits)."""

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
