"""Saving and presenting the AIS experiment: atomic ``rl.json`` + ``rl.png`` and the final-table rows."""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lowbit._atomic import atomic_write_bytes

__all__ = ["TABLE_HEADER", "table_rows", "write_outputs"]

TABLE_HEADER = [
    "arm",
    "seeds",
    "acc fp32 (mean ± sd)",
    "acc fp8 copy",
    "reward, last steps",
    "α, last steps",
    "ESS/N, last steps",
    "mean |δ|, last steps",
    "correction share of step",
]


def _pm(row: Mapping[str, Any], key: str, digits: int = 3) -> str:
    return f"{row[key]:.{digits}f} ± {row[key + '_sd']:.{digits}f}"


def table_rows(table: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Rows for :data:`TABLE_HEADER` from :func:`lowbit.lab.rl.experiment.final_table`."""
    return [
        [
            r["arm"],
            r["seeds"],
            _pm(r, "acc_fp32"),
            _pm(r, "acc_fp8"),
            _pm(r, "reward_tail"),
            _pm(r, "alpha_tail"),
            _pm(r, "ess_tail", 4),
            _pm(r, "mean_abs_logratio_tail", 4),
            "n/a" if math.isnan(r["correction_share"]) else f"{100 * r['correction_share']:.2f}%",
        ]
        for r in table
    ]


def _compact(obj: Any) -> Any:
    """Floats to 6 significant digits, recursively: the per-step logs stay readable and small."""
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    if isinstance(obj, Mapping):
        return {k: _compact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_compact(v) for v in obj]
    return obj


def write_outputs(payload: Mapping[str, Any], out_dir: Path, *, name: str = "rl") -> list[Path]:
    """Write ``<name>.json`` (with machine info) and one ``<name>[-<strength>].png`` per dose, each atomically."""
    from lowbit.lab.report.machine import machine_info
    from lowbit.lab.rl.plots import curves_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "machine": machine_info(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **payload}
    json_path = out_dir / f"{name}.json"
    atomic_write_bytes(json_path, json.dumps(_compact(data), default=str).encode())
    paths = [json_path]
    for i, exp in enumerate(payload["experiments"]):
        fig = curves_figure(exp)  # selects the Agg backend before pyplot is imported
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        png = out_dir / (f"{name}.png" if i == 0 else f"{name}-{exp['config']['strength']}.png")
        atomic_write_bytes(png, buf.getvalue())
        paths.append(png)
    return paths
