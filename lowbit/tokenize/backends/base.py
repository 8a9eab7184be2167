"""Backend adapters: one small class per tokenizer library, all with the same chunk-encoding contract.

A backend encodes a chunk of text and reports, for the tokens that touch the chunk's left and right overlap
windows only, their spans *relative to the window start* (lopt.md §3 step 2, §6 "offsets only near cuts").
Spans are in characters for HF ``tokenizers`` (its offsets map back to the original string, so normalizers are
handled, lopt.md §5) and in UTF-8 bytes for tiktoken, fastokens and SentencePiece (the byte lengths of the
edge tokens, or SentencePiece's own byte offsets when its pieces do not tile the input). Both sides of a
window are measured in the same unit from the same window string, so absolute text offsets are never built.

The reference each backend must equal (and that ``reference`` calls directly):

- ``tokenizers.Tokenizer``: ``encode(text, add_special_tokens=False).ids``;
- ``tiktoken.Encoding``: ``encode_ordinary(text)``, or ``encode(text, allowed_special=...)`` when given;
- ``sentencepiece.SentencePieceProcessor``: ``encode(text)``;
- fastokens: the reference of the vocabulary it was built from (tested for identity).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lowbit.tokenize.presets import LoadedTokenizer

Unit = Literal["char", "byte"]
_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Piece:
    """A chunk of the text to encode: its characters and the lengths (in characters) of its two windows."""

    text: str
    left_window: int
    right_window: int


@dataclass(frozen=True)
class ChunkEncoding:
    """Ids of one chunk plus the spans of the tokens touching its windows.

    ``head_*`` describe ``ids[:len(head_start)]`` relative to the chunk start (= its left window start);
    ``tail_*`` describe ``ids[tail_index:]`` relative to the start of the right window. Units: the backend's.
    """

    ids: np.ndarray
    head_start: np.ndarray
    head_end: np.ndarray
    tail_index: int
    tail_start: np.ndarray
    tail_end: np.ndarray


@dataclass(frozen=True)
class BackendSpec:
    """Everything a worker process needs to rebuild a backend (picklable, loaded once per worker)."""

    kind: str
    payload: Any
    options: tuple[tuple[str, Any], ...] = ()


def _byte_edges(ids: np.ndarray, lens: np.ndarray, piece: Piece, extra_prefix: int) -> ChunkEncoding:
    """Edge spans from per-token byte lengths.

    Rule: tokens tile the chunk's UTF-8 bytes in order (byte-level BPE always does), except for an optional
    ``extra_prefix`` of bytes at the start that are not in the text (SentencePiece's dummy ``▁``).
    Head spans are cumulative sums from the chunk start; tail spans are cumulative sums walked back from the
    chunk end and shifted by the right window's byte length.
    """
    n = len(ids)
    text = piece.text
    lw_bytes = len(text[: piece.left_window].encode("utf-8", "surrogatepass")) if piece.left_window else 0
    rw_bytes = len(text[len(text) - piece.right_window :].encode("utf-8", "surrogatepass")) if piece.right_window else 0
    if piece.left_window and n:
        k = min(n, lw_bytes + 2 * extra_prefix + 8)
        head_len = lens[:k].astype(np.int64)
        if extra_prefix:
            head_len[0] -= extra_prefix
        ends = np.cumsum(head_len)
        starts = ends - head_len
        m = int(np.searchsorted(starts, lw_bytes, side="left"))
        head_start, head_end = starts[:m], ends[:m]
    else:
        head_start = head_end = _EMPTY
    if piece.right_window and n:
        k = min(n, rw_bytes + 8)
        tail_len = lens[n - k :].astype(np.int64)[::-1]
        back_start = np.cumsum(tail_len)  # bytes from the token's start to the chunk end
        starts = (rw_bytes - back_start)[::-1]
        ends = starts + tail_len[::-1]
        first = int(np.searchsorted(ends, 0, side="right"))
        tail_start, tail_end, tail_index = starts[first:], ends[first:], n - k + first
    else:
        tail_start = tail_end = _EMPTY
        tail_index = n
    return ChunkEncoding(ids, head_start, head_end, tail_index, tail_start, tail_end)


class Backend:
    """Common interface; subclasses wrap one library. Instances are not shared between processes."""

    name: str = ""
    unit: Unit = "byte"
    #: True when the library's batch call runs chunks in parallel without the GIL.
    native_threads: bool = False
    #: Chunks in which a dummy prefix or similar makes the first tokens unreliable for matching.
    skip_head_tokens: int = 0

    @property
    def edge_units(self) -> int:
        """How far from a truncated chunk edge tokens are excluded from matching (8 chars or 16 bytes)."""
        return 8 if self.unit == "char" else 16

    def longest_special_chars(self) -> int:
        """Length in characters of the longest added/special token string (the overlap must exceed it)."""
        return 0

    def reference(self, text: str) -> list[int]:
        """The library's own sequential encode, called directly."""
        raise NotImplementedError

    def encode_ids(self, text: str) -> np.ndarray:
        """Sequential encode of ``text`` as ``uint32``; equal to :meth:`reference`."""
        return np.asarray(self.reference(text), dtype=np.uint32)

    def encode_chunks(self, pieces: Sequence[Piece], threads: int) -> list[ChunkEncoding]:
        """Encode each piece (with ``threads`` native threads where the library has them)."""
        raise NotImplementedError

    def spec(self) -> BackendSpec:
        """How to rebuild this backend in another process."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------------
# tiktoken
# ---------------------------------------------------------------------------------------------------------------


class TiktokenBackend(Backend):
    """``tiktoken.Encoding``; byte spans from ``decode_single_token_bytes`` of the edge tokens only."""

    unit: Unit = "byte"
    native_threads = True

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
        self._lens = self._length_table()

    def _length_table(self) -> np.ndarray:
        lens = np.zeros(self.enc.n_vocab, dtype=np.int32)
        for i in range(self.enc.n_vocab):
            try:
                lens[i] = len(self.enc.decode_single_token_bytes(i))
            except KeyError:
                lens[i] = 0
        return lens

    def longest_special_chars(self) -> int:
        return max((len(s) for s in self._allowed), default=0)

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

    def encode_ids(self, text: str) -> np.ndarray:
        self.check_disallowed(text)
        return np.asarray(self._encode_no_check([text], 1)[0], dtype=np.uint32)

    def encode_chunks(self, pieces: Sequence[Piece], threads: int) -> list[ChunkEncoding]:
        out = self._encode_no_check([p.text for p in pieces], max(1, threads))
        res = []
        for p, ids in zip(pieces, out, strict=True):
            arr = np.asarray(ids, dtype=np.uint32)
            res.append(_byte_edges(arr, self._lens[arr], p, 0))
        return res

    def spec(self) -> BackendSpec:
        src = self.source
        if src is not None and src.path is not None:
            payload: Any = ("file", str(src.path), src.pattern, src.special_tokens, src.name)
        else:
            payload = ("encoding", self.enc)  # tiktoken.Encoding pickles (by name when registered)
        return BackendSpec("tiktoken", payload, (("allowed_special", _freeze(self.allowed_special)),))


def _freeze(allowed: Any) -> Any:
    if allowed is None or allowed == "all":
        return allowed
    return tuple(sorted(allowed))


# ---------------------------------------------------------------------------------------------------------------
# HF tokenizers
# ---------------------------------------------------------------------------------------------------------------


class HFBackend(Backend):
    """``tokenizers.Tokenizer`` (also the backend of ``PreTrainedTokenizerFast``); character offsets."""

    unit: Unit = "char"
    native_threads = True

    def __init__(self, tok: Any, *, source: LoadedTokenizer | None = None) -> None:
        from tokenizers import Tokenizer

        if not isinstance(tok, Tokenizer):
            raise TypeError(f"tokenizer: expected tokenizers.Tokenizer, got {type(tok).__name__}")
        # A tokenizer.json may carry padding/truncation (lopt.md §5): work on a copy with both off.
        self.tok = Tokenizer.from_str(tok.to_str())
        self.tok.no_padding()
        self.tok.no_truncation()
        self.source = source
        self.name = source.name if source else "tokenizers"

    def longest_special_chars(self) -> int:
        return max((len(t.content) for t in self.tok.get_added_tokens_decoder().values()), default=0)

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
        ids = np.asarray(enc.ids, dtype=np.uint32)
        n = len(ids)
        hs: list[int] = []
        he: list[int] = []
        if piece.left_window:
            i = 0
            while i < n:
                s, e = enc.token_to_chars(i) or (0, 0)
                if s >= piece.left_window:
                    break
                hs.append(s)
                he.append(e)
                i += 1
        ts: list[int] = []
        te: list[int] = []
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
                i -= 1
            tail_index = i + 1
        return ChunkEncoding(
            ids,
            np.asarray(hs, dtype=np.int64),
            np.asarray(he, dtype=np.int64),
            tail_index,
            np.asarray(ts[::-1], dtype=np.int64),
            np.asarray(te[::-1], dtype=np.int64),
        )

    def spec(self) -> BackendSpec:
        src = self.source
        if src is not None and src.path is not None:
            return BackendSpec("hf", ("file", str(src.path), src.name))
        return BackendSpec("hf", ("json", self.tok.to_str(), self.name))


# ---------------------------------------------------------------------------------------------------------------
# SentencePiece
# ---------------------------------------------------------------------------------------------------------------


class SentencePieceBackend(Backend):
    """``sentencepiece.SentencePieceProcessor``; byte spans from piece lengths, or its own byte offsets.

    The dummy prefix (``add_dummy_prefix``) gives every chunk a leading ``▁`` that is not in the text
    (lopt.md §5), so the first tokens of a chunk are never used for matching.
    """

    unit: Unit = "byte"
    native_threads = False
    skip_head_tokens = 2

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
                res.append(_byte_edges(arr, lens, p, extra))
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

    def spec(self) -> BackendSpec:
        return BackendSpec("sentencepiece", (self.sp.serialized_model_proto(), self.name))


# ---------------------------------------------------------------------------------------------------------------
# fastokens
# ---------------------------------------------------------------------------------------------------------------


def fastokens_available() -> bool:
    """Whether the optional ``fastokens`` extra is installed."""
    return importlib.util.find_spec("fastokens") is not None


class FastokensBackend(Backend):
    """The ``fastokens`` Rust tokenizer for byte-level vocabularies (tiktoken files, byte-level BPE JSON).

    fastokens gives ids only, so edge spans come from a byte-length table of the vocabulary; this is exact
    because byte-level tokens tile the UTF-8 input (checked per chunk). Its batch call is multi-threaded.
    """

    unit: Unit = "byte"
    native_threads = True

    def __init__(self, fast: Any, lens: np.ndarray, reference: Backend, *, ordinary: bool, name: str) -> None:
        self.fast = fast
        self._lens = lens
        self.ref = reference
        self.ordinary = ordinary
        self.name = f"{name}+fastokens"
        # fastokens compiles its regexes on the first call (~0.3 s): pay it here, not on the user's first text.
        self.fast.encode_batch_flat(["warm up: Hello, 世界 123 \n\t"], split_special_tokens=ordinary)

    @classmethod
    def build(cls, loaded: LoadedTokenizer, reference: Backend) -> FastokensBackend:
        """A fastokens backend for ``loaded``; raises ``ValueError`` when the vocabulary is unsupported."""
        if not fastokens_available():
            raise ValueError("backend: fastokens is not installed; install it with `pip install 'lowbit[fast]'`")
        import fastokens

        if loaded.kind == "tiktoken" and loaded.path is not None and isinstance(reference, TiktokenBackend):
            if reference.allowed_special not in (None, "all"):
                raise ValueError("backend: fastokens supports allowed_special=None or 'all' only")
            with tempfile.TemporaryDirectory(prefix="lowbit-fastokens-") as tmp:
                path = loaded.path
                if path.suffix == ".gz":  # fastokens reads plain .tiktoken files only
                    plain = Path(tmp) / path.name.removesuffix(".gz")
                    plain.write_bytes(gzip.decompress(path.read_bytes()))
                    path = plain
                fast = fastokens.Tokenizer.from_tiktoken(
                    str(path), pattern=loaded.pattern, special_tokens=loaded.special_tokens or {}
                )
            return cls(fast, reference._lens, reference, ordinary=reference.allowed_special is None, name=loaded.name)
        if loaded.kind == "hf" and isinstance(reference, HFBackend):
            lens = _byte_level_lengths(reference.tok)
            if lens is None:
                raise ValueError(f"backend: {loaded.name} is not a byte-level BPE vocabulary; fastokens is not used")
            fast = fastokens.Tokenizer.from_json_str(reference.tok.to_str())
            fast.no_padding()
            fast.no_truncation()
            return cls(fast, lens, reference, ordinary=False, name=loaded.name)
        raise ValueError(f"backend: fastokens does not support the {loaded.kind} vocabulary {loaded.name!r}")

    def longest_special_chars(self) -> int:
        return self.ref.longest_special_chars()

    def reference(self, text: str) -> list[int]:
        return self.ref.reference(text)

    def encode_ids(self, text: str) -> np.ndarray:
        if isinstance(self.ref, TiktokenBackend):
            self.ref.check_disallowed(text)
        ids, _ = self.fast.encode_batch_flat([text], split_special_tokens=self.ordinary)
        return np.frombuffer(ids, dtype=np.uint32)

    def encode_chunks(self, pieces: Sequence[Piece], threads: int) -> list[ChunkEncoding]:
        flat, offsets = self.fast.encode_batch_flat([p.text for p in pieces], split_special_tokens=self.ordinary)
        ids = np.frombuffer(flat, dtype=np.uint32)
        off = np.frombuffer(offsets, dtype=np.uint64).astype(np.int64)
        res = []
        for i, p in enumerate(pieces):
            arr = ids[off[i] : off[i + 1]]
            lens = self._lens[arr]
            if int(lens.sum(dtype=np.int64)) != len(p.text.encode("utf-8", "surrogatepass")):
                raise RuntimeError(f"{self.name}: token bytes do not tile the chunk; the vocabulary is not byte-level")
            res.append(_byte_edges(arr, lens, p, 0))
        return res

    def spec(self) -> BackendSpec:
        raise ValueError("backend: the fastokens backend runs in-process (its batch call is already parallel)")


def _byte_level_lengths(tok: Any) -> np.ndarray | None:
    """Byte length of every token of a byte-level BPE ``tokenizers.Tokenizer`` without a normalizer, else None."""
    import json

    cfg = json.loads(tok.to_str())
    norm = cfg.get("normalizer")
    if norm and not (norm.get("type") == "Sequence" and not norm.get("normalizers")):
        return None
    if (cfg.get("decoder") or {}).get("type") != "ByteLevel" or cfg["model"].get("type") != "BPE":
        return None
    # The GPT-2 byte <-> printable-unicode map used by ByteLevel.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    byte_chars = {chr(b) for b in bs} | {chr(256 + i) for i in range(256 - len(bs))}
    size = tok.get_vocab_size(with_added_tokens=True)
    lens = np.zeros(size, dtype=np.int32)
    added = tok.get_added_tokens_decoder()
    for token, i in tok.get_vocab(with_added_tokens=False).items():
        if i not in added and not all(c in byte_chars for c in token):
            return None
        lens[i] = len(token)
    for i, tok_added in added.items():
        lens[i] = len(tok_added.content.encode("utf-8"))
    return lens


# ---------------------------------------------------------------------------------------------------------------
# construction
# ---------------------------------------------------------------------------------------------------------------


def make_backend(
    tokenizer: Any, *, allowed_special: Any = None, backend: str = "auto"
) -> tuple[Backend, LoadedTokenizer | None]:
    """Wrap a tokenizer object (or preset name / path) in a backend.

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
    ref = _library_backend(obj, allowed_special=allowed_special, source=loaded)
    if backend == "library" or (backend == "auto" and not fastokens_available()):
        return ref, loaded
    if loaded is None and isinstance(ref, HFBackend):
        loaded = LoadedTokenizer(ref.name, "hf", ref.tok)
    if loaded is None:
        if backend == "fastokens":
            raise ValueError("backend: fastokens needs a preset, a vocabulary path or a tokenizers.Tokenizer")
        return ref, loaded
    try:
        return FastokensBackend.build(loaded, ref), loaded
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


def _library_backend(obj: Any, *, allowed_special: Any, source: LoadedTokenizer | None) -> Backend:
    mod = type(obj).__module__
    if mod.startswith("tiktoken"):
        return TiktokenBackend(obj, allowed_special=allowed_special, source=source)
    if allowed_special is not None:
        raise ValueError("allowed_special: only tiktoken encodings take allowed_special")
    if mod.startswith("tokenizers"):
        return HFBackend(obj, source=source)
    if mod.startswith("sentencepiece"):
        return SentencePieceBackend(obj, source=source)
    raise TypeError(
        "tokenizer: expected a preset name, a path, a LoadedTokenizer, tokenizers.Tokenizer, "
        f"transformers.PreTrainedTokenizerFast, tiktoken.Encoding or SentencePieceProcessor; got {type(obj).__name__}"
    )


def backend_from_spec(spec: BackendSpec) -> Backend:
    """Rebuild a library backend from its :class:`BackendSpec` (used by worker processes)."""
    from lowbit.tokenize.presets import hf_from_file, tiktoken_from_file

    opts = dict(spec.options)
    if spec.kind == "tiktoken":
        if spec.payload[0] == "file":
            _, path, pattern, specials, name = spec.payload
            loaded = tiktoken_from_file(path, pattern, specials, name=name)
            allowed = opts.get("allowed_special")
            return TiktokenBackend(
                loaded.obj, allowed_special=set(allowed) if isinstance(allowed, tuple) else allowed, source=loaded
            )
        allowed = opts.get("allowed_special")
        return TiktokenBackend(spec.payload[1], allowed_special=set(allowed) if isinstance(allowed, tuple) else allowed)
    if spec.kind == "hf":
        if spec.payload[0] == "file":
            loaded = hf_from_file(spec.payload[1], name=spec.payload[2])
            return HFBackend(loaded.obj, source=loaded)
        from tokenizers import Tokenizer

        return HFBackend(Tokenizer.from_str(spec.payload[1]))
    if spec.kind == "sentencepiece":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_proto=spec.payload[0])
        return SentencePieceBackend(sp)
    raise ValueError(f"spec: unknown backend kind {spec.kind!r}")
