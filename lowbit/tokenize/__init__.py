"""LoPT: lossless parallel tokenization of long texts, ids identical to the tokenizer's own sequential encode.

Method: ``docs/methods/lopt.md``, after "LoPT: Lossless Parallel Tokenization Acceleration for Long Context
Inference of Large Language Model" (Shao et al., arXiv:2511.04952). User guide: ``docs/tokenize.md``.

>>> from lowbit.tokenize import ParallelTokenizer, load_tokenizer
>>> text = "Tokenize me, losslessly. " * 2000
>>> tok = load_tokenizer("bert")  # ships with lowbit; see PRESETS for the others
>>> with ParallelTokenizer(tok, workers=2, min_parallel_chars=0) as pt:
...     ids = pt.encode(text)
>>> ids == tok.encode(text)
True

The building blocks (backends, the merge, the plan) are importable from their modules
(:mod:`lowbit.tokenize.backends`, :mod:`lowbit.tokenize.lopt`) but are not part of this package's interface.
"""

from lowbit.tokenize.backends import fastokens_available
from lowbit.tokenize.parallel import EncodeStats, ParallelTokenizer, VerificationError
from lowbit.tokenize.presets import PRESETS, LoadedTokenizer, MissingVocabularyPackage, load_tokenizer
from lowbit.tokenize.wrap import parallelize

__all__ = [
    "PRESETS",
    "EncodeStats",
    "LoadedTokenizer",
    "MissingVocabularyPackage",
    "ParallelTokenizer",
    "VerificationError",
    "fastokens_available",
    "load_tokenizer",
    "parallelize",
]
