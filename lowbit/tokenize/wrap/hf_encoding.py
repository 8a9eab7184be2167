"""LoPT for ``tokenizers.Tokenizer.encode_batch``: full ``tokenizers.Encoding`` objects, not only ids.

``transformers``' fast tokenizers turn the ``Encoding`` objects of ``Tokenizer.encode_batch`` into their outputs
(``input_ids``, ``attention_mask``, ``token_type_ids``, ``offset_mapping``, ``special_tokens_mask``, overflow,
``word_ids()``, ``tokens()``). :class:`LoptEncodeBatch` returns those objects for long texts, equal to the library's
field by field, by construction:

1. *Raw encoding.* ``tokenizers`` encodes one sequence in two stages: the pipeline (added tokens, normalizer,
   pre-tokenizer, model) gives a raw ``Encoding``; ``Tokenizer.post_process`` then truncates, applies the
   post-processor (special tokens, type ids, sequence ids, offset trimming) and pads. The raw encoding of a long
   text is built from LoPT pieces encoded with post-processor, truncation and padding switched off: the pieces'
   fields are sliced at the merge's cuts (:func:`lowbit.tokenize.wrap.segments.lossless_segments`); offsets are
   shifted by the piece's start in characters; word indices by the difference between the two encodings of the cut
   token (the word index restarts at 0 in every piece); type ids are the sequence's (0, or 1 for the second text
   of a pair).
2. *Post-processing.* The library's own ``Tokenizer.post_process(raw, raw_pair, add_special_tokens)`` with the
   caller's truncation (``max_length``, ``stride``, strategy, side: the overflowing windows), post-processor and
   padding settings: the same call ``encode`` makes.
3. *Batch padding.* ``encode_batch`` pads the batch to its longest member (rounded up to ``pad_to_multiple_of``);
   :func:`pad_batch` applies the same rule with ``Encoding.pad``.

The ``Encoding`` is assembled through ``Encoding.__setstate__`` (the library's own pickle format: ids, type ids,
tokens, words, offsets, masks, overflowing, sequence ranges); :func:`encoding_from_fields` checks the format's
keys once against an encoding the library made, and fails with a clear error if a release changes it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from lowbit.tokenize.backends import ChunkEncoding, HFBackend, Piece
from lowbit.tokenize.lopt import LoptConfig, MergeStats, make_plan
from lowbit.tokenize.wrap.segments import Segment, lossless_segments
from lowbit.tokenize.wrap.state_json import FIELDS, StateArrays, element_bounds, format_numbers, parse_numbers

_COMMA = 44

STATE_KEYS = FIELDS  # the keys of an Encoding's pickle state (one list, in state_json)
_PER_TOKEN = ("ids", "tokens", "words", "offsets", "special_tokens_mask", "attention_mask")


class EncodingFormatError(RuntimeError):
    """The installed ``tokenizers`` pickles ``Encoding`` in a format this module does not know."""


def encoding_from_fields(fields: dict[str, Any]) -> Any:
    """A ``tokenizers.Encoding`` with the given fields (the keys of :data:`STATE_KEYS`).

    >>> enc = encoding_from_fields(
    ...     {"ids": [7, 8], "type_ids": [0, 0], "tokens": ["a", "b"], "words": [0, 1], "offsets": [[0, 1], [2, 3]],
    ...      "special_tokens_mask": [0, 0], "attention_mask": [1, 1], "overflowing": [], "sequence_ranges": {}})
    >>> enc.ids, enc.offsets, enc.word_ids
    ([7, 8], [(0, 1), (2, 3)], [0, 1])
    """
    from tokenizers import Encoding

    check_encoding_format()
    enc = Encoding()
    enc.__setstate__(json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    return enc


def encoding_from_state(state: bytes) -> Any:
    """A ``tokenizers.Encoding`` from its pickle state (``Encoding.__setstate__``)."""
    from tokenizers import Encoding

    enc = Encoding()
    enc.__setstate__(state)
    return enc


def encoding_fields(enc: Any) -> dict[str, Any]:
    """The fields of a ``tokenizers.Encoding`` (its pickle state, parsed)."""
    return json.loads(enc.__getstate__())


def check_encoding_format() -> None:
    """Raise :class:`EncodingFormatError` unless ``Encoding``'s pickle state has exactly :data:`STATE_KEYS`."""
    from tokenizers import Encoding

    keys = tuple(json.loads(Encoding().__getstate__()))
    if set(keys) != set(STATE_KEYS):
        import tokenizers

        raise EncodingFormatError(
            f"tokenizers {tokenizers.__version__} pickles Encoding with fields {keys}; lowbit.tokenize.parallelize "
            f"knows {STATE_KEYS}: parallelize a transformers tokenizer only with a tokenizers release that matches"
        )


