"""MSD attention over an INT8 KV cache (:class:`~lowbit.attention.hf_cache.Int8Keys` / ``Int8Values``), never
dequantizing K or V (docs/methods/msd.md §9).

For one query tile of ``R = G·T`` rows per KV head (``G`` query heads share a KV head: GQA rows are grouped so
each KV head's codes are read once per tile):

1. ``Q ≈ Σ_i s_i·q_i`` per row (:func:`~lowbit.attention.int8_codes.split_rows`, ``passes`` components stacked
   as rows), then **one** exact int8 GEMM per KV head, ``I = [q_1; q_2; ...]·K_codesᵀ`` (int32), and
   ``S[r, j] = scale·s_k[j]·Σ_i s_i[r]·I_i[r, j]`` in float32. Per-channel keys (``s_k[c]`` per block of keys) fold
   the block's channel scales into Q first, ``Q' = Q ⊙ s_k[block]``, and decompose ``Q'`` per block; the float
   residual of the unfinished block is multiplied in float32.
2. Mask (causal aligned to the end of the keys when no mask is given, or transformers' boolean mask), then the
   float32 softmax numerator ``P = exp(S - max)`` and its row sum ``l``.
3. V is per token, so ``s_v[j]`` runs along the contraction and is folded into P: ``P' = P ⊙ s_v``, decomposed per
   row with its own maximum, one int8 GEMM per KV head ``J = [p_1; p_2; ...]·V_codes``, and
   ``O = Σ_i t_i·J_i / l``.

Every integer product is exact (:mod:`lowbit.attention.int8_gemm`); the error is the decomposition's,
``<= M/(2·127·254^(p-1))`` per element of Q' and P', plus the cache's own quantization.

Edges: a query row with every key masked returns 0 (not NaN). NaN policy, per row: a stored token whose K or V
held NaN/Inf has a NaN scale; every query row that attends it (unmasked) returns NaN, rows of other sequences of
the batch and rows that mask it are unaffected; a NaN query row returns NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lowbit.attention.hf_cache import Int8Keys, Int8Values
from lowbit.attention.int8_codes import split_rows
from lowbit.attention.int8_gemm import int8_matmul

__all__ = ["int8_kv_attention"]


def _gemm_heads(a: Tensor, b: Tensor, transpose_b: bool, backend: str) -> Tensor:
    """int32 ``a[x, y] @ b[x, y](ᵀ)`` for every (batch, KV head): a ``[B, H, M, K]``, b ``[B, H, N, K]`` (transposed)
    or ``[B, H, K, N]``; one exact GEMM per head into a preallocated output.

    With ``transpose_b`` (scores: ``Q·Kᵀ``) the product is formed as ``(K·Qᵀ)ᵀ``: the cache codes are the row-major
    streaming operand. Measured with torch 2.13 on an AMX Xeon, one thread, 16K keys × 128 dims, 4 query rows:
    ``_int_mm(q, kᵀ)`` 0.81-0.95 ms vs ``_int_mm(k, qᵀ)`` 0.35-0.40 ms (the transposed right operand is repacked
    on every call). The result is returned as a transposed view.
    """
    bsz, heads, m = a.shape[:3]
    n = b.shape[2] if transpose_b else b.shape[3]
    out = (
        torch.empty(bsz, heads, n, m, dtype=torch.int32)
        if transpose_b
        else torch.empty(bsz, heads, m, n, dtype=torch.int32)
    )
    if n == 0 or m == 0:
        out.zero_()
    else:
        for i in range(bsz):
            for h in range(heads):
                lhs, rhs = (b[i, h], a[i, h].t()) if transpose_b else (a[i, h], b[i, h])
                if backend == "int_mm":
                    torch._int_mm(lhs, rhs, out=out[i, h])
                else:
                    out[i, h] = int8_matmul(lhs, rhs, backend)
    return out.transpose(-1, -2) if transpose_b else out


def _recombine(ints: Tensor, scales: Tensor, passes: int) -> Tensor:
    """``Σ_i scales_i ⊙ ints_i`` over the pass-stacked rows: ints ``[B, H, p·R, N]``, scales ``[B, H, p·R, 1]``."""
    b, h, pr, _ = ints.shape
    r = pr // passes
    terms = ints.unflatten(2, (passes, r)).to(torch.float32) * scales.view(b, h, passes, r, 1)
    return terms.sum(dim=2) if passes > 1 else terms[:, :, 0]


def _scores(q: Tensor, keys: Int8Keys, kend: int, scale: float, passes: int, backend: str) -> Tensor:
    """``scale·Q·Kᵀ`` over keys ``[0, kend)`` for grouped rows ``q [B, H, R, D]``, float32 ``[B, H, R, kend]``."""
    nq = keys.codes.shape[2]
    if keys.granularity == "token":
        comps, cs = split_rows(q, passes)
        s = _recombine(_gemm_heads(comps, keys.codes[:, :, :kend], True, backend), cs, passes)
        return s * (keys.scales[:, :, None, :kend] * scale)
    blk = keys.block
    parts = []
    n_blocks = min(nq, kend) // blk + (1 if min(nq, kend) % blk else 0)
    for nb in range(n_blocks):
        lo, hi = nb * blk, min((nb + 1) * blk, kend)
        qb = q * keys.scales[:, :, nb : nb + 1, :]  # Q' = Q ⊙ s_k[block]
        comps, cs = split_rows(qb, passes)
        parts.append(_recombine(_gemm_heads(comps, keys.codes[:, :, lo:hi], True, backend), cs, passes))
    if kend > nq and keys.residual is not None:
        parts.append(q @ keys.residual[:, :, : kend - nq].transpose(-1, -2))
    s = torch.cat(parts, dim=-1) if len(parts) != 1 else parts[0]
    return s * scale


def _tile_mask(
    mask: Tensor | None, causal: bool, bsz: int, heads_kv: int, group: int, q_lo: int, q_hi: int, seq_q: int, kend: int
) -> tuple[Tensor | None, Tensor | None]:
    """(boolean keep-mask, additive float bias) for the tile's rows, broadcastable to ``[B, H, G·T, kend]``."""
    t = q_hi - q_lo
    if mask is None:
        if not causal:
            return None, None
        if t == 1:  # one query at the last key position sees every key
            return None, None
        first = kend - t  # key position of the tile's first query (causal tiles end at its last query)
        qpos = torch.arange(first, first + t).unsqueeze(-1)
        keep = torch.arange(kend).unsqueeze(0) <= qpos  # [T, kend]
        return keep.unsqueeze(0).expand(group, t, kend).reshape(1, 1, group * t, kend), None
    m = mask[:, :, q_lo:q_hi, :kend]
    if m.shape[1] == 1:
        m = m.unsqueeze(2).expand(m.shape[0], heads_kv, group, t, kend)
    else:
        m = m.reshape(m.shape[0], heads_kv, group, t, kend)
    m = m.reshape(m.shape[0], heads_kv, group * t, kend)
    if m.dtype == torch.bool:
        return m, None
    return None, m.to(torch.float32)


