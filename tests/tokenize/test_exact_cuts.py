"""Provably exact cuts for tiktoken (hard breaks of the pre-tokenizer pattern) and SentencePiece BPE (no piece can
span the cut), and the sequential fallback where a text or a model has none (docs/tokenize.md, "Why the merge is
exact"). Every id list is compared with the library's own call on the library object (``conftest.reference``).
"""

from __future__ import annotations

import random
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowbit.tokenize import LoadedTokenizer, ParallelTokenizer
from lowbit.tokenize.backends import make_backend
from lowbit.tokenize.backends.base import Piece
from lowbit.tokenize.backends.tiktoken import PatternBreaks
from lowbit.tokenize.lopt import LoptConfig, lossless_encode, make_plan, match_boundary

from .conftest import reference

TIKTOKEN_PRESETS = ["cl100k", "o200k", "qwen2", "qwen3.5", "voyage3", "tekken"]
SP_PRESETS = ["mistral-v1", "mistral-v3"]
RUNS = {
    "letters": string.ascii_lowercase,
    "ab": "ab",
    "digits": string.digits,
    "alnum": string.ascii_letters + string.digits,
    "base64": string.ascii_letters + string.digits + "+/=",
    "cjk": "中文字符模型长文档",
    "spaces": " \n\t",
    "marks": "ae\u0301\u0308",
}
GLUE = [" ", "  ", "\n", ", ", ". ", " the ", " 12 ", "'s ", "-", "_", "中文", "é", "<|endoftext|>", "▁"]


def run_lopt(backend, text, chunk, overlap, retries=3):
    plan = make_plan(len(text), 2, backend, LoptConfig(chunk_chars=chunk, overlap_chars=overlap, max_retries=retries))
    ids, stats = lossless_encode(text, backend, lambda pieces: backend.encode_chunks(pieces, 2), plan)
    return ids.tolist(), stats


def build(parts, seed):
    rng = random.Random(seed)
    return "".join("".join(rng.choice(RUNS[p[0]]) for _ in range(p[1])) if isinstance(p, tuple) else p for p in parts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(
        st.one_of(st.tuples(st.sampled_from(sorted(RUNS)), st.integers(30, 400)), st.sampled_from(GLUE)),
        min_size=1,
        max_size=14,
    ),
    chunk=st.integers(8, 120),
    overlap=st.integers(16, 90),
    retries=st.integers(0, 3),
    seed=st.integers(0, 2**16),
    name=st.sampled_from(TIKTOKEN_PRESETS + SP_PRESETS),
)
def test_merge_level_long_runs_tiny_chunks(parts, chunk, overlap, retries, seed, name, get_preset, get_backend):
    """Long runs no pre-token boundary or piece boundary splits, cut every 8-120 characters, at the merge level."""
    text = build(parts, seed)
    ids, _ = run_lopt(get_backend(name), text, chunk, overlap, retries)
    assert ids == reference(get_preset(name).obj, text)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(
        st.one_of(st.tuples(st.sampled_from(sorted(RUNS)), st.integers(30, 300)), st.sampled_from(GLUE)),
        min_size=1,
        max_size=14,
    ),
    chunk=st.integers(16, 120),
    seed=st.integers(0, 2**16),
)
def test_merge_level_allowed_special(parts, chunk, seed, get_preset):
    """cl100k with ``allowed_special="all"``: tiktoken splits at special strings before the pattern runs."""
    tok = get_preset("cl100k")
    backend, _ = make_backend(tok, backend="library", allowed_special="all")
    text = build(parts, seed)
    ids, _ = run_lopt(backend, text, chunk, 64)
    assert ids == reference(tok.obj, text, allowed_special="all")


