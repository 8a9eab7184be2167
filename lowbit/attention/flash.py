"""Tiled FlashAttention reference in float32 with the multiply rescale or AMLA's integer-add rescale.

Layout ``[batch, heads, seq, head_dim]``; GQA/MQA by head groups; the value head dim may differ from the
query/key one (MLA: 576 vs 512); causal masks are aligned bottom-right, so ``seq_q = 1`` is decode.
The loop itself is :func:`lowbit.attention.online_softmax.run_online_softmax`; the ground truth is
:func:`lowbit.attention.reference.attention_reference` (float64).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lowbit.attention.amla import AMLA_EXACT, AMLA_KERNEL, AmlaConfig
from lowbit.attention.online_softmax import MaskFn, RescaleTrace, run_online_softmax
from lowbit.attention.shapes import AttentionShape, causal_allowed, check_mask, check_qkv, check_scale

Rescale = Literal["mul", "amla", "amla-bf16"]


def resolve_rescale(rescale: Rescale | AmlaConfig) -> AmlaConfig | None:
    """``"mul"`` -> None (multiply rescale); ``"amla"`` -> exact AMLA; ``"amla-bf16"`` -> the kernel's variant."""
    if isinstance(rescale, AmlaConfig):
        return rescale
    table: dict[str, AmlaConfig | None] = {"mul": None, "amla": AMLA_EXACT, "amla-bf16": AMLA_KERNEL}
    if rescale not in table:
        raise ValueError(f"rescale must be one of {sorted(table)} or an AmlaConfig, got {rescale!r}")
    return table[rescale]


def check_block_k(block_k: int) -> int:
    """The key block size must be a positive integer."""
    if isinstance(block_k, bool) or not isinstance(block_k, int) or block_k <= 0:
        raise ValueError(f"block_k must be a positive integer, got {block_k!r}")
    return block_k


def group_rows(x: Tensor, shape: AttentionShape) -> Tensor:
    """``[b, heads_q, seq_q, d] -> [b, heads_kv, group·seq_q, d]``: a key/value head's query rows side by side."""
    b, _, sq, d = x.shape
    return x.reshape(b, shape.heads_kv, shape.group * sq, d)


def ungroup_rows(x: Tensor, shape: AttentionShape) -> Tensor:
    """Inverse of :func:`group_rows`."""
    return x.reshape(shape.batch, shape.heads_q, shape.seq_q, x.shape[-1])


def make_mask_fn(shape: AttentionShape, causal: bool, mask: Tensor | None) -> MaskFn:
    """Additive bias per key block in the grouped row layout (causal and/or user mask)."""
    bias = check_mask(mask, shape)
    grouped = None if bias is None else group_rows(bias.contiguous(), shape)

    def fn(start: int, end: int) -> Tensor | None:
        out = None if grouped is None else grouped[..., start:end]
        if causal:
            allowed = causal_allowed(shape.seq_q, shape.seq_k, start, end).repeat(shape.group, 1)
            cb = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, float("-inf"))
            out = cb if out is None else out + cb
        return out

    return fn


def flash_attention_traced(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    block_k: int = 512,
    rescale: Rescale | AmlaConfig = "mul",
    mask: Tensor | None = None,
    p_dtype: torch.dtype | None = None,
) -> tuple[Tensor, RescaleTrace]:
    """:func:`flash_attention` that also returns the :class:`RescaleTrace` (how often the reference moved)."""
    shape = check_qkv(q, k, v)
    s = check_scale(scale, shape.dim_qk)
    check_block_k(block_k)
    amla = resolve_rescale(rescale)
    if amla is not None:
        if p_dtype is not None and p_dtype != amla.p_dtype:
            raise ValueError(f"p_dtype={p_dtype} conflicts with the AMLA variant's p_dtype={amla.p_dtype}")
        pd = amla.p_dtype
    else:
        pd = torch.float32 if p_dtype is None else p_dtype
        if pd not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"p_dtype must be float32, bfloat16 or float16, got {p_dtype}")
    if shape.seq_q == 0 or shape.batch == 0:
        empty = torch.zeros(shape.batch, shape.heads_q, shape.seq_q, shape.dim_v)
        return empty, RescaleTrace(0, 0, 0, 0, 0, 0.0)
    qg = group_rows(q.to(torch.float32), shape)
    k32 = k.to(torch.float32)
    v32 = v.to(torch.float32)

    def scores(start: int, end: int) -> Tensor:
        return torch.matmul(qg, k32[:, :, start:end].transpose(-1, -2)) * s

    def scores64(start: int, end: int) -> Tensor:  # only when the float32 scores overflow
        return torch.matmul(qg.to(torch.float64), k[:, :, start:end].to(torch.float64).transpose(-1, -2)) * s

    def pv(p: Tensor, start: int, end: int) -> Tensor:
        return torch.matmul(p.to(pd).to(torch.float32), v32[:, :, start:end])

    out, trace = run_online_softmax(
        out_shape=(shape.batch, shape.heads_kv, shape.group * shape.seq_q, shape.dim_v),
        seq_k=shape.seq_k,
        block_k=block_k,
        scores_fn=scores,
        pv_fn=pv,
        mask_fn=make_mask_fn(shape, causal, mask),
        amla=amla,
        scores64_fn=scores64,
    )
    return ungroup_rows(out, shape), trace


