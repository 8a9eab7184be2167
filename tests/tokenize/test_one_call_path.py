"""Texts that end as one library call inside the LoPT path (token-dense SentencePiece text, no boundary with a place
to cut): the ids are the library's own, in the form asked for, the density sample is encoded once per call, and
the window pre-check (``window_has_cut`` with its pair filter) agrees with a plain loop over every position.
Every id list is compared with the library's own call on the library object (``conftest.reference``)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.tokenize import ParallelTokenizer
from lowbit.tokenize.backends.base import window_has_cut

from .conftest import reference


def brute_has_cut(window: str, edge: int, is_cut) -> bool:
    """Every position, the byte distance from both ends checked on the UTF-8 encoding."""
    raw = window.encode("utf-8", "surrogatepass")
    for k in range(1, len(window)):
        before = len(window[:k].encode("utf-8", "surrogatepass"))
        if edge <= before <= len(raw) - edge and is_cut(window, k):
            return True
    return False


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("ab1 .中é😀"), min_size=0, max_size=300),
    st.integers(min_value=1, max_value=8),
    st.sampled_from(["space", "digit-after-letter", "never", "cjk"]),
)
def test_window_has_cut_matches_every_position(window, edge, rule):
    rules = {
        "space": lambda a, b: a == " ",
        "digit-after-letter": lambda a, b: a.isalpha() and b.isdigit(),
        "never": lambda a, b: False,
        "cjk": lambda a, b: a == "中" and b != "中",
    }
    pair_ok = rules[rule]

    def is_cut(t: str, k: int) -> bool:
        return pair_ok(t[k - 1], t[k])

    want = brute_has_cut(window, edge, is_cut)
    assert window_has_cut(window, edge, is_cut, pair_ok) == want
    assert window_has_cut(window, edge, is_cut) == want


@pytest.mark.parametrize("kind", ["digits", "cjk"])
def test_sp_dense_sample_encoded_once(kind, get_preset, monkeypatch):
    """One ``encode`` of token-dense text asks ``prefers_one_call`` once; so does one of prose (then LoPT)."""
    tok = get_preset("mistral-v1")
    rng = random.Random(5)
    dense = "".join(rng.choice("0123456789" if kind == "digits" else "中文字符模型长文档") for _ in range(70_000))
    prose = " ".join("".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 8))) for _ in range(12_000))
    with ParallelTokenizer(tok, workers=2, min_parallel_chars=0) as pt:
        calls: list[int] = []
        ask = pt.backend.prefers_one_call
        monkeypatch.setattr(pt.backend, "prefers_one_call", lambda t: (calls.append(len(t)), ask(t))[1])
        for text in (dense, prose):
            calls.clear()
            ids = pt.encode(text)
            assert ids == reference(tok.obj, text) and type(ids) is list
            assert calls == [len(text)]


@pytest.mark.parametrize("name", ["cl100k", "mistral-v1"])
def test_no_cut_text_is_one_call_in_every_form(name, get_preset):
    """One repeated letter has no exact cut for tiktoken or SentencePiece: every entry point returns the library's
    own ids (a list from ``encode``, ``uint32`` elsewhere), the stats say why, and progress reaches the end."""
    tok = get_preset(name)
    text = "a" * 100_000
    ref = reference(tok.obj, text)
    with ParallelTokenizer(tok, workers=2, backend="library", min_parallel_chars=0, chunk_chars=16_384) as pt:
        seen: list[tuple[int, int]] = []
        ids = pt.encode(text, on_progress=lambda d, t: seen.append((d, t)))
        assert type(ids) is list and ids == ref and type(ids[0]) is int
        assert seen and seen[-1] == (len(text), len(text))
        arr, stats = pt.encode_with_stats(text)
        assert arr.dtype == np.uint32 and arr.tolist() == ref
        assert pt.encode_to_numpy(text).tolist() == ref
        assert stats.path == "sequential" and "no boundary" in (stats.note or "")
        assert stats.merge is not None and stats.merge.merges == stats.merge.premerged >= 1
    with ParallelTokenizer(tok, workers=2, backend="library", min_parallel_chars=0, verify=True) as pt:
        assert pt.encode(text) == ref


@pytest.mark.parametrize(("name", "backend"), [("qwen2", "auto"), ("mistral-v1", "library")])
def test_verify_set_after_construction_checks_every_path(name, backend, get_preset, monkeypatch):
    """``verify`` switched on later reaches the short-text paths too (their per-call test is precomputed), and
    switched off again skips the check; a non-bool is refused."""
    tok = get_preset(name)
    text = "Verify me later, please. " * 20
    ref = reference(tok.obj, text)
    with ParallelTokenizer(tok, workers=2, backend=backend) as pt:
        checked: list[int] = []
        monkeypatch.setattr(pt, "_verify", lambda t, ids: checked.append(len(ids)))
        assert pt.encode(text) == ref and pt.encode_to_numpy(text).tolist() == ref and checked == []
        pt.verify = True
        assert pt.encode(text) == ref and pt.encode_to_numpy(text).tolist() == ref
        assert checked == [len(ref), len(ref)]
        pt.verify = False
        assert pt.encode_to_numpy(text).tolist() == ref and len(checked) == 2
        with pytest.raises(TypeError, match="verify"):
            pt.verify = 1  # type: ignore[assignment]
    with pytest.raises(ValueError, match="closed"):
        pt.encode_to_numpy(text)
    pt.verify = False  # closed stays closed
    with pytest.raises(ValueError, match="closed"):
        pt.encode(text)
