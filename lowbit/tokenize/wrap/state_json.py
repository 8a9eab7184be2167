"""Slice, shift and join ``tokenizers.Encoding`` pickle states as bytes, with numpy, without a JSON parser.

An ``Encoding``'s pickle state is compact JSON with its per-token arrays in a fixed order (:data:`FIELDS`). Merging
LoPT pieces needs token ranges ``[lo, hi)`` of each array, offsets and word indices shifted by a constant, and the
pieces joined: with ``json.loads``/``json.dumps`` that costs a Python object per number and string (about as long
as the encoding itself, measured on 1 MB of text). Here every step is a vectorised pass over the bytes:

- an array's element bounds are its top-level separators: commas (numbers, ``null``), ``],[`` (offset pairs), or
  the unescaped quotes (strings: a quote is escaped iff an odd run of backslashes precedes it);
- numbers are runs of digits, their value ``sum(d_k * 10**(run_end - 1 - k))``;
- numbers are written back at one width, digit by digit (``(v // 10**p) % 10`` for every place ``p``).

Element bounds and values are tested against ``json`` in ``tests/tokenize/test_parallelize_internals.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The keys of an ``Encoding``'s pickle state, in the order ``tokenizers`` writes them.
FIELDS = (
    "ids",
    "type_ids",
    "tokens",
    "words",
    "offsets",
    "special_tokens_mask",
    "attention_mask",
    "overflowing",
    "sequence_ranges",
)
ARRAYS = FIELDS[:7]  # the per-token arrays

_COMMA, _QUOTE, _BACKSLASH, _CLOSE, _N = 44, 34, 92, 93, 110
_POW10 = 10 ** np.arange(19, dtype=np.int64)


class StateFormatError(ValueError):
    """The bytes are not an ``Encoding`` pickle state laid out as :data:`FIELDS`."""


@dataclass(frozen=True)
class StateArrays:
    """The per-token arrays of one state: ``content[name]`` is the bytes between the array's brackets."""

    content: dict[str, bytes]

    @classmethod
    def parse(cls, state: bytes) -> StateArrays:
        """Locate the arrays of :data:`ARRAYS` in ``state`` (``StateFormatError`` when the layout differs).

        A closing ``],"<next key>":[`` cannot occur inside a token string: its quotes would be escaped.

        >>> s = b'{"ids":[5,6],"type_ids":[0,0],"tokens":["a","],\\\\"x"],"words":[0,null],"offsets":[[0,1],[1,2]],'
        >>> s += b'"special_tokens_mask":[0,0],"attention_mask":[1,1],"overflowing":[],"sequence_ranges":{}}'
        >>> StateArrays.parse(s).content["tokens"]
        b'"a","],\\\\"x"'
        """
        content: dict[str, bytes] = {}
        head = b'{"ids":['
        if not state.startswith(head):
            raise StateFormatError(f"Encoding state: expected it to start with {head!r}, got {state[:20]!r}")
        pos = len(head)
        for name, nxt in zip(ARRAYS, FIELDS[1:8], strict=True):
            end = state.find(b'],"' + nxt.encode() + b'":', pos)
            if end < 0:
                raise StateFormatError(f"Encoding state: no {nxt!r} array after {name!r}")
            content[name] = state[pos:end]
            pos = end + len(nxt) + 5  # past '],"<nxt>":'
            if nxt in ARRAYS:
                if state[pos : pos + 1] != b"[":
                    raise StateFormatError(f"Encoding state: {nxt!r} is not an array")
                pos += 1
        return cls(content)


