"""lowbit: a low-precision LLM stack (LoPT, MSD, AMLA, AIS) that is fast and checked against exact references.

Capabilities live in subpackages: ``lowbit.formats`` (bit-exact number formats), ``lowbit.tokenize``
(lossless parallel tokenization), ``lowbit.msd`` (Multi-Scale Dequant), ``lowbit.attention`` (quantized-KV
and AMLA attention), ``lowbit.costmodel`` (latency/HBM model) and ``lowbit.rl`` (AIS correction).
"""

__version__ = "0.1.0"
