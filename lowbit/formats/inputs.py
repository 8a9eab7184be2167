"""Checking and converting the tensors handed to :mod:`lowbit.formats`.

Every public entry accepts a CPU ``torch.Tensor`` or a ``numpy.ndarray`` (including the ``ml_dtypes`` float
types, which convert exactly to float32) and works internally in float64, where every float16, bfloat16,
float32 and float64 input is exact, so the rounding done by the formats is the only rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_float64", "as_tensor", "as_working_float", "check_name", "pow2", "split_blocks"]


def as_tensor(x: Any, name: str) -> torch.Tensor:
    """``x`` as a CPU torch tensor (numpy arrays are converted); TypeError for anything else."""
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        if x.dtype.kind == "V" and x.dtype.name.startswith(("float", "bfloat")):
            # ml_dtypes floats (bfloat16, float8_*, float6_*, float4_*) are numpy "V" kinds; float32 holds them exactly
            t = torch.from_numpy(np.ascontiguousarray(x.astype(np.float32)))
        elif x.dtype.kind in "biuf":
            t = torch.from_numpy(np.ascontiguousarray(x))
        else:
            raise TypeError(f"{name} has numpy dtype {x.dtype}, which is not a number type")
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}; lowbit.formats works on CPU tensors, pass {name}.cpu()")
    return t


def _checked_float(x: Any, name: str) -> torch.Tensor:
    t = as_tensor(x, name)
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype (float16/bfloat16/float32/float64), got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); there is nothing to quantize")
    return t.detach()


def as_float64(x: Any, name: str) -> torch.Tensor:
    """A non-empty floating-point tensor widened to float64 (exact for every float dtype up to float64)."""
    return _checked_float(x, name).to(torch.float64)


def as_working_float(x: Any, name: str) -> torch.Tensor:
    """A non-empty floating-point tensor in the narrowest exact working type: float32 for inputs of 32 bits or
    fewer (float32, bfloat16, float16, float8), float64 for float64. Either holds the input exactly."""
    t = _checked_float(x, name)
    return t.to(torch.float64 if t.dtype == torch.float64 else torch.float32)


def check_name(value: Any, allowed: Any, name: str) -> str:
    """``value`` if it is one of ``allowed``; else a ValueError naming the argument and the choices."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    return value


def pow2(e: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Exactly ``2.0**e`` for integer ``e``, built from the IEEE bit pattern: float64 for ``e`` in [-1022, 1023],
    float32 for ``e`` in [-126, 127] (the normal range of each type)."""
    if dtype == torch.float32:
        return ((e.to(torch.int32) + 127) << 23).view(torch.float32)
    return ((e.to(torch.int64) + 1023) << 52).view(torch.float64)


def split_blocks(
    xw: torch.Tensor, axis: Any, block: int, pad: bool, what: str
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Blocks of ``block`` elements along ``axis``: returns ``(xm, xb, axis)`` with ``xm`` = ``xw`` with ``axis``
    moved last (zero-padded to a multiple of ``block`` when ``pad``), ``xb`` = ``xm`` as ``[..., n/block, block]``
    and ``axis`` normalised to ``[0, dim)``. A size that is not a multiple of ``block`` without ``pad`` is a
    ``ValueError`` naming ``what`` (e.g. ``"block=32"``)."""
    if xw.dim() == 0:
        raise ValueError("x must have at least one dimension to block along")
    if isinstance(axis, bool) or not isinstance(axis, int) or not -xw.dim() <= axis < xw.dim():
        raise ValueError(f"axis must be an int in [{-xw.dim()}, {xw.dim() - 1}] for x of shape {tuple(xw.shape)}")
    axis %= xw.dim()
    n = xw.shape[axis]
    xm = xw.movedim(axis, -1)
    if n % block:
        if not pad:
            raise ValueError(
                f"x has size {n} along axis {axis}, not a multiple of {what}; "
                "pass pad=True to pad with zeros or choose another block/axis"
            )
        xm = torch.nn.functional.pad(xm, (0, block - n % block))
    return xm, xm.reshape(*xm.shape[:-1], -1, block), axis
