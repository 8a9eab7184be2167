"""AMLA: FlashAttention's output rescale as an integer add on the float32 bit pattern.

The identity (docs/methods/amla.md §2; "AMLA: MUL by ADD in FlashAttention Rescaling", arXiv:2509.25224) for a
normal float32 ``F`` (biased exponent ``1 <= E <= 254``) and an integer ``n`` with ``1 <= E + n <= 254``::

    F · 2^n = AS_FP32(AS_INT32(F) + (n << 23))

Adding ``n << 23`` adds ``n`` to the exponent field and leaves sign and mantissa alone, so the result is
bit-identical to the multiplication. Outside that range the add is wrong and must be guarded:

* zero (``E = 0``, mantissa 0): the add would produce ``-inf`` or huge values -> zeros are skipped;
* underflow (``E + n <= 0``) and subnormal inputs: the correct product is subnormal or zero -> either an
  error or a flush to signed zero (absolute error below ``2^-126``, like a flush-to-zero unit);
* overflow (``E + n >= 255``) and NaN/Inf inputs: an error.

:class:`AmlaConfig` describes the two attention variants of amla.md §3-§4: the exact one (float32
residual factor ``c``, no compensation) and the Ascend kernel's (bf16 ``ĉ``, compensation
``ε = 1.5·(cof_{i-1}/cof_i - 1) + 1e-6``, the ``Δn >= -30`` clamp).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

_MAG_MASK = 0x7FFFFFFF
_SIGN_MASK = -0x80000000
_MIN_NORMAL_BITS = 0x00800000  # smallest normal magnitude, exponent field 1
_INF_BITS = 0x7F800000  # exponent field 255
MANTISSA_BITS = 23


@dataclass(frozen=True)
class AmlaConfig:
    """One AMLA variant (amla.md §3 kernel, §4 exact).

    Attributes:
        bf16_factor: round the residual factor ``c_i = e^{m_i}·2^{n_i}`` to bf16 (``ĉ_i``) as the kernel does.
        compensate: add the kernel's compensation ``ε_i = 1.5·(cof_{i-1}/cof_i - 1) + bias`` to each shift,
            where ``cof_i = c_i / ĉ_i``; only meaningful with ``bf16_factor``.
        bias: the kernel's constant ``+1e-6`` inside ``ε`` (no stated reason in the kernel; amla.md §3 step 6).
        clamp: lower clamp on the per-block shift ``Δn`` (the kernel uses -30); ``None`` = exact shifts.
        zero_guard: ``"skip"`` leaves zero entries alone (exact); ``"repair"`` adds to every entry and zeroes
            ``|O| > 1e10`` at the end, as the kernel does (wrong for entries that are zero when a shift
            happens and receive mass later).
        p_dtype: dtype of ``P̃`` fed to the ``P̃·V`` product (bf16 in the kernel).
    """

    bf16_factor: bool = False
    compensate: bool = False
    bias: float = 0.0
    clamp: int | None = None
    zero_guard: Literal["skip", "repair"] = "skip"
    p_dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if self.compensate and not self.bf16_factor:
            raise ValueError("compensate=True needs bf16_factor=True (cof = c/ĉ is 1 otherwise)")
        if self.clamp is not None and not (-126 <= self.clamp < 0):
            raise ValueError(f"clamp must be None or an integer in [-126, -1], got {self.clamp}")
        if self.zero_guard not in ("skip", "repair"):
            raise ValueError(f"zero_guard must be 'skip' or 'repair', got {self.zero_guard!r}")
        if self.p_dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"p_dtype must be float32, bfloat16 or float16, got {self.p_dtype}")


AMLA_EXACT = AmlaConfig()
"""amla.md §4: float32 ``c``, float32 ``P̃``, exact shifts; agrees with the multiply rescale to FP32 rounding."""

AMLA_KERNEL = AmlaConfig(bf16_factor=True, compensate=True, bias=1e-6, clamp=-30, p_dtype=torch.bfloat16)
"""amla.md §3: the CANN kernel's numerics (bf16 ``ĉ`` and ``P̃``, compensation, +1e-6, Δn >= -30), zeros skipped."""

AMLA_KERNEL_NO_COMPENSATION = AmlaConfig(bf16_factor=True, clamp=-30, p_dtype=torch.bfloat16)
"""The kernel's bf16 path without ``ε``: shows what the compensation buys (amla.md §6)."""


