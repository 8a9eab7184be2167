"""Constants shared across lowbit: the float dtypes every entry point accepts and the MX scale rules.

* :data:`FLOAT_DTYPES`: float16, bfloat16, float32, float64 — the input dtypes the quantizers and the MSD
  decomposition take. float64 holds each of them exactly, so widening to it never rounds.
* :data:`SCALE_RULES`: how an MX block's shared E8M0 exponent is chosen from the block's largest magnitude
  ``amax`` (rules in :mod:`lowbit.formats.e8m0`):

  - ``"ocp"``: the OCP MX v1.0 rule ``floor(log2(amax)) - emax_elem``; block maxima may saturate;
  - ``"ceil"``: the non-saturating ``ceil(log2(amax / max_normal))`` (docs/methods/msd.md §4-§5).

>>> SCALE_RULES
('ocp', 'ceil')
>>> torch.bfloat16 in FLOAT_DTYPES
True
"""

from __future__ import annotations

import torch

__all__ = ["FLOAT_DTYPES", "SCALE_RULES"]

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
SCALE_RULES: tuple[str, ...] = ("ocp", "ceil")
