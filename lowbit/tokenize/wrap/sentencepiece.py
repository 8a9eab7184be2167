"""``parallelize`` for ``sentencepiece.SentencePieceProcessor``: ``Encode`` (and its aliases) overridden.

``encode``, ``Encode``, ``tokenize`` and ``Tokenize`` are the override; ``EncodeAsIds``, ``EncodeAsPieces`` and
``EncodeAsNumpy`` call ``self.Encode`` and get it too. A text of at least ``min_parallel_chars`` characters is
encoded by LoPT when the call asks for ids (``out_type=int``), pieces (``str``) or ``"numpy"`` without sampling or
``reverse``; every other call (``proto``, ``serialized_proto``, ``offset_mapping``, ``bytes``, sampling, nbest) goes
to the library unchanged. Options left as ``None`` take the processor's defaults, as in the library.

- ids: a :class:`~lowbit.tokenize.ParallelTokenizer` over a plain processor of the same model (default options:
  ``encode(text)``'s ids), then the ids ``add_bos`` / ``add_eos`` add, taken from the library's own encoding of
  the empty string with those options (``[bos]``, ``[eos]``);
- pieces: ``id_to_piece`` of those ids; the library writes an unknown piece as its surface text rather than
  ``<unk>``, so a text whose ids contain ``unk_id`` is encoded by the library instead (same result);
- ``"numpy"``: the ids as an ``int32`` array, the library's dtype.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from lowbit.tokenize.wrap import Engine, ParallelizeOptions

_ENGINE = "_lowbit_parallel"


class SentencePieceEngine(Engine):
    """A :class:`~lowbit.tokenize.ParallelTokenizer` over a plain processor of the same model, built on first use."""

    def __init__(self, options: ParallelizeOptions, sp: Any) -> None:
        super().__init__(options)
        self.model_proto = sp.serialized_model_proto()
        self.lock = threading.RLock()
        self._pt: Any = None

    def tokenizer(self) -> Any:
        from sentencepiece import SentencePieceProcessor

        from lowbit.tokenize.parallel import ParallelTokenizer

        if self.closed:
            raise ValueError("this parallelized processor is closed; parallelize() it again")
        if os.getpid() != self.pid:
            self._pt, self.pid = None, os.getpid()
        if self._pt is None:
            o = self.options
            self._pt = ParallelTokenizer(
                SentencePieceProcessor(model_proto=self.model_proto),
                workers=o.workers,
                backend="library",
                chunk_chars=o.chunk_chars,
                overlap_chars=o.overlap_chars,
                max_retries=o.max_retries,
                min_parallel_chars=o.min_parallel_chars,
            )
        return self._pt

    def close(self) -> None:
        if self._pt is not None and os.getpid() == self.pid:
            self._pt.close()
        self._pt = None
        super().close()


class ParallelProcessorMixin:
    """Overrides of ``SentencePieceProcessor`` (see the module docstring)."""

    def Encode(
        self,
        input: Any,
        add_bos: Any = None,
        add_eos: Any = None,
        reverse: Any = None,
        emit_unk_piece: Any = None,
        enable_sampling: Any = None,
        nbest_size: Any = None,
        alpha: Any = None,
        num_threads: Any = None,
        thread_pool: Any = None,
        return_type: Any = None,
        out_type: Any = None,
        return_bytes: Any = None,
    ) -> Any:
        kwargs = {
            "add_bos": add_bos,
            "add_eos": add_eos,
            "reverse": reverse,
            "emit_unk_piece": emit_unk_piece,
            "enable_sampling": enable_sampling,
            "nbest_size": nbest_size,
            "alpha": alpha,
            "num_threads": num_threads,
            "thread_pool": thread_pool,
            "return_type": return_type,
            "out_type": out_type,
            "return_bytes": return_bytes,
        }
        engine: SentencePieceEngine = self.__dict__[_ENGINE]
        n = max(1, engine.options.min_parallel_chars)
        texts = [input] if isinstance(input, str) else input if isinstance(input, list) else []
        long_idx = [i for i, t in enumerate(texts) if isinstance(t, str) and len(t) >= n]
        library = super().Encode  # type: ignore[misc]
        if not long_idx:
            return library(input, **kwargs)
        rtype = self._resolve_return_type(return_type, out_type)  # type: ignore[attr-defined]
        sampling = self._enable_sampling if enable_sampling is None else enable_sampling  # type: ignore[attr-defined]
        rev = self._reverse if reverse is None else reverse  # type: ignore[attr-defined]
        if rtype not in (int, str, "numpy") or return_bytes is not None or sampling or rev:
            return library(input, **kwargs)
        if rtype is str and (self._emit_unk_piece if emit_unk_piece is None else emit_unk_piece):  # type: ignore[attr-defined]
            return library(input, **kwargs)
        # The ids the library adds for add_bos / add_eos (None: the processor's defaults), as it writes them.
        affix = {k: kwargs[k] for k in ("add_bos", "add_eos")}
        bos = library("", add_bos=affix["add_bos"], add_eos=False, out_type=int)
        eos = library("", add_bos=False, add_eos=affix["add_eos"], out_type=int)
        out: list[Any] = [None] * len(texts)
        short_idx = [i for i in range(len(texts)) if i not in set(long_idx)]
        if short_idx:
            for i, res in zip(short_idx, library([texts[i] for i in short_idx], **kwargs), strict=True):
                out[i] = res
        for i in long_idx:
            with engine.lock:
                ids = engine.tokenizer().encode(texts[i])
            ids = bos + ids + eos
            if rtype is int:
                out[i] = ids
            elif rtype == "numpy":
                out[i] = np.asarray(ids, dtype=np.int32)
            elif self.unk_id() in ids:  # type: ignore[attr-defined]
                out[i] = library(texts[i], **kwargs)
            else:
                out[i] = self.id_to_piece(ids)  # type: ignore[attr-defined]
        return out[0] if isinstance(input, str) else out

    encode = Encode
    Tokenize = Encode
    tokenize = Encode
