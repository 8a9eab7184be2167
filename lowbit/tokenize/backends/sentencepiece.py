"""SentencePiece: ``sentencepiece.SentencePieceProcessor``; byte spans from piece lengths, or its own offsets.

Reference: ``encode(text)``. Rules of its own: the dummy prefix (``add_dummy_prefix``) gives every chunk a leading
``▁`` that is not in the text (``docs/methods/lopt.md`` §5), so the first two tokens of a chunk are never matched
and the automatic plan uses more overlap (128 characters) and chunks of at most 64K characters (its cost grows
faster than linearly with the input); ``add_special_tokens`` adds BOS; the default strategy runs the chunks
through its ``num_threads`` batch call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from lowbit.tokenize.backends.base import Backend, BackendSpec, ChunkEncoding, Piece, Unit, byte_edges
from lowbit.tokenize.presets import LoadedTokenizer


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

    # -- rules ---------------------------------------------------------------------------------------------------

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
            arr = np.asarray(ids, dtype=np.uint32)
            lens = self._lens[arr]
            extra = int(lens.sum(dtype=np.int64)) - len(p.text.encode("utf-8", "surrogatepass"))
            if extra in (0, 1) and (len(arr) == 0 or lens[0] >= extra):
                res.append(byte_edges(arr, lens, p, extra))
            else:
                res.append(self._proto_edges(arr, p))
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
