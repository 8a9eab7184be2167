"""HF ``tokenizers``: ``tokenizers.Tokenizer`` (also what ``PreTrainedTokenizerFast`` wraps); character offsets.

Reference: ``encode(text, add_special_tokens=False).ids``. Rules of its own: the default strategy runs the chunks
through the library's multi-threaded ``encode_batch``; ``add_special_tokens`` adds the post-processor's template
tokens; a tokenizer.json's padding and truncation are switched off (``docs/methods/lopt.md`` §5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from lowbit.tokenize.backends.base import Backend, BackendSpec, ChunkEncoding, Piece, Unit
from lowbit.tokenize.presets import LoadedTokenizer


class HFBackend(Backend):
    """``tokenizers.Tokenizer``; spans from its character offsets of the edge tokens. Build with
    :meth:`from_tokenizer`."""

    unit: Unit = "char"
    native_threads = True
    cuts_at_word_starts = True
    library: ClassVar[str] = "tokenizers"
    kind: ClassVar[str] = "hf"

    def __init__(self, tok: Any, *, source: LoadedTokenizer | None = None) -> None:
        from tokenizers import Tokenizer

        if not isinstance(tok, Tokenizer):
            raise TypeError(f"tokenizer: expected tokenizers.Tokenizer, got {type(tok).__name__}")
        # A tokenizer.json may carry padding/truncation (lopt.md §5): work on a copy with both off.
        self.tok = Tokenizer.from_str(tok.to_str())
        self.tok.no_padding()
        self.tok.no_truncation()
        self._alnum_one_word = self._one_word_if_ascii_alnum()  # may_cut's shortcut applies (read once)
        self.source = source
        self.name = source.name if source else "tokenizers"

    @classmethod
    def from_tokenizer(cls, tok: Any, *, source: LoadedTokenizer | None = None) -> HFBackend:
        """Wrap a ``tokenizers.Tokenizer`` (a copy with padding and truncation off)."""
        return cls(tok, source=source)

    @classmethod
    def from_object(cls, obj: Any, *, source: Any = None, allowed_special: Any = None) -> HFBackend:
        return cls.from_tokenizer(obj, source=source)

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> HFBackend:
        if spec.path is not None:
            from lowbit.tokenize.presets import hf_from_file

            loaded = hf_from_file(spec.path, name=spec.name)
            return cls.from_tokenizer(loaded.obj, source=loaded)
        from tokenizers import Tokenizer

        return cls.from_tokenizer(Tokenizer.from_str(spec.data))

    def spec(self) -> BackendSpec:
        src = self.source
        if src is not None and src.path is not None:
            return BackendSpec(self.kind, src.name, path=str(src.path))
        return BackendSpec(self.kind, self.name, data=self.tok.to_str())

    # -- rules ---------------------------------------------------------------------------------------------------

    def exact_cut_blocker(self) -> str | None:
        """Why no cut can be proven exact: BPE dropout (the library's own encode is random), or a pre-tokenizer
        that leaves an ordinary text one word (none at all, or Metaspace with ``split=False`` as in Gemma-style
        files), so there is no word start to cut at. Probed on the tokenizer itself, not read from its name."""
        import json

        model = json.loads(self.tok.to_str()).get("model") or {}
        if model.get("dropout"):
            return f"BPE dropout={model['dropout']}: the library's own encode is random, no merge can equal it"
        probe = "one two, three.\nfour 5 six"
        if self.tok.pre_tokenizer is None:
            return "no pre-tokenizer: the whole input is one word, so no cut falls at a word start"
        normalized = self.tok.normalizer.normalize_str(probe) if self.tok.normalizer is not None else probe
        if len(self.tok.pre_tokenizer.pre_tokenize_str(normalized)) < 2:
            return "the pre-tokenizer leaves an ordinary text one word, so no cut falls at a word start"
        return None

    #: Normalizers that keep an ASCII letter or digit an ASCII letter or digit and add nothing around it, and
    #: pre-tokenizers that never split a run of ASCII letters and digits (BertPreTokenizer splits at whitespace
    #: and punctuation, Whitespace at changes between ``\w`` and ``[^\w\s]``, WhitespaceSplit at whitespace).
    ALNUM_KEEPING_NORMALIZERS: ClassVar[frozenset[str]] = frozenset(
        {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents"}
    )
    ALNUM_KEEPING_PRE_TOKENIZERS: ClassVar[frozenset[str]] = frozenset(
        {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
    )

    def _one_word_if_ascii_alnum(self) -> bool:
        """Whether this pipeline leaves every ASCII letters-and-digits text one word: its normalizer (none, one of
        :attr:`ALNUM_KEEPING_NORMALIZERS` or a sequence of them) and its pre-tokenizer (one of
        :attr:`ALNUM_KEEPING_PRE_TOKENIZERS`), read from their own JSON (not the whole tokenizer's: no vocabulary)."""
        import json

        tok = self.tok
        norm = None if tok.normalizer is None else json.loads(tok.normalizer.__getstate__())
        norms = [] if norm is None else norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
        pre = {} if tok.pre_tokenizer is None else json.loads(tok.pre_tokenizer.__getstate__())
        return all(n.get("type") in self.ALNUM_KEEPING_NORMALIZERS for n in norms) and (
            pre.get("type") in self.ALNUM_KEEPING_PRE_TOKENIZERS
        )

    def may_cut(self, window: str) -> bool:
        """A cut needs a word start at least ``edge_units`` from both ends of the window: the normalizer and the
        pre-tokenizer run on the window alone (a 64-character window costs microseconds) and must split it there.

        A window of ASCII letters and digits only is answered without them where the pipeline is known to leave
        such a text one word (:meth:`_one_word_if_ascii_alnum`: BERT's): no word start, no cut. One repeated letter
        or a digit run of 256K characters spent 7.5 % of bert's library call here (docs/tokenize.md).

        >>> from lowbit.tokenize import load_tokenizer
        >>> b = HFBackend.from_tokenizer(load_tokenizer("bert").obj)
        >>> b.may_cut("x" * 20 + " word " + "y" * 20), b.may_cut("a" * 60), b.may_cut("a1" * 30)
        (True, False, False)
        """
        pre = self.tok.pre_tokenizer
        if pre is None:
            return False
        if self._alnum_one_word and window.isascii() and window.isalnum():
            return False
        norm = self.tok.normalizer.normalize_str(window) if self.tok.normalizer is not None else window
        edge = self.edge_units
        return any(edge <= start <= len(norm) - edge for _, (start, _) in pre.pre_tokenize_str(norm)[1:])

    def longest_special_chars(self) -> int:
        return max((len(t.content) for t in self.tok.get_added_tokens_decoder().values()), default=0)

    def default_strategy(self, parallelism: int) -> str:
        """``"threads"``: ``encode_batch`` (rayon) runs chunks without the GIL and beat the process pool in the
        tokenize benchmark (docs/tokenize.md, Performance); ``"inline"`` with one worker."""
        return "threads" if parallelism > 1 else "inline"

    def special_affixes(self) -> tuple[list[int], list[int]]:
        """The post-processor's template around the text: found by encoding a probe with and without it."""
        probe = "a"
        plain = self.tok.encode(probe, add_special_tokens=False).ids
        full = self.tok.encode(probe, add_special_tokens=True).ids
        for i in range(len(full) - len(plain) + 1):
            if full[i : i + len(plain)] == plain:
                return full[:i], full[i + len(plain) :]
        raise ValueError(  # pragma: no cover - a template that rewrites the content
            "add_special_tokens: this tokenizer's post-processor is not a simple template"
        )

    # -- encoding ------------------------------------------------------------------------------------------------

    def reference(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_chunks(self, pieces: Sequence[Piece], threads: int) -> list[ChunkEncoding]:
        texts = [p.text for p in pieces]
        if len(texts) == 1:
            encs = [self.tok.encode(texts[0], add_special_tokens=False)]
        else:
            encs = self.tok.encode_batch(texts, add_special_tokens=False)
        return [self._edges(e, p) for e, p in zip(encs, pieces, strict=True)]

    @staticmethod
    def _edges(enc: Any, piece: Piece) -> ChunkEncoding:
        """Character spans of the edge tokens, and whether each starts a word (its word index, ``token_to_word``,
        differs from the previous token's); only edge tokens are asked, never the whole chunk."""
        ids = np.asarray(enc.ids, dtype=np.uint32)
        n = len(ids)

        def starts_word(i: int) -> bool:
            return i == 0 or enc.token_to_word(i) != enc.token_to_word(i - 1)

        hs: list[int] = []
        he: list[int] = []
        hw: list[bool] = []
        if piece.left_window:
            i = 0
            while i < n:
                s, e = enc.token_to_chars(i) or (0, 0)
                if s >= piece.left_window:
                    break
                hs.append(s)
                he.append(e)
                hw.append(starts_word(i))
                i += 1
        ts: list[int] = []
        te: list[int] = []
        tw: list[bool] = []
        tail_index = n
        if piece.right_window:
            w0 = len(piece.text) - piece.right_window
            i = n - 1
            while i >= 0:
                s, e = enc.token_to_chars(i) or (0, 0)
                if e <= w0:
                    break
                ts.append(s - w0)
                te.append(e - w0)
                tw.append(starts_word(i))
                i -= 1
            tail_index = i + 1
        return ChunkEncoding(
            ids,
            np.asarray(hs, dtype=np.int64),
            np.asarray(he, dtype=np.int64),
            tail_index,
            np.asarray(ts[::-1], dtype=np.int64),
            np.asarray(te[::-1], dtype=np.int64),
            np.asarray(hw, dtype=bool),
            np.asarray(tw[::-1], dtype=bool),
        )
