"""MSD, Multi-Scale Dequant: quantized GEMMs that never dequantize the weight.

The method of "Multi-Scale Dequant: Eliminating Dequantization Bottleneck via Activation Decomposition for
Efficient LLM Inference" (arXiv:2605.13915), described in ``docs/methods/msd.md``. The activation is decomposed
into a few low-precision components with shrinking scales (:func:`decompose`); each component multiplies the
quantized weight in an exact low-precision GEMM and the partial products are recombined in FP32 (:func:`matmul`).
:func:`error_bound`, :func:`matmul_error_bound` and :func:`effective_bits` give the bounds and the measured
precision; :func:`dequant_matmul` is the BF16 dequant baseline and :func:`matmul_reference` the float64 reference.

For inference: :class:`MSDLinear` (fast INT8 path on the CPU), :func:`quantize_model` with an :class:`MSDConfig`,
:func:`save_quantized` / :func:`load_quantized`, :func:`quantize_checkpoint` (``lowbit quantize``: a Hugging
Face safetensors folder converted tensor by tensor) and :func:`from_pretrained` (that folder as a transformers model;
``lowbit.msd.hf`` also registers a transformers quantizer for it).

>>> import torch
>>> from lowbit import formats
>>> x = torch.randn(4, 256, dtype=torch.float64)
>>> d = decompose(x, "int8", passes=2)
>>> bool(((x - d.reconstruct(torch.float64)).abs() <= error_bound(x, "int8", passes=2)).all())
True
>>> w_q = formats.quantize_int(torch.randn(16, 256) * 0.02, 8, "channel")
>>> matmul(x, w_q, passes=2).shape
torch.Size([4, 16])
"""

from lowbit.msd.bits import effective_bits
from lowbit.msd.bounds import error_bound
from lowbit.msd.checkpoint import load_quantized, save_quantized
from lowbit.msd.config import MSDConfig
from lowbit.msd.convert import quantize_checkpoint
from lowbit.msd.decompose import Decomposition, decompose
from lowbit.msd.hf import from_pretrained
from lowbit.msd.linear import MSDLinear
from lowbit.msd.multiply import dequant_matmul, matmul, matmul_error_bound, matmul_reference
from lowbit.msd.quantize_model import quantize_model

__all__ = [
    "Decomposition",
    "MSDConfig",
    "MSDLinear",
    "decompose",
    "dequant_matmul",
    "effective_bits",
    "error_bound",
    "from_pretrained",
    "load_quantized",
    "matmul",
    "matmul_error_bound",
    "matmul_reference",
    "quantize_checkpoint",
    "quantize_model",
    "save_quantized",
]
