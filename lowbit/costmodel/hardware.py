"""Hardware presets for the latency/traffic model, each figure with its source and status.

Figures come from docs/methods/msd.md §11. Status words, as in docs/methods/:
``secondary`` (a third-party page, not checked against the vendor datasheet), ``unverified`` (a source we
could not check), ``inferred`` (our estimate, no source), ``measured`` (a calibration run on this machine),
``user`` (a TOML file). Throughputs are dense (no sparsity).

User hardware is a TOML file with one ``[hardware]`` table whose keys are the fields of :class:`Hardware`
(``name``, ``bf16_tflops``, ``int8_tops``, ``hbm_tbps``, ``vector_tops`` and ``decoupled`` are required)::

    [hardware]
    name = "my-npu"
    bf16_tflops = 300.0
    int8_tops = 600.0
    mxfp4_tflops = 0        # 0 or absent: no native MXFP4 MMA
    hbm_tbps = 1.6
    vector_tops = 10.0
    decoupled = true        # separate vector and matrix units, dequantized weight goes through global memory
    source = "vendor sheet, 2026"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Hardware:
    """One device for the closed-form model (msd.md §10-§11).

    Attributes:
        name: preset name.
        bf16_tflops: dense BF16 matrix-unit peak (P16), TFLOP/s.
        int8_tops: dense INT8 matrix-unit peak (P8), TOP/s.
        mxfp4_tflops: dense MXFP4 peak (P4), TFLOP/s; 0 when there is no native MXFP4 MMA.
        hbm_tbps: HBM (main memory) bandwidth, TB/s (10^12 bytes/s).
        vector_tops: vector-unit throughput for simple elementwise ops, 10^12 element-ops/s (V).
        decoupled: True when the vector and matrix units are separate and a dequantized weight must make a
            round trip through global memory (Ascend AIV/AIC; also a CPU that materialises the weight).
        source: where the figures come from.
        status: ``secondary`` / ``unverified`` / ``inferred`` / ``measured`` / ``user``.
        notes: caveats (which figures are estimates).
    """

    name: str
    bf16_tflops: float
    int8_tops: float
    hbm_tbps: float
    vector_tops: float
    decoupled: bool
    mxfp4_tflops: float = 0.0
    source: str = ""
    status: str = "user"
    notes: str = ""

    def __post_init__(self) -> None:
        for f in ("bf16_tflops", "int8_tops", "hbm_tbps", "vector_tops"):
            value = getattr(self, f)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"hardware {self.name!r}: {f} must be a positive number, got {value!r}")
        if not isinstance(self.mxfp4_tflops, (int, float)) or self.mxfp4_tflops < 0:
            raise ValueError(f"hardware {self.name!r}: mxfp4_tflops must be >= 0, got {self.mxfp4_tflops!r}")
        if not isinstance(self.decoupled, bool):
            raise ValueError(f"hardware {self.name!r}: decoupled must be true or false, got {self.decoupled!r}")

    # rates in SI units -----------------------------------------------------------------------------------------
    @property
    def p16(self) -> float:
        """BF16 matrix peak, FLOP/s."""
        return self.bf16_tflops * 1e12

    @property
    def p8(self) -> float:
        """INT8 matrix peak, OP/s."""
        return self.int8_tops * 1e12

    @property
    def p4(self) -> float | None:
        """MXFP4 matrix peak, FLOP/s, or None when not native."""
        return self.mxfp4_tflops * 1e12 if self.mxfp4_tflops > 0 else None

    @property
    def bandwidth(self) -> float:
        """Main-memory bandwidth, bytes/s."""
        return self.hbm_tbps * 1e12

    @property
    def vector(self) -> float:
        """Vector throughput, element-ops/s."""
        return self.vector_tops * 1e12


_H100_SRC = "msd.md §11: secondary pages (glennklockwood.com, codesota.com), not checked against NVIDIA's datasheet"
_H100_VEC = (
    "vector_tops [inferred]: 16896 FP32 CUDA lanes x ~1.98 GHz = 33.5 T simple ops/s (NVIDIA's 67 TFLOPS FP32 "
    "counts an FMA as 2); not in our notes, unverified"
)

PRESETS: dict[str, Hardware] = {
    "ascend-910b": Hardware(
        name="ascend-910b",
        bf16_tflops=313.0,
        int8_tops=626.0,
        hbm_tbps=1.6,
        vector_tops=11.0,
        decoupled=True,
        source="msd.md §11: third-party pages, BF16 ~313-376 TFLOPS (sources vary; low end taken), "
        "INT8 ~2x FP16, HBM ~1.6 TB/s (one page says 400 GB/s, probably wrong)",
        status="unverified",
        notes="vector_tops [inferred]: ~48 AIV cores x 128 FP16 lanes x ~1.8 GHz; core count and clock unverified. "
        "No native MXFP4 (Ascend 950 has it).",
    ),
    "h100-sxm": Hardware(
        name="h100-sxm",
        bf16_tflops=989.4,
        int8_tops=1978.9,
        hbm_tbps=3.35,
        vector_tops=33.5,
        decoupled=False,
        source=_H100_SRC,
        status="secondary",
        notes=_H100_VEC + "; no native MXFP4 (Blackwell has it); dequant fused in registers (Marlin-style).",
    ),
    "h200": Hardware(
        name="h200",
        bf16_tflops=989.4,
        int8_tops=1978.9,
        hbm_tbps=4.8,
        vector_tops=33.5,
        decoupled=False,
        source="msd.md §11: compute as H100 SXM, HBM 4.8 TB/s 141 GB; secondary page, not checked against "
        "NVIDIA's datasheet",
        status="secondary",
        notes=_H100_VEC + "; no native MXFP4.",
    ),
    "ascend-950pr": Hardware(
        name="ascend-950pr",
        bf16_tflops=500.0,
        int8_tops=1000.0,
        mxfp4_tflops=2000.0,
        hbm_tbps=1.6,
        vector_tops=11.0,
        decoupled=True,
        source="msd.md §11: MXFP8 1 PFLOPS, MXFP4 2 PFLOPS, HBM 1.6 TB/s 128 GB; unverified third-party page",
        status="unverified",
        notes="bf16_tflops [inferred] = MXFP8/2 and int8_tops [inferred] = MXFP8 (no source); vector_tops "
        "[inferred] as 910B. The only preset with native MXFP4, so the only one where W4A16 MSD applies.",
    ),
}
"""Cited presets; ``cpu`` comes from :func:`lowbit.lab.costmodel.calibrate.calibrate_cpu` (a lab measurement)."""


_REQUIRED = ("name", "bf16_tflops", "int8_tops", "hbm_tbps", "vector_tops", "decoupled")


def hardware_from_mapping(data: dict[str, Any], *, origin: str = "mapping") -> Hardware:
    """A :class:`Hardware` from a dict of its fields; unknown or missing keys raise ``ValueError``."""
    known = {f.name for f in fields(Hardware)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{origin}: unknown hardware keys {unknown}; known keys: {sorted(known)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(f"{origin}: missing hardware keys {missing}")
    values = dict(data)
    values.setdefault("status", "user")
    values.setdefault("source", origin)
    try:
        return Hardware(**values)
    except TypeError as exc:
        raise ValueError(f"{origin}: {exc}") from exc


def load_hardware(path: str | Path) -> Hardware:
    """Read user hardware from a TOML file with a ``[hardware]`` table (see the module docstring)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p}: not valid TOML: {exc}") from exc
    table = data.get("hardware")
    if not isinstance(table, dict):
        raise ValueError(f"{p}: expected a [hardware] table")
    return hardware_from_mapping(table, origin=str(p))


def get_hardware(name_or_path: str) -> Hardware:
    """A preset by name, or user hardware from a ``.toml`` path."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    if name_or_path.endswith(".toml"):
        return load_hardware(name_or_path)
    raise ValueError(
        f"unknown hardware {name_or_path!r}; presets: {sorted(PRESETS)} (or a .toml file; 'cpu' is "
        "calibrated by `lowbit cost-check --hardware cpu`)"
    )
