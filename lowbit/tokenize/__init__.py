"""LoPT: lossless parallel tokenization (``../shared/papers/lopt.md``).

>>> from lowbit.tokenize import ParallelTokenizer, load_tokenizer   # doctest: +SKIP
>>> with ParallelTokenizer(load_tokenizer("qwen2"), workers=2) as pt:
...     ids = pt.encode(text)
"""

from lowbit.tokenize.backends import BackendSpec, ChunkEncoding, Piece, fastokens_available, make_backend
from lowbit.tokenize.lopt import (
    LoptConfig,
    MergeStats,
    Plan,
    lossless_encode,
    make_plan,
    match_boundary,
    naive_encode,
    wrong_tokens,
)
from lowbit.tokenize.parallel import EncodeStats, ParallelTokenizer, VerificationError, usable_cores
from lowbit.tokenize.presets import PRESETS, LoadedTokenizer, load_tokenizer

__all__ = [
    "PRESETS",
    "BackendSpec",
    "ChunkEncoding",
    "EncodeStats",
    "LoadedTokenizer",
    "LoptConfig",
    "MergeStats",
    "ParallelTokenizer",
    "Piece",
    "Plan",
    "VerificationError",
    "fastokens_available",
    "load_tokenizer",
    "lossless_encode",
    "make_backend",
    "make_plan",
    "match_boundary",
    "naive_encode",
    "usable_cores",
    "wrong_tokens",
]
