"""``parallelize`` for ``tiktoken.Encoding``: ``encode``, ``encode_ordinary`` and ``encode_to_numpy`` overridden.

tiktoken's ``encode_batch`` and ``encode_ordinary_batch`` call ``self.encode`` / ``self.encode_ordinary`` on a
thread pool, so batches get LoPT for their long texts through the library's own code. For a long text:

1. the library's special-token rule runs first, as in ``Encoding.encode``: ``allowed_special="all"`` means every
   special token, ``disallowed_special="all"`` every special token not allowed, and a disallowed special string in
   the text raises the library's own ``ValueError`` (raised by calling the library on that string);
2. the ids come from a :class:`~lowbit.tokenize.ParallelTokenizer` over the same encoding with the allowed set
   (``allowed_special=None`` when it is empty: ``encode_ordinary``'s ids, which ``encode`` with nothing allowed
   equals), one per distinct allowed set, built on first use. That backend refuses every special string outside
   the allowed set; when the caller's ``disallowed_special`` leaves one of them to be encoded as plain text and
   the text contains it, the text is encoded by the library instead (sequentially, same ids).

Lone surrogates are replaced by U+FFFD, as tiktoken does (the backend's rule).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import threading
from typing import Any

import numpy as np

from lowbit.tokenize.wrap import Engine, ParallelizeOptions

_ENGINE = "_lowbit_parallel"


class TiktokenEngine(Engine):
    """One :class:`~lowbit.tokenize.ParallelTokenizer` per allowed special set, over a plain copy of the encoding
    that shares its Rust core (the backend must call the library, not the overrides)."""

    def __init__(self, options: ParallelizeOptions, enc: Any) -> None:
        super().__init__(options)
        import tiktoken

        plain = tiktoken.Encoding.__new__(tiktoken.Encoding)
        plain.__dict__.update({k: v for k, v in enc.__dict__.items() if k != _ENGINE})
        self.plain = plain
        self.lock = threading.RLock()
        self._pts: dict[frozenset[str], Any] = {}

    def tokenizer(self, allowed: frozenset[str]) -> Any:
        """The ParallelTokenizer for ``allowed`` (in a forked child, a new one: the parent's pool is not ours)."""
        from lowbit.tokenize.parallel import ParallelTokenizer

        if self.closed:
            raise ValueError("this parallelized tokenizer is closed; parallelize() the encoding again")
        if os.getpid() != self.pid:
            self._pts, self.pid = {}, os.getpid()
        pt = self._pts.get(allowed)
        if pt is None:
            o = self.options
            # A daemonic process (a DataLoader worker) may not start a process pool: threads there.
            strategy = "threads" if multiprocessing.current_process().daemon else "auto"
            pt = ParallelTokenizer(
                self.plain,
                workers=o.workers,
                strategy=strategy,
                backend="library",
                allowed_special=set(allowed) if allowed else None,
                chunk_chars=o.chunk_chars,
                overlap_chars=o.overlap_chars,
                max_retries=o.max_retries,
                min_parallel_chars=o.min_parallel_chars,
            )
            self._pts[allowed] = pt
        return pt

    def close(self) -> None:
        if os.getpid() == self.pid:
            for pt in self._pts.values():
                pt.close()
        self._pts = {}
        super().close()


class ParallelEncodingMixin:
    """Overrides of ``tiktoken.Encoding`` (see the module docstring)."""

    def _lowbit_long(self, text: Any) -> bool:
        engine: TiktokenEngine = self.__dict__[_ENGINE]
        return isinstance(text, str) and len(text) >= max(1, engine.options.min_parallel_chars)

    def _lowbit_allowed(self, text: str, allowed_special: Any, disallowed_special: Any) -> frozenset[str] | None:
        """The allowed set to encode ``text`` with, after the library's check; None: encode with the library."""
        specials = frozenset(self.special_tokens_set)  # type: ignore[attr-defined]
        allowed = specials if allowed_special == "all" else frozenset(allowed_special)
        disallowed = specials - allowed if disallowed_special == "all" else frozenset(disallowed_special)
        if disallowed and (m := _first_match(disallowed, text)) is not None:
            super().encode(m, allowed_special=allowed, disallowed_special=disallowed)  # type: ignore[misc]
            raise AssertionError(f"tiktoken accepted the disallowed special token {m!r}")  # pragma: no cover
        plain_text = (specials - allowed) - disallowed
        if allowed and plain_text and _first_match(plain_text, text) is not None:
            return None
        return allowed & specials

    def encode(self, text: str, *, allowed_special: Any = frozenset(), disallowed_special: Any = "all") -> list[int]:
        if not self._lowbit_long(text):
            return super().encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)  # type: ignore[misc]
        allowed = self._lowbit_allowed(text, allowed_special, disallowed_special)
        if allowed is None:
            return super().encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)  # type: ignore[misc]
        return self._lowbit_encode(text, allowed).tolist()

    def encode_ordinary(self, text: str) -> list[int]:
        if not self._lowbit_long(text):
            return super().encode_ordinary(text)  # type: ignore[misc]
        return self._lowbit_encode(text, frozenset()).tolist()

    def encode_to_numpy(self, text: str, *, allowed_special: Any = frozenset(), disallowed_special: Any = "all") -> Any:
        if not self._lowbit_long(text):
            return super().encode_to_numpy(text, allowed_special=allowed_special, disallowed_special=disallowed_special)  # type: ignore[misc]
        allowed = self._lowbit_allowed(text, allowed_special, disallowed_special)
        if allowed is None:
            return super().encode_to_numpy(text, allowed_special=allowed_special, disallowed_special=disallowed_special)  # type: ignore[misc]
        return self._lowbit_encode(text, allowed)

    def _lowbit_encode(self, text: str, allowed: frozenset[str]) -> np.ndarray:
        engine: TiktokenEngine = self.__dict__[_ENGINE]
        with engine.lock:
            return engine.tokenizer(allowed).encode_to_numpy(text)


def _first_match(tokens: frozenset[str], text: str) -> str | None:
    """The first occurrence in ``text`` of any of ``tokens`` (tiktoken's own search, with ``re``)."""
    m = re.search("|".join(map(re.escape, sorted(tokens, key=len, reverse=True))), text)
    return m.group() if m else None
