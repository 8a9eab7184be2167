"""E8M0, the shared scale of OCP MX blocks, and the two rules that choose it.

E8M0 (OCP MX v1.0 §5.4, ``docs/methods/msd.md`` §4) is an exponent only: code ``c`` in 0..254 means
``X = 2^(c - 127)`` (range ``2^-127 .. 2^127``) and ``c = 0xFF`` is NaN. There is no zero, sign or Inf.

The scale rules, for a block whose largest magnitude is ``amax`` and an element format with ``emax`` and
``max_normal``, both clamped to the E8M0 range ``[-127, 127]``:

* ``"ocp"`` (the spec, §6.3): ``shared_exp = floor(log2(amax)) - emax``. Then ``amax / X`` lies in
  ``[2^emax, 2^(emax+1))`` and may exceed ``max_normal``; those elements saturate.
* ``"ceil"`` (non-saturating, ``docs/methods/msd.md`` §4-§5): ``shared_exp = ceil(log2(amax / max_normal))``, the
  smallest power of two with ``amax / X <= max_normal``, so no element is clipped (unless the clamp at 127 bites).

The rule names are :data:`lowbit.formats.SCALE_RULES`. ``docs/methods/msd.md`` is our note on "Multi-Scale Dequant:
Eliminating Dequantization Bottleneck via Activation Decomposition for Efficient LLM Inference" (arXiv:2605.13915).

An all-zero block gets ``shared_exp = -127`` (code 0) under both rules, as ``log2(0) = -inf`` clamps there
(microxcaling does the same). Both exponents are computed exactly with ``frexp`` and power-of-two products, never
through a rounded ``log2``.
"""

from __future__ import annotations

from typing import Any

import torch

from lowbit.formats.constants import SCALE_RULES
from lowbit.formats.elements import ElementFormat
from lowbit.formats.inputs import as_tensor, pow2

__all__ = [
    "E8M0_BIAS",
    "E8M0_EMAX",
    "E8M0_EMIN",
    "E8M0_NAN",
    "ceil_shared_exponent",
    "decode_e8m0",
    "encode_e8m0",
    "floor_log2",
    "ocp_shared_exponent",
    "shared_exponent",
]

E8M0_BIAS = 127
E8M0_EMIN = -127
E8M0_EMAX = 127
E8M0_NAN = 0xFF


def floor_log2(a: torch.Tensor) -> torch.Tensor:
    """``floor(log2(a))`` as int64 for finite ``a > 0`` (float64), exactly, via ``frexp``; -1075 where ``a == 0``."""
    _, exp = torch.frexp(a)
    return torch.where(a > 0, exp.to(torch.int64) - 1, -1075)


def ocp_shared_exponent(amax: torch.Tensor, f: ElementFormat) -> torch.Tensor:
    """OCP MX v1.0 rule: ``floor(log2(amax)) - emax_elem``, clamped to [-127, 127] (int64)."""
    return (floor_log2(amax) - f.emax).clamp(E8M0_EMIN, E8M0_EMAX)


def ceil_shared_exponent(amax: torch.Tensor, f: ElementFormat) -> torch.Tensor:
    """Non-saturating rule: the least ``k`` with ``max_normal · 2^k >= amax``, i.e. ``ceil(log2(amax/max_normal))``.

    Start from ``k0 = floor(log2 amax) - emax`` (then ``amax < 2^(emax+1+k0) <= 2·max_normal·2^k0``, as
    ``max_normal > 2^emax``), so ``k`` is ``k0`` or ``k0 + 1``: one exact comparison decides. Clamped to
    [-127, 127] (int64).
    """
    k0 = floor_log2(amax) - f.emax
    k = torch.where(f.max_normal * pow2(k0.clamp(-1022, 1023)) >= amax, k0, k0 + 1)
    return k.clamp(E8M0_EMIN, E8M0_EMAX)


def shared_exponent(amax: torch.Tensor, f: ElementFormat, scale_rule: str) -> torch.Tensor:
    """The shared exponent of each block by ``scale_rule`` (``"ocp"`` or ``"ceil"``); ``amax`` finite, float64."""
    if scale_rule == "ocp":
        return ocp_shared_exponent(amax, f)
    if scale_rule == "ceil":
        return ceil_shared_exponent(amax, f)
    raise ValueError(f"scale_rule must be one of {list(SCALE_RULES)}, got {scale_rule!r}")


def encode_e8m0(exponent: torch.Tensor, nan: torch.Tensor | None = None) -> torch.Tensor:
    """E8M0 codes ``exponent + 127`` (uint8) of integer exponents in [-127, 127]; ``0xFF`` where ``nan``."""
    e = exponent.to(torch.int64)
    if e.numel() and (int(e.min()) < E8M0_EMIN or int(e.max()) > E8M0_EMAX):
        raise ValueError(f"exponent must lie in [{E8M0_EMIN}, {E8M0_EMAX}] for E8M0")
    code = e + E8M0_BIAS
    if nan is not None:
        code = torch.where(nan, E8M0_NAN, code)
    return code.to(torch.uint8)


def decode_e8m0(codes: Any) -> torch.Tensor:
    """``2^(c - 127)`` as float32 (exact: 2^-127 is a float32 subnormal) for uint8 codes; NaN for 0xFF.

    >>> decode_e8m0(torch.tensor([127, 128, 0, 255], dtype=torch.uint8)).tolist()[:3]
    [1.0, 2.0, 5.877471754111438e-39]
    """
    c = as_tensor(codes, "codes")
    if c.dtype != torch.uint8:
        raise TypeError(f"codes must be a uint8 tensor of E8M0 codes, got {c.dtype}")
    c = c.to(torch.int64)
    value = pow2(c - E8M0_BIAS)
    return torch.where(c == E8M0_NAN, float("nan"), value).to(torch.float32)
