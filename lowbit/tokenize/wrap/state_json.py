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
        quotes = string_quotes(buf)
        return quotes[0::2], quotes[1::2] + 1
    commas = np.flatnonzero(buf == _COMMA)
    if kind == "pair":
        commas = commas[buf[commas - 1] == _CLOSE]
    elif kind != "number":
        raise ValueError(f"kind: expected 'number', 'pair' or 'string', got {kind!r}")
    starts = np.empty(len(commas) + 1, dtype=np.int64)
    starts[0] = 0
    starts[1:] = commas + 1
    ends = np.empty(len(commas) + 1, dtype=np.int64)
    ends[:-1] = commas
    ends[-1] = len(buf)
    return starts, ends


def string_quotes(buf: np.ndarray) -> np.ndarray:
    """Positions of the unescaped quotes of a string array's bytes (two per string), as ``int64``.

    A quote is escaped iff an odd run of backslashes precedes it. Only quotes right after a backslash can be, so
    runs are measured for those alone, one vectorised step per backslash of the longest run.
    """
    quotes = np.flatnonzero(buf == _QUOTE)
    after = quotes[quotes > 0]
    cand = after[buf[after - 1] == _BACKSLASH]
    if len(cand):
        escaped = np.zeros(len(cand), dtype=bool)
        run = 1  # backslashes seen before each candidate still in ``active``
        active = np.arange(len(cand))
        while len(active):
            before = cand[active] - 1 - run
            longer = (before >= 0) & (buf[np.maximum(before, 0)] == _BACKSLASH)
            escaped[active[~longer]] = run % 2 == 1
            active = active[longer]
            run += 1
        if escaped.any():
            quotes = np.setdiff1d(quotes, cand[escaped], assume_unique=True)
    if len(quotes) % 2:
        raise StateFormatError("Encoding state: unbalanced quotes in a string array")
    return quotes.astype(np.int64, copy=False)


def parse_numbers(content: bytes) -> np.ndarray:
    """The unsigned integers of ``content`` in order, ``-1`` for each ``null`` (brackets and commas ignored).

    Rule: brackets are deleted and ``null`` becomes ``-1`` (``bytes.translate`` / ``replace``, in C), then numpy's
    C parser reads the comma-separated integers; the count is checked against the commas, so malformed content
    raises :class:`StateFormatError` instead of being cut short.

    >>> parse_numbers(b"[0,15],[207,3],null,40").tolist()
    [0, 15, 207, 3, -1, 40]
    """
    if not content:
        return np.zeros(0, dtype=np.int64)
    flat = content.translate(None, b"[]")
    if b"n" in flat:
        flat = flat.replace(b"null", b"-1")
    count = flat.count(b",") + 1
    try:
        values = np.fromstring(flat, dtype=np.int64, sep=",")  # text mode (a separator) is not deprecated
    except ValueError as exc:  # numpy >= 2.3 raises on unmatched data (older releases warn and stop short)
        raise StateFormatError(f"Encoding state: not a number array ({exc})") from exc
    if len(values) != count:
        raise StateFormatError(f"Encoding state: expected {count} numbers, read {len(values)}")
    if len(values) and int(values.max()) >= _POW10[18]:
        raise StateFormatError("Encoding state: a number with more than 18 digits")
    return values


def _group_tables() -> tuple[np.ndarray, np.ndarray]:
    """Four-digit groups as 4-byte words, indexed by ``group + 10000 * (a higher group is non-zero)``: the first
    10000 entries space-padded (``  42``), the next 10000 zero-padded (``0042``). Two tables: for the last group a
    zero is ``   0``; for a group before it, four spaces."""
    zero = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), dtype=np.uint32)
    space = np.frombuffer(b"".join(b"%4d" % i for i in range(10_000)), dtype=np.uint32)
    blank = space.copy()
    blank[0] = np.frombuffer(b"    ", dtype=np.uint32)[0]
    return np.concatenate([space, zero]), np.concatenate([blank, zero])


_LAST4, _LEAD4 = _group_tables()


def format_numbers(values: np.ndarray, *, pairs: bool = False) -> bytes:
    """``values`` written as JSON array content, ``-1`` as ``null``; with ``pairs``, ``[v0,v1],[v2,v3]``.

    Every number takes the width of the widest, padded with leading spaces (JSON allows whitespace before a
    value). Rule: a number is split into groups of four digits, ``g_j = (v // 10**(4j)) % 10000``; each group is
    looked up in a table of 4-byte words, zero-padded when a higher group is non-zero, else space-padded (and all
    spaces for a zero group that is not the last), so no per-digit arithmetic is done.

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
    has_null = bool(null.any())
    if has_null:
        v = np.where(null, 0, v)
    top = int(v.max())
    if top >= _POW10[18]:
        raise ValueError("values: a number with more than 18 digits")
    width = max(1, int(np.searchsorted(_POW10, top, side="right")))
    if has_null:
        width = max(width, 4)
    groups = (width + 3) // 4
    small = top < 2**32  # uint32 division by a scalar is several times faster than int64's
    w = v.astype(np.uint32) if small else v
    dt = np.uint32 if small else np.int64
    words = np.empty((n, groups), dtype=np.uint32)
    above = None  # the value of the groups before this one (None: there are none)
    for j in range(groups):  # most significant group first
        scale = 10_000 ** (groups - 1 - j)
        rest = w // dt(scale) if scale > 1 else w
        index = rest % dt(10_000) if j else rest
        if above is not None:
            index = index + (above > 0).astype(dt) * dt(10_000)
        words[:, j] = (_LAST4 if j == groups - 1 else _LEAD4)[index]
        above = rest
    raw = words.view(np.uint8)  # (n, 4 * groups): the last ``width`` columns hold the number
    lead = 4 * groups - width
    if has_null:
        raw = raw.copy()
        raw[null, lead:] = np.frombuffer(b" " * (width - 4) + b"null", dtype=np.uint8)
    if not pairs:
        out = np.empty((n, width + 1), dtype=np.uint8)
        out[:, :width] = raw[:, lead:]
        out[:, width] = _COMMA
        return out.reshape(-1)[:-1].tobytes()
    out = np.empty((n // 2, 2 * width + 4), dtype=np.uint8)
    out[:, 0] = ord("[")
    out[:, 1 : 1 + width] = raw[0::2, lead:]
    out[:, 1 + width] = _COMMA
    out[:, 2 + width : 2 + 2 * width] = raw[1::2, lead:]
    out[:, 2 + 2 * width] = _CLOSE
    out[:, 3 + 2 * width] = _COMMA
    return out.reshape(-1)[:-1].tobytes()
