"""tiktoken: ``tiktoken.Encoding``; byte spans from the byte lengths of the edge tokens.

Reference: ``encode_ordinary(text)``, or ``encode(text, allowed_special=...)`` when ``allowed_special`` is given.
Rules of its own: lone surrogates are replaced by U+FFFD as tiktoken itself does; with ``allowed_special`` given,
the other special-token strings in a text raise as in tiktoken; no BOS/EOS (``add_special_tokens`` raises); a cut
falls only at a hard break of the pre-tokenizer pattern (:class:`PatternBreaks`), where every scan of the pattern
starts a pre-token, so each pre-token is BPE-encoded whole on one side (docs/tokenize.md, "Why the merge is exact").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from lowbit.tokenize.backends.base import (
    Backend,
    BackendSpec,
    ChunkEncoding,
    PairFilter,
    Piece,
    Unit,
    byte_edges,
    ids_array,
    surrogate_index,
    window_has_cut,
)
from lowbit.tokenize.presets import LoadedTokenizer


class TiktokenBackend(Backend):
    """``tiktoken.Encoding``; byte spans from ``decode_single_token_bytes`` of the edge tokens only.

    Build it with :meth:`from_encoding`; ``allowed_special`` is ``None`` (special strings are plain text),
    ``"all"`` or a set of the encoding's special tokens.
    """

    unit: Unit = "byte"
    native_threads = True
    cut_rule = (
        "a cut must fall at a hard break of the pre-tokenizer pattern, a place no pre-token can span "
        "(e.g. a letter followed by a space); one pre-token spans every window"
    )
    library: ClassVar[str] = "tiktoken"
    kind: ClassVar[str] = "tiktoken"
    takes_allowed_special: ClassVar[bool] = True

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
        self.lens = self._length_table()
        self.breaks = PatternBreaks(enc._pat_str)
        self._pair_filter = PairFilter(self.breaks.is_break)
        longest = max((len(t) for t in self._allowed), default=0)
        self._special_re = re.compile("|".join(map(re.escape, sorted(self._allowed)))) if self._allowed else None
        self._longest_special = longest

    @classmethod
    def from_encoding(
        cls, enc: Any, *, allowed_special: Any = None, source: LoadedTokenizer | None = None
    ) -> TiktokenBackend:
        """Wrap a ``tiktoken.Encoding`` (``source``: the preset or file it was loaded from, reloaded by workers)."""
        return cls(enc, allowed_special=allowed_special, source=source)

    @classmethod
    def from_object(cls, obj: Any, *, source: Any = None, allowed_special: Any = None) -> TiktokenBackend:
        return cls.from_encoding(obj, allowed_special=allowed_special, source=source)

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> TiktokenBackend:
        allowed = spec.option("allowed_special")
        allowed = set(allowed) if isinstance(allowed, tuple) else allowed
        if spec.path is not None:
            from lowbit.tokenize.presets import tiktoken_from_file

            loaded = tiktoken_from_file(
                spec.path, spec.option("pattern"), spec.option("special_tokens"), name=spec.name
            )
            return cls.from_encoding(loaded.obj, allowed_special=allowed, source=loaded)
        return cls.from_encoding(spec.data, allowed_special=allowed)

    def spec(self) -> BackendSpec:
        allowed = ("allowed_special", _freeze(self.allowed_special))
        src = self.source
        if src is not None and src.path is not None:
            options = (("pattern", src.pattern), ("special_tokens", src.special_tokens), allowed)
            return BackendSpec(self.kind, src.name, path=str(src.path), options=options)
        # tiktoken.Encoding pickles (by name when registered).
        return BackendSpec(self.kind, self.name, data=self.enc, options=(allowed,))

    def _length_table(self) -> np.ndarray:
        lens = np.zeros(self.enc.n_vocab, dtype=np.int32)
        for i in range(self.enc.n_vocab):
            try:
                lens[i] = len(self.enc.decode_single_token_bytes(i))
            except KeyError:
                lens[i] = 0
        return lens

    # -- rules ---------------------------------------------------------------------------------------------------

    def longest_special_chars(self) -> int:
        return max((len(s) for s in self._allowed), default=0)

    def exact_cut_blocker(self) -> str | None:
        """The pattern analysis's reason when it cannot prove any hard break (:attr:`PatternBreaks.blocker`)."""
        return self.breaks.blocker

    def cut_test(self) -> Any:
        return self.is_cut

    def is_cut(self, text: str, k: int) -> bool:
        """Whether a cut before character ``k`` of ``text`` (the whole text) is exact: ``text[k-1], text[k]`` is a
        hard break of the pattern, and with ``allowed_special`` no allowed special-token string lies within the
        longest one's length of ``k`` (tiktoken splits at those before the pattern runs; the margin keeps every
        special near the cut out of both chunks' view, docs/tokenize.md)."""
        if not self.breaks.is_break(text[k - 1], text[k]):
            return False
        if self._special_re is None:
            return True
        span = self._longest_special
        match = self._special_re.match
        for a in range(max(0, k - 2 * span), min(len(text), k + span)):
            m = match(text, a)
            if m is not None and m.end() > k - span:
                return False
        return True

    @property
    def may_cut_widens(self) -> bool:
        """True without allowed special strings: :meth:`is_cut` is then :meth:`PatternBreaks.is_break` of the two
        characters around the cut alone, so a window containing another holds each of its cuts
        (:attr:`Backend.may_cut_widens`). With ``allowed_special``, :meth:`is_cut` also refuses a position near an
        allowed special string, read from the window itself: a string that a narrow window cuts off at its start
        or end is whole in a wider one, which then refuses the narrow window's cut, so both windows are asked."""
        return self._special_re is None

    def may_cut(self, window: str) -> bool:
        """Whether ``window`` holds a hard break at least ``edge_units`` bytes from both ends.

        >>> from lowbit.tokenize import load_tokenizer
        >>> b = TiktokenBackend.from_encoding(load_tokenizer("cl100k").obj)
        >>> b.may_cut("x" * 20 + " word " + "y" * 20), b.may_cut("a" * 60), b.may_cut("1234567890" * 6)
        (True, False, False)
        """
        if self.breaks.blocker is not None:
            return False
        return window_has_cut(window, self.edge_units, self.is_cut, self._pair_filter)

    def check_text(self, text: str) -> str:
        """Lone surrogates become U+FFFD, as tiktoken itself does (via a UTF-16 round trip), once for the text."""
        if surrogate_index(text) >= 0:
            return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return text

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

    def special_affixes(self) -> tuple[list[int], list[int]]:
        raise ValueError("add_special_tokens: tiktoken encodings define no BOS/EOS; add them yourself")

    # -- encoding ------------------------------------------------------------------------------------------------

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

    def encode_list(self, text: str) -> list[int]:
        """tiktoken's own call (it repairs lone surrogates itself), after the ``allowed_special`` check."""
        self.check_disallowed(text)
        return self._encode_no_check([text], 1)[0]

    def encode_ids(self, text: str) -> np.ndarray:
        self.check_disallowed(text)
        return ids_array(self._encode_no_check([text], 1)[0])

    def encode_chunks(self, pieces: Sequence[Piece], threads: int) -> list[ChunkEncoding]:
        out = self._encode_no_check([p.text for p in pieces], max(1, threads))
        res = []
        for p, ids in zip(pieces, out, strict=True):
            arr = ids_array(ids)
            res.append(byte_edges(arr, self.lens[arr], p, 0))
        return res


