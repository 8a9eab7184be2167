"""tiktoken: ``tiktoken.Encoding``; byte spans from the byte lengths of the edge tokens.

Reference: ``encode_ordinary(text)``, or ``encode(text, allowed_special=...)`` when ``allowed_special`` is given.
Rules of its own: lone surrogates are replaced by U+FFFD as tiktoken itself does; with ``allowed_special`` given,
the other special-token strings in a text raise as in tiktoken; no BOS/EOS (``add_special_tokens`` raises).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from lowbit.tokenize.backends.base import Backend, BackendSpec, ChunkEncoding, Piece, Unit, byte_edges, surrogate_index
from lowbit.tokenize.presets import LoadedTokenizer


class TiktokenBackend(Backend):
    """``tiktoken.Encoding``; byte spans from ``decode_single_token_bytes`` of the edge tokens only.

    Build it with :meth:`from_encoding`; ``allowed_special`` is ``None`` (special strings are plain text),
    ``"all"`` or a set of the encoding's special tokens.
    """

    unit: Unit = "byte"
    native_threads = True
    library: ClassVar[str] = "tiktoken"
    kind: ClassVar[str] = "tiktoken"
    takes_allowed_special: ClassVar[bool] = True

    def __init__(self, enc: Any, *, allowed_special: Any = None, source: LoadedTokenizer | None = None) -> None:
        self.enc = enc
        self.name = enc.name
        self.source = source
        self.allowed_special = allowed_special
        if allowed_special is None:
            self._allowed: frozenset[str] = frozenset()
        elif allowed_special == "all":
            self._allowed = frozenset(enc.special_tokens_set)
        else:
            self._allowed = frozenset(allowed_special)
            unknown = self._allowed - set(enc.special_tokens_set)
            if unknown:
                raise ValueError(f"allowed_special: not special tokens of {enc.name}: {sorted(unknown)}")
        self.lens = self._length_table()

    @classmethod
    def from_encoding(
        cls, enc: Any, *, allowed_special: Any = None, source: LoadedTokenizer | None = None
    ) -> TiktokenBackend:
        """Wrap a ``tiktoken.Encoding`` (``source``: the preset or file it was loaded from, reloaded by workers)."""
        return cls(enc, allowed_special=allowed_special, source=source)

    @classmethod
    def from_object(cls, obj: Any, *, source: Any = None, allowed_special: Any = None) -> TiktokenBackend:
        return cls.from_encoding(obj, allowed_special=allowed_special, source=source)

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> TiktokenBackend:
        allowed = spec.option("allowed_special")
        allowed = set(allowed) if isinstance(allowed, tuple) else allowed
        if spec.path is not None:
            from lowbit.tokenize.presets import tiktoken_from_file

            loaded = tiktoken_from_file(
                spec.path, spec.option("pattern"), spec.option("special_tokens"), name=spec.name
            )
            return cls.from_encoding(loaded.obj, allowed_special=allowed, source=loaded)
        return cls.from_encoding(spec.data, allowed_special=allowed)

    def spec(self) -> BackendSpec:
        allowed = ("allowed_special", _freeze(self.allowed_special))
        src = self.source
        if src is not None and src.path is not None:
            options = (("pattern", src.pattern), ("special_tokens", src.special_tokens), allowed)
            return BackendSpec(self.kind, src.name, path=str(src.path), options=options)
        # tiktoken.Encoding pickles (by name when registered).
        return BackendSpec(self.kind, self.name, data=self.enc, options=(allowed,))

    def _length_table(self) -> np.ndarray:
        lens = np.zeros(self.enc.n_vocab, dtype=np.int32)
        for i in range(self.enc.n_vocab):
            try:
                lens[i] = len(self.enc.decode_single_token_bytes(i))
            except KeyError:
                lens[i] = 0
        return lens

    # -- rules ---------------------------------------------------------------------------------------------------

    def longest_special_chars(self) -> int:
        return max((len(s) for s in self._allowed), default=0)

    def check_text(self, text: str) -> str:
        """Lone surrogates become U+FFFD, as tiktoken itself does (via a UTF-16 round trip), once for the text."""
        if surrogate_index(text) >= 0:
            return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return text

    def check_disallowed(self, text: str) -> None:
        """Mirror tiktoken's check: with ``allowed_special`` given, other special strings in the text raise."""
        if self.allowed_special is None:
            return
        disallowed = set(self.enc.special_tokens_set) - self._allowed
        if disallowed:
            match = re.compile("|".join(map(re.escape, sorted(disallowed)))).search(text)
            if match:
                raise ValueError(
                    f"text: contains the special token {match.group()!r}, which allowed_special does not allow; "
                    "pass allowed_special='all' or a set that includes it"
                )

    def special_affixes(self) -> tuple[list[int], list[int]]:
        raise ValueError("add_special_tokens: tiktoken encodings define no BOS/EOS; add them yourself")

    # -- encoding ------------------------------------------------------------------------------------------------

    def reference(self, text: str) -> list[int]:
        if self.allowed_special is None:
            return self.enc.encode_ordinary(text)
        return self.enc.encode(text, allowed_special=self.allowed_special)

    def _encode_no_check(self, texts: list[str], threads: int) -> list[list[int]]:
        if self.allowed_special is None:
            if len(texts) == 1:
                return [self.enc.encode_ordinary(texts[0])]
            return self.enc.encode_ordinary_batch(texts, num_threads=threads)
        allowed = set(self._allowed)
        if len(texts) == 1:
            return [self.enc.encode(texts[0], allowed_special=allowed, disallowed_special=())]
        return self.enc.encode_batch(texts, num_threads=threads, allowed_special=allowed, disallowed_special=())

    def encode_list(self, text: str) -> list[int]:
        """tiktoken's own call (it repairs lone surrogates itself), after the ``allowed_special`` check."""
        self.check_disallowed(text)
        return self._encode_no_check([text], 1)[0]

    def encode_ids(self, text: str) -> np.ndarray:
        self.check_disallowed(text)
        return np.asarray(self._encode_no_check([text], 1)[0], dtype=np.uint32)

    def encode_chunks(self, pieces: Sequence[Piece], threads: int) -> list[ChunkEncoding]:
        out = self._encode_no_check([p.text for p in pieces], max(1, threads))
        res = []
        for p, ids in zip(pieces, out, strict=True):
            arr = np.asarray(ids, dtype=np.uint32)
            res.append(byte_edges(arr, self.lens[arr], p, 0))
        return res


def _freeze(allowed: Any) -> Any:
    """``allowed_special`` in a picklable, order-independent form (a sorted tuple for a set)."""
    if allowed is None or allowed == "all":
        return allowed
    return tuple(sorted(allowed))
