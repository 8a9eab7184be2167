"""Symmetric INT8 / INT4 quantization with per-tensor, per-channel, per-group and per-token scales.

For each scale group with largest magnitude ``amax`` and ``qmax = 2^(bits-1) - 1`` (127 or 7):

    scale = float32(amax / qmax)                       # rounded once to float32
    q     = clip(round_half_even(x / scale), -qmax, qmax)   # x / scale computed exactly-rounded in float64
    x̂     = float32(q · scale)

(``docs/methods/msd.md`` §3, on the Multi-Scale Dequant paper, arXiv:2605.13915: symmetric, -128 / -8 unused,
round half to even.) Layout of weights is
``[N, K]`` (``nn.Linear``), activations ``[M, K]``; K is the last axis:

==============  ===============================  ===================================================
granularity     one scale per                    ``scale`` shape
==============  ===============================  ===================================================
``"tensor"``    the whole tensor                 ``()``
``"channel"``   output row of a weight ``[N, K]``  ``[N, 1]`` (``[..., 1]`` for more leading dims)
``"token"``     row of an activation ``[M, K]``  ``[M, 1]`` (same maths as channel, other meaning)
``"group"``     ``group_size`` consecutive K     ``[..., K // group_size]``: broadcast with
                                                 ``scale.repeat_interleave(group_size, -1)``
==============  ===============================  ===================================================

Edge cases (documented choices):

* An all-zero group gets ``scale = 1.0`` (not 0), ``q = 0``: dequantizes to exact zeros and keeps every later
  division by the scale finite.
* If ``amax / qmax`` underflows to 0 in float32 (``amax`` below ~1.8e-43), the scale is the smallest positive
  float32 ``2^-149`` and ``q`` is clipped.
* NaN or ±Inf in ``x`` raise ValueError: integers cannot represent them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lowbit.formats.inputs import as_float64, check_name
from lowbit.formats.nibbles import pack_nibbles

__all__ = ["GRANULARITIES", "IntQuantized", "quantize_int"]

GRANULARITIES = ("tensor", "channel", "group", "token")
_SMALLEST_FLOAT32 = 2.0**-149


@dataclass(frozen=True)
class IntQuantized:
    """Symmetric integer quantization: ``x ≈ q · scale`` (scale broadcast per ``granularity``, see module doc).

    ``q`` is int8 with values in ``[-qmax, qmax]`` (INT4 values are kept unpacked here; :meth:`packed` packs them).
    ``group_size`` is the group length for ``"group"`` and None otherwise.
    """

    q: torch.Tensor
    scale: torch.Tensor
    bits: int
    granularity: str
    group_size: int | None

    @property
    def qmax(self) -> int:
        """Largest code magnitude, ``2^(bits-1) - 1``."""
        return (1 << (self.bits - 1)) - 1

    def expanded_scale(self) -> torch.Tensor:
        """The scale broadcastable against ``q`` (for ``"group"``, repeated ``group_size`` times along K)."""
        if self.granularity == "group":
            assert self.group_size is not None
            return self.scale.repeat_interleave(self.group_size, dim=-1)
        return self.scale

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``q · scale`` rounded once to ``dtype`` (the product is formed exactly in float64)."""
        return (self.q.to(torch.float64) * self.expanded_scale().to(torch.float64)).to(dtype)

    def packed(self) -> torch.Tensor:
        """INT4 codes two per byte along K (:func:`~lowbit.formats.nibbles.pack_nibbles`); ValueError for INT8.

        ``unpack_nibbles(r.packed(), signed=True)`` gives ``r.q`` back.
        """
        if self.bits != 4:
            raise ValueError(f"packed() is for 4-bit quantization, this one has bits={self.bits}")
        return pack_nibbles(self.q)


def _groups(x: torch.Tensor, granularity: str, group_size: int) -> torch.Tensor:
    """``x`` viewed so that the last axis is one scale group."""
    if granularity == "tensor":
        return x.reshape(1, -1)
    if granularity in ("channel", "token"):
        if x.dim() < 2:
            layout = "[N, K] weight" if granularity == "channel" else "[M, K] activation"
            raise ValueError(f"granularity={granularity!r} needs x with at least 2 dims ({layout}), got {x.dim()}")
        return x
    k = x.shape[-1]
    if k % group_size:
        raise ValueError(f"group_size={group_size} does not divide the last axis of x (size {k})")
    return x.reshape(*x.shape[:-1], k // group_size, group_size)


def quantize_int(x: Any, bits: int = 8, granularity: str = "tensor", group_size: int = 128) -> IntQuantized:
    """Symmetric round-half-to-even INT8/INT4 quantization of ``x`` (rules and shapes in the module docstring).

    >>> r = quantize_int(torch.tensor([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0]]), bits=4, granularity="channel")
    >>> r.q.tolist(), r.scale.flatten().tolist()
    ([[7, -3, 2], [0, 0, 0]], [0.1428571492433548, 1.0])
    """
    if bits not in (4, 8) or isinstance(bits, bool):
        raise ValueError(f"bits must be 8 or 4, got {bits!r}")
    check_name(granularity, GRANULARITIES, "granularity")
    if granularity == "group" and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1):
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    x64 = as_float64(x, "x")
    if not bool(torch.isfinite(x64).all()):
        raise ValueError("x contains NaN or Inf; integer formats cannot represent them")
    qmax = (1 << (bits - 1)) - 1
    g = _groups(x64, granularity, group_size)
    amax = g.abs().amax(dim=-1, keepdim=True)
    scale = (amax / qmax).to(torch.float32).to(torch.float64)
    scale = torch.where(amax == 0, 1.0, torch.where(scale == 0, _SMALLEST_FLOAT32, scale))
    q = torch.round(g / scale).clamp(-qmax, qmax).to(torch.int8).reshape(x64.shape)
    if granularity == "tensor":
        scale = scale.reshape(())
    elif granularity == "group":
        scale = scale.squeeze(-1)
    return IntQuantized(
        q=q,
        scale=scale.to(torch.float32),
        bits=bits,
        granularity=granularity,
        group_size=group_size if granularity == "group" else None,
    )
