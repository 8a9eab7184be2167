"""Checking and describing attention inputs laid out ``[batch, heads, seq, head_dim]``.

Grouped-query attention (GQA) and multi-query attention (MQA) share one key/value head between
``heads_q // heads_kv`` consecutive query heads: query head ``h`` reads key/value head ``h // group``.
Causal masking is aligned bottom-right (query ``i`` of ``seq_q`` sits at absolute position
``seq_k - seq_q + i``), which makes single-token decode the case ``seq_q = 1`` over the whole cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class AttentionShape:
    """The sizes of one attention call, after validation."""

    batch: int
    heads_q: int
    heads_kv: int
    seq_q: int
    seq_k: int
    dim_qk: int
    dim_v: int

    @property
    def group(self) -> int:
        """Query heads per key/value head (1: MHA, ``heads_q``: MQA)."""
        return self.heads_q // self.heads_kv


def _check_tensor(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name} must have 4 dimensions [batch, heads, seq, head_dim], got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    return t


def check_qkv_shapes(q: Tensor, k: Tensor, v: Tensor) -> AttentionShape:
    """Validate shapes only (the values are not read); raise ``ValueError`` naming the offending argument."""
    q, k, v = _check_tensor("q", q), _check_tensor("k", k), _check_tensor("v", v)
    b, hq, sq, dqk = q.shape
    bk, hk, sk, dk = k.shape
    bv, hv, sv, dv = v.shape
    if bk != b or bv != b:
        raise ValueError(f"batch sizes differ: q has {b}, k has {bk}, v has {bv}")
    if hv != hk:
        raise ValueError(f"k and v must have the same number of heads, got k: {hk}, v: {hv}")
    if hk == 0 or hq == 0:
        raise ValueError(f"head counts must be positive, got q: {hq}, k: {hk}")
    if hq % hk != 0:
        raise ValueError(f"q heads ({hq}) must be a multiple of k/v heads ({hk}) for grouped-query attention")
    if dk != dqk:
        raise ValueError(f"q and k head dims differ: q has {dqk}, k has {dk}")
    if sv != sk:
        raise ValueError(f"k and v sequence lengths differ: k has {sk}, v has {sv}")
    if sk == 0:
        raise ValueError("k has an empty sequence (seq = 0): softmax over zero keys is undefined")
    if dqk == 0 or dv == 0:
        raise ValueError(f"head dims must be positive, got qk: {dqk}, v: {dv}")
    return AttentionShape(b, hq, hk, sq, sk, dqk, dv)


def check_qkv(q: Tensor, k: Tensor, v: Tensor) -> AttentionShape:
    """Validate shapes and values (finite inputs; masking goes through ``mask``, never through ±inf in q/k/v)."""
    shape = check_qkv_shapes(q, k, v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf; mask positions with the `mask` argument instead")
    return shape


def check_scale(scale: float | None, dim_qk: int) -> float:
    """The softmax scale: ``1/sqrt(dim_qk)`` by default; must be finite and positive."""
    if scale is None:
        return float(dim_qk) ** -0.5
    s = float(scale)
    if not (s > 0.0 and s < float("inf")):
        raise ValueError(f"scale must be a finite positive number, got {scale!r}")
    return s


def check_mask(mask: Tensor | None, shape: AttentionShape) -> Tensor | None:
    """Validate ``mask`` and return it expanded to ``[batch, heads_q, seq_q, seq_k]`` as an additive float32 bias.

    Follows the ``torch.nn.functional.scaled_dot_product_attention`` convention: a bool mask marks the
    positions that take part (``True``); a float mask is added to the scores and may hold ``-inf``
    (but not NaN or ``+inf``).
    """
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    full = (shape.batch, shape.heads_q, shape.seq_q, shape.seq_k)
    try:
        expanded = mask.expand(full) if mask.dim() <= 4 else None
    except RuntimeError:
        expanded = None
    if expanded is None:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to {full}")
    if mask.dtype == torch.bool:
        zero = torch.zeros((), dtype=torch.float32)
        return torch.where(expanded, zero, torch.tensor(float("-inf")))
    if not mask.is_floating_point():
        raise TypeError(f"mask must be bool or floating point, got {mask.dtype}")
    if bool(torch.isnan(mask).any()) or bool((mask == float("inf")).any()):
        raise ValueError("mask contains NaN or +inf; use -inf (or False in a bool mask) to exclude a position")
    return expanded.to(torch.float32)


def causal_allowed(seq_q: int, seq_k: int, k_start: int, k_end: int) -> Tensor:
    """Bool ``[seq_q, k_end - k_start]``: key ``j`` is visible to query ``i`` iff ``j <= seq_k - seq_q + i``."""
    qpos = torch.arange(seq_q).unsqueeze(1) + (seq_k - seq_q)
    kpos = torch.arange(k_start, k_end).unsqueeze(0)
    return kpos <= qpos
