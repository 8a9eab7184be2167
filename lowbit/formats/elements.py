"""Element formats of OCP Microscaling v1.0 and FP8: one table, one rounding rule, one code layout.

The five formats are small binary floating-point types ``(-1)^s · 2^(E - bias) · 1.M`` (normal, ``E > 0``) and
``(-1)^s · 2^(1 - bias) · 0.M`` (subnormal, ``E = 0``), sign-magnitude codes ``s | E | M`` stored in the low
``bits`` of a uint8 (the layout ``ml_dtypes`` uses). They differ only in their special codes:

======  ====  ====  ===========  ===========  ==========================================
name    bits  bias  max normal   min subnorm  special codes
======  ====  ====  ===========  ===========  ==========================================
e2m1       4     1  6            0.5          none (MXFP4)
e2m3       6     1  7.5          0.125        none (MXFP6)
e3m2       6     3  28           0.0625       none (MXFP6)
e4m3       8     7  448          2^-9         S.1111.111 = NaN, no Inf (E4M3FN, MXFP8)
e5m2       8    15  57344        2^-16        S.11111.00 = Inf, S.11111.{01,10,11} = NaN (IEEE-like)
======  ====  ====  ===========  ===========  ==========================================

Sources: OCP Microscaling Formats (MX) v1.0 §5.3 (element types), OCP 8-bit Floating Point (OFP8) v1.0,
summarised in ``docs/methods/msd.md`` §4 (our note on the Multi-Scale Dequant paper, arXiv:2605.13915);
microsoft/microxcaling ``mx/formats.py``.

Rounding (:func:`round_to_element`): round to nearest, ties to even (IEEE 754 roundTiesToEven), with an
unbounded exponent above ``emax``; a result above ``max_normal`` is an overflow. What overflow, Inf and NaN give
is a documented choice:

* ``saturate=True`` (default; what OCP MX asks of element conversion): finite overflow **and ±Inf** become
  ``±max_normal`` (as ``torch.clamp`` + cast in microxcaling, and torch's own E4M3FN cast); NaN stays NaN.
* ``saturate=False``: overflow and ±Inf give ±Inf where the format has Inf (e5m2), NaN where it has only NaN
  (e4m3), and a ValueError for the formats that have neither (e2m1, e2m3, e3m2). This is ``ml_dtypes``' cast.
* NaN: :func:`round_to_element` returns NaN (a float, for any format); :func:`encode_element` gives the
  canonical NaN code ``0x7F`` for e4m3 and e5m2 and raises ValueError for the formats without NaN.
* Signed zero is kept: ``-0.0`` and negative values that round to zero encode with the sign bit set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lowbit.formats.inputs import as_tensor, as_working_float, check_name, pow2

__all__ = [
    "ELEMENT_FORMATS",
    "ElementFormat",
    "decode_element",
    "element_format",
    "element_values",
    "encode_element",
    "round_to_element",
]


@dataclass(frozen=True)
class ElementFormat:
    """A small sign-magnitude binary float: ``bits = 1 + exp_bits + man_bits``, exponent bias ``bias``.

    ``emax`` is the exponent of the largest normal binade, ``max_normal = 2^emax · (largest usable 1.M)``,
    ``min_normal = 2^(1 - bias)``, ``min_subnormal = 2^(1 - bias - man_bits)``.
    """

    name: str
    exp_bits: int
    man_bits: int
    bias: int
    emax: int
    max_normal: float
    min_normal: float
    min_subnormal: float
    has_inf: bool
    has_nan: bool
    bits: int

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal binade, ``1 - bias`` (subnormals share its spacing)."""
        return 1 - self.bias

    @property
    def nan_code(self) -> int:
        """The canonical (positive, all-ones) NaN code; ValueError if the format has no NaN."""
        if not self.has_nan:
            raise ValueError(f"element format {self.name} has no NaN encoding")
        return (1 << (self.bits - 1)) - 1

    @property
    def inf_code(self) -> int:
        """The +Inf code (all-ones exponent, zero mantissa); ValueError if the format has no Inf."""
        if not self.has_inf:
            raise ValueError(f"element format {self.name} has no Inf encoding")
        return ((1 << self.exp_bits) - 1) << self.man_bits


