"""Attention over quantized KV caches: FlashAttention with the AMLA integer-add rescale, MSD over INT8/MXFP4 KV.

Methods: docs/methods/amla.md (AMLA: Liao, Hu, Miao et al., "AMLA: MUL by ADD in FlashAttention Rescaling",
arXiv:2509.25224) and docs/methods/msd.md §9 (MSD attention: Zheng et al., "Multi-Scale Dequant: Eliminating
Dequantization Bottleneck via Activation Decomposition for Efficient LLM Inference", arXiv:2605.13915).

* :func:`flash_attention` / :func:`flash_attention_traced`: tiled FlashAttention-2 with the multiply rescale or
  AMLA's ``F·2^n = AS_FP32(AS_INT32(F) + (n << 23))`` (``rescale="amla"``, ``"amla-bf16"`` or an
  :class:`AmlaConfig`); :func:`attention_reference` is the float64 ground truth.
* :func:`quantize_kv` -> :class:`QuantizedKV`, then :func:`quantized_attention` with ``method="dequant"`` (the
  BF16 baseline) or ``"msd"`` (Q and the probabilities decomposed, the cache never dequantized).

* Inside transformers: :class:`Int8KVCache` (a ``transformers.Cache`` of INT8 codes and float scales, configured by
  :class:`Int8KVConfig`) and :func:`use_msd_attention` (registers the MSD attention over those codes, and its mask
  function, with transformers; :class:`MSDAttentionConfig`).

The AMLA presets (``AMLA_EXACT``, ``AMLA_KERNEL``, ...) and the DeepSeek-V3 MLA shapes stay in their modules
(:mod:`lowbit.attention.amla`, :mod:`lowbit.attention.mla`).
"""

from lowbit.attention.amla import AmlaConfig, mul_pow2_via_int_add
from lowbit.attention.flash import flash_attention, flash_attention_traced
from lowbit.attention.hf_attention import MSDAttentionConfig, use_msd_attention
from lowbit.attention.hf_cache import Int8KVCache, Int8KVConfig
from lowbit.attention.kvcache import QuantizedKV, QuantizedTensor, quantize_kv
from lowbit.attention.online_softmax import RescaleTrace
from lowbit.attention.quantized import quantized_attention
from lowbit.attention.reference import attention_reference

__all__ = [
    "AmlaConfig",
    "Int8KVCache",
    "Int8KVConfig",
    "MSDAttentionConfig",
    "QuantizedKV",
    "QuantizedTensor",
    "RescaleTrace",
    "attention_reference",
    "flash_attention",
    "flash_attention_traced",
    "mul_pow2_via_int_add",
    "quantize_kv",
    "quantized_attention",
    "use_msd_attention",
]
