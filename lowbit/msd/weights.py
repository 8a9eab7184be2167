"""A uniform read-only view of a quantized weight ``[N, K]`` (nn.Linear layout) from :mod:`lowbit.formats`.

MSD multiplies the weight as stored: integer codes with per-tensor / per-channel / per-group scales
(``formats.quantize_int``) or MX element values with E8M0 block scales along K (``formats.quantize_mx``). This
module reads both into :class:`WeightView` so that the GEMM code needs no knowledge of the container classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from lowbit import formats

__all__ = ["WeightView", "weight_view"]


@dataclass(frozen=True, eq=False)
class WeightView:
    """Quantized weight ``W[n, k] = scales[n, k // group_size] · values[n, k]``.

    Attributes:
        kind: ``"int"`` (integer codes) or ``"mx"`` (MX element values).
        values: ``[N, K]``; ``torch.int8`` codes for ``"int"``, float32 unscaled element values for ``"mx"``.
        scales: ``[N, G]`` float64 scales, ``G = ceil(K / group_size)``.
        group_size: K-elements that share one scale (K for per-channel and per-tensor scales).
        elem: ``"int8"``/``"int4"`` or the MX element name (``"e2m1"``, ``"e4m3"``, ``"e5m2"``).
    """

    kind: str
    values: torch.Tensor
    scales: torch.Tensor
    group_size: int
    elem: str

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, K)``."""
        return (int(self.values.shape[0]), int(self.values.shape[1]))

    def expanded_scales(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The scale of every weight element, ``[N, K]``."""
        return self.scales.to(dtype).repeat_interleave(self.group_size, dim=1)[:, : self.shape[1]]

    def dequantize(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``scales ⊙ values`` in ``dtype`` (exact in float64 for both kinds)."""
        return self.expanded_scales(dtype) * self.values.to(dtype)


def _as_2d_scales(scale: torch.Tensor, n: int, k: int) -> tuple[torch.Tensor, int]:
    s = scale.detach().to(torch.float64)
    if s.numel() == 1:
        return s.reshape(1, 1).expand(n, 1).contiguous(), k
    if s.dim() == 1 and s.shape[0] == n:
        return s.reshape(n, 1), k
    if s.dim() == 2 and s.shape[0] == n:
        g = s.shape[1]
        group_size = k if g == 1 else math.ceil(k / g)
        if math.ceil(k / group_size) != g:
            raise ValueError(f"w_q.scale has {g} groups, which no group size along K={k} produces")
        return s, group_size
    raise ValueError(
        f"w_q.scale must be a scalar, [N], [N, 1] or [N, G] tensor for a [{n}, {k}] weight, got shape {tuple(s.shape)}"
    )


def weight_view(w_q: Any) -> WeightView:
    """Read a quantized weight from :mod:`lowbit.formats` (``IntQuantized`` or ``MXTensor``) or a WeightView.

    Raises:
        TypeError: ``w_q`` is none of these, or its codes have the wrong dtype.
        ValueError: the weight is not 2-D ``[N, K]``, or its scales / blocks do not fit that layout.
    """
    if isinstance(w_q, WeightView):
        return w_q
    if isinstance(w_q, formats.IntQuantized):
        q = w_q.q
        if q.dtype != torch.int8:
            raise TypeError(f"w_q.q must be torch.int8, got {q.dtype}")
        if q.dim() != 2:
            raise ValueError(f"w_q must be a 2-D [N, K] weight, got shape {tuple(q.shape)}")
        n, k = q.shape
        if w_q.granularity == "group":
            group_size = int(w_q.group_size)
            scales = w_q.scale.detach().to(torch.float64).reshape(n, -1)
            if scales.shape[1] != math.ceil(k / group_size):
                raise ValueError(f"w_q has {scales.shape[1]} scale groups per row for K={k}, group_size={group_size}")
        else:
            scales, group_size = _as_2d_scales(w_q.scale, n, k)
        bits = int(getattr(w_q, "bits", 8))
        return WeightView("int", q, scales, group_size, f"int{bits}")
    if isinstance(w_q, formats.MXTensor):
        values = w_q.element_values().to(torch.float32)
        if values.dim() != 2:
            raise ValueError(f"w_q must be a 2-D [N, K] weight, got shape {tuple(values.shape)}")
        axis = getattr(w_q, "axis", -1)
        if axis not in (-1, 1):
            raise ValueError(f"MX weight blocks must run along K (axis=-1), got axis={axis}")
        n, k = values.shape
        block = int(w_q.block)
        scales = w_q.scales().to(torch.float64).reshape(n, -1)
        if scales.shape[1] != math.ceil(k / block):
            raise ValueError(f"MX weight has {scales.shape[1]} blocks per row for K={k} and block={block}")
        return WeightView("mx", values, scales, block, str(w_q.elem))
    raise TypeError(
        f"w_q must be a lowbit.formats IntQuantized or MXTensor (or a WeightView), got {type(w_q).__name__}"
    )
