"""Calibrate the cost model on this CPU: GEMM throughput per path and M, memory bandwidth, vector rate.

A small timing run (a few seconds with ``quick``); the result is a value (:class:`CpuCalibration`) that
callers keep or write out (the report caches it in its output folder), never package state.

Measured paths (docs/methods/msd.md §11 "CPU paths"):

* ``fp32``: ``torch.matmul`` float32;
* ``bf16``: ``torch.matmul`` bfloat16;
* ``int8_mm``: ``torch._int_mm`` int8 x int8 -> int32 (exact, no prepack);
* ``int8_prepacked``: the prepacked fbgemm INT8 GEMM that ``lowbit.msd.MSDLinear`` runs
  (``quantized::linear_with_input_q_dq_qweight_dq_output_fp32`` via :mod:`lowbit.msd.kernels`), when this torch
  build has it (the ``onednn`` engine segfaulted in the notes' run, so it is never tried).

Rates: bandwidth from a large ``copy_`` (2 bytes moved per byte copied); the dequant rate from
``bf16(w_int8 · scale)`` per weight element; the decomposition rate from the fused two-pass INT8
decomposition that MSDLinear runs (:func:`lowbit.msd.kernels.decompose_int8_fast`), with a fixed per-call
overhead fitted from two sizes.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from lowbit._timing import measure
from lowbit.costmodel.hardware import Hardware

GEMM_PATHS = ("fp32", "bf16", "int8_mm", "int8_prepacked")


def _best_time(fn: Callable[[], Any], repeats: int, min_seconds: float) -> float:
    """Best (smallest) mean time per call over ``repeats`` samples of at least ``min_seconds`` each.

    The minimum, not the median: on a shared machine other processes only ever add time (and oversubscribed
    OpenMP threads add milliseconds to small GEMMs), so the fastest sample is the best estimate of what the
    hardware does. One untimed warm-up call (:func:`lowbit._timing.measure`).
    """
    return measure(fn, repeats=repeats, warmup=1, min_seconds=min_seconds).best


@dataclass(frozen=True)
class CpuCalibration:
    """What the calibration measured (all rates in SI units).

    Attributes:
        k, n: GEMM size the throughputs were measured at.
        ms: the M values.
        gemm_ops: path -> ops/s (2·M·K·N per call) for each M in ``ms``; a path that failed is absent.
        failed: path -> error text for paths that could not run.
        bandwidth: bytes/s from a large copy.
        dequant_rate: INT8 weight elements dequantized to BF16 per second.
        decompose_rate: activation elements per second through a two-pass INT8 decomposition.
        decompose_overhead: seconds per decomposition call independent of size.
        seconds: how long the calibration took.
    """

    k: int
    n: int
    ms: tuple[int, ...]
    gemm_ops: dict[str, tuple[float, ...]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    bandwidth: float = 0.0
    dequant_rate: float = 0.0
    decompose_rate: float = 0.0
    decompose_overhead: float = 0.0
    seconds: float = 0.0

    def gemm_rate(self, path: str, m: int) -> float:
        """ops/s of ``path`` at ``m`` rows, log-linear interpolation in M (clamped to the measured range)."""
        if path not in self.gemm_ops:
            raise ValueError(f"GEMM path {path!r} was not calibrated (failed: {self.failed.get(path, 'not run')})")
        rates = self.gemm_ops[path]
        xs = [math.log(v) for v in self.ms]
        x = min(max(math.log(max(m, 1)), xs[0]), xs[-1])
        for i in range(len(xs) - 1):
            if xs[i] <= x <= xs[i + 1]:
                t = (x - xs[i]) / (xs[i + 1] - xs[i])
                return math.exp((1 - t) * math.log(rates[i]) + t * math.log(rates[i + 1]))
        return rates[0]

    def gemm_time(self, path: str, m: int, k: int, n: int) -> float:
        """Predicted seconds of an ``m×k×n`` GEMM on ``path``."""
        return 2.0 * m * k * n / self.gemm_rate(path, m)

    def best_int8_path(self) -> str:
        """The faster int8 path at the largest calibrated M."""
        paths = [p for p in ("int8_prepacked", "int8_mm") if p in self.gemm_ops]
        if not paths:
            raise ValueError("no int8 GEMM path was calibrated")
        return max(paths, key=lambda p: self.gemm_ops[p][-1])

    def to_hardware(self) -> Hardware:
        """A :class:`Hardware` preset ``cpu`` from the peak (largest-M) rates; decoupled (weights materialised)."""
        int8 = self.gemm_ops[self.best_int8_path()][-1]
        return Hardware(
            name="cpu",
            bf16_tflops=self.gemm_ops["bf16"][-1] / 1e12,
            int8_tops=int8 / 1e12,
            hbm_tbps=self.bandwidth / 1e12,
            vector_tops=self.dequant_rate * 3.0 / 1e12,
            decoupled=True,
            source=f"calibration run on this machine ({self.seconds:.1f} s, K=N={self.k}, M={list(self.ms)})",
            status="measured",
            notes="vector_tops = measured INT8->BF16 dequant rate x 3 ops/element (the model's c_dq)",
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def _gemm_fn(path: str, m: int, k: int, n: int, g: torch.Generator) -> Callable[[], Any]:
    if path == "fp32":
        x, w = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        return lambda: torch.matmul(x, w)
    if path == "bf16":
        x, w = torch.randn(m, k, generator=g).bfloat16(), torch.randn(k, n, generator=g).bfloat16()
        return lambda: torch.matmul(x, w)
    if path == "int8_mm":
        a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=g)
        b = torch.randint(-127, 128, (k, n), dtype=torch.int8, generator=g)
        return lambda: torch._int_mm(a, b)
    if path == "int8_prepacked":
        from lowbit.msd.kernels import available_int8_kernels, int8_gemm, pack_int8_weight

        if "fbgemm" not in available_int8_kernels():
            raise RuntimeError("the prepacked fbgemm INT8 kernel is not available in this torch build")
        q = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            packed = pack_int8_weight(q, torch.rand(n, generator=g) + 0.5, "fbgemm")
        a = torch.randint(-127, 128, (m, k), generator=g).to(torch.float32)
        return lambda: int8_gemm(a, packed)
    raise ValueError(f"unknown GEMM path {path!r}; known: {GEMM_PATHS}")


def calibrate_cpu(*, quick: bool = True, seed: int = 0) -> CpuCalibration:
    """Time the GEMM paths, a large copy, INT8->BF16 dequant and the MSD decomposition on this CPU."""
    from lowbit.msd.kernels import decompose_int8_fast

    start = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    k = n = 2048 if quick else 4096
    ms = (1, 16, 128) if quick else (1, 16, 128, 1024)
    repeats, min_s = (5, 0.03) if quick else (7, 0.1)
    gemm_ops: dict[str, tuple[float, ...]] = {}
    failed: dict[str, str] = {}
    for path in GEMM_PATHS:
        try:
            rates = []
            for m in ms:
                fn = _gemm_fn(path, m, k, n, g)
                rates.append(2.0 * m * k * n / _best_time(fn, repeats, min_s))
            gemm_ops[path] = tuple(rates)
        except Exception as exc:  # a path that cannot run on this build is recorded, not hidden
            failed[path] = f"{type(exc).__name__}: {exc}"
    nbytes = (64 if quick else 256) * 2**20
    src = torch.empty(nbytes, dtype=torch.uint8).random_(generator=g)
    dst = torch.empty_like(src)
    bandwidth = 2.0 * nbytes / _best_time(lambda: dst.copy_(src), repeats, min_s)
    w8 = torch.randint(-127, 128, (k, n), dtype=torch.int8, generator=g)
    s = torch.rand(n, 1, generator=g)
    # The same dequant as MSDLinear(method="dequant"): convert, scale in place, cast to BF16.
    dequant_rate = k * n / _best_time(lambda: w8.to(torch.float32).mul_(s).to(torch.bfloat16), repeats, min_s)
    small, large = torch.randn(1, k, generator=g), torch.randn(64, k, generator=g)
    t_small = _best_time(lambda: decompose_int8_fast(small, 2), repeats, min_s)
    t_large = _best_time(lambda: decompose_int8_fast(large, 2), repeats, min_s)
    per_elem = max((t_large - t_small) / (63 * k), 1e-15)
    return CpuCalibration(
        k=k,
        n=n,
        ms=ms,
        gemm_ops=gemm_ops,
        failed=failed,
        bandwidth=bandwidth,
        dequant_rate=dequant_rate,
        decompose_rate=1.0 / per_elem,
        decompose_overhead=max(t_small - per_elem * k, 0.0),
        seconds=time.perf_counter() - start,
    )


def calibration_from_dict(data: dict[str, Any]) -> CpuCalibration:
    """Inverse of :meth:`CpuCalibration.as_dict` (for a cached calibration)."""
    d = dict(data)
    d["ms"] = tuple(d["ms"])
    d["gemm_ops"] = {p: tuple(v) for p, v in d.get("gemm_ops", {}).items()}
    return CpuCalibration(**d)
