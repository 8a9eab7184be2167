"""Where the LoPT merge cut: the segments of each piece that make up the merged ids (re-exported from
:mod:`lowbit.tokenize.lopt`, where the one merge loop lives).

A wrapper that must also return offsets, words or tokens per id (``transformers``' ``offset_mapping``,
``word_ids()``, ``tokens()``) needs each piece's kept range ``[lo, hi)`` and the piece's start in the text, so that
the piece's own per-token data can be sliced and shifted: :func:`lossless_segments` gives exactly that, and
:func:`lowbit.tokenize.lopt.lossless_encode` is built on it.
"""

from __future__ import annotations

from lowbit.tokenize.lopt import PayloadRunFn, Segment, lossless_segments

__all__ = ["PayloadRunFn", "Segment", "lossless_segments"]
