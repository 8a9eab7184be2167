"""MSD, Multi-Scale Dequant: quantized GEMMs that never dequantize the weight (``docs/methods/msd.md``).

The activation is decomposed into a few low-precision components with shrinking scales
(:func:`decompose`); each component multiplies the quantized weight in an exact low-precision GEMM and the
partial products are recombined in FP32 (:func:`matmul`). :func:`error_bound` and :func:`effective_bits` give
the bounds and the measured precision; :func:`dequant_matmul` is the BF16 dequant baseline and
:func:`matmul_reference` the float64 reference. For inference: :class:`MSDLinear` (fast VNNI INT8 path),
:func:`quantize_model` with an :class:`MSDConfig`, and :func:`save_quantized` / :func:`load_quantized`.
"""

from lowbit.msd.bits import effective_bits
from lowbit.msd.bounds import error_bound
from lowbit.msd.checkpoint import load_quantized, save_quantized
from lowbit.msd.config import MSDConfig
from lowbit.msd.decompose import Decomposition, decompose
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
    "load_quantized",
    "matmul",
    "matmul_error_bound",
    "matmul_reference",
    "quantize_model",
    "save_quantized",
]
