"""The lossy baseline LoPT is compared with: cut the text, encode the chunks in parallel, concatenate.

Naive parallel tokenization (``docs/methods/lopt.md`` §2) changes the tokens next to every cut, because a token
of the sequential encode may straddle a cut and pre-tokenization depends on the characters around it. The
benchmark and the report show how many tokens it gets wrong; LoPT never uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lowbit.tokenize import ParallelTokenizer
from lowbit.tokenize.backends import ChunkEncoding, Piece
from lowbit.tokenize.lopt import make_plan

RunFn = Callable[[Sequence[Piece]], list[ChunkEncoding]]


def naive_chunks(text: str, run: RunFn, chunk_chars: int) -> tuple[np.ndarray, list[int]]:
    """Cut ``text`` every ``chunk_chars`` characters, encode the chunks with ``run``, concatenate the ids.

    Returns the ids and the token index of every cut, so the damage can be counted (:func:`wrong_tokens`).

    >>> def run(pieces):  # one "token" per character: the id is the code point
    ...     return [ChunkEncoding(np.array([ord(c) for c in p.text]), *[np.zeros(0)] * 2, 0, *[np.zeros(0)] * 2)
    ...             for p in pieces]
    >>> ids, cuts = naive_chunks("abcde", run, 2)
    >>> ids.tolist(), cuts
    ([97, 98, 99, 100, 101], [2, 4])
    """
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars: expected a positive int, got {chunk_chars!r}")
    pieces = [Piece(text[s : s + chunk_chars], 0, 0) for s in range(0, max(1, len(text)), chunk_chars)]
    encs = run(pieces)
    cuts = list(np.cumsum([len(e.ids) for e in encs])[:-1].tolist())
    return np.concatenate([e.ids for e in encs]), cuts


def naive_encode(pt: ParallelTokenizer, text: str, *, chunk_chars: int | None = None) -> tuple[np.ndarray, list[int]]:
    """The naive baseline on the workers and strategy of ``pt``: :func:`naive_chunks` with ``pt``'s runner.

    ``chunk_chars`` defaults to the chunk length LoPT's automatic plan would choose for this text on ``pt``
    (:func:`lowbit.tokenize.lopt.make_plan`), so both methods cut the text at the same places.
    """
    text = pt.backend.check_text(text)
    chunk = chunk_chars or make_plan(len(text), pt.parallelism, pt.backend, pt.config).chunk_chars
    return naive_chunks(text, pt.encode_chunks, chunk)


def wrong_tokens(reference: np.ndarray, naive: np.ndarray, cuts: Sequence[int], window: int = 64) -> int:
    """Tokens of ``reference`` that the naive concatenation does not reproduce, counted near each cut.

    Naive chunks only differ from the reference near their cuts, so each cut's neighbourhood (``window`` tokens
    each side) is aligned with ``difflib`` and the unmatched reference tokens are summed; the running length
    difference keeps the windows aligned.

    >>> wrong_tokens(np.array([1, 2, 3, 4]), np.array([1, 2, 9, 3, 4]), [2])  # an extra token: none missing
    0
    >>> wrong_tokens(np.array([1, 2, 3, 4]), np.array([1, 5, 6, 4]), [2])    # "2 3" split differently
    2
    """
    import difflib

    wrong = 0
    drift = 0  # reference index minus naive index, before the current cut
    for c in cuts:
        a = max(0, c - window)
        nw = naive[a : c + window].tolist()
        ra = max(0, a + drift)
        rw = reference[ra : c + window + drift].tolist()
        blocks = [b for b in difflib.SequenceMatcher(None, nw, rw, autojunk=False).get_matching_blocks() if b.size]
        wrong += len(rw) - sum(b.size for b in blocks)
        if blocks:
            last = blocks[-1]
            drift = (ra + last.b) - (a + last.a)
    return wrong
