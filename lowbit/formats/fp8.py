"""FP8 casts: E4M3FN and E5M2 (OCP 8-bit Floating Point v1.0), round to nearest even.

:func:`fp8_cast` is the reference: it encodes with :func:`lowbit.formats.elements.encode_element` and returns a
torch float8 tensor (``torch.float8_e4m3fn`` / ``torch.float8_e5m2``) holding exactly those codes, so
``.view(torch.uint8)`` gives the bits and ``.float()`` the values. :func:`fp8_cast_native` is the fast variant
that uses torch's own cast; the tests check the two agree bit for bit on float32 input.

Saturation (the documented choice, same as :func:`lowbit.formats.round_to_element`):

* ``saturate=True`` (default, the usual choice for FP8 GEMM inputs and what torch's E4M3FN cast does): finite
  overflow and ±Inf -> ``±max_normal`` (448 / 57344); NaN -> NaN (code 0x7F).
* ``saturate=False`` (``ml_dtypes`` semantics): overflow and ±Inf -> NaN for E4M3FN (no Inf), ±Inf for E5M2.
"""

from __future__ import annotations

from typing import Any

import torch

from lowbit.formats.elements import ELEMENT_FORMATS, encode_element
from lowbit.formats.inputs import as_float64, as_tensor, check_name

__all__ = ["FP8_DTYPES", "fp8_cast", "fp8_cast_native"]

FP8_DTYPES: dict[str, torch.dtype] = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


def fp8_cast(x: Any, fmt: str, *, saturate: bool = True) -> torch.Tensor:
    """``x`` rounded (RNE) to FP8 ``fmt`` (``"e4m3"`` = E4M3FN or ``"e5m2"``), as a torch float8 tensor.

    >>> fp8_cast(torch.tensor([300.0, 1000.0, -0.1]), "e4m3").float().tolist()
    [288.0, 448.0, -0.1015625]
    >>> fp8_cast(torch.tensor([1000.0]), "e4m3", saturate=False).float().isnan().tolist()
    [True]
    """
    check_name(fmt, FP8_DTYPES, "fmt")
    return encode_element(x, fmt, saturate=saturate).view(FP8_DTYPES[fmt])


def fp8_cast_native(x: Any, fmt: str, *, saturate: bool = True) -> torch.Tensor:
    """Fast path: torch's own cast (after a clamp when ``saturate``); same results as :func:`fp8_cast`.

    Takes float16, bfloat16 and float32 input (float64 raises TypeError: a cast through float32 would round
    twice).
    """
    check_name(fmt, FP8_DTYPES, "fmt")
    t = as_tensor(x, "x")
    as_float64(t, "x")  # validates dtype and emptiness
    if t.dtype == torch.float64:
        raise TypeError("fp8_cast_native takes float16/bfloat16/float32 x; use fp8_cast for float64")
    f = ELEMENT_FORMATS[fmt]
    if saturate:
        return t.clamp(-f.max_normal, f.max_normal).to(FP8_DTYPES[fmt])
    if fmt == "e4m3":
        # torch's E4M3FN cast saturates. Without saturation, values past the midpoint 464 between 448 and the
        # next (missing) grid value 480 overflow to NaN; 464 itself ties to 448 (even mantissa).
        return torch.where(t.abs() > 464.0, float("nan"), t).to(FP8_DTYPES[fmt])
    return t.to(FP8_DTYPES[fmt])  # torch's E5M2 cast already overflows to ±Inf