def int8_kv_attention(
    query: Tensor,
    keys: Int8Keys,
    values: Int8Values,
    *,
    scale: float,
    mask: Tensor | None = None,
    causal: bool = True,
    passes: int = 2,
    backend: str = "int_mm",
    query_block: int = 128,
) -> Tensor:
    """Attention of ``query [B, Hq, Lq, D]`` over INT8 keys/values (``[B, Hkv, S, ·]``); float32 ``[B, Hq, Lq, Dv]``.

    Args:
        scale: the softmax scale (``1/sqrt(D)`` for Llama).
        mask: boolean ``[B, 1|Hq, Lq, S]`` (True: attend) or an additive float bias; None: ``causal`` decides.
        causal: with no mask, query ``i`` sits at key position ``S - Lq + i`` and sees keys up to it.
        passes: MSD components for Q and for P (2: error ``<= M/64516`` per element).
        backend: a resolved GEMM backend (:func:`lowbit.attention.int8_gemm.resolve_backend`).
        query_block: query positions per tile (bounds the int32 score buffer; causal tiles skip later keys).
    """
    bsz, hq, lq, d = query.shape
    hkv, seq_k, dv = values.codes.shape[1], values.seq_len, values.codes.shape[3]
    if keys.seq_len != seq_k:
        raise ValueError(f"keys hold {keys.seq_len} tokens but values hold {seq_k}")
    if hq % hkv:
        raise ValueError(f"query heads {hq} are not a multiple of KV heads {hkv}")
    if lq > seq_k:
        raise ValueError(f"{lq} queries but only {seq_k} keys: the cache must already hold the query's own tokens")
    group = hq // hkv
    out = torch.zeros(bsz, hkv, group, lq, dv, dtype=torch.float32)
    if bsz == 0 or lq == 0 or seq_k == 0:
        return out.view(bsz, hq, lq, dv)
    qg = query.to(torch.float32).reshape(bsz, hkv, group, lq, d)
    for lo in range(0, lq, query_block):
        hi = min(lq, lo + query_block)
        t = hi - lo
        kend = seq_k - lq + hi if (mask is None and causal) else seq_k
        rows = qg[:, :, :, lo:hi].reshape(bsz, hkv, group * t, d)
        s = _scores(rows, keys, kend, scale, passes, backend)
        keep, bias = _tile_mask(mask, causal, bsz, hkv, group, lo, hi, lq, kend)
        if bias is not None:
            s = s + bias
        if keep is not None:
            s = s.masked_fill(~keep, float("-inf"))
        mx = s.amax(dim=-1, keepdim=True)
        mx = torch.where(mx == float("-inf"), torch.zeros_like(mx), mx)
        p = torch.exp(s - mx)
        denom = p.sum(dim=-1, keepdim=True)
        vs = values.scales[:, :, None, :kend]
        pv_in = torch.where(p > 0, p * vs, torch.zeros_like(p)) if values.has_nonfinite else p * vs
        comps, ps = split_rows(pv_in, passes)
        o = _recombine(_gemm_heads(comps, values.codes[:, :, :kend], False, backend), ps, passes)
        if keep is not None or bias is not None:  # a row with every key masked returns 0, not 0/0
            o = torch.where(denom == 0, torch.zeros_like(o), o / denom)
        else:
            o = o / denom
        out[:, :, :, lo:hi] = o.view(bsz, hkv, group, t, dv)
    return out.view(bsz, hq, lq, dv)
