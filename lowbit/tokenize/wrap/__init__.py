"""``parallelize(tokenizer)``: the tokenizer a user already holds, same class, LoPT for long texts.

Returns a copy of ``tokenizer`` whose class is a subclass of the original's, so ``isinstance`` checks, type hints
and downstream code keep working, and whose encode methods give the library's own outputs, field for field:

- ``transformers`` fast tokenizers (``PreTrainedTokenizerFast`` / ``TokenizersBackend`` and every model class built
  on it, what ``AutoTokenizer.from_pretrained`` returns): ``__call__`` (single, batched, pairs), ``encode``,
  ``tokenize`` with offsets, special tokens, truncation with stride and overflow, padding on either side,
  ``return_tensors`` (:mod:`lowbit.tokenize.wrap.hf`);
- ``tiktoken.Encoding``: ``encode``, ``encode_ordinary``, ``encode_to_numpy``, ``encode_batch``,
  ``encode_ordinary_batch`` with ``allowed_special`` / ``disallowed_special`` (:mod:`lowbit.tokenize.wrap.tiktoken`);
- ``sentencepiece.SentencePieceProcessor``: ``encode`` / ``Encode`` / ``EncodeAsIds`` / ``EncodeAsPieces`` with
  ``out_type`` int, str or ``"numpy"``, ``add_bos``, ``add_eos``, batches (:mod:`lowbit.tokenize.wrap.sentencepiece`).

Texts shorter than ``min_parallel_chars`` (default 32768) and calls LoPT does not cover (pre-tokenized input,
sampling, ``reverse``, proto outputs) go straight to the library. The copy pickles (``DataLoader`` workers: the copy
unpickles parallelized, with a fresh engine) and releases its worker pool on :meth:`close`, on ``with`` exit and
when it is garbage-collected. The original object is not modified.

>>> from lowbit.tokenize import load_tokenizer, parallelize
>>> enc = load_tokenizer("cl100k").obj                      # a tiktoken.Encoding
>>> text = "Parallel, and still the same ids. " * 3000        # 102K characters
>>> with parallelize(enc, workers=2, min_parallel_chars=10_000) as fast:
...     ids = fast.encode(text)
>>> type(fast).__name__, isinstance(fast, type(enc)), ids == enc.encode(text)
('Encoding', True, True)
"""

from __future__ import annotations

import copy
import os
import weakref
from dataclasses import dataclass
from typing import Any

from lowbit.tokenize.lopt import MIN_CHUNK_CHARS, LoptConfig

_ENGINE = "_lowbit_parallel"


@dataclass(frozen=True)
class ParallelizeOptions:
    """How a parallelized tokenizer splits long texts (see :class:`lowbit.tokenize.ParallelTokenizer`).

    ``workers``: upper bound on parallel workers (``None``: the usable cores); ``min_parallel_chars``: shorter
    texts go straight to the library; ``chunk_chars`` (at least 256), ``overlap_chars``, ``max_retries``: the
    LoPT plan (``None``: chosen per text).
    """

    workers: int | None = None
    min_parallel_chars: int = 32_768
    chunk_chars: int | None = None
    overlap_chars: int | None = None
    max_retries: int | None = None

    def __post_init__(self) -> None:
        w = self.workers
        if w is not None and (not isinstance(w, int) or isinstance(w, bool) or w < 1):
            raise ValueError(f"workers: expected a positive int or None, got {w!r}")
        c = self.chunk_chars
        if c is not None and (not isinstance(c, int) or isinstance(c, bool) or c < MIN_CHUNK_CHARS):
            raise ValueError(f"chunk_chars: expected None or an int of at least {MIN_CHUNK_CHARS}, got {c!r}")
        self.lopt_config()  # validates the rest

    def lopt_config(self) -> LoptConfig:
        """The merge's :class:`~lowbit.tokenize.lopt.LoptConfig`."""
        return LoptConfig(self.chunk_chars, self.overlap_chars, self.max_retries, self.min_parallel_chars)

    def parallelism(self) -> int:
        """``min(workers, usable cores)``."""
        from lowbit.tokenize.parallel import usable_cores

        return min(self.workers or usable_cores(), usable_cores())


class Engine:
    """What every parallelized tokenizer holds besides the library's own state (one per object)."""

    def __init__(self, options: ParallelizeOptions) -> None:
        self.options = options
        self.pid = os.getpid()
        self.closed = False

    def close(self) -> None:
        """Release pools; in a forked child (e.g. a ``DataLoader`` worker) the parent's pools are left alone."""
        self.closed = True


