"""The formats at a glance: a properties table and round-trip errors, shared by ``lowbit formats`` and the report.

Round-trip error of a scheme on data ``x``: ``e = dequantize(quantize(x)) - x``, reported as the relative RMS
``‖e‖₂ / ‖x‖₂`` and as bits ``-log2(‖e‖₂ / ‖x‖₂)`` (the definition that gives MXFP8's 5.24 bits,
``../shared/papers/msd.md`` §6-§7), plus the worst element error relative to its scale group's ``amax``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lowbit.formats.constants import SCALE_RULES
from lowbit.formats.elements import ELEMENT_FORMATS, element_values
from lowbit.formats.fp8 import fp8_cast
from lowbit.formats.integer import quantize_int
from lowbit.formats.mx import MX_FORMATS, quantize_mx
from lowbit.formats.nvfp4 import quantize_nvfp4

__all__ = [
    "FORMAT_HEADER",
    "FormatInfo",
    "RoundTrip",
    "code_listing",
    "format_table",
    "roundtrip_errors",
    "roundtrip_schemes",
]


@dataclass(frozen=True)
class FormatInfo:
    """One row of the formats table. ``bits_per_element`` includes the amortised scale storage."""

    name: str
    element: str
    bits: int
    emax: int | None
    max_normal: float
    min_normal: float
    min_subnormal: float
    specials: str
    scale: str
    bits_per_element: float

    def cells(self) -> list[object]:
        """The row as table cells, in the order of :data:`FORMAT_HEADER`."""
        emax = "-" if self.emax is None else self.emax
        ranges = [self.max_normal, self.min_normal, self.min_subnormal]
        return [self.name, self.element, self.bits, emax, *ranges, self.specials, self.scale, self.bits_per_element]


FORMAT_HEADER = [
    "format",
    "element",
    "bits",
    "emax",
    "max normal",
    "min normal",
    "min subnormal",
    "Inf/NaN",
    "scale",
    "bits/elem",
]


def _specials(elem: str) -> str:
    f = ELEMENT_FORMATS[elem]
    return {(True, True): "Inf, NaN", (False, True): "NaN", (False, False): "none"}[(f.has_inf, f.has_nan)]


def format_table(block: int = 32, group_size: int = 128) -> list[FormatInfo]:
    """Every format lowbit implements, with ranges and storage cost (MX blocks of ``block``, INT groups)."""
    rows = [
        FormatInfo("int8", "int8", 8, None, 127.0, 1.0, 1.0, "none", f"fp32 per {group_size}", 8 + 32 / group_size),
        FormatInfo("int4", "int4", 4, None, 7.0, 1.0, 1.0, "none", f"fp32 per {group_size}", 4 + 32 / group_size),
    ]
    for elem in ("e4m3", "e5m2"):
        f = ELEMENT_FORMATS[elem]
        rows.append(
            FormatInfo(
                f"fp8_{elem}", elem, 8, f.emax, f.max_normal, f.min_normal, f.min_subnormal, _specials(elem), "none", 8
            )
        )
    for name, elem in MX_FORMATS.items():
        f = ELEMENT_FORMATS[elem]
        rows.append(
            FormatInfo(
                name,
                elem,
                f.bits,
                f.emax,
                f.max_normal,
                f.min_normal,
                f.min_subnormal,
                _specials(elem),
                f"E8M0 per {block}",
                f.bits + 8 / block,
            )
        )
    f = ELEMENT_FORMATS["e2m1"]
    rows.append(
        FormatInfo("nvfp4", "e2m1", 4, f.emax, 6.0, 1.0, 0.5, "none", "E4M3 per 16 + fp32 per tensor", 4 + 8 / 16)
    )
    return rows


def code_listing(elem: str) -> list[tuple[int, str, float]]:
    """``(code, bit string, value)`` for every code of element format ``elem``."""
    f = ELEMENT_FORMATS[elem] if elem in ELEMENT_FORMATS else None
    if f is None:
        raise ValueError(f"elem must be one of {sorted(ELEMENT_FORMATS)}, got {elem!r}")
    values = element_values(f).tolist()
    out = []
    for code, v in enumerate(values):
        b = format(code, f"0{f.bits}b")
        out.append((code, f"{b[0]}.{b[1 : 1 + f.exp_bits]}.{b[1 + f.exp_bits :]}", v))
    return out


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
