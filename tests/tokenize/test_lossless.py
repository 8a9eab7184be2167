"""LoPT merge equals the library's sequential encode, for every preset, on hard inputs (lopt.md §10).

Chunks are made tiny (tens to hundreds of characters) so that every text has many cuts, retries and merges.
The merge is run in-process here (the chunk runner is the backend itself); pools are tested separately.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.lab.tokenize.corpus import make_text
from lowbit.tokenize import fastokens_available
from lowbit.tokenize.lopt import LoptConfig, lossless_encode, make_plan

from .conftest import ALL_PRESETS, reference

FAST_PRESETS = ["qwen2", "cl100k", "o200k", "deepseek-v4"]


def hard_texts() -> dict[str, str]:
    rng = random.Random(7)
    emoji = "".join(
        rng.choice(["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "é", "e\u0301", "ß", "中", "ア", " "]) for _ in range(600)
    )
    return {
        "prose": make_text("prose", 3000),
        "code": make_text("code", 3000),
        "cjk": make_text("chinese", 2000),
        "mixed": make_text("mixed", 3000, seed=3),
        "emoji": emoji,
        "whitespace": "a" + " " * 700 + "b\n\n\n" + "\t \n" * 200 + "c" + "\r\n" * 150 + "  end  ",
        "specials": ("text <|endoftext|> more <|im_start|>user\nhi<|im_end|> [CLS] x [SEP] <s> </s> " * 40),
        "underscores": "x = " + "_" * 2500 + " y",
        "nul": "a\x00b\x00\x00 c " * 300,
    }


def run_lopt(backend, text, chunk, overlap, retries=3):
    plan = make_plan(len(text), 2, backend, LoptConfig(chunk_chars=chunk, overlap_chars=overlap, max_retries=retries))
    ids, stats = lossless_encode(text, backend, lambda pieces: backend.encode_chunks(pieces, 2), plan)
    return ids.tolist(), stats


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_every_preset_hard_inputs(name, get_preset, get_backend):
    tok = get_preset(name)
    backend = get_backend(name)
    for label, text in hard_texts().items():
        ref = reference(tok.obj, text)
        for chunk, overlap in [(97, 17), (400, 64)]:
            ids, _ = run_lopt(backend, text, chunk, overlap)
            assert ids == ref, (name, label, chunk, overlap)


@pytest.mark.skipif(not fastokens_available(), reason="fastokens extra not installed")
@pytest.mark.parametrize("name", FAST_PRESETS)
def test_fastokens_backend_hard_inputs(name, get_preset, get_backend):
    tok = get_preset(name)
    backend = get_backend(name, "fastokens")
    assert backend.name.endswith("+fastokens")
    for label, text in hard_texts().items():
        ref = reference(tok.obj, text)
        assert backend.encode_ids(text).tolist() == ref, (name, label)  # fastokens alone is identical
        ids, _ = run_lopt(backend, text, 150, 40)
        assert ids == ref, (name, label)


def test_retries_and_merges_happen_and_stay_exact(get_preset, get_backend):
    tok = get_preset("cl100k")
    backend = get_backend("cl100k")
    text = "word " * 200 + "_" * 5000 + " tail " * 200
    ids, stats = run_lopt(backend, text, 300, 20, retries=1)
    assert ids == reference(tok.obj, text)
    assert stats.retries > 0 and stats.merges > 0
    assert 0 < stats.fallback_chars < len(text)  # the fallback covers the pathological span, not the whole text


def test_zero_retries_still_exact(get_preset, get_backend):
    tok = get_preset("mistral-v1")
    text = make_text("chinese", 3000)
    ids, _ = run_lopt(get_backend("mistral-v1"), text, 200, 30, retries=0)
    assert ids == reference(tok.obj, text)


PIECES = [
    "hello",
    " world",
    "  ",
    "\n",
    "\n\n",
    "\t",
    "_",
    "__",
    "'s",
    "'LL",
    "数据",
    "模型的",
    "。",
    "😀",
    "👍🏽",
    "é",
    "e\u0301",
    "<|endoftext|>",
    "<|im_start|>",
    "[CLS]",
    "123",
    "4567",
    "!?",
    "    def",
    "ß",
    " ",
    "\r\n",
    "ア",
]


@settings(max_examples=25, deadline=None)
@given(
    parts=st.lists(st.one_of(st.sampled_from(PIECES), st.text(min_size=1, max_size=6)), min_size=1, max_size=220),
    chunk=st.integers(8, 200),
    overlap=st.integers(4, 60),
    name=st.sampled_from(ALL_PRESETS),
)
def test_random_texts_random_cuts(parts, chunk, overlap, name, get_preset, get_backend):
    text = "".join(parts)
    if any("\ud800" <= c <= "\udfff" for c in text):
        text = text.encode("utf-8", "replace").decode("utf-8")
    tok = get_preset(name)
    ids, _ = run_lopt(get_backend(name), text, chunk, overlap)
    assert ids == reference(tok.obj, text)


@settings(max_examples=10, deadline=None)
@given(chunk=st.integers(20, 500), overlap=st.integers(8, 100), seed=st.integers(0, 10**6))
def test_random_cut_sweep_mixed_corpus(chunk, overlap, seed, get_preset, get_backend):
    text = make_text("mixed", 4000, seed=seed)
    for name in ("qwen3.5", "deepseek-v4", "bert", "mistral-v3"):
        ids, _ = run_lopt(get_backend(name), text, chunk, overlap)
        assert ids == reference(get_preset(name).obj, text), name