@pytest.mark.parametrize("name", TIKTOKEN_PRESETS)
def test_one_long_pretoken_is_one_sequential_call(name, get_preset):
    """``"a" * N``: one pre-token, no hard break anywhere, so no cut; EncodeStats says sequential and why."""
    tok = get_preset(name)
    text = "a" * 50_000
    with ParallelTokenizer(tok, workers=2, backend="library", chunk_chars=256, min_parallel_chars=0) as pt:
        ids, stats = pt.encode_with_stats(text)
    assert ids.tolist() == reference(tok.obj, text)
    assert stats.path == "sequential" and stats.merge is not None
    assert stats.merge.pieces == 1 and stats.merge.premerged == stats.merge.merges > 0
    assert "hard break" in (stats.note or "")


def test_base64_and_prose_still_cut(get_preset):
    """base64 has hard breaks (a letter before a digit, ``/`` or ``+``) and prose has one at every word end."""
    import base64

    tok = get_preset("cl100k")
    raw = random.Random(3).randbytes(60_000)
    for text in (base64.b64encode(raw).decode("ascii"), "The model reads long documents. " * 3000):
        with ParallelTokenizer(tok, workers=2, backend="library", chunk_chars=4096, min_parallel_chars=0) as pt:
            ids, stats = pt.encode_with_stats(text)
        assert ids.tolist() == reference(tok.obj, text)
        assert stats.path == "lopt" and stats.merge is not None and stats.merge.boundaries > 5


def test_pattern_breaks_on_the_cl100k_pattern(get_preset):
    b = PatternBreaks(get_preset("cl100k").obj._pat_str)
    assert b.blocker is None
    breaks = {"a ": True, " a": False, "ab": False, "a.": True, ".a": False, "12": False, "1a": True, "a1": True,
              "'s": False, "\na": True, "  ": False, "中文": False, "中，": True, "a\u0301": True}  # fmt: skip
    assert {p: b.is_break(p[0], p[1]) for p in breaks} == breaks


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a)\1|\s+", "groupref"),
        (r"a*|\s", "empty string"),
        (r"\s+(?!\S{5,})|\w+", "lookaround"),
        (r"\p{Letter}+|\s", "Letter"),
    ],
)
def test_pattern_breaks_refuses_what_it_cannot_read(pattern, why):
    b = PatternBreaks(pattern)
    assert b.blocker is not None and why in b.blocker
    assert not b.is_break("a", " ")


def test_pattern_breaks_case_insensitive_classes():
    """``(?i)\\p{Lu}+`` also consumes lower-case letters, so ``aB`` and ``ab`` are no hard breaks there."""
    b = PatternBreaks(r"(?i:\p{Lu}+)|\s+|[^\s\p{L}]+")
    assert not b.is_break("a", "b") and not b.is_break("A", "b") and b.is_break("a", " ")


def test_unreadable_pattern_makes_tiktoken_sequential():
    import tiktoken

    ranks = {bytes([i]): i for i in range(256)}
    pattern = r"[a-z]+(?= {6})|[a-z]+|\s+|[^a-z\s]"  # a lookahead of 6 characters: wider than the analysis reads
    base = tiktoken.Encoding("toy", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    tok = LoadedTokenizer("toy", "tiktoken", base)
    text = "aaa bbb " * 6000
    with ParallelTokenizer(tok, workers=2, backend="library", min_parallel_chars=0) as pt:
        ids, stats = pt.encode_with_stats(text)
    assert ids.tolist() == base.encode_ordinary(text)
    assert stats.path == "sequential" and "lookaround" in (stats.note or "")


def test_anchor_inside_one_pretoken_is_refused(get_backend):
    """Two chunks of one run of letters agree on their tokens, yet no token start is a hard break: no cut."""
    backend = get_backend("cl100k")
    text = "abcdefgh" * 40
    left, right = backend.encode_chunks([Piece(text[:200], 0, 100), Piece(text[100:], 100, 0)], 1)
    assert match_boundary(left, right, 100, backend, 2) is not None  # the tokens agree
    assert match_boundary(left, right, 100, backend, 2, lambda u: backend.is_cut(text, 100 + u)) is None
    spaced = "abcdefg " * 40
    left, right = backend.encode_chunks([Piece(spaced[:200], 0, 100), Piece(spaced[100:], 100, 0)], 1)
    assert match_boundary(left, right, 100, backend, 2, lambda u: backend.is_cut(spaced, 100 + u)) is not None


def test_sp_is_cut_reads_the_vocabulary(get_backend):
    b = get_backend("mistral-v1")
    pieces = [b.sp.id_to_piece(i) for i in range(b.sp.get_piece_size()) if not b.sp.is_byte(i)]
    for text, k in [("word next", 4), ("12", 1), ("x9", 1), ("word next", 5), ("ab", 1), ("  ", 1)]:
        a, c = (ch.replace(" ", "\u2581") for ch in text[k - 1 : k + 1])
        assert b.is_cut(text, k) == (not any(a + c in p for p in pieces)), (text, k)


def _train_sp(tmp_path, model_type, **extra):
    import sentencepiece as spm

    corpus = ["the model reads long documents and writes short notes about them every day 12345"] * 200
    prefix = tmp_path / model_type
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=str(prefix), vocab_size=60, model_type=model_type,
        hard_vocab_limit=False, **extra,
    )  # fmt: skip
    return spm.SentencePieceProcessor(model_file=str(prefix) + ".model")


