"""Theoretical error bounds of the MSD decompositions, per scale group (``docs/methods/msd.md`` §3, §5, §6).

* INT8, ``p`` passes, group maximum ``M`` ([paper] for p = 2, [derived] for any p)::

      |x - x̂| <= M / (2·127·254^(p-1))          p = 1: M/254, p = 2: M/64516, p = 3: M/16387064

* MX with the non-saturating ``"ceil"`` rule, element with ``m`` mantissa bits ([derived], msd.md §5 argument
  generalised): one pass errs by at most ``β·2^-(m+2)`` with ``β = 2^ceil(log2 amax)``. The residual's own
  ``β`` is at most that, so ``p`` passes err by at most ``β·2^-((m+2)p) <= α·2^-((m+2)p)``,
  ``α = 2^(floor(log2 amax) + 1)``. E2M1 (m = 1): ``α/8^p`` (the paper's ``α/64`` for p = 2); E4M3: ``α/32^p``.
* MX with the OCP rule (``X = 2^(floor(log2 amax) - emax_elem)``, saturating) [derived]: ``amax/X < 2^(emax+1)``
  and values above ``max_normal`` are clipped, so one pass errs by less than
  ``c·α`` with ``c = max(2^(emax+1) - max_normal, 2^(emax-m-1)) / 2^(emax+1)``; ``p`` passes: ``c^p·α``.
  E2M1: ``α/4^p`` (msd.md measured α/17 for p = 2); E4M3 and E5M2: ``α/8^p``.
* E8M0 floor [derived]: a scale cannot go below ``2^-127``. A pass whose scale is clamped there errs by at most
  ``2^-127 · 2^(emax-m-1)`` (half the top step), and later passes never increase the error, so the MX bounds are
  ``max(bound, 2^(-127+emax-m-1))``. This only matters for blocks with ``amax`` below about ``2^-119``.

``error_bound`` returns the paper's α-form; :func:`tight_mx_bound` returns the β-form used in the tests.
"""

from __future__ import annotations

import torch

from lowbit import formats
from lowbit.msd.decompose import _decompose_args, grouped

__all__ = ["error_bound", "mx_alpha", "tight_mx_bound"]

_E8M0_MIN_EXP = -127  # OCP MX v1.0 §5.4: E8M0 codes 0..254 are 2^-127..2^127


def _element_params(elem: str) -> tuple[int, int, float]:
    """(mantissa bits, emax, max normal) of an MX element format, from ``lowbit.formats.ELEMENT_FORMATS``."""
    f = formats.element_format(elem)
    return f.man_bits, f.emax, f.max_normal


def mx_alpha(amax: torch.Tensor) -> torch.Tensor:
    """``α = 2^(floor(log2 amax) + 1)``, the power of two strictly above ``amax`` (0 where amax is 0)."""
    safe = torch.where(amax > 0, amax, 1.0)
    return torch.where(amax > 0, torch.exp2(torch.floor(torch.log2(safe)) + 1), 0.0)


def _beta(amax: torch.Tensor) -> torch.Tensor:
    """``β = 2^ceil(log2 amax)``, the smallest power of two >= ``amax`` (0 where amax is 0)."""
    safe = torch.where(amax > 0, amax, 1.0)
    return torch.where(amax > 0, torch.exp2(torch.ceil(torch.log2(safe))), 0.0)


def _mx_factor(elem: str, scale_rule: str) -> float:
    m, emax, max_normal = _element_params(elem)
    if scale_rule == "ceil":
        return 2.0 ** -(m + 2)
    return max(2.0 ** (emax + 1) - max_normal, 2.0 ** (emax - m - 1)) / 2.0 ** (emax + 1)


def _mx_floor(elem: str) -> float:
    m, emax, _ = _element_params(elem)
    return 2.0 ** (_E8M0_MIN_EXP + emax - m - 1)


def _group_amax(x: torch.Tensor, group_size: int) -> torch.Tensor:
    xg = grouped(x.detach().to(torch.float64), group_size)
    amax = xg.abs().amax(dim=-1)  # NaN or Inf for a group with a non-finite value
    return torch.where(torch.isfinite(amax), amax, float("nan"))


def error_bound(
    x: torch.Tensor,
    fmt: str,
    *,
    passes: int = 2,
    group: str | int | None = None,
    scale_rule: str = "ceil",
    elem: str | None = None,
    amax: float | None = None,
    int8_qmax: int = 127,
) -> torch.Tensor:
    """The theoretical max-abs error of :func:`lowbit.msd.decompose` with the same arguments, per group.

    Returns a float64 tensor of shape ``x.shape[:-1] + (n_groups,)`` (NaN for groups with non-finite input):
    INT8 ``M/(2·q·(2q)^(p-1))`` with ``q = int8_qmax`` (127: ``M/(2·127·254^(p-1))``); MX
    ``max(c^p·α, E8M0 floor)`` with ``c = 1/8`` for E2M1 with the ceil rule
    (module docstring). Exact arithmetic is assumed: compare with ``reconstruct(torch.float64)``.

    >>> import torch
    >>> error_bound(torch.tensor([[2.0, -1.0]]), "int8", passes=2).item() == 2.0 / 64516
    True
    >>> error_bound(torch.tensor([[3.0] * 32]), "mxfp4", passes=2).item() == 4.0 / 64
    True
    """
    fmt, passes, group_size, scale_rule, elem = _decompose_args(x, fmt, passes, group, scale_rule, elem, amax)
    m = _group_amax(x, group_size)
    if fmt == "int8":
        if amax is not None:
            m = torch.where(torch.isfinite(m), float(amax), m)
        return m / (2 * int8_qmax * (2.0 * int8_qmax) ** (passes - 1))
    bound = mx_alpha(m) * _mx_factor(elem, scale_rule) ** passes
    return torch.where(m > 0, torch.clamp(bound, min=_mx_floor(elem)), bound)


def tight_mx_bound(x: torch.Tensor, passes: int, *, group: int = 32, elem: str = "e2m1") -> torch.Tensor:
    """The ceil-rule bound in its tight β-form, ``max(β·2^-((m+2)p), E8M0 floor)`` per block ([derived])."""
    m = _group_amax(x, group)
    bound = _beta(m) * _mx_factor(elem, "ceil") ** passes
    return torch.where(m > 0, torch.clamp(bound, min=_mx_floor(elem)), bound)
