"""Effective bits of an approximation ``x̂`` of ``x`` (``docs/methods/msd.md`` §7).

Definitions (all in bits, larger is better):

* ``kind="worst"``: ``min over groups of log2(ref_g / max_{k in g} |x_k - x̂_k|)``. ``ref_g`` is the group maximum
  ``M = max|x|`` (``relative_to="amax"``, the INT8 definition: two passes give ``log2 64516 = 15.98``, the
  paper's "~16") or ``α = 2^(floor(log2 amax) + 1)`` (``relative_to="alpha"``, the MX definition: two MXFP4 passes
  give exactly 6.00).
* ``kind="rms"``: ``-log2(‖x - x̂‖₂ / ‖x‖₂)`` over the whole tensor. Single-pass MXFP8 E4M3 gives 5.23
  (analytic 5.236), the paper's "5.24".
* ``kind="enob"``: ``(SNR_dB - 1.76) / 6.02`` with ``SNR = ‖x‖² / ‖x - x̂‖²`` (the ADC convention; runs about
  0.29 bits below ``rms`` and reproduces none of the paper's numbers, kept for the 6.6 investigation).
* ``kind="uniform"``: the bits of a uniform quantizer over ``[-M, M]`` with the same RMS error,
  ``log2(2M / (sqrt(12)·rms_g(e)))``, averaged over groups [inferred candidate for the paper's definition].

The group structure is the one of the decomposition (``group="row"`` or a block size along the last axis).
"""

from __future__ import annotations

import math

import torch

from lowbit.msd.bounds import mx_alpha
from lowbit.msd.decompose import grouped

__all__ = ["KINDS", "effective_bits"]

KINDS = ("worst", "rms", "enob", "uniform")


def effective_bits(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    kind: str = "worst",
    *,
    group: str | int = "row",
    relative_to: str = "amax",
) -> float:
    """Effective bits of ``x_hat`` as an approximation of ``x`` (module docstring for the definitions).

    Non-finite entries of ``x`` are rejected (effective bits of a NaN are meaningless). Groups whose error is
    zero are skipped by ``"worst"``/``"uniform"``; an exact ``x_hat`` gives ``inf``.

    >>> import torch
    >>> x = torch.tensor([[1.0, 0.5]]); effective_bits(x, x + torch.tensor([[2.0**-10, 0.0]]))
    10.0
    >>> effective_bits(x, x + torch.tensor([[2.0**-10, 0.0]]), "rms") > 10
    True
    """
    if not isinstance(x, torch.Tensor) or not isinstance(x_hat, torch.Tensor):
        raise TypeError("x and x_hat must be torch tensors")
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {tuple(x.shape)} and {tuple(x_hat.shape)}")
    if x.numel() == 0:
        raise ValueError("x must not be empty")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if relative_to not in ("amax", "alpha"):
        raise ValueError(f"relative_to must be 'amax' or 'alpha', got {relative_to!r}")
    xd = x.detach().to(torch.float64)
    if not math.isfinite(float(xd.abs().amax())):  # amax propagates NaN and Inf
        raise ValueError("x has NaN or Inf entries; effective bits are defined for finite data only")
    e = xd - x_hat.detach().to(torch.float64)
    if not math.isfinite(float(e.abs().amax())):
        return -math.inf
    if kind in ("rms", "enob"):
        ratio = float(e.norm() / xd.norm()) if float(xd.norm()) > 0 else math.inf
        if ratio == 0:
            return math.inf
        if kind == "rms":
            return -math.log2(ratio)
        snr_db = -20 * math.log10(ratio)
        return (snr_db - 1.76) / 6.02
    if group == "row":
        group_size = xd.shape[-1]
    elif isinstance(group, int) and not isinstance(group, bool) and group >= 1:
        group_size = group
    else:
        raise ValueError(f"group must be 'row' or a positive block size, got {group!r}")
    xg, eg = grouped(xd, group_size), grouped(e, group_size)
    amax = xg.abs().amax(dim=-1)
    ref = mx_alpha(amax) if relative_to == "alpha" else amax
    if kind == "worst":
        err = eg.abs().amax(dim=-1)
        keep = err > 0
        if not bool(keep.any()):
            return math.inf
        return float(torch.log2(ref[keep] / err[keep]).min())
    k = xd.shape[-1]
    counts = torch.full(amax.shape, float(group_size), dtype=torch.float64)
    counts[..., -1] = k - (xg.shape[-2] - 1) * group_size
    rms = (eg.square().sum(dim=-1) / counts).sqrt()
    keep = rms > 0
    if not bool(keep.any()):
        return math.inf
    return float(torch.log2(2 * ref[keep] / (math.sqrt(12) * rms[keep])).mean())
