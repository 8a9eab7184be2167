"""The quantized-KV error table: dequant vs MSD attention over the same cache, against float64.

Two errors per method (relative L2, decode: one query token per head, GQA 8 query / 2 KV heads):

* **total**: against float64 attention over the *unquantized* K, V (what a user sees; includes the cache's
  own quantization error, identical for both methods);
* **method**: against float64 attention over the *dequantized* cache (the error each method adds on top of
  the cache: BF16 rounding of ``K·s``, ``V·s`` and ``P`` for dequant; the Q and ``P̃`` decompositions for MSD).

The claim under test (msd.md §1, §8): MSD is no worse than dequant, and often better. Keys may carry outlier
channels as real models' keys do (a few channels with a large scale and offset, the reason KIVI quantizes
keys per channel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from lowbit.attention.kvcache import quantize_kv
from lowbit.attention.quantized import quantized_attention
from lowbit.attention.reference import attention_reference
from lowbit.lab.attention.amla_errors import rel_l2


@dataclass(frozen=True)
class CacheConfig:
    """A cache layout: format and INT8 granularities (ignored for MXFP4)."""

    fmt: str
    k_granularity: str = "channel"
    v_granularity: str = "token"

    @property
    def label(self) -> str:
        """Short name, e.g. ``int8 K/chan V/tok``."""
        if self.fmt == "mxfp4":
            return "mxfp4 (32 along dim)"
        short = {"channel": "chan", "token": "tok"}
        return f"int8 K/{short[self.k_granularity]} V/{short[self.v_granularity]}"


CACHE_CONFIGS = (
    CacheConfig("int8", "channel", "token"),
    CacheConfig("int8", "token", "channel"),
    CacheConfig("mxfp4"),
)


def kv_inputs(
    seq_k: int,
    dim: int,
    *,
    heads_q: int = 8,
    heads_kv: int = 2,
    seq_q: int = 1,
    outliers: bool = True,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gaussian ``q, k, v`` (bf16-representable); with ``outliers``, 4 key channels get ``8·k + 4``."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads_q, seq_q, dim, generator=g)
    k = torch.randn(1, heads_kv, seq_k, dim, generator=g)
    v = torch.randn(1, heads_kv, seq_k, dim, generator=g)
    if outliers:
        channels = torch.randperm(dim, generator=g)[:4]
        k[..., channels] = 8.0 * k[..., channels] + 4.0
    return tuple(t.to(torch.bfloat16).to(torch.float32) for t in (q, k, v))  # type: ignore[return-value]


@dataclass(frozen=True)
class KVErrorRow:
    """One row of the table; errors are relative L2 against float64."""

    cache: str
    data: str
    seq_k: int
    dim: int
    dequant_total: float
    msd_total: float
    dequant_method: float
    msd_method: float

    HEADER = (
        "cache",
        "K data",
        "seq_k",
        "head dim",
        "dequant total",
        "MSD total",
        "dequant method",
        "MSD method",
        "MSD ≤ dequant (method)",
        "MSD ≤ dequant (total)",
    )

    def cells(self) -> list[object]:
        """The row in :attr:`HEADER` order."""
        return [
            *asdict(self).values(),
            "yes" if self.msd_method <= self.dequant_method else "no",
            "yes" if self.msd_total <= self.dequant_total else "no",
        ]


def kv_error_row(
    config: CacheConfig, seq_k: int, dim: int, *, outliers: bool = True, block_k: int = 512, seed: int = 0
) -> KVErrorRow:
    """Quantize one cache, run both methods over it, and measure both errors."""
    q, k, v = kv_inputs(seq_k, dim, outliers=outliers, seed=seed)
    cache = quantize_kv(k, v, config.fmt, k_granularity=config.k_granularity, v_granularity=config.v_granularity)
    ref = attention_reference(q, k, v)
    ref_cache = attention_reference(q, cache.k.dequantize(torch.float64), cache.v.dequantize(torch.float64))
    dq = quantized_attention(q, cache, method="dequant", block_k=block_k)
    ms = quantized_attention(q, cache, method="msd", block_k=block_k)
    return KVErrorRow(
        cache=config.label,
        data="outlier channels" if outliers else "gaussian",
        seq_k=seq_k,
        dim=dim,
        dequant_total=rel_l2(dq, ref),
        msd_total=rel_l2(ms, ref),
        dequant_method=rel_l2(dq, ref_cache),
        msd_method=rel_l2(ms, ref_cache),
    )


def kv_error_table(
    seq_lens: Sequence[int] = (1024, 4096, 16384, 32768),
    dims: Sequence[int] = (64, 128),
    *,
    configs: Sequence[CacheConfig] = CACHE_CONFIGS,
    outliers: Sequence[bool] = (True,),
    block_k: int = 512,
    seed: int = 0,
) -> list[KVErrorRow]:
    """The grid of :func:`kv_error_row`."""
    return [
        kv_error_row(c, s, d, outliers=o, block_k=block_k, seed=seed)
        for o in outliers
        for c in configs
        for d in dims
        for s in seq_lens
    ]
