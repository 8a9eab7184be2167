"""The float64 reference: naive softmax attention, the ground truth every other path is measured against.

    out[b, h, i] = Σ_j softmax_j(scale · q[b,h,i]·k[b,h//g,j] + bias[b,h,i,j]) · v[b,h//g,j]

computed in float64 over the whole score matrix at once. A row whose keys are all masked has no
softmax; its output is defined as zero (never NaN), the same convention as :func:`flash_attention`.
See docs/methods/msd.md §9 ("Reference") and docs/methods/amla.md §7 item 2.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lowbit.attention.shapes import causal_allowed, check_mask, check_qkv, check_scale


def attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Softmax attention in float64; returns ``[batch, heads_q, seq_q, dim_v]`` float64.

    >>> q = torch.zeros(1, 1, 1, 4); k = torch.zeros(1, 1, 3, 4); v = torch.arange(3.).reshape(1, 1, 3, 1)
    >>> attention_reference(q, k, v).item()  # uniform weights over three keys
    1.0
    """
    shape = check_qkv(q, k, v)
    s = check_scale(scale, shape.dim_qk)
    bias = check_mask(mask, shape)
    # Grouped rows ([b, heads_kv, group·seq_q, d]) instead of repeating K/V per query head: MQA with 128
    # heads would otherwise copy the cache 128 times.
    b, hk, g, sq = shape.batch, shape.heads_kv, shape.group, shape.seq_q
    qg = q.to(torch.float64).reshape(b, hk, g * sq, shape.dim_qk)
    scores = torch.matmul(qg, k.to(torch.float64).transpose(-1, -2)) * s
    scores = scores.reshape(b, hk, g, sq, shape.seq_k)
    if bias is not None:
        scores = scores + bias.to(torch.float64).reshape(b, hk, g, sq, shape.seq_k)
    if causal:
        allowed = causal_allowed(sq, shape.seq_k, 0, shape.seq_k)
        scores = scores.masked_fill(~allowed, float("-inf"))
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(scores - m)
    denom = p.sum(dim=-1, keepdim=True).reshape(b, hk, g * sq, 1)
    out = torch.matmul(p.reshape(b, hk, g * sq, shape.seq_k), v.to(torch.float64))
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    out = torch.where(denom > 0, out / safe, torch.zeros_like(out))
    return out.reshape(b, shape.heads_q, sq, shape.dim_v)
