"""Closed-form latency and HBM-traffic model of dequant vs MSD (../shared/papers/msd.md §10-§11).

The model is an [inferred] reconstruction: the paper's own model was not visible. Hardware figures carry
their source and status (:mod:`lowbit.costmodel.hardware`).
"""

from lowbit.costmodel.hardware import PRESETS, Hardware, get_hardware, load_hardware
from lowbit.costmodel.kvcache import DecodeAttentionShape, decode_attention_cost, kv_bytes_per_element
from lowbit.costmodel.linear import DEFAULT_PARAMS, CostParams, KernelCost, OpCost, linear_cost
from lowbit.costmodel.models import MODELS, LinearShape, ModelShape, get_model

__all__ = [
    "DEFAULT_PARAMS",
    "MODELS",
    "PRESETS",
    "CostParams",
    "DecodeAttentionShape",
    "Hardware",
    "KernelCost",
    "LinearShape",
    "ModelShape",
    "OpCost",
    "decode_attention_cost",
    "get_hardware",
    "get_model",
    "kv_bytes_per_element",
    "linear_cost",
    "load_hardware",
]