# The table: one line per format, numbers as in the OCP specs (tests recompute them from the fields and compare
# them with ml_dtypes.finfo).
ELEMENT_FORMATS: dict[str, ElementFormat] = {
    f.name: f
    for f in (
        ElementFormat("e2m1", 2, 1, 1, 2, 6.0, 1.0, 0.5, has_inf=False, has_nan=False, bits=4),
        ElementFormat("e2m3", 2, 3, 1, 2, 7.5, 1.0, 0.125, has_inf=False, has_nan=False, bits=6),
        ElementFormat("e3m2", 3, 2, 3, 4, 28.0, 0.25, 0.0625, has_inf=False, has_nan=False, bits=6),
        ElementFormat("e4m3", 4, 3, 7, 8, 448.0, 2.0**-6, 2.0**-9, has_inf=False, has_nan=True, bits=8),
        ElementFormat("e5m2", 5, 2, 15, 15, 57344.0, 2.0**-14, 2.0**-16, has_inf=True, has_nan=True, bits=8),
    )
}


def element_format(elem: str | ElementFormat) -> ElementFormat:
    """The :class:`ElementFormat` named ``elem`` (an ElementFormat is returned as is)."""
    if isinstance(elem, ElementFormat):
        return elem
    return ELEMENT_FORMATS[check_name(elem, ELEMENT_FORMATS, "elem")]


# ----------------------------------------------------------------------------------------------- decoding


def _decode_code(code: int, f: ElementFormat) -> float:
    """The value of one code, straight from the definition (the spec rule, one code at a time)."""
    sign = -1.0 if code >> (f.bits - 1) & 1 else 1.0
    exp_field = code >> f.man_bits & ((1 << f.exp_bits) - 1)
    man_field = code & ((1 << f.man_bits) - 1)
    top_exp = exp_field == (1 << f.exp_bits) - 1
    if f.has_inf and top_exp:  # IEEE-like (e5m2): all-ones exponent is Inf (M = 0) or NaN
        return sign * float("inf") if man_field == 0 else float("nan")
    if f.has_nan and not f.has_inf and top_exp and man_field == (1 << f.man_bits) - 1:  # FN (e4m3): S.1111.111
        return float("nan")
    if exp_field == 0:  # subnormal: 0.M · 2^(1 - bias)
        return sign * man_field * 2.0 ** (f.emin - f.man_bits)
    return sign * (1.0 + man_field / (1 << f.man_bits)) * 2.0 ** (exp_field - f.bias)


def _decode_table(f: ElementFormat) -> torch.Tensor:
    return torch.tensor([_decode_code(c, f) for c in range(1 << f.bits)], dtype=torch.float64)


def element_values(elem: str | ElementFormat) -> torch.Tensor:
    """Every code's value in code order (float64, length ``2**bits``; NaN/Inf where the format has them).

    >>> element_values("e2m1")[:8].tolist()
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    """
    return _decode_table(element_format(elem))


def decode_element(codes: Any, elem: str | ElementFormat) -> torch.Tensor:
    """Values (float32) of uint8 ``codes`` of element format ``elem``, one code per byte in the low bits.

    >>> decode_element(torch.tensor([0x7, 0xF], dtype=torch.uint8), "e2m1").tolist()
    [6.0, -6.0]
    """
    f = element_format(elem)
    c = as_tensor(codes, "codes")
    if c.dtype not in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        raise TypeError(f"codes must be an integer tensor (uint8), got {c.dtype}")
    c = c.to(torch.int64)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) >= 1 << f.bits):
        raise ValueError(f"codes must lie in [0, {(1 << f.bits) - 1}] for {f.name} ({f.bits} bits)")
    return _decode_table(f).to(torch.float32)[c]


# ----------------------------------------------------------------------------------- rounding and encoding


