"""MXFP4 × MXFP4 products by exact integer emulation on the CPU's INT8 GEMMs (``docs/methods/msd.md`` §5).

CPUs have no FP4 units. An MX element ``a`` (E2M1: ±{0, .5, 1, 1.5, 2, 3, 4, 6}) in a block with E8M0 scale
``2^e`` has the value ``c·2^(e-1)`` with the integer ``c = 2a ∈ [-12, 12]``. Products of two blocks then only
differ by the power of two ``2^(e_a + e_w - 2)``, which a plain GEMM cannot apply per block. [derived] Exact
"exponent banding" folds the block scales into INT8 integers instead:

    E    = max over the row's non-zero blocks of e,        d = E - e >= 0,       d = 4j + r,  r ∈ {0..3}
    c'   = c · 2^(3 - r)          ∈ [-96, 96]                (fits int8)
    value = c' · 2^(E - 4j - 4)                             (band j of the row, scale a power of two)

A row splits into ``B`` bands (``j`` values present), each a full-length INT8 row holding the band's blocks and
zeros elsewhere, with one power-of-two scale per row and band. Then

    y[m, n] = Σ_{ja, jw} 2^(E_a[m] - 4ja - 4) · 2^(E_w[n] - 4jw - 4) · (A'_ja[m] · W'_jw[n])

where every ``A'·W'`` is an exact INT8×INT8→INT32 dot product (``|·| <= 96·96·K < 2^31`` for K <= 233016). The
weight bands are stacked along N and prepacked once (their scales folded into the per-channel kernel scale);
the activation bands (of all passes) are stacked along M, so one INT8 GEMM computes everything. The cost grows
with ``B_a·B_w`` (data dependent: one band covers a 16× spread of block maxima in a row, typical weights need
1-2 bands). Memory: the checkpoint stores 4.25 bits/weight; the prepacked compute copy holds ``B_w`` bytes/weight.

:func:`pack_mxfp4_weight` prepacks the weight bands once; :func:`msd_mxfp4_linear` is the forward of an MXFP4
:class:`lowbit.msd.MSDLinear` (activation decomposed into MXFP4 components, banded, one INT8 GEMM).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from lowbit.msd.isa import FULL_QMAX, Int8Profile
from lowbit.msd.kernels import Int8Packed, encode_activations, gemm_with_profile, pack_int8_weight

__all__ = ["MX_BLOCK", "MX_MAX_K", "msd_mxfp4_linear", "mx_bands", "pack_mxfp4_weight"]

MX_BLOCK = 32
MX_MAX_K = (2**31 - 1) // (96 * 96)
_BAND_LEVELS = 4  # 12 · 2^3 = 96 <= 127


def mx_bands(
    values: torch.Tensor, scales: torch.Tensor, block: int, *, levels: int = _BAND_LEVELS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split MX rows into exact INT8 exponent bands (formulas in the module docstring).

    Args:
        values: ``[R, K]`` unscaled E2M1 element values (float32), K a multiple of ``block``.
        scales: ``[R, K/block]`` block scales, powers of two (NaN marks a non-finite block: its row is ignored
            here, zero integers, and the caller makes it NaN).
        block: the MX block size.
        levels: exponent steps per band (4: ``|c'| <= 12·2^3 = 96``; 3: ``<= 48``, for kernels that need 7-bit
            activations on CPUs without VNNI; more bands then).

    Returns:
        ``(ints, band_scale)``: int8 ``[B, R, K]`` and float64 ``[B, R]`` with
        ``values ⊙ expand(scales) = Σ_j band_scale[j] · ints[j]`` exactly for every finite row.
    """
    r, k = values.shape
    if k % block:
        raise ValueError(f"K={k} must be a multiple of block={block} (pad the weight)")
    nb = k // block
    c = (values.to(torch.float64) * 2).reshape(r, nb, block)
    if not bool((c == torch.round(c)).all()) or float(c.abs().max() if c.numel() else 0) > 12:
        raise ValueError("values are not E2M1 element values (2·value must be an integer in [-12, 12])")
    s = scales.to(torch.float64)
    usable = torch.isfinite(s) & (s > 0) & (c != 0).any(dim=-1)
    exponent = torch.frexp(torch.where(usable, s, 1.0)).exponent.to(torch.int64) - 1  # s = 2^exponent
    big = torch.iinfo(torch.int64).min
    top = torch.where(usable, exponent, big).amax(dim=1, keepdim=True)
    top = torch.where(top == big, 0, top)
    d = torch.where(usable, top - exponent, 0)
    if levels not in (1, 2, 3, 4):
        raise ValueError(f"levels must be in 1..4 (12·2^(levels-1) <= 96 fits int8), got {levels}")
    band = d // levels
    mult = torch.pow(2.0, (levels - 1 - d % levels).to(torch.float64))
    present = torch.unique(band[usable]).tolist() if bool(usable.any()) else [0]
    ints = torch.empty(len(present), r, k, dtype=torch.int8)
    band_scale = torch.empty(len(present), r, dtype=torch.float64)
    scaled = (c * mult.unsqueeze(-1)).to(torch.int8)  # |c·2^(levels-1-r)| <= 12·2^(levels-1)
    for i, j in enumerate(present):
        keep = (usable & (band == j)).unsqueeze(-1)
        ints[i] = torch.where(keep, scaled, 0).reshape(r, k)
        band_scale[i] = torch.pow(2.0, (top[:, 0] - levels * j - levels).to(torch.float64))
    return ints, band_scale


