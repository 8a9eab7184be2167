"""Synthetic activation distributions for the MSD bounds, effective-bits table and accuracy study.

All are generated in float64 from an explicit ``torch.Generator`` and, by default, rounded to BF16 (the
activation dtype MSD decomposes, msd.md §2, §7): Gaussian N(0, 1), Laplace(0, 1), uniform U(-1, 1), Student-t with
3 degrees of freedom (heavy tails), and "outlier": Gaussian rows in which a few fixed channels are 100x larger,
as LLM activations have (msd.md §3: per-token or per-block groups matter with outliers).
"""

from __future__ import annotations

import torch

__all__ = ["DISTRIBUTIONS", "activations"]

DISTRIBUTIONS = ("gaussian", "laplace", "uniform", "student_t", "outlier")
_OUTLIER_CHANNELS = 4
_OUTLIER_GAIN = 100.0
_STUDENT_T_DF = 3.0


def activations(
    dist: str,
    shape: tuple[int, ...],
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """A ``shape`` tensor of ``dist`` samples, rounded to ``dtype`` (returned as ``dtype``).

    >>> activations("uniform", (2, 3), seed=1).dtype
    torch.bfloat16
    """
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"dist must be one of {DISTRIBUTIONS}, got {dist!r}")
    if len(shape) < 1 or any((not isinstance(s, int)) or s < 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive ints, got {shape!r}")
    g = torch.Generator().manual_seed(seed)
    if dist in ("gaussian", "outlier"):
        x = torch.randn(shape, generator=g, dtype=torch.float64)
    elif dist == "uniform":
        x = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    elif dist == "laplace":
        u = torch.rand(shape, generator=g, dtype=torch.float64) - 0.5
        x = -torch.sign(u) * torch.log1p(-2 * u.abs())
    else:
        z = torch.randn(shape, generator=g, dtype=torch.float64)
        chi2 = 2 * torch._standard_gamma(torch.full(shape, _STUDENT_T_DF / 2, dtype=torch.float64), generator=g)
        x = z / torch.sqrt(chi2 / _STUDENT_T_DF)
    if dist == "outlier":
        k = shape[-1]
        channels = torch.randperm(k, generator=g)[: min(_OUTLIER_CHANNELS, k)]
        x[..., channels] *= _OUTLIER_GAIN
    return x.to(dtype)