def parallelize(
    tokenizer: Any,
    *,
    workers: int | None = None,
    min_parallel_chars: int = 32_768,
    chunk_chars: int | None = None,
    overlap_chars: int | None = None,
    max_retries: int | None = None,
) -> Any:
    """A copy of ``tokenizer`` (same class, via a subclass) that encodes long texts with LoPT; see the module doc.

    Raises ``TypeError`` for objects it cannot wrap without changing what they return, naming what to use.
    """
    options = ParallelizeOptions(workers, min_parallel_chars, chunk_chars, overlap_chars, max_retries)
    if _ENGINE in getattr(tokenizer, "__dict__", {}):
        tokenizer = unwrap(tokenizer)
    return _attach(_copy_plain(tokenizer), options)


def unwrap(tokenizer: Any) -> Any:
    """A plain copy of a parallelized tokenizer (the library's class), or ``tokenizer`` itself if it is plain."""
    if _ENGINE not in getattr(tokenizer, "__dict__", {}):
        return tokenizer
    return _plain_view(tokenizer)


def _kind(tokenizer: Any) -> str:
    cls = type(tokenizer)
    names = {f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__}
    if "transformers.tokenization_utils_tokenizers.TokenizersBackend" in names:
        return "hf"
    if f"{cls.__module__}.{cls.__qualname__}" == "tiktoken.core.Encoding":
        return "tiktoken"
    if f"{cls.__module__}.{cls.__qualname__}" == "sentencepiece.SentencePieceProcessor":
        return "sentencepiece"
    if "tiktoken.core.Encoding" in names or "sentencepiece.SentencePieceProcessor" in names:
        raise TypeError(
            f"tokenizer: {cls.__qualname__} subclasses a library class and may change what encode returns; "
            "parallelize the library's own object, or use lowbit.tokenize.ParallelTokenizer"
        )
    raise TypeError(
        "tokenizer: parallelize() takes a transformers fast tokenizer (PreTrainedTokenizerFast), a "
        f"tiktoken.Encoding or a sentencepiece.SentencePieceProcessor; got {cls.__module__}.{cls.__qualname__}. "
        "For a tokenizers.Tokenizer (a Rust type that cannot be subclassed) or a preset name, use "
        "lowbit.tokenize.ParallelTokenizer"
    )


def _copy_plain(tokenizer: Any) -> Any:
    """A copy of a library object that shares nothing mutable with it (the user's object stays as it was)."""
    _kind(tokenizer)  # fail early, before copying
    return copy.deepcopy(tokenizer)


def _plain_view(obj: Any) -> Any:
    """An object of the library's class with ``obj``'s state (shared), without the engine."""
    base = type(obj).__lowbit_base__
    plain = base.__new__(base)
    plain.__dict__.update({k: v for k, v in obj.__dict__.items() if k != _ENGINE})
    return plain


def _attach(plain: Any, options: ParallelizeOptions) -> Any:
    """Turn ``plain`` (owned by us) into a parallelized object: subclass of its class, with an engine."""
    kind = _kind(plain)
    base = type(plain)
    if kind == "hf":
        from lowbit.tokenize.wrap.hf import HFEngine, ParallelTokenizersMixin

        mixin: type = ParallelTokenizersMixin
        engine: Any = HFEngine(options)
    elif kind == "tiktoken":
        from lowbit.tokenize.wrap.tiktoken import ParallelEncodingMixin, TiktokenEngine

        mixin, engine = ParallelEncodingMixin, TiktokenEngine(options, plain)
    else:
        from lowbit.tokenize.wrap.sentencepiece import ParallelProcessorMixin, SentencePieceEngine

        mixin, engine = ParallelProcessorMixin, SentencePieceEngine(options, plain)
    cls = type(
        base.__name__,
        (_Parallelized, mixin, base),
        {"__module__": __name__, "__qualname__": base.__qualname__, "__lowbit_base__": base},
    )
    plain.__dict__[_ENGINE] = engine
    plain.__class__ = cls
    weakref.finalize(plain, engine.close)
    return plain


def _restore(plain: Any, options: ParallelizeOptions) -> Any:
    """Unpickle: the library's object (restored by its own protocol), parallelized again with a fresh engine."""
    return _attach(plain, options)


class _Parallelized:
    """Lifecycle and pickling shared by every parallelized tokenizer (first in the MRO)."""

    __lowbit_base__: type

    @property
    def parallel_options(self) -> ParallelizeOptions:
        """The options this tokenizer was parallelized with."""
        return self.__dict__[_ENGINE].options

    def close(self) -> None:
        """Shut the worker pool down (if any); later long texts raise ``ValueError``, short ones still work."""
        self.__dict__[_ENGINE].close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (_restore, (_plain_view(self), self.__dict__[_ENGINE].options))

    def __copy__(self) -> Any:
        return _attach(_plain_view(self), self.__dict__[_ENGINE].options)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return _attach(copy.deepcopy(_plain_view(self), memo), self.__dict__[_ENGINE].options)