def mul_pow2_via_int_add(x: Tensor, n: int | Tensor, *, underflow: Literal["raise", "flush"] = "raise") -> Tensor:
    """``x · 2^n`` computed as an int32 add of ``n << 23`` on the float32 bit pattern (amla.md §2).

    Zeros are returned unchanged. Where the product is a normal float32 the result is bit-identical to
    ``x * 2.0**n``. Subnormal inputs and products that would be subnormal or zero raise ``ValueError``
    (``underflow="raise"``) or become signed zero (``underflow="flush"``). NaN/Inf inputs and overflow
    (``E + n >= 255``) raise ``ValueError``.

    >>> mul_pow2_via_int_add(torch.tensor([3.0, -0.75, 0.0]), -2).tolist()
    [0.75, -0.1875, 0.0]
    """
    if not isinstance(x, Tensor) or x.dtype != torch.float32:
        raise TypeError("x must be a float32 torch.Tensor")
    if underflow not in ("raise", "flush"):
        raise ValueError(f"underflow must be 'raise' or 'flush', got {underflow!r}")
    shift = torch.as_tensor(n)
    if shift.is_floating_point() or shift.dtype == torch.bool:
        raise TypeError(f"n must be an integer or an integer tensor, got {shift.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or Inf: the exponent-field add is undefined for them")
    bits = x.contiguous().view(torch.int32)
    mag = (bits & _MAG_MASK).to(torch.int64)
    new = mag + (shift.to(torch.int64) << MANTISSA_BITS)
    nonzero = mag != 0
    if bool((nonzero & (new >= _INF_BITS)).any()):
        raise ValueError("n overflows the float32 exponent (E + n >= 255) for some element of x")
    bad = nonzero & ((mag < _MIN_NORMAL_BITS) | (new < _MIN_NORMAL_BITS))
    if underflow == "raise" and bool(bad.any()):
        raise ValueError(
            "x·2^n underflows (subnormal input or E + n <= 0) for some element; "
            "pass underflow='flush' to flush those elements to signed zero"
        )
    out = _add_exponent(bits, new, mag, bad)
    return out.view(torch.float32)


def _add_exponent(bits: Tensor, new_mag: Tensor, mag: Tensor, flush: Tensor) -> Tensor:
    """Bits of the result: sign | new magnitude; zeros kept; ``flush`` lanes become signed zero."""
    sign = bits & _SIGN_MASK
    shifted = sign | new_mag.clamp(min=0, max=_MAG_MASK).to(torch.int32)
    out = torch.where(mag == 0, bits, shifted)
    return torch.where(flush, sign, out)


def rescale_by_int_add(o: Tensor, shift_units: Tensor, *, zero_guard: Literal["skip", "repair"] = "skip") -> Tensor:
    """Add ``shift_units`` (int32, units of ``2^-23`` in the exponent, one per row) to float32 ``o`` rows.

    This is the kernel's ``AtomicAdd<int32>`` of amla.md §3 step 5: ``shift_units = round((Δn + ε)·2^23)``.
    With an integer ``Δn`` and ``ε = 0`` it is the exact ``o · 2^Δn``. ``zero_guard="skip"`` leaves zeros
    alone and flushes lanes whose exponent would leave the normal range to signed zero (the product is
    below ``2^-126`` in magnitude); ``"repair"`` adds blindly to every lane, as the kernel does, and
    relies on a final ``|O| > 1e10 -> 0`` pass (:func:`repair_zeros`).
    """
    bits = o.contiguous().view(torch.int32)
    add = shift_units.to(torch.int32).unsqueeze(-1)
    if zero_guard == "repair":
        return (bits + add).view(torch.float32)
    mag = (bits & _MAG_MASK).to(torch.int64)
    new = mag + add.to(torch.int64)
    flush = (mag != 0) & ((mag < _MIN_NORMAL_BITS) | (new < _MIN_NORMAL_BITS))
    overflow = (mag < _INF_BITS) & (new >= _INF_BITS)
    if bool(overflow.any()):
        raise ValueError("rescale shift overflows the float32 exponent (the running max must not decrease)")
    return _add_exponent(bits, new, mag, flush).view(torch.float32)


def repair_zeros(o: Tensor, threshold: float = 1e10) -> Tensor:
    """The kernel's final repair (amla.md §3 step 7): entries with ``|O| > threshold`` were zeros the add broke."""
    return torch.where(o.abs() > threshold, torch.zeros_like(o), o)
