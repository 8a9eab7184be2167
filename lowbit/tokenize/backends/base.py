"""The chunk-encoding contract every backend follows, and the rules a backend may override.

A backend encodes a chunk of text and reports, for the tokens that touch the chunk's left and right overlap
windows only, their spans *relative to the window start* (``docs/methods/lopt.md`` §3 step 2, §6 "offsets only
near cuts"). Spans are in characters for HF ``tokenizers`` (its offsets map back to the original string, so
normalizers are handled, §5) and in UTF-8 bytes for tiktoken, fastokens and SentencePiece (the byte lengths of the
edge tokens, or SentencePiece's own byte offsets when its pieces do not tile the input). Both sides of a window
are measured in the same unit from the same window string, so absolute text offsets are never built.

Every rule that differs between libraries is a method or attribute of :class:`Backend`, so the parallel driver
(:class:`lowbit.tokenize.ParallelTokenizer`) never asks which library it wraps:

- ``default_strategy(p)``: what ``strategy="auto"`` means with ``p`` usable workers;
- ``in_process_only``: the backend cannot be sent to worker processes (fastokens);
- ``encode_list(text)``: the fastest call that returns the library's own list for one text (what ``encode``
  returns on its one-call paths); a lone surrogate is named from the library's own UTF-8 conversion error;
- ``cuts_at_word_starts``, ``cut_test()``, ``may_cut(window)``, ``exact_cut_blocker()``: where a cut may fall,
  and why none can be exact;
- ``check_text(text)``: lone surrogates raise (default) or are repaired as the library does (tiktoken);
- ``check_disallowed(text)``: raise like the library on special-token strings it refuses (tiktoken);
- ``special_affixes()``: the ids ``add_special_tokens=True`` puts before and after the text;
- ``min_overlap_chars``, ``max_auto_chunk_chars``: the automatic plan's bounds (SentencePiece: more overlap,
  shorter chunks);
- ``skip_head_tokens``: first tokens of a chunk never used for matching (SentencePiece's dummy prefix).
"""

from __future__ import annotations

import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

