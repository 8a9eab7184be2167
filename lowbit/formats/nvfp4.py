"""NVFP4: E2M1 elements in blocks of 16, an E4M3 scale per block, an optional float32 scale per tensor.

The format NVIDIA Blackwell GEMMs consume (NVIDIA's NVFP4 description; same layout in TensorRT Model Optimizer
and torchao). For a block with largest magnitude ``amax_b`` and a tensor with largest finite magnitude ``amax``:

    s_global = float32(amax / (448 · 6))            # second level; 1.0 if amax == 0; omitted -> s_global = 1
    s_block  = e4m3_RNE_saturating(amax_b / (6 · s_global))
    P_i      = e2m1_RNE_saturating(x_i / (s_block · s_global))
    x̂_i      = P_i · s_block · s_global

Quotients and products are formed exactly (float64) and rounded once, to E4M3, to E2M1, or (dequantize) to the
output dtype; kernels that compute ``x / (s_block · s_global)`` in float32 can differ at rare ties. Unlike
E8M0, an E4M3 scale is not a power of two, so ``s_block`` can round **below** ``amax_b / 6`` and the block
maximum may saturate to 6 (by at most 1/16 relative: E4M3 has 3 mantissa bits).

Special blocks (documented choice): NaN or ±Inf in a block -> its scale code is the E4M3 NaN ``0x7F``, element
codes 0, and the block dequantizes to NaN; such blocks are left out of ``amax``. A block whose scale rounds to
zero (all-zero, or tiny next to ``amax`` without a global scale) -> element codes 0, dequantizes to zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lowbit.formats.elements import ELEMENT_FORMATS, decode_element, encode_checked
from lowbit.formats.inputs import as_float64, split_blocks
from lowbit.formats.nibbles import pack_nibbles, unpack_nibbles

__all__ = ["NVFP4_BLOCK", "NVFP4Tensor", "quantize_nvfp4"]

NVFP4_BLOCK = 16
_E2M1 = ELEMENT_FORMATS["e2m1"]
_E4M3 = ELEMENT_FORMATS["e4m3"]


@dataclass(frozen=True)
class NVFP4Tensor:
    """NVFP4 data: ``codes`` (uint8, two E2M1 codes per byte along ``axis``, low nibble first, axis padded to a
    multiple of 16), ``block_scales`` (uint8 E4M3 codes, the input shape with ``axis`` replaced by the number of
    blocks), ``global_scale`` (float32 scalar tensor, or None), ``axis`` (non-negative) and the input ``shape``.
    """

    codes: torch.Tensor
    block_scales: torch.Tensor
    global_scale: torch.Tensor | None
    axis: int
    shape: tuple[int, ...]

    block: int = NVFP4_BLOCK

    @property
    def bits_per_element(self) -> float:
        """4 + 8/16 = 4.5 bits (plus 32 bits per tensor for the global scale)."""
        return 4 + 8 / self.block

    def element_values(self) -> torch.Tensor:
        """E2M1 values before scaling (float32, shape ``shape``)."""
        codes = unpack_nibbles(self.codes.movedim(self.axis, -1)).movedim(-1, self.axis)
        return decode_element(codes, _E2M1).narrow(self.axis, 0, self.shape[self.axis])

    def scales(self) -> torch.Tensor:
        """Total per-block scales ``s_block · s_global`` (float64, exact; NaN for NaN blocks), block-scale shape."""
        s = decode_element(self.block_scales, _E4M3).to(torch.float64)
        return s if self.global_scale is None else s * self.global_scale.to(torch.float64)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``P_i · s_block · s_global`` formed exactly and rounded once to ``dtype``."""
        scale = self.scales().repeat_interleave(self.block, dim=self.axis).narrow(self.axis, 0, self.shape[self.axis])
        return (self.element_values().to(torch.float64) * scale).to(dtype)


def quantize_nvfp4(x: Any, axis: int = -1, *, global_scale: bool = True, pad: bool = False) -> NVFP4Tensor:
    """Quantize ``x`` to NVFP4 with blocks of 16 along ``axis`` (rules in the module docstring).

    >>> q = quantize_nvfp4(torch.tensor([6.0, 3.0, -1.0, 0.5] * 4), global_scale=False)
    >>> q.block_scales.tolist(), q.dequantize()[:4].tolist()
    ([56], [6.0, 3.0, -1.0, 0.5])
    """
    xw = as_float64(x, "x")
    xm, xb, axis = split_blocks(xw, axis, NVFP4_BLOCK, pad, "the NVFP4 block 16")
    finite = torch.isfinite(xb).all(dim=-1, keepdim=True)
    xb = xb.masked_fill(~finite, 0.0)
    amax_b = xb.abs().amax(dim=-1, keepdim=True)

    g = None
    s_global = torch.tensor(1.0, dtype=torch.float64)
    if global_scale:
        amax = amax_b.max()
        g = torch.where(amax > 0, amax / (_E4M3.max_normal * _E2M1.max_normal), 1.0).to(torch.float32)
        g = torch.where(g > 0, g, 2.0**-149)  # an amax below ~4e-42 would round the global scale to 0
        s_global = g.to(torch.float64)
    scale_codes = encode_checked(amax_b / (_E2M1.max_normal * s_global), _E4M3, saturate=True)
    s_block = decode_element(scale_codes, _E4M3).to(torch.float64)
    total = s_block * s_global
    zero = total == 0
    codes = encode_checked(xb / total.masked_fill(zero, 1.0), _E2M1, saturate=True)
    codes = codes.masked_fill_(zero | ~finite, 0).reshape(xm.shape)
    scale_codes = scale_codes.masked_fill_(~finite, _E4M3.nan_code).squeeze(-1)
    return NVFP4Tensor(
        codes=pack_nibbles(codes).movedim(-1, axis).contiguous(),
        block_scales=scale_codes.movedim(-1, axis).contiguous(),
        global_scale=g,
        axis=axis,
        shape=tuple(xw.shape),
    )
