"""Check the model against reality on this CPU: predicted vs measured MSD speedup over dequant.

Reads ``msd_linear.json`` (written by ``benchmarks/bench_msd_linear.py``, the MSDLinear benchmark; packaged with
lowbit, see :mod:`lowbit.lab.report.stored`) with rows
``{"M", "K", "N", "times_s": {"dequant_bf16", "msd", ...}, "kernel"}``. Those timings were measured on the machine
the file records (``machine.cpu``): a prediction from this CPU's live calibration is comparable with them only on
the same machine, and callers say so (:func:`lowbit.lab.report.stored.machine_caveat`). The prediction uses a
:class:`~lowbit.lab.costmodel.calibrate.CpuCalibration` and the same op sequence as
:mod:`lowbit.costmodel.linear` for a decoupled device (a CPU materialises the dequantized weight) [inferred]:

    t_dequant = K·N / dequant_rate + t_gemm(bf16, M, K, N)
    t_msd     = overhead + M·K / decompose_rate + t_gemm(int8 path, 2M, K, N)     (two INT8 passes stacked)

``t_gemm`` interpolates the calibrated throughput in M. The int8 path is read from the row's ``kernel``
text (``fbgemm``: the prepacked path, ``int_mm``), else the faster calibrated one; ``split`` in it means two
``M``-row GEMMs instead of one stacked ``2M``-row GEMM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit.lab.costmodel.calibrate import CpuCalibration

NOT_MEASURED = "not measured yet"


@dataclass(frozen=True)
class CpuComparison:
    """Predicted and measured times (seconds) of one benchmark shape."""

    m: int
    k: int
    n: int
    kernel: str
    int8_path: str
    predicted_dequant: float
    measured_dequant: float
    predicted_msd: float
    measured_msd: float

    @property
    def predicted_speedup(self) -> float:
        """Predicted ``t_dequant / t_msd``."""
        return self.predicted_dequant / self.predicted_msd

    @property
    def measured_speedup(self) -> float:
        """Measured ``t_dequant_bf16 / t_msd``."""
        return self.measured_dequant / self.measured_msd

    HEADER = (
        "M",
        "K",
        "N",
        "kernel",
        "int8 path",
        "dequant pred ms",
        "dequant meas ms",
        "MSD pred ms",
        "MSD meas ms",
        "speedup pred",
        "speedup meas",
        "pred ÷ meas",
    )

    def cells(self) -> list[object]:
        """The row in :attr:`HEADER` order."""
        return [
            self.m,
            self.k,
            self.n,
            self.kernel,
            self.int8_path,
            self.predicted_dequant * 1e3,
            self.measured_dequant * 1e3,
            self.predicted_msd * 1e3,
            self.measured_msd * 1e3,
            self.predicted_speedup,
            self.measured_speedup,
            self.predicted_speedup / self.measured_speedup,
        ]


def int8_path_for(kernel: str, cal: CpuCalibration) -> str:
    """Which calibrated int8 GEMM path a benchmark ``kernel`` description names."""
    text = kernel.lower()
    if ("fbgemm" in text or "quantized" in text or "prepack" in text) and "int8_prepacked" in cal.gemm_ops:
        return "int8_prepacked"
    if "int_mm" in text and "int8_mm" in cal.gemm_ops:
        return "int8_mm"
    return cal.best_int8_path()


def predict_cpu(
    cal: CpuCalibration, m: int, k: int, n: int, int8_path: str, *, stacked: bool = True
) -> tuple[float, float]:
    """``(t_dequant, t_msd)`` predicted for an ``m×k×n`` W8A16 layer on the calibrated CPU (see module doc).

    ``stacked``: the two INT8 components run as one ``2m``-row GEMM; otherwise as two ``m``-row GEMMs.
    """
    t_dq = k * n / cal.dequant_rate + cal.gemm_time("bf16", m, k, n)
    gemm = cal.gemm_time(int8_path, 2 * m, k, n) if stacked else 2 * cal.gemm_time(int8_path, m, k, n)
    t_msd = cal.decompose_overhead + m * k / cal.decompose_rate + gemm
    return t_dq, t_msd


def measured_rows(data: Any, origin: str | Path = "msd_linear.json") -> list[dict]:
    """The ``rows`` of a loaded ``msd_linear.json``; ``ValueError`` naming ``origin`` when the schema is wrong."""
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{origin}: expected a 'rows' list (schema of benchmarks/bench_msd_linear.py)")
    return rows


def load_benchmark(path: str | Path) -> dict[str, Any] | None:
    """The whole ``msd_linear.json`` (rows, machine, written), or None when the file is absent."""
    p = Path(path)
    if not p.exists():
        return None
    data = json.loads(p.read_text(encoding="utf-8"))
    measured_rows(data, p)
    return data


def load_measured(path: str | Path) -> list[dict] | None:
    """The rows of ``msd_linear.json``, or None when the file is absent (the caller says "not measured yet")."""
    data = load_benchmark(path)
    return None if data is None else measured_rows(data, path)


def compare_cpu(cal: CpuCalibration, rows: list[dict]) -> list[CpuComparison]:
    """One :class:`CpuComparison` per measured row that has both ``dequant_bf16`` and ``msd`` times."""
    out = []
    for r in rows:
        times = r.get("times_s", {})
        if not isinstance(times, dict) or not times.get("dequant_bf16") or not times.get("msd"):
            continue
        m, k, n = int(r["M"]), int(r["K"]), int(r["N"])
        kernel = str(r.get("kernel", ""))
        path = int8_path_for(kernel, cal)
        t_dq, t_msd = predict_cpu(cal, m, k, n, path, stacked="split" not in kernel.lower())
        out.append(CpuComparison(m, k, n, kernel, path, t_dq, float(times["dequant_bf16"]), t_msd, float(times["msd"])))
    return out
