"""Attention over a quantized KV cache: ``"dequant"`` (KV to BF16, then attention) vs ``"msd"`` (never dequantize).

``"dequant"`` is the baseline kernel: the cache is dequantized to BF16 (``q·s`` rounded once), Q is BF16,
``S = Q·Kᵀ`` accumulates in float32, the online softmax runs in float32, and ``P`` is cast to BF16 for
``P·V`` (FlashAttention-2 numerics).

``"msd"`` follows docs/methods/msd.md §9 [inferred] (Multi-Scale Dequant, arXiv:2605.13915): the cache codes are
used as they are and the high-precision operand is decomposed instead (:func:`lowbit.msd.decompose`), so every
product is an exact low-precision product and the scales are applied in float32 afterwards.

* **Q·Kᵀ.** INT8 keys per token: ``Q ≈ Σ_i s_i·q_i`` per query row, ``S = scale·s_k[j]·Σ_i s_i·(q_i·k_int[j])``.
  INT8 keys per channel: the channel scale runs along the contraction, so it is folded into Q first
  (``Q' = Q ⊙ s_k``) and ``Q'`` is decomposed. MXFP4 keys: Q is decomposed into MXFP4 with blocks of 32 along
  the head dim (non-saturating ``ceil`` rule, msd.md §5) and each 32-block product is a block-scaled
  E2M1×E2M1 product (:func:`lowbit.msd.gemm.mx_block_gemm`).
* **Softmax.** FlashAttention online softmax in float32 (multiply rescale): ``P̃ = exp(S - m) ∈ (0, 1]``.
* **P·V.** INT8 values per channel: ``P̃`` is decomposed with the **fixed** first scale ``s_1 = 1/127``
  (``decompose(..., amax=1.0)``): ``P̃ <= 1`` always, so no row maximum is needed and two passes have absolute
  error ``<= 1/64516`` (msd.md §9); ``O += s_v ⊙ Σ_i s_i·(p_i·V_int)``. INT8 values per token: the token scale
  runs along the contraction, so it is folded into ``P̃`` (``P' = P̃ ⊙ s_v``, no longer bounded by 1) and
  ``P'`` is decomposed with its own row maximum. MXFP4 values: ``P̃`` is decomposed into MXFP4 along the keys
  (blocks of 32 keys); the cache's scales run along the head dim (one per token and 32 channels), so each
  exact E2M1×(E2M1·2^e) product is accumulated in float32 per key block and scaled by the block's P scale
  [inferred: a hardware MX MMA wants the V scales along the keys; this simulates a per-token-scaled product].

Integer products use :func:`lowbit.msd.gemm.int_gemm` (int8×int8→int32, exact).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lowbit.attention.flash import check_block_k, flash_attention, group_rows, make_mask_fn, ungroup_rows
from lowbit.attention.kvcache import QuantizedKV, QuantizedTensor
from lowbit.attention.online_softmax import run_online_softmax
from lowbit.attention.shapes import AttentionShape, check_qkv_shapes, check_scale
from lowbit.msd import decompose
from lowbit.msd.gemm import int_gemm, mx_block_gemm

Method = Literal["dequant", "msd"]
_E2M1_UNIT = 0.5  # smallest E2M1 subnormal: every E2M1 value is an integer multiple of it


def _int_products(a: Tensor, b: Tensor) -> Tensor:
    """Exact ``a @ bᵀ`` over the two leading dims: int8 ``a [B, H, R, K]``, ``b [B, H, N, K]`` -> float64."""
    bsz, heads = a.shape[:2]
    out = torch.empty(bsz, heads, a.shape[2], b.shape[2], dtype=torch.float64)
    for i in range(bsz):
        for h in range(heads):
            out[i, h] = int_gemm(a[i, h], b[i, h]).to(torch.float64)
    return out


def _recombine(terms: list[Tensor], dtype: torch.dtype = torch.float32) -> Tensor:
    """``Σ_i term_i`` in ``dtype``, in pass order (float32: the FP32 recombination of msd.md §3)."""
    out = terms[0].to(dtype)
    for t in terms[1:]:
        out = out + t.to(dtype)
    return out


class _MSDKernel:
    """The score and ``P·V`` functions of the MSD method for one cache (see the module docstring)."""

    def __init__(self, qg: Tensor, cache: QuantizedKV, shape: AttentionShape, scale: float, passes: int) -> None:
        self.k: QuantizedTensor = cache.k
        self.v: QuantizedTensor = cache.v
        self.scale = scale
        self.passes = passes
        self.k_codes = cache.k.values.to(torch.int8) if cache.k.fmt == "int8" else None
        self.v_codes_t = cache.v.values.transpose(-1, -2).to(torch.int8) if cache.v.fmt == "int8" else None
        self.v_hat = cache.v.dequantize(torch.float32) if cache.v.fmt == "mxfp4" else None
        if cache.k.fmt == "int8":
            q_src = qg.to(torch.float64)
            if cache.k.granularity == "channel":
                q_src = q_src * cache.k.scales.to(torch.float64)  # s_k[d] folded into Q
            self.dq = decompose(q_src, "int8", passes=passes)
        else:
            self.dq = decompose(qg, "mxfp4", passes=passes, group=32, scale_rule="ceil")

    def scores(self, start: int, end: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """``scale · Q·K[start:end]ᵀ`` from exact low-precision products, recombined in ``dtype``.

        float32 is the method; float64 serves only the overflow fallback of the online softmax
        (:mod:`lowbit.attention.online_softmax`), when the float32 scores leave the float32 range.
        """
        d = self.dq
        if self.k.fmt == "int8":
            kb = self.k_codes[:, :, start:end]
            terms = [d.scales[i].to(dtype) * _int_products(d.components[i], kb) for i in range(d.passes)]
            s = _recombine(terms, dtype)
            if self.k.granularity == "token":
                s = s * self.k.scales[:, :, start:end].transpose(-1, -2).to(dtype)
            return s * self.scale
        vals, scl = self.k.values[:, :, start:end], self.k.scales[:, :, start:end]
        bsz, heads, rows = d.components[0].shape[:3]
        out = torch.zeros(bsz, heads, rows, end - start, dtype=dtype)
        for i in range(d.passes):
            for b in range(bsz):
                for h in range(heads):
                    out[b, h] += mx_block_gemm(
                        d.components[i][b, h], d.scales[i][b, h], vals[b, h], scl[b, h],
                        block=32, a_unit=_E2M1_UNIT, b_unit=_E2M1_UNIT, accumulate=dtype,
                    )  # fmt: skip
        return out * self.scale

    def scores64(self, start: int, end: int) -> Tensor:
        """:meth:`scores` in float64 (the overflow fallback)."""
        return self.scores(start, end, torch.float64)

    def pv(self, p: Tensor, start: int, end: int) -> Tensor:
        """``P̃ · V[start:end]`` from the decomposition of ``P̃`` and the cache codes, float32."""
        if self.v.fmt == "int8":
            vt = self.v_codes_t[:, :, :, start:end]
            if self.v.granularity == "channel":
                dp = decompose(p, "int8", passes=self.passes, amax=1.0)  # fixed s_1 = 1/127: P̃ <= 1
            else:
                dp = decompose(p.to(torch.float64) * self.v.scales[:, :, start:end].transpose(-1, -2).to(
                    torch.float64), "int8", passes=self.passes)  # fmt: skip
            terms = [dp.scales[i].to(torch.float32) * _int_products(dp.components[i], vt) for i in range(dp.passes)]
            o = _recombine(terms)
            return o * self.v.scales if self.v.granularity == "channel" else o
        n = end - start
        pad = (-n) % 32
        p_pad = torch.nn.functional.pad(p, (0, pad))
        v_pad = torch.nn.functional.pad(self.v_hat[:, :, start:end], (0, 0, 0, pad))
        dp = decompose(p_pad, "mxfp4", passes=self.passes, group=32, scale_rule="ceil")
        bsz, heads, rows, length = p_pad.shape
        nkb = length // 32
        vb = v_pad.reshape(bsz, heads, nkb, 32, -1)
        terms = []
        for i in range(dp.passes):
            a = dp.components[i].reshape(bsz, heads, rows, nkb, 32).transpose(2, 3)  # [b, h, nkb, R, 32]
            part = torch.matmul(a, vb)  # exact products, float32 accumulation over 32 keys
            sc = dp.scales[i].to(torch.float32).transpose(-1, -2).unsqueeze(-1)  # [b, h, nkb, R, 1]
            terms.append((part * sc).sum(dim=2))
        return _recombine(terms)


def quantized_attention(
    q: Tensor,
    cache: QuantizedKV,
    *,
    method: Method = "msd",
    causal: bool = False,
    scale: float | None = None,
    block_k: int = 512,
    passes: int = 2,
    mask: Tensor | None = None,
) -> Tensor:
    """Attention of ``q`` ``[batch, heads_q, seq_q, d_qk]`` over a quantized cache; float32 output.

    ``method="dequant"``: KV to BF16 then FlashAttention with BF16 ``P`` (the baseline); ``method="msd"``:
    decomposition of Q and of ``P̃`` with ``passes`` components (module docstring). Masking, GQA/MQA and
    causal alignment as :func:`lowbit.attention.flash_attention`.

    Edges as :func:`~lowbit.attention.flash_attention`: an empty batch or query sequence returns an empty
    ``[batch, heads_q, seq_q, dim_v]`` output; finite inputs whose scores overflow float32 are recomputed in
    float64 relative to each row's maximum (both methods) instead of turning into zeros or NaN.

    >>> from lowbit.attention.kvcache import quantize_kv
    >>> k, v = torch.randn(1, 1, 64, 32), torch.randn(1, 1, 64, 32)
    >>> out = quantized_attention(torch.randn(1, 2, 1, 32), quantize_kv(k, v), method="msd", block_k=32)
    >>> tuple(out.shape)
    (1, 2, 1, 32)
    """
    if not isinstance(cache, QuantizedKV):
        raise TypeError(f"cache must be a QuantizedKV (see quantize_kv), got {type(cache).__name__}")
    shape = check_qkv_shapes(q, cache.k.values, cache.v.values)
    if not bool(torch.isfinite(q).all()):
        raise ValueError("q contains NaN or Inf; mask positions with the `mask` argument instead")
    s = check_scale(scale, shape.dim_qk)
    check_block_k(block_k)
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be an integer >= 1, got {passes!r}")
    if method == "dequant":
        qb = q.to(torch.bfloat16).to(torch.float32)
        kd = cache.k.dequantize(torch.bfloat16).to(torch.float32)
        vd = cache.v.dequantize(torch.bfloat16).to(torch.float32)
        return flash_attention(qb, kd, vd, causal=causal, scale=s, block_k=block_k, mask=mask, p_dtype=torch.bfloat16)
    if method != "msd":
        raise ValueError(f"method must be 'dequant' or 'msd', got {method!r}")
    if shape.seq_q == 0 or shape.batch == 0:
        return torch.zeros(shape.batch, shape.heads_q, shape.seq_q, shape.dim_v)
    kernel = _MSDKernel(group_rows(q.to(torch.float32), shape), cache, shape, s, passes)
    out, _ = run_online_softmax(
        out_shape=(shape.batch, shape.heads_kv, shape.group * shape.seq_q, shape.dim_v),
        seq_k=shape.seq_k,
        block_k=block_k,
        scores_fn=kernel.scores,
        pv_fn=kernel.pv,
        mask_fn=make_mask_fn(shape, causal, mask),
        amla=None,
        scores64_fn=kernel.scores64,
    )
    return ungroup_rows(out, shape)
