"""Decode attention over a quantized KV cache: bytes per KV element and latency, dequant vs MSD.

[inferred] reconstruction of docs/methods/msd.md §10 ("KV cache, up to 2.5x"). Bytes moved per KV
element in decode, with ``b`` the stored bytes per element (INT8: 1, MXFP4: 0.5 + 1/32):

* dequant, decoupled: read ``b`` + write a BF16 workspace (2) + read it back (2) = ``b + 4`` (INT8: 5 B);
* dequant, fused in registers (GPU): ``b``;
* MSD, each of the ``p`` passes streams the cache: ``p·b`` (INT8, p = 2: 2 B);
* MSD, passes stacked along M (the cache read once): ``b``.

So decoupled dequant / MSD = 5/2 = **2.5x** for INT8 with two streaming passes (the paper's "up to 2.5x"),
and 5x when the passes are fused.

Latency (same op-roofline rules as :mod:`lowbit.costmodel.linear`): FLOPs are
``2·B·Hq·Sq·S·(d_qk + d_v)``; dequant adds a vector op per KV element (``c_dq``); MSD runs its matrix work
at the low-precision peak ``p`` times and pays ``p·c_dec`` vector ops per probability (the decomposition of
P) and per query element; both pay ``softmax_ops`` per score.
"""

from __future__ import annotations

from dataclasses import dataclass

from lowbit.costmodel.hardware import Hardware
from lowbit.costmodel.linear import (
    DEFAULT_PARAMS,
    WEIGHT_BYTES,
    CostParams,
    KernelCost,
    low_precision_peak,
    make_op,
)


@dataclass(frozen=True)
class DecodeAttentionShape:
    """Decode attention of one layer.

    Attributes:
        name: label.
        heads_q: query heads.
        heads_kv: key/value heads.
        dim_qk: query/key head dim.
        dim_v: value head dim.
        shared_kv: V is a slice of the K cache (absorbed MLA): the cache holds ``dim_qk`` per token and head.
    """

    name: str
    heads_q: int
    heads_kv: int
    dim_qk: int
    dim_v: int
    shared_kv: bool = False

    @property
    def kv_elements_per_token(self) -> int:
        """Cached elements per token: ``heads_kv·(d_qk + d_v)``, or ``heads_kv·d_qk`` when V shares K."""
        return self.heads_kv * (self.dim_qk if self.shared_kv else self.dim_qk + self.dim_v)


BYTES_PER_KV_SCHEMES = ("dequant (decoupled)", "dequant (fused)", "msd (passes stream KV)", "msd (passes stacked)")


def kv_bytes_per_element(kv_format: str, scheme: str, *, passes: int = 2) -> float:
    """Bytes moved per KV element in decode for one of :data:`BYTES_PER_KV_SCHEMES`.

    >>> kv_bytes_per_element("int8", "dequant (decoupled)") / kv_bytes_per_element("int8", "msd (passes stream KV)")
    2.5
    """
    if kv_format not in WEIGHT_BYTES:
        raise ValueError(f"kv_format must be one of {sorted(WEIGHT_BYTES)}, got {kv_format!r}")
    b = WEIGHT_BYTES[kv_format]
    table = {
        "dequant (decoupled)": b + 2.0 + 2.0,
        "dequant (fused)": b,
        "msd (passes stream KV)": passes * b,
        "msd (passes stacked)": b,
    }
    if scheme not in table:
        raise ValueError(f"scheme must be one of {BYTES_PER_KV_SCHEMES}, got {scheme!r}")
    return table[scheme]


def decode_attention_cost(
    hw: Hardware,
    shape: DecodeAttentionShape,
    seq_k: int,
    *,
    batch: int = 1,
    seq_q: int = 1,
    kv_format: str = "int8",
    scheme: str = "dequant",
    params: CostParams = DEFAULT_PARAMS,
) -> KernelCost:
    """Latency and traffic of one layer's decode attention over a quantized cache on ``hw``."""
    for name, v in (("seq_k", seq_k), ("batch", batch), ("seq_q", seq_q)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if kv_format not in WEIGHT_BYTES:
        raise ValueError(f"kv_format must be one of {sorted(WEIGHT_BYTES)}, got {kv_format!r}")
    b = WEIGHT_BYTES[kv_format]
    elements = float(batch) * seq_k * shape.kv_elements_per_token
    scores = float(batch) * shape.heads_q * seq_q * seq_k
    flops = 2.0 * scores * (shape.dim_qk + shape.dim_v)
    q_bytes = 2.0 * batch * shape.heads_q * seq_q * (shape.dim_qk + shape.dim_v)  # Q in, O out, bf16
    softmax = params.softmax_ops * scores
    if scheme == "dequant":
        dq = params.dequant_ops(kv_format) * elements
        if hw.decoupled:
            ops = (
                make_op(hw, "dequant KV -> bf16 workspace", nbytes=elements * (b + 2.0), vector_ops=dq),
                make_op(
                    hw,
                    "bf16 attention",
                    nbytes=2.0 * elements + q_bytes,
                    vector_ops=softmax,
                    matrix_time=flops / hw.p16,
                ),
            )
        else:
            ops = (
                make_op(
                    hw,
                    "fused dequant + attention",
                    nbytes=elements * b + q_bytes,
                    vector_ops=dq + softmax,
                    matrix_time=flops / hw.p16,
                ),
            )
        return KernelCost("dequant", ops)
    if scheme != "msd":
        raise ValueError(f"scheme must be 'dequant' or 'msd', got {scheme!r}")
    peak = low_precision_peak(hw, kv_format)
    if peak is None:
        raise ValueError(f"{hw.name} has no native MXFP4 matrix unit: MSD over an MXFP4 cache does not apply")
    p = params.passes
    reads = 1 if params.stack_passes else p
    decomp = p * params.decompose_ops * (scores + batch * shape.heads_q * seq_q * shape.dim_qk)
    ops = (
        make_op(
            hw,
            f"MSD attention x{p}",
            nbytes=reads * elements * b + q_bytes,
            vector_ops=softmax + decomp,
            matrix_time=p * flops / peak,
        ),
    )
    return KernelCost("msd", ops)
