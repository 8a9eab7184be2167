"""The LoPT merge: overlapping chunks, position-aware matching, enlargement, span-limited fallback.

Method: ``docs/methods/lopt.md`` §3 (algorithm) and §4 (consistency argument), after "LoPT: Lossless Parallel
Tokenization Acceleration for Long Context Inference of Large Language Model" (Shao et al., arXiv:2511.04952).
The step-by-step rule implemented here is our reconstruction [reconstruction]; the paper's text is not available.

Rule. Piece ``i`` covers ``T[s_i, e_i)``; pieces ``i`` and ``i+1`` share the window ``[s_{i+1}, e_i)``. A token
of piece ``i``'s tail and one of piece ``i+1``'s head *match* iff they have the same id and the same span
relative to the window start. Tokens of piece ``i`` ending within ``edge`` units of the truncated edge ``e_i``
and tokens of piece ``i+1`` starting within ``edge`` units of ``s_{i+1}`` (or among its first
``skip_head_tokens``, for SentencePiece's dummy prefix) are excluded. A run of at least ``min_match_tokens``
consecutive matches is accepted; the cut is at the start of a token of the run that is not its first and whose
start differs from its predecessor's (byte tokens splitting one character share a character span). The output
takes piece ``i`` up to the cut and piece ``i+1`` from it, by index slicing.

A clean anchor also starts a pre-token (word) in both chunks where ``backend.cuts_at_word_starts``: a word start
of the pre-tokenizer for HF tokenizers, a hard break of the pattern for tiktoken (no pre-token can span it), a
place no vocabulary piece can span for SentencePiece BPE. Then what lies on each side of the cut is tokenized whole
on that side, which makes the cut provably exact (``docs/tokenize.md``, "Why the merge is exact"). Boundaries
whose windows, up to the largest a retry reaches, hold no place to cut (``Backend.may_cut``) are merged before
encoding; when every boundary of the first round fails (two or more, each window at least ``2·edge + 16`` units),
all are merged at once instead of retried.

A boundary with no accepted run is retried with a larger window: piece ``i`` is extended right and piece
``i+1`` left by the current window length (the window triples), at most ``max_retries`` times. Boundaries that
still fail merge their two pieces into one, which is encoded as one sequential call; merging repeats until no
boundary fails, so the result is identical to sequential encoding in every case the matching rule is sound, and
the sequential fallback covers only the pieces around the failing boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.tokenize.backends import Backend, ChunkEncoding, Piece
from lowbit.tokenize.backends.base import CutTest

RunFn = Callable[[Sequence[Piece]], list[ChunkEncoding]]

MIN_CHUNK_CHARS = 256
"""The smallest ``chunk_chars`` :class:`lowbit.tokenize.ParallelTokenizer` accepts.