@contextmanager
def raw_mode(tok: Any) -> Iterator[None]:
    """``tok`` with post-processor, truncation and padding switched off for the block, restored afterwards.

    ``tok.encode(text, add_special_tokens=False)`` then returns the raw encoding of the pipeline
    (``Tokenizer.post_process`` with none of the three set returns its input unchanged).
    """
    trunc, pad, post = tok.truncation, tok.padding, tok.post_processor
    if trunc is not None:
        tok.no_truncation()
    if pad is not None:
        tok.no_padding()
    if post is not None:
        tok.post_processor = None
    try:
        yield
    finally:
        if post is not None:
            tok.post_processor = post
        if trunc is not None:
            tok.enable_truncation(**trunc)
        if pad is not None:
            tok.enable_padding(**pad)


def merged_state(segments: Sequence[Segment], type_id: int) -> bytes:
    """The raw encoding of the whole text, as ``Encoding`` pickle state, from its segments (step 1 above).

    Each segment's payload is the raw ``Encoding`` of its piece. Per-token arrays are sliced to ``[lo, hi)``;
    offsets are shifted by ``segment.start``; word indices by ``shift_i = w_{i-1}[anchor] + shift_{i-1} - w_i[lo]``
    (the cut token's word in the previous piece, carried to the whole text, minus its word in this piece).

    Cost: ids, masks and tokens are copied as bytes (sliced at their separators); words and offsets of all
    segments are parsed, shifted and written back in one vectorised pass each (:func:`parse_numbers`,
    :func:`format_numbers`).
    """
    parts: dict[str, list[bytes]] = {"ids": [], "special_tokens_mask": [], "attention_mask": [], "tokens": []}
    words_out: list[np.ndarray] = []
    offsets_out: list[np.ndarray] = []
    count = 0
    shift = 0
    prev_words: np.ndarray | None = None
    for seg in segments:
        arrays = StateArrays.parse(seg.payload.__getstate__()).content
        words = parse_numbers(arrays["words"])
        if seg.anchor is not None:
            assert prev_words is not None
            w_prev, w_here = int(prev_words[seg.anchor]), int(words[seg.lo])
            if w_prev < 0 or w_here < 0:
                raise ValueError("a LoPT cut token has no word index; cannot carry word ids across the cut")
            shift = w_prev + shift - w_here
        prev_words = words
        lo, hi = seg.lo, seg.hi
        if hi <= lo:
            continue
        count += hi - lo
        for name in ("ids", "special_tokens_mask", "attention_mask"):
            parts[name].append(_slice_numbers(arrays[name], lo, hi))
        starts, ends = element_bounds(arrays["tokens"], "string")
        parts["tokens"].append(arrays["tokens"][starts[lo] : ends[hi - 1]])
        kept = words[lo:hi]
        words_out.append(np.where(kept >= 0, kept + shift, -1) if shift else kept)
        offsets = parse_numbers(arrays["offsets"])
        offsets_out.append(offsets[2 * lo : 2 * hi] + seg.start)
    type_ids = b",".join([str(type_id).encode()] * count)
    body = {name: b",".join(chunks) for name, chunks in parts.items()}
    words_bytes = format_numbers(np.concatenate(words_out)) if words_out else b""
    offsets_bytes = format_numbers(np.concatenate(offsets_out), pairs=True) if offsets_out else b""
    return b"".join(
        [
            b'{"ids":[',
            body["ids"],
            b'],"type_ids":[',
            type_ids,
            b'],"tokens":[',
            body["tokens"],
            b'],"words":[',
            words_bytes,
            b'],"offsets":[',
            offsets_bytes,
            b'],"special_tokens_mask":[',
            body["special_tokens_mask"],
            b'],"attention_mask":[',
            body["attention_mask"],
            b'],"overflowing":[],"sequence_ranges":{}}',
        ]
    )


def _slice_numbers(content: bytes, lo: int, hi: int) -> bytes:
    """The bytes of elements ``[lo, hi)`` of a number array's ``content`` (its separators are its commas)."""
    commas = np.flatnonzero(np.frombuffer(content, dtype=np.uint8) == _COMMA)
    start = 0 if lo == 0 else int(commas[lo - 1]) + 1
    end = int(commas[hi - 1]) if hi - 1 < len(commas) else len(content)
    return content[start:end]


def with_type_id(enc: Any, type_id: int) -> Any:
    """``enc`` (a raw encoding) with every type id set to ``type_id`` (``tokenizers`` encodes a pair's second
    text with type id 1 before post-processing)."""
    if all(t == type_id for t in enc.type_ids):
        return enc
    f = encoding_fields(enc)
    f["type_ids"] = [type_id] * len(f["ids"])
    return encoding_from_fields(f)


def pad_batch(encodings: Sequence[Any], padding: dict[str, Any] | None) -> None:
    """Pad ``encodings`` in place as ``Tokenizer.encode_batch`` does: to ``padding["length"]`` or, when it is
    None, to the longest encoding, rounded up to a multiple of ``pad_to_multiple_of``."""
    if padding is None or not encodings:
        return
    length = padding["length"]
    if length is None:
        length = max(len(e.ids) for e in encodings)
    multiple = padding["pad_to_multiple_of"]
    if multiple and length % multiple:
        length += multiple - length % multiple
    for e in encodings:
        e.pad(
            length,
            direction=padding["direction"],
            pad_id=padding["pad_id"],
            pad_type_id=padding["pad_type_id"],
            pad_token=padding["pad_token"],
        )


