"""Round-trip errors of every scheme lowbit implements (MX, INT, FP8, NVFP4) on the same data.

Round-trip error of a scheme on data ``x``: ``e = dequantize(quantize(x)) - x``, reported as the relative RMS
``‖e‖₂ / ‖x‖₂`` and as bits ``-log2(‖e‖₂ / ‖x‖₂)`` (the definition that gives MXFP8's 5.24 bits,
``docs/methods/msd.md`` §6-§7), plus the worst element error relative to its scale group's ``amax``.

>>> import torch
>>> x = torch.randn(8, 256, generator=torch.Generator().manual_seed(0))
>>> rows = {r.scheme: r for r in roundtrip_errors(x)}
>>> rows["mxfp8_e4m3 (ceil)"].bits > rows["mxfp4_e2m1 (ceil)"].bits > 2
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lowbit.formats import (
    ELEMENT_FORMATS,
    MX_FORMATS,
    SCALE_RULES,
    fp8_cast,
    quantize_int,
    quantize_mx,
    quantize_nvfp4,
)

__all__ = ["RoundTrip", "roundtrip_errors", "roundtrip_schemes"]


@dataclass(frozen=True)
class RoundTrip:
    """Round-trip error of one scheme: relative RMS, bits = -log2(relative RMS), worst error / group amax."""

    scheme: str
    family: str
    bits_per_element: float
    rel_rms: float
    bits: float
    worst_rel_amax: float


def _rows_amax(x: torch.Tensor, group: int) -> torch.Tensor:
    return x.reshape(*x.shape[:-1], -1, group).abs().amax(-1, keepdim=True).expand(-1, -1, group).reshape(x.shape)


def roundtrip_schemes(block: int = 32, group_size: int = 128) -> dict[str, tuple[str, float, Callable]]:
    """Scheme name -> (family, bits per element, function ``x -> (x̂, per-element group amax)``) for [M, K] data."""
    schemes: dict[str, tuple[str, float, Callable]] = {}
    for name, elem in MX_FORMATS.items():
        for rule in SCALE_RULES:
            bpe = ELEMENT_FORMATS[elem].bits + 8 / block

            def mx(x: torch.Tensor, elem: str = elem, rule: str = rule) -> tuple[torch.Tensor, torch.Tensor]:
                return quantize_mx(x, elem, block=block, scale_rule=rule).dequantize(), _rows_amax(x, block)

            schemes[f"{name} ({rule})"] = ("MX", bpe, mx)
    for bits in (8, 4):
        for gran in ("tensor", "channel", "group"):
            extra = {"tensor": 0.0, "channel": 0.0, "group": 32 / group_size}[gran]
            label = f"int{bits} per-{gran}" + (f" {group_size}" if gran == "group" else "")

            def integer(x: torch.Tensor, bits: int = bits, gran: str = gran) -> tuple[torch.Tensor, torch.Tensor]:
                amax = {"tensor": x.abs().amax().expand(x.shape), "channel": _rows_amax(x, x.shape[-1])}
                group = amax[gran] if gran in amax else _rows_amax(x, group_size)
                return quantize_int(x, bits=bits, granularity=gran, group_size=group_size).dequantize(), group

            schemes[label] = ("INT", bits + extra, integer)
    for elem in ("e4m3", "e5m2"):

        def fp8(x: torch.Tensor, elem: str = elem) -> tuple[torch.Tensor, torch.Tensor]:
            return fp8_cast(x, elem).float(), x.abs().amax().expand(x.shape)

        schemes[f"fp8_{elem} (no scale)"] = ("FP8", 8.0, fp8)
    for glob in (True, False):

        def nv(x: torch.Tensor, glob: bool = glob) -> tuple[torch.Tensor, torch.Tensor]:
            return quantize_nvfp4(x, global_scale=glob).dequantize(), _rows_amax(x, 16)

        schemes["nvfp4" + (" (+fp32 tensor scale)" if glob else " (block scale only)")] = ("NVFP4", 4.5, nv)
    return schemes


def roundtrip_errors(x: torch.Tensor, block: int = 32, group_size: int = 128) -> list[RoundTrip]:
    """Round-trip error of every scheme of :func:`roundtrip_schemes` on ``x`` ([M, K], K a multiple of 128)."""
    x = x.to(torch.float32)
    norm = float(x.double().norm())
    rows = []
    for name, (family, bpe, fn) in roundtrip_schemes(block, group_size).items():
        xhat, amax = fn(x)
        err = (xhat.double() - x.double()).abs()
        rel = float(err.norm()) / norm
        worst = float((err / amax.double().clamp_min(1e-300)).max())
        rows.append(RoundTrip(name, family, bpe, rel, -math.log2(rel) if rel > 0 else math.inf, worst))
    return rows