def pad_k(t: torch.Tensor, block: int = MX_BLOCK) -> torch.Tensor:
    """Zero-pad the last axis to a multiple of ``block``."""
    pad = -t.shape[-1] % block
    return nn.functional.pad(t, (0, pad)) if pad else t


def pack_mxfp4_weight(mx: Any, kernels: Iterable[str]) -> dict[str, tuple[Int8Packed, int]]:
    """Prepack an MXFP4 weight (``formats.MXTensor`` ``[N, K]``, blocks of 32 along K) for each INT8 backend.

    The weight is split into ``B_w`` exponent bands (:func:`mx_bands`), stacked along N (``[B_w·N, Kp]``) with
    the band scales folded into the per-row kernel scale. Returns ``{kernel: (packed, B_w)}``.

    Raises:
        ValueError: NaN block scales (E8M0 code 0xFF), or band scales outside float32's range (the kernel scale
            would not be exact).
    """
    values = pad_k(mx.element_values().to(torch.float32))
    scales = mx.scales().to(torch.float64)
    if not bool(torch.isfinite(scales).all()):
        raise ValueError("the MXFP4 weight has NaN block scales (0xFF); it cannot be multiplied")
    ints, band_scale = mx_bands(values, scales, MX_BLOCK)
    flat_scale = band_scale.reshape(-1)
    if bool(((flat_scale < 2.0**-149) | (flat_scale > 2.0**127)).any()):
        raise ValueError("MXFP4 weight band scales leave the float32 range; the kernel scale would not be exact")
    packed = {}
    for kernel in kernels:
        packed[kernel] = (
            pack_int8_weight(ints.reshape(-1, ints.shape[-1]), flat_scale.to(torch.float32), kernel),
            ints.shape[0],
        )
    return packed


def msd_mxfp4_linear(
    x32: torch.Tensor,
    packed: Int8Packed,
    weight_bands: int,
    n: int,
    passes: int,
    *,
    profile: Int8Profile,
    scale_rule: str = "ceil",
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSD MXFP4 linear ``y = x · Wᵀ + bias`` for float32 ``x32 [M, K]`` and a weight from
    :func:`pack_mxfp4_weight` (``packed`` with ``weight_bands`` bands, ``n`` output features).

    The activation is decomposed into ``passes`` MXFP4 components (:func:`lowbit.msd.decompose`, 32-blocks,
    ``scale_rule``), banded within the profile's range (``|c'| <= 96``, 4 levels, for 8-bit components;
    ``<= 48``, 3 levels, for 7-bit ones), stacked along M and multiplied in one INT8 GEMM; the band products are
    summed and scaled by powers of two (float32, exact in range; float64 otherwise). Rows whose activation holds
    NaN/Inf give NaN rows; an empty batch gives ``[0, n]``.
    """
    from lowbit.msd.decompose import decompose

    m = x32.shape[0]
    if m == 0:  # an MoE expert that received no tokens
        y0 = torch.zeros(0, n, dtype=torch.float32)
        return y0 if bias is None else y0 + bias
    d = decompose(x32, "mxfp4", passes=passes, group=MX_BLOCK, scale_rule=scale_rule)
    values = pad_k(torch.cat(d.components, dim=0))
    scales = torch.cat(d.scales, dim=0)
    # activation bands within the profile's range: |c'| <= 96 (4 levels) for 8-bit, <= 48 (3 levels) for 7-bit
    levels = 4 if profile.qmax == FULL_QMAX else 3
    ints, a_scale = mx_bands(values, scales, MX_BLOCK, levels=levels)  # [Ba, p·M, Kp], [Ba, p·M]
    ba = ints.shape[0]
    a = encode_activations(ints.reshape(-1, ints.shape[-1]).to(torch.float32), profile)
    out = gemm_with_profile(a, packed, profile)  # [Ba·p·M, Bw·N]
    out = out.reshape(ba * passes, m, weight_bands, n).sum(dim=2)
    a_scale = a_scale.reshape(ba * passes, m, 1)
    in_range = bool(((a_scale == 0) | ((a_scale >= 2.0**-126) & (a_scale <= 2.0**127))).all())
    acc = torch.float32 if in_range else torch.float64  # float32 scaling by a power of two is exact in range
    y = (out.to(acc) * a_scale.to(acc)).sum(dim=0).to(torch.float32)
    bad = ~torch.isfinite(torch.stack(d.scales)).all(dim=0).all(dim=-1)
    if bool(bad.any()):
        y[bad] = float("nan")
    if bias is not None:
        y = y + bias
    return y