def flash_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    block_k: int = 512,
    rescale: Rescale | AmlaConfig = "mul",
    mask: Tensor | None = None,
    p_dtype: torch.dtype | None = None,
) -> Tensor:
    """Tiled online-softmax attention in float32; returns ``[batch, heads_q, seq_q, dim_v]`` float32.

    ``out = softmax(scale·q·kᵀ + mask) · v`` computed block by block over ``block_k`` keys
    (FlashAttention-2 order, see :mod:`lowbit.attention.online_softmax`).

    Args:
        q: ``[batch, heads_q, seq_q, dim_qk]``.
        k: ``[batch, heads_kv, seq_k, dim_qk]``; ``heads_q`` must be a multiple of ``heads_kv`` (GQA/MQA).
        v: ``[batch, heads_kv, seq_k, dim_v]``; ``dim_v`` may differ from ``dim_qk`` (MLA).
        causal: query ``i`` sees keys ``j <= seq_k - seq_q + i`` (bottom-right; ``seq_q = 1`` is decode).
        scale: softmax scale, default ``1/sqrt(dim_qk)``.
        block_k: keys per block.
        rescale: ``"mul"`` (FA-2 multiply), ``"amla"`` (exact integer-add rescale, amla.md §4),
            ``"amla-bf16"`` (the Ascend kernel's bf16 ``P̃`` with compensation, amla.md §3), or an
            :class:`~lowbit.attention.amla.AmlaConfig`.
        mask: bool (True = attend) or additive float (may hold ``-inf``), broadcastable to
            ``[batch, heads_q, seq_q, seq_k]``. Rows with every key masked return zeros.
        p_dtype: dtype ``P`` is rounded to before ``P·V`` with the multiply rescale (float32 default;
            bfloat16 gives the usual FA-2 kernel numerics). AMLA variants carry their own.

    Edges. An empty batch or query sequence returns an empty ``[batch, heads_q, seq_q, dim_v]`` output
    (an MoE expert or a serving batch may receive no tokens). NaN/Inf in ``q``, ``k`` or ``v`` raise
    ``ValueError`` (mask through ``mask``). Finite inputs whose scores ``scale·q·kᵀ`` overflow float32 are not
    turned into zeros: the blocks are recomputed in float64 relative to each row's maximum and the result
    matches :func:`~lowbit.attention.reference.attention_reference` (see
    :mod:`lowbit.attention.online_softmax`; ``RescaleTrace.shifted`` reports it).

    >>> q = torch.randn(1, 4, 3, 16); k = torch.randn(1, 2, 40, 16); v = torch.randn(1, 2, 40, 8)
    >>> from lowbit.attention.reference import attention_reference
    >>> out = flash_attention(q, k, v, causal=True, block_k=16, rescale="amla")
    >>> bool((out.double() - attention_reference(q, k, v, causal=True)).abs().max() < 1e-5)
    True
    """
    return flash_attention_traced(
        q, k, v, causal=causal, scale=scale, block_k=block_k, rescale=rescale, mask=mask, p_dtype=p_dtype
    )[0]
