"""Attention over quantized KV caches: FlashAttention reference, AMLA integer-add rescale, MSD vs dequant.

Notes: ../shared/papers/amla.md (AMLA) and ../shared/papers/msd.md §9 (MSD attention).
"""

from lowbit.attention.amla import (
    AMLA_EXACT,
    AMLA_KERNEL,
    AMLA_KERNEL_NO_COMPENSATION,
    AmlaConfig,
    mul_pow2_via_int_add,
)
from lowbit.attention.flash import flash_attention, flash_attention_traced
from lowbit.attention.online_softmax import RescaleTrace
from lowbit.attention.reference import attention_reference

__all__ = [
    "AMLA_EXACT",
    "AMLA_KERNEL",
    "AMLA_KERNEL_NO_COMPENSATION",
    "AmlaConfig",
    "RescaleTrace",
    "attention_reference",
    "flash_attention",
    "flash_attention_traced",
    "mul_pow2_via_int_add",
]
