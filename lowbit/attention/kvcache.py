"""A quantized KV cache: INT8 (per token or per channel) or MXFP4 (blocks of 32 along the head dim).

The cache holds the codes and scales exactly as :mod:`lowbit.formats` produces them; both attention
methods of :func:`lowbit.attention.quantized.quantized_attention` read the same cache.

* INT8, ``granularity="token"``: one scale per (batch, head, token), ``x ≈ q[j, d] · s[j]``
  (``formats.quantize_int(..., granularity="token")``).
* INT8, ``granularity="channel"``: one scale per (batch, head, channel) over the whole sequence,
  ``x ≈ q[j, d] · s[d]`` (KIVI-style keys: outlier channels get their own scale).
* MXFP4: E2M1 elements with one E8M0 scale per 32 consecutive head-dim elements of a token
  (``formats.quantize_mx(..., "e2m1", block=32, axis=-1)``), 4.25 bits per element (msd.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lowbit import formats

KVFormat = Literal["int8", "mxfp4"]
Granularity = Literal["token", "channel", "block32"]


@dataclass(frozen=True)
class QuantizedTensor:
    """One of K or V, ``[batch, heads, seq, dim]``, as codes and scales.

    Attributes:
        fmt: ``"int8"`` or ``"mxfp4"``.
        granularity: ``"token"`` / ``"channel"`` (INT8) or ``"block32"`` (MXFP4).
        values: the unscaled element values as float32 (INT8 codes in [-127, 127]; E2M1 grid values).
        scales: float32; INT8 token: ``[b, h, seq, 1]``; INT8 channel: ``[b, h, 1, dim]``; MXFP4:
            ``[b, h, seq, dim/32]`` (powers of two).
        codes: the stored representation (``IntQuantized`` or ``MXTensor``) for byte accounting.
    """

    fmt: str
    granularity: str
    values: Tensor
    scales: Tensor
    codes: object

    @property
    def shape(self) -> tuple[int, ...]:
        """``(batch, heads, seq, dim)``."""
        return tuple(self.values.shape)

    def expanded_scales(self) -> Tensor:
        """Scales broadcast to ``values``' shape."""
        if self.fmt == "mxfp4":
            return self.scales.repeat_interleave(32, dim=-1)
        return self.scales.expand(self.values.shape)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """``values · scales`` formed in float64 and rounded once to ``dtype``."""
        return (self.values.to(torch.float64) * self.expanded_scales().to(torch.float64)).to(dtype)

    @property
    def bits_per_element(self) -> float:
        """Storage bits per element including scales (INT8 scales counted as float32)."""
        n = self.values.numel()
        if self.fmt == "mxfp4":
            return 4.0 + 8.0 / 32.0
        return 8.0 + 32.0 * self.scales.numel() / max(n, 1)


@dataclass(frozen=True)
class QuantizedKV:
    """A quantized KV cache: ``k`` ``[b, h_kv, seq, d_qk]`` and ``v`` ``[b, h_kv, seq, d_v]``."""

    k: QuantizedTensor
    v: QuantizedTensor

    @property
    def fmt(self) -> str:
        """``"int8"`` or ``"mxfp4"``."""
        return self.k.fmt


def _quantize_int8(x: Tensor, granularity: str, name: str) -> QuantizedTensor:
    if granularity == "token":
        r = formats.quantize_int(x, bits=8, granularity="token")
        return QuantizedTensor("int8", "token", r.q.to(torch.float32), r.scale, r)
    if granularity == "channel":
        r = formats.quantize_int(x.transpose(-1, -2), bits=8, granularity="channel")
        values = r.q.transpose(-1, -2).to(torch.float32)
        return QuantizedTensor("int8", "channel", values, r.scale.transpose(-1, -2), r)
    raise ValueError(f"{name}_granularity must be 'token' or 'channel' for int8, got {granularity!r}")


def _quantize_mxfp4(x: Tensor, scale_rule: str, name: str) -> QuantizedTensor:
    if x.shape[-1] % 32:
        raise ValueError(f"{name} head dim {x.shape[-1]} is not a multiple of 32 (the MXFP4 block)")
    mx = formats.quantize_mx(x, "e2m1", block=32, axis=-1, scale_rule=scale_rule)
    return QuantizedTensor("mxfp4", "block32", mx.element_values().to(torch.float32), mx.scales(), mx)


def quantize_kv(
    k: Tensor,
    v: Tensor,
    fmt: KVFormat = "int8",
    *,
    k_granularity: str = "channel",
    v_granularity: str = "token",
    scale_rule: str = "ocp",
) -> QuantizedKV:
    """Quantize a KV cache (``[batch, heads_kv, seq, dim]`` each).

    Args:
        fmt: ``"int8"`` or ``"mxfp4"``.
        k_granularity, v_granularity: INT8 only, ``"token"`` or ``"channel"`` (defaults: keys per channel,
            values per token, as KIVI). Ignored for MXFP4 (always blocks of 32 along the head dim).
        scale_rule: MXFP4 only: ``"ocp"`` (the spec's saturating rule, default) or ``"ceil"``.

    >>> kv = quantize_kv(torch.randn(1, 2, 64, 32), torch.randn(1, 2, 64, 32), "mxfp4")
    >>> kv.k.scales.shape
    torch.Size([1, 2, 64, 1])
    """
    for name, t in (("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-d tensor [batch, heads, seq, dim]")
        if t.shape[2] == 0:
            raise ValueError(f"{name} has an empty sequence")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf; a quantized cache cannot hold them")
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(f"k and v must agree in batch, heads and seq, got {tuple(k.shape)} and {tuple(v.shape)}")
    if fmt == "int8":
        return QuantizedKV(_quantize_int8(k, k_granularity, "k"), _quantize_int8(v, v_granularity, "v"))
    if fmt == "mxfp4":
        if scale_rule not in formats.SCALE_RULES:
            raise ValueError(f"scale_rule must be 'ocp' or 'ceil', got {scale_rule!r}")
        return QuantizedKV(_quantize_mxfp4(k, scale_rule, "k"), _quantize_mxfp4(v, scale_rule, "v"))
    raise ValueError(f"fmt must be 'int8' or 'mxfp4', got {fmt!r}")
