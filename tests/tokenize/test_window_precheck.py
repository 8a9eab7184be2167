"""The pre-check that merges hopeless boundaries before encoding (``lopt.hopeless_boundaries``): asking only the
widest window where the backend's window test is monotone (``Backend.may_cut_widens``) gives the same boundaries
as asking both windows, on randomized texts and plans for every backend kind; HF tokenizers and tiktoken with
allowed special strings keep both windows, and a counterexample for each shows why (the narrow window has a cut,
the widest has none). The numpy pair filter and the byte interval of a window are checked against plain loops."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.tokenize import ParallelTokenizer
from lowbit.tokenize.backends import Backend, make_backend
from lowbit.tokenize.backends.base import PairFilter, code_points, cut_range
from lowbit.tokenize.lopt import Plan, hopeless_boundaries, split_points

from .conftest import reference
from .test_one_call_path import brute_has_cut


def full_check(text: str, bounds: Sequence[Sequence[int]], backend: Backend, plan: Plan) -> list[int]:
    """The definition: a boundary is hopeless when neither its first window nor the widest one its retries reach
    (``3**max_retries`` times the first, clipped to the two pieces) passes ``may_cut``."""
    out = []
    for b in range(len(bounds) - 1):
        lo, hi = bounds[b + 1][0], bounds[b][1]
        reach = (hi - lo) * (3**plan.max_retries - 1) // 2
        wide = text[max(bounds[b][0], lo - reach) : min(bounds[b + 1][1], hi + reach)]
        if not backend.may_cut(text[lo:hi]) and not backend.may_cut(wide):
            out.append(b)
    return out


def widest_only(text: str, bounds: Sequence[Sequence[int]], backend: Backend, plan: Plan) -> list[int]:
    """The shortcut applied regardless of the backend (what must not happen where it is unsound)."""
    out = []
    for b in range(len(bounds) - 1):
        lo, hi = bounds[b + 1][0], bounds[b][1]
        reach = (hi - lo) * (3**plan.max_retries - 1) // 2
        if not backend.may_cut(text[max(bounds[b][0], lo - reach) : min(bounds[b + 1][1], hi + reach)]):
            out.append(b)
    return out


# (preset, backend, allowed_special, may_cut_widens)
BACKENDS = [
    ("cl100k", "library", None, True),
    ("o200k", "library", None, True),
    ("qwen2", "library", None, True),  # a tiktoken-backed preset with its own pattern
    ("cl100k", "library", "all", False),  # allowed special strings: the window test reads more than the pair
    ("mistral-v1", "library", None, True),  # SentencePiece BPE
    ("mistral-v3", "library", None, True),
    ("bert", "library", None, False),  # HF: normalizer and pre-tokenizer run on the window as a whole
    ("deepseek-v4", "library", None, False),
    ("cl100k", "fastokens", None, True),  # tiktoken's rule
    ("deepseek-v4", "fastokens", None, True),  # HF vocabulary: may_cut is always False
]

ATOMS = [
    "a", "word", " ", "  ", "\n", "\r", "\t", "1", "12345", ".", "!", "'s", "中文", "é", "😀", "_", "<|endoftext|>",
    "<|endofprompt|>", "▁", "xa ",
]  # fmt: skip
#: Atoms whose windows the shortcut gets wrong: whitespace runs (a pre-token ``\s*[\r\n]+`` that a wider window
#: extends to a later line break) and special strings next to a hard break.
HARD = [["\r", "\t", " ", "\n"], ["b", "<|endofprompt|>", "<|endoftext|>", "xa ", "<|endofprompt|>xa "]]


def random_text(rng: random.Random) -> str:
    """Runs of a few atoms (long runs of one make windows without a place to cut), from the general pool or one of
    the hard ones."""
    pool = rng.choice([ATOMS, ATOMS, *HARD])
    atoms = rng.sample(pool, rng.randint(1, min(5, len(pool))))
    parts = [rng.choice(atoms) * rng.choice([1, 1, 2, 4, 8, 30, 400]) for _ in range(rng.randint(2, 60))]
    return "".join(parts)


@pytest.mark.parametrize(("name", "kind", "allowed", "widens"), BACKENDS)
def test_widest_window_only_where_sound(name, kind, allowed, widens, get_preset):
    """The backend's flag is as documented; ``hopeless_boundaries`` equals the two-window definition on randomized
    texts and plans; and where the flag is set, every narrow window with a cut has a widest window with one."""
    backend, _ = make_backend(get_preset(name), allowed_special=allowed, backend=kind)
    assert backend.may_cut_widens is widens
    rng = random.Random(f"{name}-{kind}-{allowed}")
    boundaries = hopeless = shortcut_wrong = 0
    for _ in range(400):
        text = random_text(rng)
        plan = Plan(rng.randint(40, 600), rng.choice([rng.randint(17, 48), rng.randint(17, 160)]), rng.randint(0, 3))
        bounds = split_points(len(text), plan.chunk_chars, plan.overlap_chars)
        got = hopeless_boundaries(text, bounds, backend, plan)
        assert got == full_check(text, bounds, backend, plan), (text, plan)
        shortcut_wrong += widest_only(text, bounds, backend, plan) != got
        boundaries += len(bounds) - 1
        hopeless += len(got)
        if widens:
            for b in range(len(bounds) - 1):
                lo, hi = bounds[b + 1][0], bounds[b][1]
                reach = (hi - lo) * (3**plan.max_retries - 1) // 2
                if backend.may_cut(text[lo:hi]):
                    assert backend.may_cut(text[max(bounds[b][0], lo - reach) : min(bounds[b + 1][1], hi + reach)])
    assert boundaries > 100 and hopeless > 0  # both answers are exercised
    if not (kind == "fastokens" and name == "deepseek-v4"):
        assert hopeless < boundaries
    if (name, kind, allowed) in (("deepseek-v4", "library", None), ("cl100k", "library", "all")):
        assert shortcut_wrong > 0  # the sample holds texts where the shortcut errs, so the equality above tests it


def _deepseek_case() -> tuple[str, Plan]:
    """deepseek-v4's pre-tokenizer splits ``"\\r" * 8 + "\\t" * 4 + " " * 5`` after the carriage returns, but a
    window that also ends in ``"\\r"`` is one pre-token (``\\s*[\\r\\n]+`` reaches the last one): the first window
    holds a word start, the widest holds none."""
    chunk = 300
    first = "\r" * 8 + "\t" * 4 + " " * 5  # the first window, 17 characters
    text = "plain words here. " * 20
    text = text[: chunk - 17] + "\r" * 17 + first + " " * 16 + "\r"
    return text, Plan(chunk, 17, 1)


def _special_case() -> tuple[str, Plan]:
    """cl100k with ``allowed_special="all"``: the only hard break far enough from the first window's ends is
    ``"a" + " "``, 17 characters after an allowed special string that starts one character before the window;
    the first window sees the string cut off (no special, a cut), the widest window sees it whole, which refuses
    every break near it (``TiktokenBackend.is_cut``)."""
    chunk = 300
    text = "b" * (chunk - 1) + "<|endofprompt|>" + "xa" + " " + "b" * 200
    return text, Plan(chunk, 32, 1)


@pytest.mark.parametrize(
    ("name", "allowed", "case"), [("deepseek-v4", None, _deepseek_case), ("cl100k", "all", _special_case)]
)
def test_shortcut_would_be_unsound_here(name, allowed, case, get_preset, monkeypatch):
    """A boundary whose first window has a place to cut and whose widest window has none: the full check keeps it
    (so the chunks are encoded and the merge tries), the widest-window shortcut would merge it; the backend keeps
    the full check, and forcing the shortcut on would change the answer (this test would catch it)."""
    tok = get_preset(name)
    backend, _ = make_backend(tok, allowed_special=allowed, backend="library")
    text, plan = case()
    bounds = split_points(len(text), plan.chunk_chars, plan.overlap_chars)
    assert len(bounds) == 2
    lo, hi = bounds[1][0], bounds[0][1]
    reach = (hi - lo) * (3**plan.max_retries - 1) // 2
    narrow, wide = text[lo:hi], text[max(0, lo - reach) : min(len(text), hi + reach)]
    assert narrow in wide and backend.may_cut(narrow) and not backend.may_cut(wide)
    assert backend.may_cut_widens is False
    assert hopeless_boundaries(text, bounds, backend, plan) == full_check(text, bounds, backend, plan) == []
    assert widest_only(text, bounds, backend, plan) == [0]
    monkeypatch.setattr(type(backend), "may_cut_widens", property(lambda self: True))
    assert hopeless_boundaries(text, bounds, backend, plan) == [0]  # the shortcut, forced: a different answer
    monkeypatch.undo()
    # Either way the ids are the library's (a merged boundary is one sequential call).
    with ParallelTokenizer(
        tok, workers=1, backend="library", allowed_special=allowed, min_parallel_chars=0, chunk_chars=256
    ) as pt:
        assert pt.encode(text) == reference(tok.obj, text, allowed)


@pytest.mark.parametrize(
    ("name", "allowed"), [("cl100k", None), ("o200k", None), ("cl100k", "all"), ("mistral-v1", None)]
)
def test_may_cut_matches_every_position(name, allowed, get_preset):
    """``may_cut`` (16 positions, then the numpy pair filter) equals a loop over every position with the byte
    distance from both ends taken from the UTF-8 encoding, on randomized windows."""
    backend, _ = make_backend(get_preset(name), allowed_special=allowed, backend="library")
    rng = random.Random(name)
    for _ in range(300):
        window = random_text(rng)[: rng.randint(1, 3000)]
        assert backend.may_cut(window) == brute_has_cut(window, backend.edge_units, backend.is_cut), window


RULES: dict[str, Any] = {
    "space": lambda a, b: a == " ",
    "digit-after-letter": lambda a, b: a.isalpha() and b.isdigit(),
    "never": lambda a, b: False,
    "cjk": lambda a, b: a == "中" and b != "中",
}
FILTERS = {name: PairFilter(rule) for name, rule in RULES.items()}  # shared: the memo carries across examples


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab1 .中é😀\x7f\ud800"), max_size=200), st.sampled_from(sorted(RULES)))
def test_pair_filter_candidates(text, rule):
    """Every index whose adjacent pair passes the rule, ascending, through the ASCII table or the sorted keys,
    with a fresh filter and with one that remembers earlier texts."""
    want = [i for i, (a, b) in enumerate(itertools.pairwise(text)) if RULES[rule](a, b)]
    assert PairFilter(RULES[rule]).candidates(code_points(text)).tolist() == want
    assert FILTERS[rule].candidates(code_points(text)).tolist() == want


def test_pair_filter_memory_bound():
    """Past ``limit`` remembered pairs the memory is dropped, and answers stay right."""
    f = PairFilter(lambda a, b: a == "中", limit=8)
    for text in ("中文字符模型", "长文档中的字", "中中中文文文" * 3):
        want = [i for i, (a, b) in enumerate(itertools.pairwise(text)) if a == "中"]
        assert f.candidates(code_points(text)).tolist() == want
        assert len(f._memo[0]) <= 8


@given(st.text(alphabet=st.sampled_from("a é中😀"), max_size=40), st.integers(min_value=0, max_value=20))
def test_cut_range_is_the_byte_interval(window, edge):
    """``cut_range`` gives exactly the positions with ``edge`` UTF-8 bytes on both sides (and 0 < k < len)."""
    lo, hi = cut_range(window, edge)
    raw = len(window.encode("utf-8"))
    want = [k for k in range(1, len(window)) if edge <= len(window[:k].encode("utf-8")) <= raw - edge]
    assert list(range(lo, hi + 1)) == want
