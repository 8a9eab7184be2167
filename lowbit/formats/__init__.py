"""Bit-exact number formats: INT8/INT4, FP8 (E4M3FN, E5M2), OCP MX (MXFP8/6/4, E8M0 scales) and NVFP4.

One table of element formats (:data:`ELEMENT_FORMATS`), one rounding rule (RNE, documented saturation), one
MX quantizer serving every element type, one nibble layout for every 4-bit format. Quantizers are named verb
first: :func:`quantize_int`, :func:`quantize_mx`, :func:`quantize_nvfp4`. Long-form notes: ``docs/formats.md``;
sources: OCP Microscaling Formats (MX) v1.0, OCP 8-bit Floating Point (OFP8) v1.0, and ``docs/methods/msd.md``
§3-§7 (on "Multi-Scale Dequant: Eliminating Dequantization Bottleneck via Activation Decomposition for Efficient
LLM Inference", arXiv:2605.13915).

The E8M0 scale helpers (``encode_e8m0``, ``decode_e8m0``, the two shared-exponent rules) are internal; import
them from :mod:`lowbit.formats.e8m0`.

>>> import torch
>>> from lowbit.formats import quantize_mx
>>> quantize_mx(torch.tensor([1.0, 7.0, -0.3, 0.0]), "e2m1", block=4).dequantize().tolist()
[1.0, 6.0, -0.5, 0.0]
"""

from lowbit.formats.constants import FLOAT_DTYPES, SCALE_RULES
from lowbit.formats.elements import (
    ELEMENT_FORMATS,
    ElementFormat,
    decode_element,
    element_format,
    element_values,
    encode_element,
    round_to_element,
)
from lowbit.formats.fp8 import FP8_DTYPES, fp8_cast, fp8_cast_native
from lowbit.formats.integer import GRANULARITIES, IntQuantized, quantize_int
from lowbit.formats.mx import MX_FORMATS, MXTensor, quantize_mx
from lowbit.formats.nibbles import pack_nibbles, unpack_nibbles
from lowbit.formats.nvfp4 import NVFP4_BLOCK, NVFP4Tensor, quantize_nvfp4

__all__ = [
    "ELEMENT_FORMATS",
    "FLOAT_DTYPES",
    "FP8_DTYPES",
    "GRANULARITIES",
    "MX_FORMATS",
    "NVFP4_BLOCK",
    "SCALE_RULES",
    "ElementFormat",
    "IntQuantized",
    "MXTensor",
    "NVFP4Tensor",
    "decode_element",
    "element_format",
    "element_values",
    "encode_element",
    "fp8_cast",
    "fp8_cast_native",
    "pack_nibbles",
    "quantize_int",
    "quantize_mx",
    "quantize_nvfp4",
    "round_to_element",
    "unpack_nibbles",
]