Unit = Literal["char", "byte"]
_EMPTY = np.zeros(0, dtype=np.int64)
_ARRAY_U32 = array.array("I").itemsize == 4


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
    ``head_word_start`` / ``tail_word_start`` (backends with ``cuts_at_word_starts`` only) tell, for the same
    tokens, whether the token is the first of a pre-token (word) of this chunk; ``None`` elsewhere.
    """

    ids: np.ndarray
    head_start: np.ndarray
    head_end: np.ndarray
    tail_index: int
    tail_start: np.ndarray
    tail_end: np.ndarray
    head_word_start: np.ndarray | None = None
    tail_word_start: np.ndarray | None = None


@dataclass(frozen=True)
class BackendSpec:
    """Everything a worker process needs to rebuild a backend (picklable, loaded once per worker).

    ``kind`` names the backend class (``"tiktoken"``, ``"hf"``, ``"sentencepiece"``), whose ``from_spec``
    classmethod rebuilds it. ``path`` is the vocabulary file to reload when there is one; otherwise ``data``
    carries the tokenizer itself (a ``tiktoken.Encoding``, a tokenizer.json string, a SentencePiece model proto).
    ``options`` are the kind's keyword settings as ``(name, value)`` pairs (tiktoken: ``pattern``,
    ``special_tokens``, ``allowed_special``).
    """

    kind: str
    name: str
    path: str | None = None
    data: Any = None
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, key: str, default: Any = None) -> Any:
        """The value of option ``key`` (``default`` when absent)."""
        return dict(self.options).get(key, default)


def ids_array(ids: Sequence[int]) -> np.ndarray:
    """A library's list of ids as ``uint32``: through ``array.array("I")`` (one C loop over the list), about 4x
    faster than ``np.asarray(ids, dtype=np.uint32)``, which checks every Python int on its own path.

    >>> ids_array([1, 2, 70000]).tolist(), ids_array([]).dtype
    ([1, 2, 70000], dtype('uint32'))
    """
    if _ARRAY_U32:
        return np.frombuffer(array.array("I", ids), dtype=np.uint32)
    return np.asarray(ids, dtype=np.uint32)  # pragma: no cover - a platform whose C unsigned int is not 32 bits


def byte_edges(ids: np.ndarray, lens: np.ndarray, piece: Piece, extra_prefix: int) -> ChunkEncoding:
    """Edge spans from per-token byte lengths.

    Rule: tokens tile the chunk's UTF-8 bytes in order (byte-level BPE always does), except for an optional
    ``extra_prefix`` of bytes at the start that are not in the text (SentencePiece's dummy ``▁``).
    Head spans are cumulative sums from the chunk start; tail spans are cumulative sums walked back from the
    chunk end and shifted by the right window's byte length.

    >>> enc = byte_edges(np.array([7, 8, 9]), np.array([2, 3, 1]), Piece("abcdef", 2, 1), 0)
    >>> enc.head_start.tolist(), enc.head_end.tolist(), enc.tail_index, enc.tail_start.tolist()
    ([0], [2], 2, [0])
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


CutTest = Callable[[str, int], bool]
"""``is_cut(text, k)``: whether a cut before character ``k`` of ``text`` (0 < k < len(text)) is provably exact."""


def utf8_len(ch: str) -> int:
    """UTF-8 bytes of one character (a lone surrogate counts 3, as ``surrogatepass`` writes it).

    >>> [utf8_len(c) for c in "aé中😀"]
    [1, 2, 3, 4]
    """
    cp = ord(ch)
    return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4


def code_points(text: str) -> np.ndarray:
    """The characters of ``text`` as integers in one C-level pass: ``uint8`` for ASCII text, else ``uint32``.

    >>> code_points("ab").dtype, code_points("a中").tolist()
    (dtype('uint8'), [97, 20013])
    """
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class PairFilter:
    """A necessary condition ``pair_ok(a, b)`` on the two characters around a cut, memoised, so that the pairs of a
    whole run of text are filtered in numpy and ``pair_ok`` is called once per distinct pair ever seen.

    Two memories: ASCII pairs in a table of ``128 * 128`` verdicts (-1 not asked yet, 0 fails, 1 passes) indexed by
    ``a << 7 | b`` (16 KiB, read with one gather); other pairs as a sorted array of keys ``a << 32 | b`` with their
    verdicts (looked up with one ``searchsorted``; dropped past ``limit`` pairs, bounding the memory).

    >>> f = PairFilter(lambda a, b: a == " ")
    >>> f(" ", "x"), f.candidates(code_points("ab cd e")).tolist(), f.candidates(code_points("中 文 x")).tolist()
    (True, [2, 5], [1, 3])
    """

    def __init__(self, pair_ok: Callable[[str, str], bool], limit: int = 1_000_000) -> None:
        self.pair_ok = pair_ok
        self.limit = limit
        self._ascii = np.full(1 << 14, -1, dtype=np.int8)
        self._memo = (np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=bool))  # sorted keys, their verdicts

    def __call__(self, a: str, b: str) -> bool:
        return self.pair_ok(a, b)

    def candidates(self, codes: np.ndarray) -> np.ndarray:
        """Indices ``i``, ascending, where the pair ``(codes[i], codes[i + 1])`` passes ``pair_ok``; ``codes`` as
        :func:`code_points` gives them (``uint8``: ASCII, read from the table)."""
        if len(codes) < 2:
            return np.zeros(0, dtype=np.intp)
        if codes.dtype == np.uint8:
            wide = codes.astype(np.uint16)
            keys16 = (wide[:-1] << np.uint16(7)) | wide[1:]
            table = self._ascii
            verdict = table[keys16]
            if verdict.min() < 0:  # pairs never asked: each distinct one once (benign if two threads race)
                for key in np.unique(keys16[verdict < 0]).tolist():
                    table[key] = 1 if self.pair_ok(chr(key >> 7), chr(key & 0x7F)) else 0
                verdict = table[keys16]
            return np.flatnonzero(verdict)
        wide64 = codes.astype(np.uint64)
        keys = (wide64[:-1] << np.uint64(32)) | wide64[1:]
        known, ok = self._memo  # one tuple: a concurrent writer replaces it whole
        at = np.minimum(np.searchsorted(known, keys), max(len(known) - 1, 0))
        found = known[at] == keys if len(known) else np.zeros(len(keys), dtype=bool)
        if not found.all():
            new = np.unique(keys[~found])
            verdicts = np.fromiter(
                (self.pair_ok(chr(k >> 32), chr(k & 0xFFFFFFFF)) for k in new.tolist()), dtype=bool, count=len(new)
            )
            known, ok = np.concatenate((known, new)), np.concatenate((ok, verdicts))
            order = np.argsort(known, kind="stable")
            known, ok = known[order], ok[order]
            at = np.searchsorted(known, keys)
            self._memo = (known, ok) if len(known) <= self.limit else (known[:0], ok[:0])
        return np.flatnonzero(ok[at])


