"""Independent references for the format tests: numpy float64 maths and ml_dtypes casts (no lowbit code)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

ML_DTYPES = {
    "e2m1": ml_dtypes.float4_e2m1fn,
    "e2m3": ml_dtypes.float6_e2m3fn,
    "e3m2": ml_dtypes.float6_e3m2fn,
    "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
}
BITS = {"e2m1": 4, "e2m3": 6, "e3m2": 6, "e4m3": 8, "e5m2": 8}
EMAX = {"e2m1": 2, "e2m3": 2, "e3m2": 4, "e4m3": 8, "e5m2": 15}


def max_normal(elem: str) -> float:
    return float(ml_dtypes.finfo(ML_DTYPES[elem]).max)


def ref_codes(x: np.ndarray, elem: str, saturate: bool = True) -> np.ndarray:
    """ml_dtypes codes of ``x`` (saturating = clip to ±max first; clip keeps NaN)."""
    if saturate:
        m = max_normal(elem)
        x = np.clip(x, -m, m)
    return x.astype(ML_DTYPES[elem]).view(np.uint8)


def ref_values(codes: np.ndarray, elem: str) -> np.ndarray:
    return codes.astype(np.uint8).view(ML_DTYPES[elem]).astype(np.float64)


def all_codes(elem: str) -> np.ndarray:
    return np.arange(1 << BITS[elem], dtype=np.uint8)


def ref_mx(x: np.ndarray, elem: str, block: int, rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OCP MX along the last axis, as in ``docs/methods/msd.md`` §7: (element codes, E8M0 codes, dequantized float64).

    Only for finite float32 input (log2 of a float32 amax is exact where it matters here).
    """
    xb = x.astype(np.float64).reshape(*x.shape[:-1], -1, block)
    amax = np.abs(xb).max(-1, keepdims=True)
    a = np.where(amax == 0, 2.0**-200, amax)
    if rule == "ceil":
        e = np.ceil(np.log2(a / max_normal(elem)))
    else:
        e = np.floor(np.log2(a)) - EMAX[elem]
    e = np.clip(e, -127, 127)
    scale = np.exp2(e)
    codes = ref_codes(xb / scale, elem, saturate=True)
    deq = ref_values(codes, elem) * scale
    e8m0 = scale[..., 0].astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)
    return codes.reshape(x.shape), e8m0, deq.reshape(x.shape)