@pytest.mark.parametrize(
    ("model_type", "extra", "why"),
    [
        ("unigram", {"normalization_rule_name": "identity"}, "float32"),
        ("bpe", {"normalization_rule_name": "nmt_nfkc"}, "charsmap"),
    ],
)
def test_sp_without_a_proof_is_one_sequential_call(tmp_path, model_type, extra, why):
    sp = _train_sp(tmp_path, model_type, **extra)
    text = "the model reads long documents and writes short notes " * 800
    with ParallelTokenizer(sp, workers=2, min_parallel_chars=0, chunk_chars=4096) as pt:
        ids, stats = pt.encode_with_stats(text)
    assert ids.tolist() == sp.encode(text)
    assert stats.path == "sequential" and why in (stats.note or "")


def test_sp_bpe_trained_here_cuts_at_spaces(tmp_path):
    sp = _train_sp(tmp_path, "bpe", normalization_rule_name="identity")
    text = "the model reads long documents and writes short notes " * 800
    with ParallelTokenizer(sp, workers=2, min_parallel_chars=0, chunk_chars=4096) as pt:
        ids, stats = pt.encode_with_stats(text)
    assert ids.tolist() == sp.encode(text)
    assert stats.path == "lopt" and stats.merge is not None and stats.merge.boundaries > 5


@pytest.mark.parametrize("name", TIKTOKEN_PRESETS + SP_PRESETS)
def test_default_plan_prose_equals_the_library(name, get_preset):
    from lowbit.lab.tokenize.corpus import make_text

    tok = get_preset(name)
    text = make_text("mixed", 150_000, seed=7)  # 0.3-0.55 tokens per character: LoPT, not one call
    with ParallelTokenizer(tok, workers=2, backend="library", min_parallel_chars=0, chunk_chars=16_384) as pt:
        ids, stats = pt.encode_with_stats(text)
    assert ids.tolist() == reference(tok.obj, text)
    assert stats.path == "lopt" and stats.merge is not None and stats.merge.merges == 0
    assert np.all(ids < 2**32)


@pytest.mark.parametrize("kind", ["digits", "cjk"])
def test_sp_token_dense_text_is_one_call(kind, get_preset):
    """SentencePiece on digits or CJK (about one token per character): the library's own call, said in stats."""
    tok = get_preset("mistral-v1")
    rng = random.Random(2)
    text = "".join(rng.choice(RUNS["digits" if kind == "digits" else "cjk"]) for _ in range(70_000))
    with ParallelTokenizer(tok, workers=2, min_parallel_chars=0) as pt:
        assert pt.backend.prefers_one_call(text) is not None
        ids, stats = pt.encode_with_stats(text)
        assert pt.encode(text) == ids.tolist() == reference(tok.obj, text)
    assert stats.path == "sequential" and "tokens per character" in (stats.note or "")
