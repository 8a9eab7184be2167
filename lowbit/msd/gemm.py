"""Exact low-precision GEMM primitives used by MSD (``docs/methods/msd.md`` §3, §5).

* :func:`int_gemm`: the exact ``A·Bᵀ`` of int8 operands, as int64. It is the *reference* the fast INT8 kernels
  are checked against, so it never calls one: the integers are multiplied in a float64 GEMM, which is exact by
  construction whatever the summation order or instruction set, because every product (``<= 127² < 2^14``) and
  every partial sum is an integer below ``2^53`` (K is split into chunks of at most ``(2^53 - 1)/(max|a|·max|b|)``,
  over 5·10^11 for full ±127 operands) and the chunk results are added in int64. (Integer GEMM kernels are not
  used here: without VNNI they saturate 16-bit pair sums, and oneDNN's AMX path can round.)
  :func:`max_exact_k` is the separate INT32 limit of the fast kernels (K <= 133144, msd.md §3).
* :func:`int_gemm_segments`: the same, with one partial sum per K-segment (needed when activation or weight
  scales change along K: per-K-block activations, per-group weights).
* :func:`mx_block_gemm`: block-scaled MX×MX products. Every element value of an MX element format is an integer
  multiple of the format's smallest subnormal ``u`` (E2M1: 0.5, so ``2·E2M1`` is an integer; E4M3: 2^-9), so one
  block's dot product is an integer sum, computed exactly in float64 (``|sum| < 2^53`` is checked), and the two
  block scales are applied afterwards: ``y = Σ_b (X_a,b·u_a)(X_w,b·u_w)·P_b``, accumulated in float32 (the MX MMA
  model) or float64.
"""

from __future__ import annotations

import torch

__all__ = ["INT32_MAX", "int_gemm", "int_gemm_segments", "max_exact_k", "mx_block_gemm"]

INT32_MAX = 2**31 - 1
_FLOAT64_EXACT = 2**53
_ELEMENTS_PER_CHUNK = 1 << 24  # bound on the size of temporaries in the blocked loops


def max_exact_k(amax_a: int, amax_b: int) -> int:
    """Longest K whose int32 dot products cannot overflow: ``floor((2^31 - 1) / (amax_a·amax_b))``.

    >>> max_exact_k(127, 127)
    133144
    """
    return INT32_MAX // max(1, int(amax_a) * int(amax_b))


def _check_int8_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise TypeError(f"a and b must be torch.int8, got {a.dtype} and {b.dtype}")
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a [M, K] and b [N, K] must share K, got shapes {tuple(a.shape)} and {tuple(b.shape)}")


