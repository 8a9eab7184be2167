"""The LoPT merge, returning *where* it cut: the segments of each piece that make up the merged ids.

:func:`lowbit.tokenize.lopt.lossless_encode` returns the merged ids only. A wrapper that must also return
offsets, words or tokens per id (``transformers``' ``offset_mapping``, ``word_ids()``, ``tokens()``) needs each
piece's kept range ``[lo, hi)`` and the piece's start in the text, so that the piece's own per-token data can be
sliced and shifted. :func:`lossless_segments` runs the same rule as ``lossless_encode`` (``docs/methods/lopt.md``
§3: ``split_points``, ``match_boundary``, window enlargement, merging failing boundaries) and returns those
segments; ``tests/tokenize/test_parallelize_internals.py`` checks that its ids equal ``lossless_encode``'s on texts
with many cuts, retries and merges.

Rule. With final pieces ``P_0..P_m`` (piece ``i`` starts at character ``start_i``) and accepted cuts
``(a_b, k_b)`` at boundary ``b`` (``a_b`` tokens kept from ``P_b``, ``P_{b+1}`` kept from token ``k_b``), the
merged sequence is ``P_0[0:a_0] + P_1[k_0:a_1] + ... + P_m[k_{m-1}:]``. Token ``a_b`` of ``P_b`` and token ``k_b`` of
``P_{b+1}`` are the *same* token of the text (equal id and span): :attr:`Segment.anchor` records it, so that a
per-token numbering that restarts in every piece (``tokenizers``' word index) can be carried across the cut.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lowbit.tokenize.backends import Backend, ChunkEncoding, Piece
from lowbit.tokenize.lopt import MergeStats, PieceList, Plan, match_boundary, split_points

#: Encodes pieces in order; each result is the piece's :class:`ChunkEncoding` plus any payload the caller keeps
#: (e.g. the library's own encoding object with offsets and words).
PayloadRunFn = Callable[[Sequence[Piece]], list[tuple[ChunkEncoding, Any]]]


@dataclass(frozen=True)
class Segment:
    """Tokens ``[lo, hi)`` of the piece that starts at character ``start`` of the text.

    ``anchor`` (for every segment but the first): the index in the previous segment's piece of the token that is
    token ``lo`` of this piece (the cut token, encoded identically by both pieces); ``None`` for the first.
    """

    start: int
    end: int
    encoding: ChunkEncoding
    payload: Any
    lo: int
    hi: int
    anchor: int | None


def lossless_segments(
    text: str, backend: Backend, run: PayloadRunFn, plan: Plan, min_match: int = 2
) -> tuple[list[Segment], MergeStats]:
    """The segments of :func:`lowbit.tokenize.lopt.lossless_encode`'s merge (same rule, same statistics).

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
    retries = merges = fallback = rounds = total_pieces = 0
    while True:
        todo = [i for i, e in enumerate(encs) if e is None]
        if todo:
            pieces = PieceList(text, [_span(bounds, i) for i in todo])
            total_pieces += len(pieces)
            for i, enc in zip(todo, run(pieces), strict=True):
                encs[i] = enc
        cuts: list[tuple[int, int] | None] = []
        for b in range(len(bounds) - 1):
            left, right = encs[b], encs[b + 1]
            assert left is not None and right is not None
            w = _window_units(backend, text, bounds[b + 1][0], bounds[b][1])
            cuts.append(match_boundary(left[0], right[0], w, backend, min_match))
        for b in range(1, len(cuts)):
            prev, cur = cuts[b - 1], cuts[b]
            if cur is not None and prev is not None and prev[1] > cur[0]:
                cuts[b] = None
        failing = [b for b, c in enumerate(cuts) if c is None]
        if not failing:
            break
        if rounds < plan.max_retries:
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
    stats = MergeStats(total_pieces, len(bounds) - 1, retries, merges, fallback)
    segments = []
    for i, item in enumerate(encs):
        assert item is not None
        enc, payload = item
        lo = cuts[i - 1][1] if i > 0 else 0  # type: ignore[index]
        hi = cuts[i][0] if i < len(cuts) else len(enc.ids)  # type: ignore[index]
        anchor = cuts[i - 1][0] if i > 0 else None  # type: ignore[index]
        segments.append(Segment(bounds[i][0], bounds[i][1], enc, payload, lo, hi, anchor))
    return segments, stats


def _window_units(backend: Backend, text: str, start: int, end: int) -> int:
    """Length of the window ``text[start:end]`` in the backend's span unit (characters or UTF-8 bytes)."""
    if backend.unit == "char":
        return end - start
    return len(text[start:end].encode("utf-8", "surrogatepass"))


def _span(bounds: list[list[int]], i: int) -> tuple[int, int, int, int]:
    """Piece ``i``'s (start, end, left window, right window) in characters."""
    s, e = bounds[i]
    left = bounds[i - 1][1] - s if i > 0 else 0
    right = e - bounds[i + 1][0] if i + 1 < len(bounds) else 0
    return s, e, max(0, left), max(0, right)


def _merge(bounds: list[list[int]], encs: list[Any], failing: Sequence[int]) -> int:
    """Merge the two pieces of every failing boundary (consecutive failures collapse into one piece); returns
    the characters of the merged pieces (encoded as one sequential call from now on)."""
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
