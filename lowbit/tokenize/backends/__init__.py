"""Backend adapters: one module per tokenizer library, all with the same chunk-encoding contract (:mod:`.base`).

- :mod:`.tiktoken`: :class:`TiktokenBackend` (``TiktokenBackend.from_encoding(enc)``);
- :mod:`.hf`: :class:`HFBackend` for HF ``tokenizers`` (``HFBackend.from_tokenizer(tok)``);
- :mod:`.sentencepiece`: :class:`SentencePieceBackend` (``SentencePieceBackend.from_processor(sp)``);
- :mod:`.fastokens`: :class:`FastokensBackend`, standing in for a byte-level one of the above
  (``FastokensBackend.from_loaded(loaded, reference)``).

:func:`make_backend` picks the class for a preset name, a path or a library object; :func:`backend_from_spec`
rebuilds a backend in a worker process from its :class:`BackendSpec` (``kind`` names the class). No tokenizer
library is imported until a backend of it is built.
"""

from __future__ import annotations

import os
from typing import Any

from lowbit.tokenize.backends.base import Backend, BackendSpec, ChunkEncoding, Piece
from lowbit.tokenize.backends.fastokens import FastokensBackend, fastokens_available
from lowbit.tokenize.backends.hf import HFBackend
from lowbit.tokenize.backends.sentencepiece import SentencePieceBackend
from lowbit.tokenize.backends.tiktoken import TiktokenBackend
from lowbit.tokenize.presets import LoadedTokenizer

#: The backends that wrap a library object, tried in order; their spec ``kind`` is the key.
LIBRARY_BACKENDS: dict[str, type[Backend]] = {c.kind: c for c in (TiktokenBackend, HFBackend, SentencePieceBackend)}

__all__ = [
    "LIBRARY_BACKENDS",
    "Backend",
    "BackendSpec",
    "ChunkEncoding",
    "FastokensBackend",
    "HFBackend",
    "Piece",
    "SentencePieceBackend",
    "TiktokenBackend",
    "backend_from_spec",
    "fastokens_available",
    "make_backend",
]


def make_backend(
    tokenizer: Any, *, allowed_special: Any = None, backend: str = "auto"
) -> tuple[Backend, LoadedTokenizer | None]:
    """Wrap a tokenizer object (or preset name / path) in a backend; also returns what was loaded, if anything.

    ``backend``: ``"auto"`` (fastokens when installed and the vocabulary is byte-level, else the library),
    ``"library"`` (never fastokens) or ``"fastokens"`` (fail when unsupported).
    """
    from lowbit.tokenize.presets import load_tokenizer

    if backend not in ("auto", "library", "fastokens"):
        raise ValueError(f"backend: expected 'auto', 'library' or 'fastokens', got {backend!r}")
    loaded: LoadedTokenizer | None = None
    obj = tokenizer
    if isinstance(tokenizer, str | os.PathLike):
        loaded = load_tokenizer(tokenizer)
    elif isinstance(tokenizer, LoadedTokenizer):
        loaded = tokenizer
    if loaded is not None:
        obj = loaded.obj
    obj = _unwrap_transformers(obj)
    ref = library_backend(obj, allowed_special=allowed_special, source=loaded)
    if backend == "library" or (backend == "auto" and not fastokens_available()):
        return ref, loaded
    if loaded is None and isinstance(ref, HFBackend):
        loaded = LoadedTokenizer(ref.name, "hf", ref.tok)  # fastokens builds from the tokenizer.json text
    if loaded is None:
        if backend == "fastokens":
            raise ValueError("backend: fastokens needs a preset, a vocabulary path or a tokenizers.Tokenizer")
        return ref, loaded
    try:
        return FastokensBackend.from_loaded(loaded, ref), loaded
    except ValueError:
        if backend == "fastokens":
            raise
        return ref, loaded


def _unwrap_transformers(obj: Any) -> Any:
    """``transformers.PreTrainedTokenizerFast`` -> its ``tokenizers.Tokenizer`` backend."""
    mod = type(obj).__module__
    if mod.startswith("transformers") and hasattr(obj, "backend_tokenizer"):
        return obj.backend_tokenizer
    return obj


def library_backend(obj: Any, *, allowed_special: Any = None, source: LoadedTokenizer | None = None) -> Backend:
    """The library backend whose class :meth:`~Backend.wraps` ``obj`` (``TypeError`` when none does)."""
    cls = next((c for c in LIBRARY_BACKENDS.values() if c.wraps(obj)), None)
    if allowed_special is not None and (cls is None or not cls.takes_allowed_special):
        raise ValueError("allowed_special: only tiktoken encodings take allowed_special")
    if cls is None:
        raise TypeError(
            "tokenizer: expected a preset name, a path, a LoadedTokenizer, tokenizers.Tokenizer, "
            "transformers.PreTrainedTokenizerFast, tiktoken.Encoding or SentencePieceProcessor; "
            f"got {type(obj).__name__}"
        )
    return cls.from_object(obj, source=source, allowed_special=allowed_special)


def backend_from_spec(spec: BackendSpec) -> Backend:
    """Rebuild a library backend from its :class:`BackendSpec` (used by worker processes)."""
    cls = LIBRARY_BACKENDS.get(spec.kind)
    if cls is None:
        raise ValueError(f"spec: unknown backend kind {spec.kind!r}")
    return cls.from_spec(spec)
