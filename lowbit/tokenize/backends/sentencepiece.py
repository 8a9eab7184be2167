"""SentencePiece: ``sentencepiece.SentencePieceProcessor``; byte spans from piece lengths, or its own offsets.

Reference: ``encode(text)``. Rules of its own: the dummy prefix (``add_dummy_prefix``) gives every chunk a leading
``▁`` that is not in the text (``docs/methods/lopt.md`` §5), so the first two tokens of a chunk are never matched
and the automatic plan uses more overlap (128 characters) and chunks of at most 64K characters (its cost grows
faster than linearly with the input); ``add_special_tokens`` adds BOS; the default strategy runs the chunks
through its ``num_threads`` batch call. A cut falls only where no vocabulary piece can span (:meth:`is_cut`), which
is exact for SentencePiece BPE; Unigram models, normalizers with a charsmap and whitespace-as-suffix models have no
proven cut and are one sequential call (docs/tokenize.md, "Why the merge is exact").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from lowbit.tokenize.backends.base import (
    Backend,
    BackendSpec,
    ChunkEncoding,
    PairFilter,
    Piece,
    Unit,
    byte_edges,
    ids_array,
    window_has_cut,
)
from lowbit.tokenize.presets import LoadedTokenizer

_MODEL_TYPES = {1: "Unigram", 2: "BPE", 3: "word", 4: "char"}
_BYTE = 6  # ModelProto.SentencePiece.Type.BYTE: one UTF-8 byte, never part of a longer piece


class SentencePieceBackend(Backend):
    """``sentencepiece.SentencePieceProcessor``; byte spans from piece lengths, or its own byte offsets.

    Build it with :meth:`from_processor`.
    """

    unit: Unit = "byte"
    native_threads = False
    skip_head_tokens = 2
    min_overlap_chars = 128
    max_auto_chunk_chars = 65_536
    library: ClassVar[str] = "sentencepiece"
    kind: ClassVar[str] = "sentencepiece"
    cut_rule = (
        "a cut must fall where no vocabulary piece can span: between two characters that are never adjacent "
        "inside one piece (e.g. before the '▁' of a space, around a split digit)"
    )

    def __init__(self, sp: Any, *, source: LoadedTokenizer | None = None) -> None:
        import sentencepiece as spm

        if not isinstance(sp, spm.SentencePieceProcessor):
            raise TypeError(f"tokenizer: expected SentencePieceProcessor, got {type(sp).__name__}")
        self.sp = sp
        self.source = source
        self.name = source.name if source else "sentencepiece"
        self._lens = np.zeros(sp.get_piece_size(), dtype=np.int32)
        for i in range(sp.get_piece_size()):
            if sp.is_byte(i):
                self._lens[i] = 1
            elif sp.is_control(i) or sp.is_unknown(i):
                self._lens[i] = -(10**6)  # never tiles: forces the exact-offset path
            else:
                self._lens[i] = len(sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
        self._read_model()
        self._pair_filter = PairFilter(self._pair_ok)

    @classmethod
    def from_processor(cls, sp: Any, *, source: LoadedTokenizer | None = None) -> SentencePieceBackend:
        """Wrap a ``sentencepiece.SentencePieceProcessor``."""
        return cls(sp, source=source)

    @classmethod
    def from_object(cls, obj: Any, *, source: Any = None, allowed_special: Any = None) -> SentencePieceBackend:
        return cls.from_processor(obj, source=source)

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> SentencePieceBackend:
        import sentencepiece as spm

        return cls.from_processor(spm.SentencePieceProcessor(model_proto=spec.data))

    def spec(self) -> BackendSpec:
        return BackendSpec(self.kind, self.name, data=self.sp.serialized_model_proto())

    def _read_model(self) -> None:
        """The model proto's settings the cut rule depends on, and every pair of characters adjacent inside a
        piece (all pieces but byte pieces, whose surface ``<0xAB>`` is not text)."""
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(self.sp.serialized_model_proto())
        norm = proto.normalizer_spec
        self._escape = norm.escape_whitespaces
        self._collapse = norm.remove_extra_whitespaces  # spaces collapsed: piece lengths no longer tile the text
        pairs: set[str] = set()
        for piece in proto.pieces:
            if piece.type != _BYTE:
                text = piece.piece
                pairs.update(text[i : i + 2] for i in range(len(text) - 1))
        self._pairs = frozenset(pairs)
        model = _MODEL_TYPES.get(proto.trainer_spec.model_type, str(proto.trainer_spec.model_type))
        self._blocker: str | None = None
        if model == "Unigram":
            self._blocker = (
                "SentencePiece Unigram: Viterbi sums float32 path scores from the start of its input, so a chunk "
                "rounds near-ties differently from the whole text and no cut is provably exact"
            )
        elif model != "BPE":
            self._blocker = f"SentencePiece {model} model: its cuts are not analysed"
        elif norm.precompiled_charsmap:
            self._blocker = (
                f"SentencePiece normalizer {norm.name!r} rewrites multi-character sequences (precompiled charsmap), "
                "which the cut rule does not analyse"
            )
        elif proto.trainer_spec.treat_whitespace_as_suffix:
            self._blocker = "SentencePiece treat_whitespace_as_suffix: the cut rule is not analysed for it"

    # -- rules ---------------------------------------------------------------------------------------------------

    def exact_cut_blocker(self) -> str | None:
        """Why no cut can be proven exact: Unigram (float32 Viterbi), a word/char model, a normalizer with a
        charsmap, whitespace as suffix; None for a BPE model with the identity normalizer."""
        return self._blocker

    def cut_test(self) -> Any:
        return self.is_cut

    def is_cut(self, text: str, k: int) -> bool:
        """A cut before ``text[k]`` is exact when no piece holds ``a`` immediately followed by ``b``, where ``a``,
        ``b`` are ``text[k-1]``, ``text[k]`` with a space written ``▁`` (``escape_whitespaces``); with
        ``remove_extra_whitespaces``, ``text[k-1]`` must not be a space (a run of spaces collapses into one).

        Then no symbol of SentencePiece BPE (a vocabulary piece, user-defined symbols included) ever spans the
        position, and merges on its two sides never interact (docs/tokenize.md, "Why the merge is exact").

        >>> from lowbit.tokenize import load_tokenizer
        >>> b = SentencePieceBackend.from_processor(load_tokenizer("mistral-v1").obj)
        >>> b.is_cut("word next", 4), b.is_cut("word next", 5), b.is_cut("12", 1), b.is_cut("ab", 1)
        (True, False, True, False)
        """
        a, b = text[k - 1], text[k]
        if self._collapse and a == " ":
            return False
        if self._escape:
            a = "\u2581" if a == " " else a
            b = "\u2581" if b == " " else b
        return a + b not in self._pairs

    #: :meth:`prefers_one_call` when samples of the text give at least this many tokens per character.
    DENSE_TOKENS_PER_CHAR = 0.75

    def prefers_one_call(self, text: str) -> str | None:
        """One call for token-dense text: 16 samples spread evenly over it (each ``len(text) // 2048`` characters,
        32-128, so 0.8 % of the text is encoded twice from 64K characters on, 1.6 % at the 32K default threshold,
        less above 256K) give at least :attr:`DENSE_TOKENS_PER_CHAR` tokens per character (digits with
        ``split_digits``, CJK, base64). The density is a speed decision, never an id one; the samples' joins
        shift it by at most about one token per sample (0.03 per character at 32-character samples), far from
        the gap between the dense inputs (0.8-1.1) and prose or code (0.3-0.55).

        There the library is fast per character (Mistral v1, 256K characters: 23 ms for digits against 1.6 s per
        4 MB of prose) and LoPT's own cost grows with the tokens (the chunks' id lists to arrays, the merge, the
        merged list), while SentencePiece's threaded batch call gains little on 2 cores: measured 1.1-1.9x the
        library on digits, Chinese with and without spaces and base64 (0.8-1.1 tokens per character), 0.7-0.8x
        on mixed prose, code and minified JavaScript (0.3-0.55), docs/tokenize.md."""
        if not isinstance(text, str) or len(text) < 4096:
            return None
        n = len(text)
        m = min(128, max(32, n // 2048))
        starts = [i * (n - m) // 15 for i in range(16)]
        sample = "".join([text[s : s + m] for s in starts])  # one call: no batch threads to start
        density = (len(self.sp.encode(sample)) - 1) / len(sample)  # less the dummy prefix
        if density < self.DENSE_TOKENS_PER_CHAR:
            return None
        return (
            f"SentencePiece gives {density:.2f} tokens per character on samples of this text (at least "
            f"{self.DENSE_TOKENS_PER_CHAR}): its own call is cheaper than chunks and merging, so one call"
        )

    def _pair_ok(self, a: str, b: str) -> bool:
        return self.is_cut(a + b, 1)

    #: :meth:`is_cut` reads only the two characters around the cut, so a window containing another holds each of
    #: its cuts (:attr:`Backend.may_cut_widens`).
    may_cut_widens = True

    def may_cut(self, window: str) -> bool:
        """Whether ``window`` holds a place :meth:`is_cut` accepts, ``edge_units`` bytes from both ends."""
        return self._blocker is None and window_has_cut(window, self.edge_units, self.is_cut, self._pair_filter)

    def default_strategy(self, parallelism: int) -> str:
        """``"threads"``: the ``num_threads`` batch call runs chunks without the GIL and beat the process pool
        in the tokenize benchmark (docs/tokenize.md, Performance); ``"inline"`` with one worker."""
        return "threads" if parallelism > 1 else "inline"

    def special_affixes(self) -> tuple[list[int], list[int]]:
        """BOS before the text when the model has one (``encode(text, add_bos=True)``); nothing after."""
        return ([self.sp.bos_id()] if self.sp.bos_id() >= 0 else []), []

    # -- encoding ------------------------------------------------------------------------------------------------

    def reference(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_chunks(self, pieces: Sequence[Piece], threads: int) -> list[ChunkEncoding]:
        texts = [p.text for p in pieces]
        if len(texts) == 1:
            out = [self.sp.encode(texts[0])]
        else:
            out = self.sp.encode(texts, num_threads=max(1, threads))
        res = []
        for p, ids in zip(pieces, out, strict=True):
            arr = ids_array(ids)
            lens = self._lens[arr]
            nbytes = len(p.text) if p.text.isascii() else len(p.text.encode("utf-8", "surrogatepass"))
            extra = int(lens.sum(dtype=np.int64)) - nbytes
            tiles = not self._collapse or not (p.text[:1] == " " or p.text[-1:] == " " or "  " in p.text)
            if tiles and extra in (0, 1) and (len(arr) == 0 or lens[0] >= extra):
                enc = byte_edges(arr, lens, p, extra)
            else:
                enc = self._proto_edges(arr, p)
            res.append(enc)
        return res

    def _proto_edges(self, arr: np.ndarray, piece: Piece) -> ChunkEncoding:
        """Exact byte offsets from the proto output (normalizers, unknown pieces)."""
        from sentencepiece import sentencepiece_pb2

        proto = sentencepiece_pb2.SentencePieceText()
        proto.ParseFromString(self.sp.encode(piece.text, out_type="serialized_proto"))
        begins = np.fromiter((q.begin for q in proto.pieces), dtype=np.int64, count=len(proto.pieces))
        ends = np.fromiter((q.end for q in proto.pieces), dtype=np.int64, count=len(proto.pieces))
        if len(begins) != len(arr):
            raise RuntimeError("sentencepiece proto and ids disagree in length")
        text = piece.text
        lw = len(text[: piece.left_window].encode("utf-8", "surrogatepass"))
        total = len(text.encode("utf-8", "surrogatepass"))
        rw_start = total - len(text[len(text) - piece.right_window :].encode("utf-8", "surrogatepass"))
        m = int(np.searchsorted(begins, lw, side="left")) if piece.left_window else 0
        first = int(np.searchsorted(ends, rw_start, side="right")) if piece.right_window else len(arr)
        return ChunkEncoding(arr, begins[:m], ends[:m], first, begins[first:] - rw_start, ends[first:] - rw_start)
