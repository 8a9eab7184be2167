"""The formats at a glance: the properties table and the code listing of ``lowbit formats``.

:func:`format_table` gives one :class:`FormatInfo` row per format lowbit implements: element type, bits, ``emax``,
range (max normal, min normal, min subnormal), Inf/NaN codes, the scale and the storage cost in bits per element
including the amortised scale (``bits + scale_bits / block``: 4.25 for MXFP4 with blocks of 32).
:func:`code_listing` lists every code of one element format with its bit fields and value.

>>> [r.bits_per_element for r in format_table() if r.name in ("mxfp4_e2m1", "nvfp4")]
[4.25, 4.5]
>>> code_listing("e2m1")[7]
(7, '0.11.1', 6.0)
"""

from __future__ import annotations

from dataclasses import dataclass

from lowbit.formats.elements import ELEMENT_FORMATS, element_values
from lowbit.formats.mx import MX_FORMATS

__all__ = ["FORMAT_HEADER", "FormatInfo", "code_listing", "format_table"]


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