def cut_range(window: str, edge: int) -> tuple[int, int]:
    """``(lo, hi)``: the positions ``k`` of ``window`` with at least ``edge`` UTF-8 bytes before and after them are
    exactly ``lo <= k <= hi`` (byte counts grow with ``k`` on one side and shrink on the other), and ``1 <= lo``,
    ``hi <= len(window) - 1``; empty when ``hi < lo``. Free for ASCII (bytes are characters); otherwise at most
    ``edge`` characters are read at each end.

    >>> cut_range("abcdef", 2), cut_range("é" * 6, 3), cut_range("ab", 2)
    ((2, 4), (2, 4), (2, 0))
    """
    n = len(window)
    if window.isascii():
        return max(edge, 1), min(n - edge, n - 1)
    lo = front = 0
    while front < edge and lo < n:
        front += utf8_len(window[lo])
        lo += 1
    hi, back = n, 0
    while back < edge and hi > 0:
        hi -= 1
        back += utf8_len(window[hi])
    if front < edge or back < edge:
        return 1, 0
    return max(lo, 1), min(hi, n - 1)


def window_has_cut(
    window: str, edge: int, is_cut: CutTest, pair_ok: Callable[[str, str], bool] | PairFilter | None = None
) -> bool:
    """Whether ``window`` holds a character ``k`` with ``is_cut(window, k)`` at least ``edge`` UTF-8 bytes from both
    of its ends (a cut closer to an end is never accepted: those tokens are excluded from matching); those
    positions are one interval (:func:`cut_range`).

    ``pair_ok(a, b)``, when given, is a necessary condition on the two characters around a cut: when the first
    16 positions hold no cut, only the positions whose pair passes it are tried, found in numpy
    (:meth:`PairFilter.candidates`), so a window without any (one repeated letter, a digit run, Chinese without
    punctuation) costs no per-character Python loop, and ordinary text, which has a cut among the first
    positions, costs no pass over the window.

    >>> window_has_cut("aaaa bbbb", 2, lambda t, k: t[k - 1] == " "), window_has_cut("aaaa", 1, lambda t, k: True)
    (True, True)
    >>> window_has_cut("a" * 100 + " bbbb", 2, lambda t, k: t[k - 1] == " ", lambda a, b: a == " ")
    True
    """
    lo, hi = cut_range(window, edge)
    if hi < lo:
        return False
    head = hi + 1 if pair_ok is None or hi - lo <= 32 else lo + 16
    if any(is_cut(window, k) for k in range(lo, head)):
        return True
    if head > hi:
        return False
    assert pair_ok is not None
    filt = pair_ok if isinstance(pair_ok, PairFilter) else PairFilter(pair_ok)
    # Pair i of window[head - 1 : hi + 1] is the one around position head + i.
    return any(is_cut(window, head + i) for i in filt.candidates(code_points(window[head - 1 : hi + 1])).tolist())


