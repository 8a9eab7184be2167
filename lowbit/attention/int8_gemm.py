"""Exact int8×int8→int32 matrix products for the MSD attention, with the backend chosen once per process.

``"int_mm"`` is ``torch._int_mm`` (oneDNN). It is exact only where the CPU runs it with VNNI or AMX
(:mod:`lowbit.msd.isa`: without VNNI, signed-by-signed products saturate in ``vpmaddubsw``), so it is used only
when ``int8_profile("int_mm")`` returns a verified profile (the self-check compares adversarial tiles with
float64 products). Otherwise ``"float-chunks"`` runs: float32 GEMMs over chunks of at most
``FLOAT_CHUNK = 1040`` along the contraction, each chunk's sums ``<= 1040·127² < 2^24`` are integers float32
holds exactly, and the chunk results are added in int32. Both backends split contractions longer than
``INT32_K = 133144`` (``(2^31 - 1) // 127²``) so no int32 sum can overflow (docs/methods/msd.md §3).

>>> a = torch.tensor([[127, -127, 127]], dtype=torch.int8)
>>> b = torch.tensor([[127], [127], [127]], dtype=torch.int8)
>>> int8_matmul(a, b, "float-chunks").tolist(), int8_matmul(a, b, "float-chunks").dtype
([[16129]], torch.int32)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lowbit.msd.isa import Int8Profile, int8_profile

__all__ = ["FLOAT_CHUNK", "INT32_K", "GemmBackend", "int8_matmul", "resolve_backend"]

GemmBackend = Literal["auto", "int_mm", "float-chunks"]
FLOAT_CHUNK = (2**24) // (127 * 127)  # 1040
INT32_K = (2**31 - 1) // (127 * 127)  # 133144


def resolve_backend(backend: GemmBackend = "auto") -> str:
    """``"int_mm"`` or ``"float-chunks"``. ``"auto"`` picks ``int_mm`` when its exactness profile is verified on this
    CPU; asking for ``"int_mm"`` where it is not exact raises (never a silently wrong product)."""
    if backend == "float-chunks":
        return backend
    if backend not in ("auto", "int_mm"):
        raise ValueError(f"gemm backend must be 'auto', 'int_mm' or 'float-chunks', got {backend!r}")
    profile = int8_profile("int_mm")
    usable = isinstance(profile, Int8Profile) and profile.verified and profile.qmax == 127 and profile.zero_point == 0
    if usable:
        return "int_mm"
    if backend == "int_mm":
        raise RuntimeError(f"torch._int_mm is not exact on this CPU: {profile}")
    return "float-chunks"


def _float_chunks(a: Tensor, b: Tensor) -> Tensor:
    k = a.shape[1]
    if k <= FLOAT_CHUNK:
        return (a.to(torch.float32) @ b.to(torch.float32)).to(torch.int32)
    out = torch.zeros(a.shape[0], b.shape[1], dtype=torch.int32)
    for s in range(0, k, FLOAT_CHUNK):
        out += (a[:, s : s + FLOAT_CHUNK].to(torch.float32) @ b[s : s + FLOAT_CHUNK].to(torch.float32)).to(torch.int32)
    return out


def int8_matmul(a: Tensor, b: Tensor, backend: str) -> Tensor:
    """Exact ``a @ b`` for int8 ``a [M, K]`` and ``b [K, N]`` (any strides) as int32 ``[M, N]``; ``backend`` is a
    resolved one (:func:`resolve_backend`). ``K`` must be at most :data:`INT32_K` (callers split longer ones)."""
    if a.shape[1] > INT32_K:
        raise ValueError(f"contraction {a.shape[1]} > {INT32_K}: int32 sums could overflow; split it")
    if backend == "int_mm":
        return torch._int_mm(a, b)
    return _float_chunks(a, b)