def element_bounds(content: bytes, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) byte offsets of the elements of a JSON array's ``content``.

    ``kind``: ``"number"`` (numbers or ``null``), ``"pair"`` (``[a,b]`` pairs) or ``"string"``.

    >>> element_bounds(b"12,null,3", "number")
    (array([0, 3, 8]), array([2, 7, 9]))
    >>> element_bounds(b"[0,5],[6,11]", "pair")
    (array([0, 6]), array([ 5, 12]))
    >>> element_bounds(b'"a\\\\\\\\","b\\\\",c"', "string")
    (array([0, 6]), array([ 5, 13]))
    """
    if not content:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    buf = np.frombuffer(content, dtype=np.uint8)
    if kind == "string":
        quotes = np.flatnonzero(buf == _QUOTE)
        quotes = quotes[~_escaped(buf, quotes)]
        if len(quotes) % 2:
            raise StateFormatError("Encoding state: unbalanced quotes in a string array")
        return quotes[0::2].astype(np.int64), quotes[1::2].astype(np.int64) + 1
    commas = np.flatnonzero(buf == _COMMA)
    if kind == "pair":
        commas = commas[buf[commas - 1] == _CLOSE]
    elif kind != "number":
        raise ValueError(f"kind: expected 'number', 'pair' or 'string', got {kind!r}")
    starts = np.concatenate([[0], commas + 1]).astype(np.int64)
    ends = np.concatenate([commas, [len(buf)]]).astype(np.int64)
    return starts, ends


def _escaped(buf: np.ndarray, quotes: np.ndarray) -> np.ndarray:
    """Whether each quote position is preceded by an odd run of backslashes."""
    idx = np.arange(len(buf))
    last_other = np.maximum.accumulate(np.where(buf != _BACKSLASH, idx, -1))
    before = quotes - 1
    run = np.where(before >= 0, before - last_other[np.maximum(before, 0)], 0)
    return (run % 2) == 1


def parse_numbers(content: bytes) -> np.ndarray:
    """The unsigned integers of ``content`` in order, ``-1`` for each ``null`` (brackets and commas ignored).

    >>> parse_numbers(b"[0,15],[207,3],null,40").tolist()
    [0, 15, 207, 3, -1, 40]
    """
    if not content:
        return np.zeros(0, dtype=np.int64)
    buf = np.frombuffer(content, dtype=np.uint8)
    digit = (buf >= 48) & (buf <= 57)
    prev = np.concatenate([[False], digit[:-1]])
    nxt = np.concatenate([digit[1:], [False]])
    starts = np.flatnonzero(digit & ~prev)
    ends = np.flatnonzero(digit & ~nxt) + 1
    nulls = np.flatnonzero(buf == _N)
    if len(starts):
        pos = np.flatnonzero(digit)
        run_end = np.repeat(ends, ends - starts)
        if int((ends - starts).max()) > 18:
            raise StateFormatError("Encoding state: a number with more than 18 digits")
        vals = (buf[pos].astype(np.int64) - 48) * _POW10[run_end - 1 - pos]
        values = np.add.reduceat(vals, np.concatenate([[0], np.cumsum(ends - starts)[:-1]]))
    else:
        values = np.zeros(0, dtype=np.int64)
    if not len(nulls):
        return values
    order = np.argsort(np.concatenate([starts, nulls]), kind="stable")
    return np.concatenate([values, np.full(len(nulls), -1, dtype=np.int64)])[order]


def format_numbers(values: np.ndarray, *, pairs: bool = False) -> bytes:
    """``values`` written as JSON array content, ``-1`` as ``null``; with ``pairs``, ``[v0,v1],[v2,v3]``.

    Every number takes the width of the widest, padded with leading spaces (JSON allows whitespace before a
    value), so the digits of all numbers are one ``(n, width)`` array: ``(v // 10**(width-1-j)) % 10``.

    >>> format_numbers(np.array([0, 9, 10, 12345, -1]))
    b'    0,    9,   10,12345, null'
    >>> format_numbers(np.array([0, 5, 6, 11]), pairs=True)
    b'[ 0, 5],[ 6,11]'
    """
    v = np.asarray(values, dtype=np.int64)
    n = len(v)
    if n == 0:
        return b""
    if pairs and n % 2:
        raise ValueError("values: pairs need an even count")
    null = v < 0
    width = max(1, int(np.searchsorted(_POW10, v.max(), side="right")))
    if null.any():
        width = max(width, 4)
    places = _POW10[width - 1 :: -1] if width > 1 else _POW10[:1]
    digits = ((v[:, None] // places) % 10 + 48).astype(np.uint8)
    digits[v[:, None] < places] = 32  # leading zeros (and all of a zero but its last digit) become spaces
    digits[:, -1] = np.where(v == 0, 48, digits[:, -1])
    if null.any():
        digits[null] = np.frombuffer(b" " * (width - 4) + b"null", dtype=np.uint8)
    if not pairs:
        out = np.full((n, width + 1), _COMMA, dtype=np.uint8)
        out[:, :width] = digits
        return out.tobytes()[:-1]
    d = digits.reshape(n // 2, 2 * width)
    out = np.empty((n // 2, 2 * width + 4), dtype=np.uint8)
    out[:, 0] = ord("[")
    out[:, 1 : 1 + width] = d[:, :width]
    out[:, 1 + width] = _COMMA
    out[:, 2 + width : 2 + 2 * width] = d[:, width:]
    out[:, 2 + 2 * width] = _CLOSE
    out[:, 3 + 2 * width] = _COMMA
    return out.tobytes()[:-1]