def _magnitude_codes(a: torch.Tensor, f: ElementFormat) -> torch.Tensor:
    """RNE code magnitudes (int32) of finite ``a >= 0`` (float32 or float64), unbounded exponent above ``emax``.

    In binade ``[2^e, 2^(e+1))`` with ``e = max(floor(log2 a), emin)`` (below ``emin`` the subnormal spacing
    continues) the grid step is ``2^(e - m)``; ``n = round_half_even(a / 2^(e-m))`` is exact (power-of-two
    scaling) and lies in ``[0, 2^(m+1)]``. The code is then ``(e - emin)·2^m + n``: for a normal value this is
    ``(e + bias)·2^m + (n - 2^m)`` = exponent field and mantissa field; in the subnormal binade it is ``n``; a carry
    ``n = 2^(m+1)`` lands on the first code of the next binade. Codes above the largest finite code overflow.
    """
    _, exp = torch.frexp(a)  # a = mant · 2^exp with mant in [0.5, 1): floor(log2 a) = exp - 1 (a > 0)
    e = (exp.to(torch.int32) - 1).clamp_(min=f.emin).masked_fill_(a == 0, f.emin)
    n = torch.round(a / pow2(e - f.man_bits, a.dtype)).to(torch.int32)  # torch.round rounds half to even
    return (e - f.emin << f.man_bits) + n


def _max_code(f: ElementFormat) -> int:
    """The largest finite positive code (0x7E for e4m3, 0x7B for e5m2, all ones but the sign otherwise)."""
    top = (1 << (f.bits - 1)) - 1
    if f.has_inf:
        return f.inf_code - 1
    return top - 1 if f.has_nan else top


def _encode(x: torch.Tensor, f: ElementFormat, saturate: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (int32) of float32/float64 ``x`` and its NaN mask, per the module's rounding, overflow and NaN rules."""
    nan, inf = torch.isnan(x), torch.isinf(x)
    code = _magnitude_codes(x.abs().masked_fill_(nan | inf, 0.0), f)
    over = (code > _max_code(f)) | inf
    to_nan = nan
    if saturate:
        code.masked_fill_(over, _max_code(f))
    elif f.has_inf:
        code.masked_fill_(over, f.inf_code)
    elif f.has_nan:
        to_nan = nan | over
    elif bool(over.any()):
        raise ValueError(
            f"x has values beyond ±{f.max_normal} (or ±Inf) and {f.name} has no Inf or NaN; "
            "pass saturate=True to clamp them to ±max_normal"
        )
    code |= torch.signbit(x).to(torch.int32) << (f.bits - 1)  # keeps -0.0 for negatives that round to zero
    if f.has_nan:
        code.masked_fill_(to_nan, f.nan_code)  # one canonical NaN code, whatever the sign
    return code, nan


def round_to_element(x: Any, elem: str | ElementFormat, *, saturate: bool = True) -> torch.Tensor:
    """``x`` rounded to the nearest value of ``elem`` (ties to even), as float32 values on the grid.

    Overflow, Inf and NaN follow the module rule: with ``saturate=True`` everything beyond ``±max_normal``
    (±Inf included) becomes ``±max_normal``; NaN stays NaN (for every format, as a float).

    >>> round_to_element(torch.tensor([0.25, 0.75, 2.5, 5.0, 7.0, -100.0]), "e2m1").tolist()
    [0.0, 1.0, 2.0, 4.0, 6.0, -6.0]
    """
    f = element_format(elem)
    code, nan = _encode(as_working_float(x, "x"), f, saturate)
    return _decode_table(f).to(torch.float32)[code.masked_fill_(nan, 0)].masked_fill_(nan, float("nan"))


def encode_element(x: Any, elem: str | ElementFormat, saturate: bool = True) -> torch.Tensor:
    """uint8 codes of ``x`` rounded to ``elem`` (RNE; overflow/Inf/NaN as in :func:`round_to_element`).

    The code sits in the low ``bits`` of each byte: ``sign << (bits-1) | E << man_bits | M``.

    >>> encode_element(torch.tensor([1.0, -6.0, 0.7]), "e2m1").tolist()
    [2, 15, 1]
    """
    f = element_format(elem)
    return encode_checked(as_working_float(x, "x"), f, saturate)


def encode_checked(x: torch.Tensor, f: ElementFormat, saturate: bool = True) -> torch.Tensor:
    """:func:`encode_element` for an already checked float32/float64 tensor (used by the block formats)."""
    code, nan = _encode(x, f, saturate)
    if not f.has_nan and bool(nan.any()):
        raise ValueError(f"x contains NaN and {f.name} has no NaN encoding")
    return code.to(torch.uint8)