Each piece costs one task (an inter-process round trip on a pool) plus ``overlap_chars`` re-encoded and one
boundary match in Python, so tiny chunks cost far more than the text (``chunk_chars=1`` on 100K characters:
100K tasks of 65 characters each, over a minute instead of a fraction of a second). :class:`LoptConfig`,
:func:`make_plan` and :func:`lossless_encode` themselves accept any positive size: the merge tests use chunks
of tens of characters on purpose, to force many cuts, retries and merges in-process."""


@dataclass(frozen=True)
class LoptConfig:
    """User overrides; ``None`` means chosen automatically from the text length, workers and tokenizer.

    Any positive ``chunk_chars`` is accepted here (tests force many cuts with tiny chunks); the user-facing
    :class:`lowbit.tokenize.ParallelTokenizer` requires at least :data:`MIN_CHUNK_CHARS`.
    """

    chunk_chars: int | None = None
    overlap_chars: int | None = None
    max_retries: int | None = None
    min_parallel_chars: int = 32_768
    min_match_tokens: int = 2

    def __post_init__(self) -> None:
        for name in ("chunk_chars", "overlap_chars"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name}: expected a positive int or None, got {value!r}")
        if self.max_retries is not None and (not isinstance(self.max_retries, int) or self.max_retries < 0):
            raise ValueError(f"max_retries: expected an int >= 0 or None, got {self.max_retries!r}")
        if not isinstance(self.min_parallel_chars, int) or self.min_parallel_chars < 0:
            raise ValueError(f"min_parallel_chars: expected an int >= 0, got {self.min_parallel_chars!r}")
        if not isinstance(self.min_match_tokens, int) or self.min_match_tokens < 1:
            raise ValueError(f"min_match_tokens: expected an int >= 1, got {self.min_match_tokens!r}")


@dataclass(frozen=True)
class Plan:
    """The chunking actually used for one text."""

    chunk_chars: int
    overlap_chars: int
    max_retries: int


@dataclass(frozen=True)
class MergeStats:
    """What the merge did: pieces encoded, boundaries retried with a larger window, boundaries merged, and the
    characters of the merged pieces (the sequential fallback's span). ``premerged`` of the ``merges`` were merged
    before any encoding, because no window that the retries could reach holds a place to cut
    (:meth:`~lowbit.tokenize.backends.Backend.may_cut`): such text costs one sequential call, not the retries.
    ``note`` is set when the whole text ended as one piece although it was split: no boundary had a provably exact
    cut (the backend's ``cut_rule``), and :class:`~lowbit.tokenize.EncodeStats` reports the path as sequential."""

    pieces: int
    boundaries: int
    retries: int
    merges: int
    fallback_chars: int
    premerged: int = 0
    #: Set when every boundary was merged, so the whole text was one sequential call: why (no place to cut).
    note: str | None = None


def make_plan(n: int, workers: int, backend: Backend, config: LoptConfig) -> Plan:
    """Automatic chunking (lopt.md §6): ``Lc ≈ n / (4·workers)`` within [16K, ``backend.max_auto_chunk_chars``]
    chars (1M; 64K for SentencePiece, whose cost is superlinear in the chunk length); overlap at least
    ``backend.min_overlap_chars`` (128) and twice the longest added token plus the excluded
    edges; 3 retry rounds. ``config`` values, when given, win."""
    special = backend.longest_special_chars()
    auto_overlap = max(backend.min_overlap_chars, 2 * special + 48)
    overlap = config.overlap_chars or auto_overlap
    if config.chunk_chars is not None:
        chunk = config.chunk_chars
    else:
        chunk = math.ceil(n / max(1, 4 * workers))
        chunk = max(16_384, min(chunk, backend.max_auto_chunk_chars))
    retries = 3 if config.max_retries is None else config.max_retries
    return Plan(chunk, overlap, retries)


def split_points(n: int, chunk: int, overlap: int) -> list[tuple[int, int]]:
    """Pieces ``[s_i, e_i)`` with ``s_i = i·chunk`` and ``e_i = min(n, s_{i+1} + overlap)``; the last ends at n."""
    starts = list(range(0, n, chunk)) or [0]
    return [(s, min(n, starts[i + 1] + overlap) if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def _window_units(backend: Backend, text: str, start: int, end: int) -> int:
    if backend.unit == "char":
        return end - start
    return len(text[start:end].encode("utf-8", "surrogatepass"))


def match_boundary(
    left: ChunkEncoding,
    right: ChunkEncoding,
    window_units: int,
    backend: Backend,
    min_match: int,
    cut_at: Callable[[int], bool] | None = None,
) -> tuple[int, int] | None:
    """The cut for one boundary: (tokens kept from the left piece, first token index in the right piece).

    Returns None when no run of ``min_match`` consecutive (start, end, id) matches with a clean anchor exists.
    A clean anchor starts at a different position than its predecessor (byte tokens of one character share a
    start) and, where ``backend.cuts_at_word_starts``, starts a pre-token (word) in both chunks; where ``cut_at``
    is given (the backend's :meth:`~lowbit.tokenize.backends.Backend.cut_test` on the whole text), it must also
    accept the anchor's start (in window units). What lies on each side of the cut is then tokenized whole on
    that side, which is what makes the cut exact (docs/tokenize.md, "Why the merge is exact").
    """
    edge = backend.edge_units
    right_ids = right.ids[: len(right.head_start)]
    keys: dict[tuple[int, int, int], int] = {}
    for k in range(backend.skip_head_tokens, len(right_ids)):
        s = int(right.head_start[k])
        if s >= edge:
            keys[(s, int(right.head_end[k]), int(right_ids[k]))] = k
    if not keys:
        return None
    left_ids = left.ids[left.tail_index :]
    limit = window_units - edge
    pairs: list[tuple[int, int]] = []
    for j in range(len(left_ids)):
        e = int(left.tail_end[j])
        if e > limit:
            break
        k = keys.get((int(left.tail_start[j]), e, int(left_ids[j])))
        if k is not None:
            pairs.append((j, k))
    # Group into runs of consecutive matches in both pieces.
    runs: list[list[tuple[int, int]]] = []
    for j, k in pairs:
        if runs and runs[-1][-1] == (j - 1, k - 1):
            runs[-1].append((j, k))
        else:
            runs.append([(j, k)])
    words = backend.cuts_at_word_starts
    if words and (left.tail_word_start is None or right.head_word_start is None):
        raise ValueError(f"{backend.name}: cuts at word starts need the chunks' word starts")
    for run in sorted((r for r in runs if len(r) >= min_match), key=len, reverse=True):
        mid = len(run) // 2
        order = sorted(range(1, len(run)), key=lambda a: abs(a - mid))
        for a in order:
            j, k = run[a]
            if left.tail_start[j] == left.tail_start[j - 1]:
                continue
            if words and not (left.tail_word_start[j] and right.head_word_start[k]):  # type: ignore[index]
                continue
            if cut_at is not None and not cut_at(int(left.tail_start[j])):
                continue
            return left.tail_index + j, k
    return None


class PieceList(Sequence[Piece]):
    """The pieces of ``text`` given by ``(start, end, left_window, right_window)`` spans.

    A piece's characters are sliced only when it is accessed, so at any time only the pieces a runner holds in
    flight exist as copies, never a second copy of the whole text.
    """

    def __init__(self, text: str, spans: Sequence[tuple[int, int, int, int]]) -> None:
        self._text = text
        self._spans = list(spans)

    def __len__(self) -> int:
        return len(self._spans)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        s, e, left, right = self._spans[i]
        return Piece(self._text[s:e], left, right)


#: Encodes pieces in order; each result is the piece's :class:`ChunkEncoding` plus any payload the caller keeps
#: (e.g. the library's own encoding object with offsets and words, for :mod:`lowbit.tokenize.wrap`).
PayloadRunFn = Callable[[Sequence[Piece]], list[tuple[ChunkEncoding, Any]]]


@dataclass(frozen=True)
class Segment:
    """Tokens ``[lo, hi)`` of the final piece ``text[start:end]``: the merged ids are the concatenation of every
    segment's ``encoding.ids[lo:hi]``.

    ``anchor`` (every segment but the first): the index, in the previous segment's piece, of the token that is
    token ``lo`` of this piece (the cut token, encoded identically by both pieces; a per-token numbering that
    restarts in every piece, such as ``tokenizers``' word index, is carried across the cut through it).
    """

    start: int
    end: int
    encoding: ChunkEncoding
    payload: Any
    lo: int
    hi: int
    anchor: int | None


def lossless_segments(
    text: str,
    backend: Backend,
    run: PayloadRunFn,
    plan: Plan,
    min_match: int = 2,
    hopeless: list[int] | None = None,
) -> tuple[list[Segment], MergeStats]:
    """The LoPT merge (module docstring): encode ``text`` in overlapping pieces with ``run`` and return the kept
    segment of every final piece with the merge statistics. :func:`lossless_encode` concatenates the segments' ids;
    wrappers that need offsets or words per id slice the payloads the same way. ``hopeless``: the boundaries of
    ``split_points`` to merge before encoding, when the caller has computed :func:`hopeless_boundaries` already.

    >>> from lowbit.tokenize import load_tokenizer
    >>> from lowbit.tokenize.backends import make_backend
    >>> backend, _ = make_backend(load_tokenizer("bert"), backend="library")
    >>> run = lambda pieces: [(c, None) for c in backend.encode_chunks(pieces, 1)]
    >>> text = "Every piece is cut where both sides agree. " * 40
    >>> segs, stats = lossless_segments(text, backend, run, Plan(300, 64, 3))
    >>> merged = [int(t) for s in segs for t in s.encoding.ids[s.lo : s.hi]]
    >>> merged == backend.reference(text), stats.boundaries, [s.start for s in segs][:3]
    (True, 5, [0, 300, 600])
    """
    n = len(text)
    bounds = [list(b) for b in split_points(n, plan.chunk_chars, plan.overlap_chars)]
    encs: list[tuple[ChunkEncoding, Any] | None] = [None] * len(bounds)
    retries = merges = fallback = 0
    if hopeless is None:
        hopeless = hopeless_boundaries(text, bounds, backend, plan)
    if hopeless:
        fallback += _merge(bounds, encs, hopeless)
        merges += len(hopeless)
    rounds = 0
    total_pieces = 0
    test = backend.cut_test()
    while True:
        todo = [i for i, e in enumerate(encs) if e is None]
        if todo:
            pieces = PieceList(text, [_span(bounds, i) for i in todo])
            total_pieces += len(pieces)
            for i, item in zip(todo, run(pieces), strict=True):
                encs[i] = item
        cuts: list[tuple[int, int] | None] = []
        roomy = True  # every window leaves room for a run of matches between its two excluded edges
        for b in range(len(bounds) - 1):
            left, right = encs[b], encs[b + 1]
            assert left is not None and right is not None
            w = _window_units(backend, text, bounds[b + 1][0], bounds[b][1])
            roomy = roomy and w >= 2 * backend.edge_units + 16
            at = _cut_at(text, bounds[b + 1][0], bounds[b][1], backend, test) if test is not None else None
            cuts.append(match_boundary(left[0], right[0], w, backend, min_match, at))
        # Cuts must not cross inside a piece (windows of one piece may overlap after enlargement).
        for b in range(1, len(cuts)):
            prev, cur = cuts[b - 1], cuts[b]
            if cur is not None and prev is not None and prev[1] > cur[0]:
                cuts[b] = None
        failing = [b for b, c in enumerate(cuts) if c is None]
        if not failing:
            break
        # Every boundary of the first round failed although each window had room for a match: the text has no
        # place to cut (a digit run grouped in threes from each piece's own start, an unsplit script); retrying
        # every boundary would re-encode the whole text up to max_retries times before the same fallback.
        give_up = rounds == 0 and roomy and len(failing) == len(cuts) >= 2
        if rounds < plan.max_retries and not give_up:
            retries += len(failing)
            merge_set = set()
            for b in failing:
                grow = max(plan.overlap_chars, bounds[b][1] - bounds[b + 1][0])
                new_end = min(n, bounds[b][1] + grow)
                new_start = max(0, bounds[b + 1][0] - grow)
                if new_start <= bounds[b][0] or new_end >= bounds[b + 1][1]:
                    merge_set.add(b)
                    continue
                bounds[b][1], bounds[b + 1][0] = new_end, new_start
                encs[b] = encs[b + 1] = None
            if merge_set:
                fallback += _merge(bounds, encs, sorted(merge_set))
                merges += len(merge_set)
        else:
            fallback += _merge(bounds, encs, failing)
            merges += len(failing)
        rounds += 1
    note = None
    if len(bounds) == 1 and merges:
        note = f"no boundary had a provably exact cut ({backend.cut_rule}), so the text was one sequential call"
    stats = MergeStats(total_pieces, len(bounds) - 1, retries, merges, fallback, len(hopeless), note)
    segments = []
    for i, item in enumerate(encs):
        assert item is not None
        enc, payload = item
        lo = cuts[i - 1][1] if i > 0 else 0  # type: ignore[index]
        hi = cuts[i][0] if i < len(cuts) else len(enc.ids)  # type: ignore[index]
        anchor = cuts[i - 1][0] if i > 0 else None  # type: ignore[index]
        segments.append(Segment(bounds[i][0], bounds[i][1], enc, payload, lo, hi, anchor))
    return segments, stats


UNASKED: Any = object()
"""Default of ``dense_note`` in :func:`one_call_stats`: the backend's ``prefers_one_call`` was not asked yet."""


def one_call_stats(
    text: str, backend: Backend, plan: Plan, dense_note: str | None = UNASKED
) -> tuple[MergeStats | None, list[int] | None]:
    """Whether ``text`` is one call of the backend instead of chunks and a merge: ``(stats, hopeless)``.

    ``stats`` (with ``note`` saying why) when the backend finds its own call cheaper for this text
    (:meth:`~lowbit.tokenize.backends.Backend.prefers_one_call`; pass its answer as ``dense_note`` when the
    caller has asked already, so the sample is encoded once) or when no boundary has a place to cut in any window
    its retries reach; else None, with the boundaries to merge before encoding (:func:`hopeless_boundaries`,
    for :func:`lossless_segments`). Decides speed, never ids: a one call is the library's own."""
    n = len(text)
    note = backend.prefers_one_call(text) if dense_note is UNASKED else dense_note
    if note is not None:
        return MergeStats(1, 0, 0, 0, n, 0, note), None
    bounds = split_points(n, plan.chunk_chars, plan.overlap_chars)
    hopeless = hopeless_boundaries(text, bounds, backend, plan)
    if len(bounds) > 1 and len(hopeless) == len(bounds) - 1:
        note = f"no boundary had a provably exact cut ({backend.cut_rule}), so the text was one sequential call"
        return MergeStats(1, 0, 0, len(hopeless), n, len(hopeless), note), hopeless
    return None, hopeless


def lossless_encode(
    text: str, backend: Backend, run: RunFn, plan: Plan, min_match: int = 2
) -> tuple[np.ndarray, MergeStats]:
    """Encode ``text`` in overlapping pieces with ``run`` and merge them losslessly: the ids of
    :func:`lossless_segments` (see the module docstring).

    One call of the backend's own :meth:`~lowbit.tokenize.backends.Backend.encode_ids` instead, with
    ``MergeStats.note`` saying why, when :func:`one_call_stats` says so (no piece encoding, no merge: the ids are
    the library's own)."""
    one, hopeless = one_call_stats(text, backend, plan)
    if one is not None:
        return backend.encode_ids(text), one
    return merged_ids(text, backend, run, plan, min_match, hopeless)


def merged_ids(
    text: str, backend: Backend, run: RunFn, plan: Plan, min_match: int = 2, hopeless: list[int] | None = None
) -> tuple[np.ndarray, MergeStats]:
    """The chunks-and-merge part of :func:`lossless_encode`: the concatenated segments of
    :func:`lossless_segments` (``hopeless`` as there)."""
    segments, stats = lossless_segments(text, backend, lambda p: [(c, None) for c in run(p)], plan, min_match, hopeless)
    parts = [s.encoding.ids[s.lo : s.hi] for s in segments]
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)), stats


def hopeless_boundaries(text: str, bounds: Sequence[Sequence[int]], backend: Backend, plan: Plan) -> list[int]:
    """Boundaries where no cut can be accepted: neither the first window nor the largest window the retries can
    reach (``3**max_retries`` times the first, clipped to the two pieces) passes ``backend.may_cut``. Where the
    backend's window test is monotone (:attr:`~lowbit.tokenize.backends.Backend.may_cut_widens`: tiktoken
    without allowed special strings, SentencePiece), the largest window's verdict is the answer and the first is
    not asked; elsewhere (HF tokenizers) both are.

    Merging them before encoding changes no id (a merge is one sequential call); it only saves the chunk
    encodings and retries that would fail anyway (a 1 MB word under WordPiece: 7 retried boundaries and a
    sequential call, 4.7x the library, became one call)."""
    out = []
    widest_only = backend.may_cut_widens
    for b in range(len(bounds) - 1):
        lo, hi = bounds[b + 1][0], bounds[b][1]
        if not widest_only and backend.may_cut(text[lo:hi]):
            continue
        reach = (hi - lo) * (3**plan.max_retries - 1) // 2
        if not backend.may_cut(text[max(bounds[b][0], lo - reach) : min(bounds[b + 1][1], hi + reach)]):
            out.append(b)
    return out


def _cut_at(text: str, lo: int, hi: int, backend: Backend, test: CutTest) -> Callable[[int], bool]:
    """``test`` at a position of the window ``text[lo:hi]`` given in the backend's units from ``lo``; a byte offset
    inside a character is never a cut."""
    if backend.unit == "char" or text[lo:hi].isascii():
        return lambda units: 0 < lo + units < len(text) and test(text, lo + units)
    raw = text[lo:hi].encode("utf-8", "surrogatepass")

    def at(units: int) -> bool:
        if units < 0 or units > len(raw):
            return False
        try:
            k = lo + len(raw[:units].decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            return False
        return 0 < k < len(text) and test(text, k)

    return at


def _span(bounds: list[list[int]], i: int) -> tuple[int, int, int, int]:
    """Piece ``i``'s (start, end, left window, right window) in characters."""
    s, e = bounds[i]
    left = bounds[i - 1][1] - s if i > 0 else 0
    right = e - bounds[i + 1][0] if i + 1 < len(bounds) else 0
    return s, e, max(0, left), max(0, right)


def _merge(bounds: list[list[int]], encs: list[Any], failing: Sequence[int]) -> int:
    """Merge the two pieces of every failing boundary (consecutive failures collapse into one piece).

    Returns the number of characters in the merged pieces (encoded sequentially from now on)."""
    fail = set(failing)
    new_bounds: list[list[int]] = []
    new_encs: list[Any] = []
    merged_chars = 0
    i = 0
    while i < len(bounds):
        j = i
        while j in fail:
            j += 1
        if j == i:
            new_bounds.append(bounds[i])
            new_encs.append(encs[i])
        else:
            new_bounds.append([bounds[i][0], bounds[j][1]])
            new_encs.append(None)
            merged_chars += bounds[j][1] - bounds[i][0]
        i = j + 1
    bounds[:] = new_bounds
    encs[:] = new_encs
    return merged_chars