class Backend:
    """Common interface; subclasses wrap one library. Instances are not shared between processes.

    Subclasses built from a library object also set :attr:`library` (the module prefix of the objects they
    wrap, used by :meth:`wraps`) and :attr:`kind`, and implement :meth:`from_object`, :meth:`spec` and
    :meth:`from_spec`.
    """

    name: str = ""
    unit: Unit = "byte"
    #: Module prefix of the library objects this backend wraps (``type(obj).__module__``); empty: none.
    library: ClassVar[str] = ""
    #: The :attr:`BackendSpec.kind` of this backend's specs (a key of ``LIBRARY_BACKENDS``); empty: none.
    kind: ClassVar[str] = ""
    #: True when the library's batch call runs chunks in parallel without the GIL.
    native_threads: bool = False
    #: Chunks in which a dummy prefix or similar makes the first tokens unreliable for matching.
    skip_head_tokens: int = 0
    #: Smallest automatic overlap in characters (:func:`lowbit.tokenize.lopt.make_plan`).
    #: 128: with 64, a first-round window missed an exact cut often enough to cost retries (bert on base64: 2 of 7
    #: boundaries, each re-encoding two pieces; cl100k on prose: 1), while 128 extra characters per piece of at
    #: least 16K cost under 1 %.
    min_overlap_chars: int = 128
    #: Largest automatic chunk in characters (:func:`lowbit.tokenize.lopt.make_plan`).
    max_auto_chunk_chars: int = 1 << 20
    #: True when the backend cannot be rebuilt in another process (no ``strategy="processes"``, no executor).
    in_process_only: bool = False
    #: True when the backend takes tiktoken's ``allowed_special``.
    takes_allowed_special: ClassVar[bool] = False
    #: True when a cut must fall at the start of a pre-token (word) in both chunks, because the model reads a
    #: word as a whole (WordPiece's ``max_input_chars_per_word``, Unigram's Viterbi, BPE's merge order); the
    #: chunk encodings then carry ``head_word_start`` / ``tail_word_start`` (docs/tokenize.md, "Why the merge is
    #: exact").
    cuts_at_word_starts: bool = False
    #: Where an exact cut may fall, for :class:`~lowbit.tokenize.lopt.MergeStats`' note when a text has none.
    cut_rule: str = "a cut falls where the two chunks' tokens agree"

    # -- construction ------------------------------------------------------------------------------------------

    @classmethod
    def wraps(cls, obj: Any) -> bool:
        """Whether ``obj`` is an object of this backend's library (by its module, without importing it)."""
        return bool(cls.library) and type(obj).__module__.startswith(cls.library)

    @classmethod
    def from_object(cls, obj: Any, *, source: Any = None, allowed_special: Any = None) -> Backend:
        """Wrap a library object; ``source`` is the :class:`~lowbit.tokenize.LoadedTokenizer` it came from."""
        raise NotImplementedError

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> Backend:
        """Rebuild the backend described by :meth:`spec` (in a worker process)."""
        raise NotImplementedError

    def spec(self) -> BackendSpec:
        """How to rebuild this backend in another process."""
        raise NotImplementedError

    # -- rules ---------------------------------------------------------------------------------------------------

    @property
    def edge_units(self) -> int:
        """How far from a truncated chunk edge tokens are excluded from matching (8 chars or 16 bytes)."""
        return 8 if self.unit == "char" else 16

    def longest_special_chars(self) -> int:
        """Length in characters of the longest added/special token string (the overlap must exceed it)."""
        return 0

    def default_strategy(self, parallelism: int) -> str:
        """What ``strategy="auto"`` runs with ``parallelism`` usable workers: the own process pool, or the
        chunks one after another in the caller when there is one worker."""
        return "processes" if parallelism > 1 else "inline"

    def prefers_one_call(self, text: str) -> str | None:
        """Why the library's own call on the whole ``text`` is cheaper than encoding it in chunks and merging, or
        None. Decides speed, never ids (the one call is the library's own). Default: None."""
        return None

    def cut_test(self) -> CutTest | None:
        """The text rule an anchor must pass for a cut to be exact, checked by the merge on the whole text at the
        few anchors it tries (tiktoken: a hard break of the pattern; SentencePiece: no piece can span), or None
        (HF tokenizers carry word starts in their chunk encodings instead). Default: None."""
        return None

    def may_cut(self, window: str) -> bool:
        """Whether a cut could be accepted inside ``window`` (a boundary's overlap, or the largest one its retries
        reach). False only when certainly not; it decides speed, never ids (a refused boundary is merged and
        encoded as one call). Default: True."""
        return True

    def exact_cut_blocker(self) -> str | None:
        """Why no cut of this tokenizer's input can be proven exact (then every text is one sequential call and
        :class:`~lowbit.tokenize.EncodeStats` says so), or None. Default: None."""
        return None

    @property
    def may_cut_widens(self) -> bool:
        """Whether :meth:`may_cut` is monotone in the window: ``may_cut(w)`` implies ``may_cut(v)`` for every window
        ``v`` of the same text that contains ``w``. Then a boundary has no place to cut in any window its retries
        reach exactly when the widest one has none, and :func:`lowbit.tokenize.lopt.hopeless_boundaries` asks
        only that one (it decides speed, never ids).

        It holds where ``may_cut(w)`` is "some position ``k`` of ``w`` at least ``edge`` UTF-8 bytes from both
        ends of ``w`` passes a test of the two characters ``w[k-1], w[k]`` alone" (:func:`window_has_cut` with
        a pair-local ``is_cut``): a containing window holds the same two characters at the same place of the
        text and at least as many bytes on each side of it, so the same position passes there. Backends whose
        window test reads more than the pair (a normalizer or pre-tokenizer run on the window as a whole, a
        special-token string that a narrower window cuts off) keep False, the default, and both windows are
        asked (docs/tokenize.md, "The window pre-check")."""
        return False

    def check_text(self, text: str) -> str:
        """The text to encode: unchanged, or a ``ValueError`` naming the first lone surrogate (UTF-8 has none).

        Free for ASCII text (``str.isascii`` reads a flag); otherwise one strict UTF-8 encode in C."""
        i = surrogate_index(text)
        if i >= 0:
            raise surrogate_error(text, i)
        return text

    def check_disallowed(self, text: str) -> None:
        """Raise where the library refuses special-token strings in ``text`` (tiktoken); no-op elsewhere.

        The pieces skip this check, so the driver runs it once on the whole text."""

    def special_affixes(self) -> tuple[list[int], list[int]]:
        """The ids that ``add_special_tokens=True`` puts before and after a text's ids."""
        raise ValueError(f"add_special_tokens: the {self.name} backend defines no special tokens")

    # -- encoding ------------------------------------------------------------------------------------------------

    def reference(self, text: str) -> list[int]:
        """The library's own sequential encode, called directly."""
        raise NotImplementedError

    def encode_list(self, text: str) -> list[int]:
        """Sequential encode of ``text`` as the library's own list (:meth:`reference`), with no scan of the text:
        a library error caused by a lone surrogate becomes :meth:`check_text`'s named ``ValueError``."""
        try:
            return self.reference(text)
        except Exception:
            self.check_text(text)  # raises the named error when a lone surrogate is the cause
            raise

    def encode_ids(self, text: str) -> np.ndarray:
        """Sequential encode of ``text`` as ``uint32``; equal to :meth:`reference`."""
        return ids_array(self.encode_list(text))

    def ids_call(self) -> Callable[[str], np.ndarray]:
        """A callable equal to :meth:`encode_ids`, bound once by the caller for its per-call path (a backend may
        return one with its attributes resolved in advance). Default: the bound method."""
        return self.encode_ids

    def flat_call(self) -> tuple[Callable[[list[str], bool, bool], tuple[Any, Any]], bool] | None:
        """A native batch call returning flat ``uint32`` ids, which the caller's per-call path makes inline (one
        Python frame fewer than :meth:`ids_call`), or None where the backend has none (the default).

        The protocol (fastokens' ``encode_batch_flat``, arguments positional): for ``(flat, option)``,
        ``np.frombuffer(flat([text], False, option)[0], np.uint32)`` equals :meth:`encode_ids` ``(text)`` for every
        ``str`` the library can encode as UTF-8; a text holding a lone surrogate raises ``UnicodeEncodeError``, and
        the caller then calls :meth:`ids_call`, which repairs or names it. A backend with a check the flat call
        skips (a refusal of special-token strings) returns None."""
        return None

    def encode_chunks(self, pieces: Sequence[Piece], threads: int) -> list[ChunkEncoding]:
        """Encode each piece (with ``threads`` native threads where the library has them)."""
        raise NotImplementedError


def surrogate_index(text: str) -> int:
    """Index of the first lone surrogate (a code point in U+D800..U+DFFF) in ``text``, or -1.

    Rule: an ASCII string has none (``str.isascii`` is O(1) in CPython, a flag of the string object); any other
    string is encoded once as strict UTF-8 in C (about 1 GB/s), which fails exactly at the first surrogate.
    No per-character Python work and no regular-expression scan.

    >>> surrogate_index("ab\\ud800c"), surrogate_index("ab😀"), surrogate_index("plain")
    (2, -1, -1)
    """
    if text.isascii():
        return -1
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return -1


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (see :func:`surrogate_index`).

    >>> has_surrogate("ab\\ud800"), has_surrogate("ab😀")
    (True, False)
    """
    return surrogate_index(text) >= 0


def surrogate_error(text: str, index: int) -> ValueError:
    """The error every non-tiktoken backend raises for a lone surrogate at ``index``."""
    return ValueError(
        f"text: lone surrogate {text[index]!r} at character {index} cannot be encoded as UTF-8; "
        "clean it first, e.g. text.encode('utf-8', 'replace').decode()"
    )
