"""Closed-form latency and HBM-traffic model of dequant vs MSD (docs/methods/msd.md §10-§11).

MSD is Zheng et al., "Multi-Scale Dequant: Eliminating Dequantization Bottleneck via Activation Decomposition for
Efficient LLM Inference" (arXiv:2605.13915). The model is an [inferred] reconstruction: the paper's own model was
not visible. Hardware figures carry their source and status (:mod:`lowbit.costmodel.hardware`).

* :func:`linear_cost` (one ``M×K×N`` W8A16/W4A16 layer) and :func:`decode_attention_cost` (decode over a
  quantized KV cache of a :class:`DecodeAttentionShape`) return a :class:`KernelCost` (``.latency``, ``.bytes``);
  :func:`kv_bytes_per_element` is the traffic per KV element; :class:`CostParams` holds the [inferred] op counts.
* :class:`Hardware`: the presets in :data:`PRESETS` (:func:`get_hardware`) or a TOML file (:func:`load_hardware`).
* :class:`ModelShape` (of :class:`LinearShape`): the named shapes in :data:`MODELS` (:func:`get_model`).

Calibrating the model on this CPU and checking it against measured timings is a study: ``lowbit cost-check``
(:mod:`lowbit.lab.costmodel`).
"""

from lowbit.costmodel.hardware import PRESETS, Hardware, get_hardware, load_hardware
from lowbit.costmodel.kvcache import DecodeAttentionShape, decode_attention_cost, kv_bytes_per_element
from lowbit.costmodel.linear import CostParams, KernelCost, linear_cost
from lowbit.costmodel.models import MODELS, LinearShape, ModelShape, get_model

__all__ = [
    "MODELS",
    "PRESETS",
    "CostParams",
    "DecodeAttentionShape",
    "Hardware",
    "KernelCost",
    "LinearShape",
    "ModelShape",
    "decode_attention_cost",
    "get_hardware",
    "get_model",
    "kv_bytes_per_element",
    "linear_cost",
    "load_hardware",
]
