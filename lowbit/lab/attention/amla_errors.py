"""The AMLA error table: integer-add rescale vs FA-2 multiply rescale vs float64 on DeepSeek-V3 MLA decode.

Reproduces the shape of docs/methods/amla.md §6: relative L2 errors against the float64 softmax
attention, for the exact variant (float32 ``P̃``, float32 ``c``) and the kernel's bf16 variant with and
without the compensation term, next to FlashAttention with the multiply rescale (float32 and bf16 ``P``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from lowbit.attention.amla import AMLA_EXACT, AMLA_KERNEL, AMLA_KERNEL_NO_COMPENSATION
from lowbit.attention.flash import flash_attention_traced
from lowbit.attention.mla import DEEPSEEK_V3_MLA, MLADecodeShape, Pattern, mla_decode_inputs
from lowbit.attention.reference import attention_reference


def rel_l2(x: Tensor, ref: Tensor) -> float:
    """``‖x - ref‖₂ / ‖ref‖₂`` in float64."""
    ref64 = ref.to(torch.float64)
    return float(torch.linalg.vector_norm(x.to(torch.float64) - ref64) / torch.linalg.vector_norm(ref64))


@dataclass(frozen=True)
class AmlaErrorRow:
    """One configuration of the AMLA table; errors are relative L2."""

    seq_k: int
    seq_q: int
    block_k: int
    pattern: str
    fa_mul_fp32: float
    amla_exact: float
    amla_exact_vs_fa_mul: float
    fa_mul_bf16: float
    amla_bf16_comp: float
    amla_bf16_nocomp: float
    moved_fraction: float
    min_shift: int
    clamped: int

    HEADER = (
        "seq_k",
        "seq_q",
        "block",
        "pattern",
        "FA-mul fp32 vs f64",
        "AMLA exact vs f64",
        "AMLA exact vs FA-mul",
        "FA-mul bf16-P vs f64",
        "AMLA-bf16 comp vs f64",
        "AMLA-bf16 no-comp vs f64",
        "Δn≠0 fraction",
        "min Δn",
        "clamped",
    )

    def cells(self) -> list[object]:
        """The row in :attr:`HEADER` order."""
        return list(asdict(self).values())


def amla_error_row(
    seq_k: int,
    *,
    seq_q: int = 1,
    block_k: int = 512,
    pattern: Pattern = "ramp",
    shape: MLADecodeShape = DEEPSEEK_V3_MLA,
    seed: int = 0,
) -> AmlaErrorRow:
    """Run the five attention variants and the float64 reference on one MLA decode problem."""
    q, k, v = mla_decode_inputs(shape, seq_k, seq_q=seq_q, pattern=pattern, seed=seed)
    scale = shape.softmax_scale
    ref = attention_reference(q, k, v, scale=scale)

    def run(rescale: object, p_dtype: torch.dtype | None = None) -> tuple[Tensor, object]:
        return flash_attention_traced(q, k, v, scale=scale, block_k=block_k, rescale=rescale, p_dtype=p_dtype)

    fa32, _ = run("mul")
    amla, trace = run(AMLA_EXACT)
    fa16, _ = run("mul", torch.bfloat16)
    comp, ktrace = run(AMLA_KERNEL)
    nocomp, _ = run(AMLA_KERNEL_NO_COMPENSATION)
    return AmlaErrorRow(
        seq_k=seq_k,
        seq_q=seq_q,
        block_k=block_k,
        pattern=pattern,
        fa_mul_fp32=rel_l2(fa32, ref),
        amla_exact=rel_l2(amla, ref),
        amla_exact_vs_fa_mul=rel_l2(amla, fa32),
        fa_mul_bf16=rel_l2(fa16, ref),
        amla_bf16_comp=rel_l2(comp, ref),
        amla_bf16_nocomp=rel_l2(nocomp, ref),
        moved_fraction=trace.moved_fraction,
        min_shift=trace.min_shift,
        clamped=ktrace.clamped,
    )


def amla_error_table(
    seq_lens: Sequence[int] = (4096, 32768),
    *,
    seq_qs: Sequence[int] = (1, 2),
    patterns: Sequence[Pattern] = ("ramp", "jump"),
    block_k: int = 512,
    seed: int = 0,
) -> list[AmlaErrorRow]:
    """The grid of :func:`amla_error_row` over sequence lengths, query tokens (MTP) and max patterns."""
    return [
        amla_error_row(s, seq_q=sq, block_k=block_k, pattern=p, seed=seed)
        for s in seq_lens
        for sq in seq_qs
        for p in patterns
    ]