def int_gemm(a: torch.Tensor, b: torch.Tensor, *, max_chunk: int | None = None) -> torch.Tensor:
    """Exact ``a @ b.T`` for int8 ``a [M, K]`` and ``b [N, K]`` (nn.Linear layout), returned as int64 ``[M, N]``.

    Each float64 GEMM covers at most ``(2^53 - 1) // (max|a|·max|b|)`` of K (``max_chunk`` lowers it, for tests),
    so every partial sum is an integer float64 holds exactly; the chunk results are summed in int64. Exact for any
    K on any CPU (the module docstring says why no integer kernel is used).

    >>> a = torch.tensor([[127, -127]], dtype=torch.int8); int_gemm(a, a).item()
    32258
    """
    _check_int8_pair(a, b)
    m, k = a.shape
    n = b.shape[0]
    amax_a = int(a.abs().max()) if a.numel() else 0
    amax_b = int(b.abs().max()) if b.numel() else 0
    chunk = max(1, (_FLOAT64_EXACT - 1) // max(1, amax_a * amax_b))
    if max_chunk is not None:
        chunk = min(chunk, max_chunk)
    out = torch.zeros(m, n, dtype=torch.int64)
    for start in range(0, k, chunk):
        stop = min(k, start + chunk)
        out += (a[:, start:stop].to(torch.float64) @ b[:, start:stop].to(torch.float64).T).to(torch.int64)
    return out


def int_gemm_segments(a: torch.Tensor, b: torch.Tensor, segment: int) -> torch.Tensor:
    """Exact per-segment partial products ``P[g] = a[:, g] @ b[:, g].T`` over K-segments of ``segment`` elements.

    Returns int64 ``[G, M, N]`` with ``G = ceil(K / segment)`` (the last segment may be shorter).
    """
    _check_int8_pair(a, b)
    if segment < 1:
        raise ValueError(f"segment must be >= 1, got {segment}")
    k = a.shape[1]
    return torch.stack([int_gemm(a[:, s : s + segment], b[:, s : s + segment]) for s in range(0, k, segment)])


def mx_block_gemm(
    a_values: torch.Tensor,
    a_scales: torch.Tensor,
    b_values: torch.Tensor,
    b_scales: torch.Tensor,
    *,
    block: int,
    a_unit: float,
    b_unit: float,
    accumulate: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Block-scaled MX product ``y[m, n] = Σ_b a_scales[m, b]·b_scales[n, b]·(a_values[m, b] · b_values[n, b])``.

    Args:
        a_values: ``[M, K]`` unscaled element values (each an integer multiple of ``a_unit``); K a multiple
            of ``block`` (pad with zeros).
        a_scales: ``[M, K/block]`` block scales (powers of two; NaN marks a non-finite block).
        b_values, b_scales: the same for the weight, ``[N, K]`` and ``[N, K/block]``.
        block: the shared block size along K.
        a_unit, b_unit: the smallest subnormal of each element format (a power of two).
        accumulate: ``torch.float32`` (each block term ``scale·P_b`` is exact in float32 when it is in range;
            the sum over blocks rounds) or ``torch.float64``.

    The integer block dot products ``P_b = Σ_k (a/a_unit)(b/b_unit)`` are exact: they are computed in float64
    and ``block·max|a/a_unit|·max|b/b_unit| < 2^53`` is checked.
    """
    if accumulate not in (torch.float32, torch.float64):
        raise TypeError(f"accumulate must be torch.float32 or torch.float64, got {accumulate}")
    m, k = a_values.shape
    n = b_values.shape[0]
    if b_values.shape[1] != k or k % block:
        raise ValueError(
            f"a_values {tuple(a_values.shape)} and b_values {tuple(b_values.shape)} need a common K "
            f"that is a multiple of block={block}"
        )
    nb = k // block
    if a_scales.shape != (m, nb) or b_scales.shape != (n, nb):
        raise ValueError(
            f"scales must be [M, K/block] and [N, K/block], got {tuple(a_scales.shape)} and {tuple(b_scales.shape)}"
        )
    ai = (a_values.to(torch.float64) / a_unit).reshape(m, nb, block).transpose(0, 1)  # [nb, M, B]
    bi = (b_values.to(torch.float64) / b_unit).reshape(n, nb, block).permute(1, 2, 0)  # [nb, B, N]
    for name, t in (("a_values", ai), ("b_values", bi)):
        if not bool((t == torch.round(t)).all()):
            raise ValueError(f"{name} are not integer multiples of their unit; not on the element grid")
    amax_a = float(ai.abs().max()) if ai.numel() else 0.0
    amax_b = float(bi.abs().max()) if bi.numel() else 0.0
    if block * amax_a * amax_b >= _FLOAT64_EXACT:
        raise ValueError("block dot products could exceed 2^53; the float64 integer GEMM would not be exact")
    sa = (a_scales.to(torch.float64) * a_unit).t().unsqueeze(-1)  # [nb, M, 1]
    sb = (b_scales.to(torch.float64) * b_unit).t().unsqueeze(1)  # [nb, 1, N]
    out = torch.zeros(m, n, dtype=accumulate)
    step = max(1, _ELEMENTS_PER_CHUNK // max(1, m * n))
    for start in range(0, nb, step):
        sl = slice(start, min(nb, start + step))
        p = torch.bmm(ai[sl], bi[sl])  # exact integers
        terms = (p * sa[sl] * sb[sl]).to(accumulate)  # power-of-two scaling: exact while in range
        out += terms.sum(dim=0)
    return out