class LoptEncodeBatch:
    """``Tokenizer.encode_batch`` with LoPT for texts of at least ``config.min_parallel_chars`` characters.

    ``rules`` is an :class:`~lowbit.tokenize.backends.HFBackend` of the same pipeline: its rules (spans in
    characters, edge exclusion, overlap for added tokens) drive the merge; the pieces themselves are encoded by the
    live tokenizer passed to :meth:`__call__`, in groups of ``2 * parallelism`` through its multi-threaded
    ``encode_batch``. Inputs it does not split (short texts, pre-tokenized input) go to the library's own call.
    """

    def __init__(self, rules: HFBackend, config: LoptConfig, parallelism: int) -> None:
        self.rules = rules
        self.config = config
        self.parallelism = parallelism
        self._lock = threading.Lock()
        #: Why no cut of this pipeline can be proven exact (then every text goes to the library), or None.
        self.blocker: str | None = rules.exact_cut_blocker()
        #: The merge statistics of the last text encoded with LoPT (diagnostics and tests).
        self.last_stats: MergeStats | None = None

    def is_long(self, text: Any) -> bool:
        """Whether ``text`` is one string long enough for LoPT (never, when :attr:`blocker` is set)."""
        return self.blocker is None and isinstance(text, str) and len(text) >= max(1, self.config.min_parallel_chars)

    def wants(self, item: Any) -> bool:
        """Whether an ``encode_batch`` input (a text or a ``(text, pair)``) has a text long enough for LoPT."""
        if isinstance(item, str):
            return self.is_long(item)
        if isinstance(item, tuple | list) and len(item) == 2 and all(isinstance(t, str) for t in item):
            return self.is_long(item[0]) or self.is_long(item[1])
        return False

    def __call__(
        self, tok: Any, inputs: Sequence[Any], add_special_tokens: bool = True, is_pretokenized: bool = False
    ) -> list[Any]:
        """The encodings of ``tok.encode_batch(inputs, add_special_tokens, is_pretokenized)``, field for field."""
        long_idx = [] if is_pretokenized else [i for i, item in enumerate(inputs) if self.wants(item)]
        if not long_idx:
            return tok.encode_batch(inputs, add_special_tokens=add_special_tokens, is_pretokenized=is_pretokenized)
        with self._lock:
            return self._encode_batch(tok, list(inputs), long_idx, add_special_tokens)

    def _encode_batch(self, tok: Any, inputs: list[Any], long_idx: list[int], add_special: bool) -> list[Any]:
        out: list[Any] = [None] * len(inputs)
        short_idx = [i for i in range(len(inputs)) if i not in set(long_idx)]
        if short_idx:
            shorts = tok.encode_batch([inputs[i] for i in short_idx], add_special_tokens=add_special)
            for i, enc in zip(short_idx, shorts, strict=True):
                out[i] = enc
        raws: dict[int, tuple[Any, Any]] = {}
        with raw_mode(tok):
            for i in long_idx:
                item = inputs[i]
                first, second = (item, None) if isinstance(item, str) else (item[0], item[1])
                raws[i] = (
                    self.raw_encoding(tok, first, 0),
                    None if second is None else self.raw_encoding(tok, second, 1),
                )
        for i, (raw, raw_pair) in raws.items():
            out[i] = tok.post_process(raw, raw_pair, add_special_tokens=add_special)
        pad_batch(out, tok.padding)
        return out

    def raw_encoding(self, tok: Any, text: str, type_id: int) -> Any:
        """The raw encoding of ``text`` (``tok`` in :func:`raw_mode`): LoPT when it is long, else one call."""
        if not self.is_long(text):
            return with_type_id(tok.encode(text, add_special_tokens=False), type_id)
        plan = make_plan(len(text), self.parallelism, self.rules, self.config)
        group = max(1, 2 * self.parallelism)

        def run(pieces: Sequence[Piece]) -> list[tuple[ChunkEncoding, Any]]:
            out: list[tuple[ChunkEncoding, Any]] = []
            for g in range(0, len(pieces), group):
                chunk = pieces[g : g + group]
                texts = [p.text for p in chunk]
                encs = (
                    tok.encode_batch(texts, add_special_tokens=False)
                    if len(texts) > 1
                    else [tok.encode(texts[0], add_special_tokens=False)]
                )
                out.extend((HFBackend._edges(e, p), e) for e, p in zip(encs, chunk, strict=True))
            return out

        segments, self.last_stats = lossless_segments(text, self.rules, run, plan, self.config.min_match_tokens)
        return encoding_from_state(merged_state(segments, type_id))
