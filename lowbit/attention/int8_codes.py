"""INT8 codes for the transformers KV cache and the MSD attention: per-token quantization and the row splitting.

* :func:`quantize_rows`: symmetric INT8 with one float32 scale per row of the last axis (one K or V token per
  row, or one key *channel* of a token block when the block is transposed): ``s = max|x| / 127``,
  ``q = clip(RNE(x / s), -127, 127)``; the reconstruction error per element is at most ``s / 2``. An all-zero
  row gets ``s = 0`` and zero codes; a row holding NaN or ±Inf gets ``s = NaN`` and zero codes, so every product
  that reads it is NaN (the NaN policy of :mod:`lowbit.attention.hf_attention`).
* :func:`split_rows`: the MSD decomposition of a float operand (docs/methods/msd.md §3), per row,
  ``x ≈ Σ_i s_i·q_i`` with ``s_1 = M/127``, ``s_{i+1} = s_i/254``, ``|x - Σ s_i q_i| <= M/(2·127·254^(p-1))``
  (``M`` the row's ``max|x|``, or a fixed ``amax``). The components are returned stacked along the row axis
  (``[..., p·R, K]``) so that one integer GEMM multiplies every pass with the cache codes, which are read once.

>>> x = torch.tensor([[0.5, -1.0, 0.25]])
>>> codes, scale = quantize_rows(x)
>>> codes.tolist(), round(scale.item() * 127, 6)
([[64, -127, 32]], 1.0)
>>> comps, scales = split_rows(x, passes=2)
>>> comps.shape, scales.shape
(torch.Size([2, 3]), torch.Size([2, 1]))
>>> recon = (comps.float() * scales).reshape(2, 1, 3).sum(0)
>>> bool(((recon - x).abs() <= 1.0 / 64516).all())
True
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["QMAX", "quantize_rows", "split_rows"]

QMAX = 127
_STEP = 2 * QMAX  # ratio of consecutive component scales (msd.md §3)


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """INT8 codes ``[..., K]`` and float32 scales ``[...]`` with ``x ≈ codes · scale[..., None]`` (per row)."""
    xf = x.to(torch.float32)
    amax = xf.abs().amax(dim=-1)
    finite = torch.isfinite(amax)
    scale = amax / QMAX
    safe = torch.where(finite & (scale > 0), scale, torch.ones_like(scale))
    codes = torch.round(xf / safe.unsqueeze(-1)).clamp_(-QMAX, QMAX)
    codes = torch.where(finite.unsqueeze(-1), codes, torch.zeros_like(codes)).to(torch.int8)
    scale = torch.where(finite, scale, torch.full_like(scale, float("nan")))
    return codes, scale


def split_rows(x: Tensor, passes: int = 2, amax: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """MSD components of float ``x [..., R, K]``, stacked by pass: int8 ``[..., passes·R, K]`` and float32 scales
    ``[..., passes·R, 1]`` (rows ``i·R .. (i+1)·R`` hold pass ``i``). ``amax`` (``[..., R]``) fixes ``M`` per row
    instead of measuring it (e.g. 1 for probabilities, msd.md §9); values beyond it are clipped.

    Rows with ``M = 0`` get zero components and scale 0; a row whose ``M`` is NaN gets NaN scales.
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    xf = x.to(torch.float32)
    m = xf.abs().amax(dim=-1, keepdim=True) if amax is None else amax.to(torch.float32).unsqueeze(-1)
    scale = m / QMAX
    residual = xf
    comps, scales = [], []
    for i in range(passes):
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # NaN and 0 -> 1 (codes then do not matter)
        q = torch.round(residual / safe).clamp_(-QMAX, QMAX)
        q = torch.nan_to_num_(q, nan=0.0)
        comps.append(q.to(torch.int8))
        scales.append(scale)
        if i + 1 < passes:
            residual = residual - q * scale
            scale = scale / _STEP
    return torch.cat(comps, dim=-2), torch.cat(scales, dim=-2)