def _freeze(allowed: Any) -> Any:
    """``allowed_special`` in a picklable, order-independent form (a sorted tuple for a set)."""
    if allowed is None or allowed == "all":
        return allowed
    return tuple(sorted(allowed))


# ---------------------------------------------------------------------------------------------------------------
# Hard breaks of a pre-tokenizer pattern (docs/tokenize.md, "Why the merge is exact": tiktoken)
# ---------------------------------------------------------------------------------------------------------------

_WHITE_SPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)  # Unicode White_Space: what \s means in tiktoken's regex engine
_PY_ONLY_SPACE = frozenset("\x1c\x1d\x1e\x1f")  # str.isspace() but not White_Space: never decided
_MAYBE = None  # three-valued membership: True, False, or undecided (counted as a member)
_PROPERTY = re.compile(r"\\([pP])\{(\^?)([A-Za-z_]+)\}")
_CATEGORIES = {"L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No", "P", "Pc", "Pd",
               "Ps", "Pe", "Pi", "Pf", "Po", "S", "Sm", "Sc", "Sk", "So", "Z", "Zs", "Zl", "Zp", "C", "Cc", "Cf",
               "Co", "Cs"}  # fmt: skip
_PLACEHOLDER = 0xF0000  # supplementary private use area: stands for one \p{..} class while the pattern is parsed


