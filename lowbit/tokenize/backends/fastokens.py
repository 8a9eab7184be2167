"""fastokens: a Rust tokenizer for byte-level vocabularies (tiktoken files, byte-level BPE tokenizer.json).

Reference: the reference of the library backend it was built from (tested for identity). Rules of its own: it
runs in-process only (its objects cannot travel to worker processes), its default is one direct call on the
whole text (its batch call is already multi-threaded), and every other rule (lone surrogates, special tokens,
``add_special_tokens``) is the one of the library it stands in for.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.tokenize.backends.base import Backend, BackendSpec, ChunkEncoding, Piece, Unit, byte_edges
from lowbit.tokenize.backends.hf import HFBackend
from lowbit.tokenize.backends.tiktoken import TiktokenBackend
from lowbit.tokenize.presets import LoadedTokenizer


def fastokens_available() -> bool:
    """Whether the optional ``fastokens`` extra (``pip install 'lowbit[fast]'``) is installed."""
    return importlib.util.find_spec("fastokens") is not None


class FastokensBackend(Backend):
    """The ``fastokens`` Rust tokenizer standing in for a tiktoken or byte-level HF backend.

    fastokens gives ids only, so edge spans come from a byte-length table of the vocabulary; this is exact
    because byte-level tokens tile the UTF-8 input (checked per chunk). Its batch call is multi-threaded.
    Build it with :meth:`from_loaded`.
    """

    unit: Unit = "byte"
    native_threads = True
    in_process_only = True

    def __init__(self, fast: Any, lens: np.ndarray, reference: Backend, *, ordinary: bool, name: str) -> None:
        self.fast = fast
        self._lens = lens
        self.ref = reference
        self.ordinary = ordinary
        self.name = f"{name}+fastokens"
        # fastokens stands in only where no special-token string is refused (HF vocabularies, tiktoken with
        # allowed_special None or "all": nothing is disallowed), so the one-call paths skip the refusal check.
        # Kept as a guard for any other reference.
        self._refuses = isinstance(reference, TiktokenBackend) and reference.allowed_special not in (None, "all")
        # The per-call paths pass fastokens' options positionally, ``(input, add_special_tokens,
        # split_special_tokens)``: its keyword parsing costs ~0.15 us a call (``encode_batch_flat([""])``, qwen2:
        # 639 ns with ``split_special_tokens=`` against 501 ns positional, min of 41 x 20000 calls), more than
        # lowbit's own Python around the call. The positional order is fastokens' signature; tests compare the ids
        # with its keyword call, with and without special-token strings.
        self._encode = fast.encode
        self._flat = fast.encode_batch_flat
        # fastokens compiles its regexes on the first call (~0.3 s): pay it here, not on the user's first text.
        self.fast.encode_batch_flat(["warm up: Hello, 世界 123 \n\t"], split_special_tokens=ordinary)

    @classmethod
    def from_loaded(cls, loaded: LoadedTokenizer, reference: Backend) -> FastokensBackend:
        """A fastokens backend for ``loaded``, whose library backend is ``reference``.

        Raises ``ValueError`` when fastokens is missing or does not support the vocabulary: a tiktoken file
        (``allowed_special`` None or ``"all"``) or a byte-level BPE ``tokenizer.json`` without a normalizer.
        """
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
            return cls(fast, reference.lens, reference, ordinary=reference.allowed_special is None, name=loaded.name)
        if loaded.kind == "hf" and isinstance(reference, HFBackend):
            lens = byte_level_lengths(reference.tok)
            if lens is None:
                raise ValueError(f"backend: {loaded.name} is not a byte-level BPE vocabulary; fastokens is not used")
            fast = fastokens.Tokenizer.from_json_str(reference.tok.to_str())
            fast.no_padding()
            fast.no_truncation()
            return cls(fast, lens, reference, ordinary=False, name=loaded.name)
        raise ValueError(f"backend: fastokens does not support the {loaded.kind} vocabulary {loaded.name!r}")

    def spec(self) -> BackendSpec:
        raise ValueError("backend: the fastokens backend runs in-process (its batch call is already parallel)")

    # -- rules: those of the library it stands in for, except the strategy -------------------------------------

    def default_strategy(self, parallelism: int) -> str:
        """``"direct"``: fastokens already spreads one long input over the cores; on few cores chunking it again
        only adds work (measured by the tokenize benchmark, docs/tokenize.md, Performance)."""
        return "direct"

    def longest_special_chars(self) -> int:
        return self.ref.longest_special_chars()

    def exact_cut_blocker(self) -> str | None:
        """The cut rule is the library's: tiktoken's hard breaks of the pattern (fastokens is tested identical to
        tiktoken on the same pattern). An HF vocabulary's rule needs the pre-tokenizer's words (``token_to_word``),
        which fastokens' ids do not carry, so no cut is proven there: one call, and ``EncodeStats`` says so."""
        if isinstance(self.ref, HFBackend):
            return (
                "fastokens returns ids only, not the pre-tokenizer's words an HF cut must fall on; "
                "use backend='library' for the parallel merge"
            )
        return self.ref.exact_cut_blocker()

    def cut_test(self) -> Any:
        return self.ref.cut_test()

    def may_cut(self, window: str) -> bool:
        if isinstance(self.ref, HFBackend):
            return False
        return self.ref.may_cut(window)

    @property
    def may_cut_widens(self) -> bool:
        """The library's (tiktoken's) rule; with an HF vocabulary :meth:`may_cut` is always False, which no wider
        window changes."""
        return isinstance(self.ref, HFBackend) or self.ref.may_cut_widens

    def check_text(self, text: str) -> str:
        return self.ref.check_text(text)

    def check_disallowed(self, text: str) -> None:
        self.ref.check_disallowed(text)

    def special_affixes(self) -> tuple[list[int], list[int]]:
        return self.ref.special_affixes()

    # -- encoding ------------------------------------------------------------------------------------------------

    def reference(self, text: str) -> list[int]:
        return self.ref.reference(text)

    def encode_list(self, text: str) -> list[int]:
        """fastokens' own list-returning call (``encode(text).ids``: the list is built in Rust, cheaper than a
        numpy buffer turned into a list). A lone surrogate fails its UTF-8 conversion; then the text is repaired
        (tiktoken vocabularies) or the named error raised, as the library it stands in for does."""
        if self._refuses:
            self.ref.check_disallowed(text)
        try:
            return self._encode(text, False, self.ordinary).ids
        except UnicodeEncodeError:
            return self.fast.encode(self.ref.check_text(text), split_special_tokens=self.ordinary).ids

    def encode_ids(self, text: str) -> np.ndarray:
        """fastokens' flat call (no per-token Python objects); lone surrogates as in :meth:`encode_list`."""
        if self._refuses:
            self.ref.check_disallowed(text)
        try:
            ids, _ = self._flat([text], False, self.ordinary)
        except UnicodeEncodeError:
            ids, _ = self.fast.encode_batch_flat([self.ref.check_text(text)], split_special_tokens=self.ordinary)
        return np.frombuffer(ids, dtype=np.uint32)

    def ids_call(self) -> Callable[[str], np.ndarray]:
        """:meth:`encode_ids` with fastokens' flat call, its option and ``np.frombuffer`` held in a closure (no
        attribute lookups per call); the method itself where the special-token check applies."""
        if self._refuses:
            return self.encode_ids
        flat, split, frombuffer, u32, slow = self._flat, self.ordinary, np.frombuffer, np.uint32, self.encode_ids

        def encode_ids(text: str) -> np.ndarray:
            try:
                ids, _ = flat([text], False, split)
            except UnicodeEncodeError:
                return slow(text)  # a lone surrogate: repaired or named as in encode_ids
            return frombuffer(ids, u32)

        return encode_ids

    def flat_call(self) -> tuple[Callable[[list[str], bool, bool], tuple[Any, Any]], bool] | None:
        """fastokens' ``encode_batch_flat`` and its ``split_special_tokens`` option (the library's rule: True for
        tiktoken's ``encode_ordinary``, False for HF vocabularies), for the caller to call inline; None where the
        special-token refusal check applies (:meth:`encode_ids` runs it)."""
        if self._refuses:
            return None
        return self._flat, self.ordinary

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
            res.append(byte_edges(arr, lens, p, 0))
        return res


def byte_level_lengths(tok: Any) -> np.ndarray | None:
    """Byte length of every token of a byte-level BPE ``tokenizers.Tokenizer`` without a normalizer, else None.

    Rule: a byte-level vocabulary writes each byte as one printable character of the GPT-2 byte map, so a
    token's byte length is its length in characters; added tokens count their UTF-8 bytes.
    """
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
