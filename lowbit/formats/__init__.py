"""Bit-exact number formats: INT8/INT4, FP8 (E4M3FN, E5M2), OCP MX (MXFP8/6/4, E8M0 scales) and NVFP4.

One table of element formats (:data:`ELEMENT_FORMATS`), one rounding rule (RNE, documented saturation), one
MX quantizer serving every element type. Long-form notes: ``docs/formats.md``; sources: OCP Microscaling
Formats v1.0, OCP OFP8 v1.0, ``../shared/papers/msd.md`` §3-§7.
"""

from lowbit.formats.e8m0 import (
    E8M0_BIAS,
    E8M0_NAN,
    SCALE_RULES,
    ceil_shared_exponent,
    decode_e8m0,
    encode_e8m0,
    ocp_shared_exponent,
)
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
from lowbit.formats.integer import GRANULARITIES, IntQuantized, pack_int4, quantize_int, unpack_int4
from lowbit.formats.mx import MX_FORMATS, MXTensor, pack_nibbles, quantize_mx, unpack_nibbles
from lowbit.formats.nvfp4 import NVFP4_BLOCK, NVFP4Tensor, quantize_nvfp4

__all__ = [
    "E8M0_BIAS",
    "E8M0_NAN",
    "ELEMENT_FORMATS",
    "FP8_DTYPES",
    "GRANULARITIES",
    "MX_FORMATS",
    "NVFP4_BLOCK",
    "SCALE_RULES",
    "ElementFormat",
    "IntQuantized",
    "MXTensor",
    "NVFP4Tensor",
    "ceil_shared_exponent",
    "decode_e8m0",
    "decode_element",
    "element_format",
    "element_values",
    "encode_e8m0",
    "encode_element",
    "fp8_cast",
    "fp8_cast_native",
    "ocp_shared_exponent",
    "pack_int4",
    "pack_nibbles",
    "quantize_int",
    "quantize_mx",
    "quantize_nvfp4",
    "round_to_element",
    "unpack_int4",
    "unpack_nibbles",
]