class PatternBreaks:
    """Where a pre-tokenizer pattern must start a pre-token, whatever came before: its *hard breaks*.

    Rule. The pattern is parsed (Python's ``re`` parser, ``\\p{..}`` classes substituted) into the positions of
    its Glushkov automaton: every character class it can consume, and which class may directly follow which
    inside one match (``follow``). Lookarounds and anchors consume nothing and are left out, possessive and
    atomic groups are read as ordinary ones, a ``(?i)`` literal accepts any case, and a character whose class
    membership could differ between engines (a code point unassigned in Python's Unicode tables, U+001C-U+001F
    for ``\\s``) counts as a member: the follow relation is a superset of what any match can consume. A position
    ``k`` with characters ``x = T[k-1]``, ``y = T[k]`` is a hard break when no pair of classes ``(P, Q)`` in
    ``follow`` has ``x`` in ``P`` and ``y`` in ``Q``: then no match, and no attempt the engine makes, consumes
    both characters, so every scan that reaches a position before ``k`` has a search state at ``k``
    (docs/tokenize.md). Patterns the analysis cannot read (back-references, conditionals, a lookaround wider
    than :attr:`MAX_LOOKAROUND` characters, a pattern that matches the empty string, an unknown ``\\p{..}``)
    get a :attr:`blocker` and no hard break.

    >>> b = PatternBreaks(r"'s|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+")
    >>> b.is_break("a", " "), b.is_break("a", "b"), b.is_break("1", "2"), b.is_break("!", "a"), b.is_break("a", "1")
    (True, False, False, False, True)
    """

    MAX_LOOKAROUND = 4

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.blocker: str | None = None
        self._positions: list[tuple[Any, bool]] = []  # (sre node, ignorecase)
        self._follow: set[tuple[int, int]] = set()
        self._props: list[tuple[bool, str]] = []
        self._cache: dict[tuple[str, str], bool] = {}
        self._member_cache: dict[str, tuple[frozenset[int], frozenset[int]]] = {}
        try:
            from re import _parser  # type: ignore[attr-defined]

            parsed = _parser.parse(_PROPERTY.sub(self._placeholder, pattern), 0)
            nullable, _, _ = self._walk(list(parsed), bool(parsed.state.flags & re.IGNORECASE))
            if nullable:
                raise _Unsupported("the pattern matches the empty string")
        except _Unsupported as exc:
            self.blocker = f"pre-tokenizer pattern: {exc}, so no cut can be proven exact"
        except (re.error, ValueError) as exc:
            self.blocker = f"pre-tokenizer pattern not readable by the hard-break analysis ({exc})"
        self._lefts = sorted({a for a, _ in self._follow})
        self._rights = sorted({b for _, b in self._follow})

    def _placeholder(self, m: re.Match[str]) -> str:
        name = m.group(3)
        if name not in _CATEGORIES:
            raise _Unsupported(f"\\p{{{name}}} is not analysed")
        negate = (m.group(1) == "P") != (m.group(2) == "^")
        self._props.append((negate, name))
        return chr(_PLACEHOLDER + len(self._props) - 1)

    # -- automaton -----------------------------------------------------------------------------------------------

    def _walk(self, seq: list[Any], icase: bool) -> tuple[bool, set[int], set[int]]:
        """(nullable, first, last) of a sequence of sre nodes; adds its inner follow pairs."""
        nullable, first, last = True, set(), set()
        for op, av in seq:
            n, f, la = self._node(op, av, icase)
            for a in last:
                for b in f:
                    self._follow.add((a, b))
            if nullable:
                first |= f
            last = (last | la) if n else la
            nullable = nullable and n
        return nullable, first, last

    def _node(self, op: Any, av: Any, icase: bool) -> tuple[bool, set[int], set[int]]:
        from re import _constants as c  # type: ignore[attr-defined]

        if op in (c.LITERAL, c.NOT_LITERAL, c.IN, c.ANY):
            self._positions.append(((op, av), icase))
            k = len(self._positions) - 1
            return False, {k}, {k}
        if op is c.BRANCH:
            parts = [self._walk(list(alt), icase) for alt in av[1]]
            return any(p[0] for p in parts), set().union(*(p[1] for p in parts)), set().union(*(p[2] for p in parts))
        if op is c.SUBPATTERN:
            _, add, remove, sub = av
            flag = (icase or bool(add & re.IGNORECASE)) and not (remove & re.IGNORECASE)
            return self._walk(list(sub), flag)
        if op is c.ATOMIC_GROUP:
            return self._walk(list(av), icase)
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            lo, hi, sub = av
            n, f, la = self._walk(list(sub), icase)
            if hi is c.MAXREPEAT or hi >= 2:
                for a in la:
                    for b in f:
                        self._follow.add((a, b))
            return n or lo == 0, f, la
        if op in (c.ASSERT, c.ASSERT_NOT):
            _, sub = av
            width = sub.getwidth()[1] if hasattr(sub, "getwidth") else None
            if width is None or width > self.MAX_LOOKAROUND:
                raise _Unsupported(f"a lookaround may read more than {self.MAX_LOOKAROUND} characters")
            return True, set(), set()
        if op is c.AT:
            return True, set(), set()
        raise _Unsupported(f"{str(op).lower()} is not analysed")

    # -- membership ----------------------------------------------------------------------------------------------

    def _member(self, ch: str, k: int) -> bool | None:
        from re import _constants as c  # type: ignore[attr-defined]

        (op, av), icase = self._positions[k]
        if op is c.ANY:
            return True
        if op is c.LITERAL:
            return self._literal(ch, av, icase)
        if op is c.NOT_LITERAL:
            r = self._literal(ch, av, icase)
            return None if r is None else not r
        negate = False
        result: bool | None = False
        for iop, iav in av:
            if iop is c.NEGATE:
                negate = True
                continue
            if iop is c.LITERAL:
                r = self._literal(ch, iav, icase)
            elif iop is c.RANGE:
                lo, hi = iav
                r = lo <= ord(ch) <= hi
                if icase and not r and ch.isalpha():
                    r = None  # another case of ch may lie in the range
            elif iop is c.CATEGORY:
                r = self._category(ch, iav)
            else:
                r = None
            if r is True:
                result = True
                break
            if r is None:
                result = None
        if result is None:
            return None
        return (not result) if negate else result

    def _literal(self, ch: str, code: int, icase: bool) -> bool | None:
        if code >= _PLACEHOLDER:
            negate, name = self._props[code - _PLACEHOLDER]
            cat = unicodedata.category(ch)
            if cat == "Cn":
                return None  # unassigned in Python's tables: another Unicode version may assign it
            r = cat == name or cat[0] == name
            if icase and not r and (ch.lower() != ch or ch.upper() != ch):
                return None  # (?i)\p{Lu} also matches the other case of a member
            return (not r) if negate else r
        if ord(ch) == code:
            return True
        if icase:
            lit = chr(code)
            if ch.isascii() and lit.isascii():
                return ch.lower() == lit.lower()
            cased = ch.lower() != ch or ch.upper() != ch or ch.casefold() != ch or ch.title() != ch
            return None if cased else False  # only a character with case mappings can fold onto another
        return False

    @staticmethod
    def _category(ch: str, cat: Any) -> bool | None:
        from re import _constants as c  # type: ignore[attr-defined]

        if cat in (c.CATEGORY_SPACE, c.CATEGORY_NOT_SPACE):
            r: bool | None = True if ch in _WHITE_SPACE else (None if ch in _PY_ONLY_SPACE else False)
            return r if r is None or cat is c.CATEGORY_SPACE else not r
        if ch.isascii() and cat in (c.CATEGORY_DIGIT, c.CATEGORY_NOT_DIGIT):
            return ch.isdigit() == (cat is c.CATEGORY_DIGIT)
        return None

    def _classes(self, ch: str) -> tuple[frozenset[int], frozenset[int]]:
        """Positions ``ch`` may belong to, among the left and right ends of follow pairs."""
        got = self._member_cache.get(ch)
        if got is None:
            left = frozenset(k for k in self._lefts if self._member(ch, k) is not False)
            right = frozenset(k for k in self._rights if self._member(ch, k) is not False)
            got = self._member_cache[ch] = (left, right)
        return got

    def is_break(self, x: str, y: str) -> bool:
        """Whether no match of the pattern can consume ``x`` immediately followed by ``y``."""
        key = (x, y)
        got = self._cache.get(key)
        if got is None:
            if self.blocker is not None:
                got = False
            else:
                left, right = self._classes(x)[0], self._classes(y)[1]
                got = not any((a, b) in self._follow for a in left for b in right)
            self._cache[key] = got
        return got


class _Unsupported(Exception):
    pass
