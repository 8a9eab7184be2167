"""One-call paths (the direct fastokens strategy, texts below ``min_parallel_chars``): the backend's own call,
with lone surrogates named from the library's own UTF-8 error instead of a scan of the text."""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.tokenize import ParallelTokenizer, fastokens_available
from lowbit.tokenize.backends.base import has_surrogate, surrogate_index

from .conftest import reference

TEXT = "Tokenize me, ünïcödé and 中文 too. " * 50


def test_surrogate_index_agrees_with_a_scan():
    for text in ["plain", "ab\ud800c", "é\udfff", "😀 ok", "x" * 100 + "\udc00", "中文\ud83d\ude00"]:
        scan = next((i for i, c in enumerate(text) if "\ud800" <= c <= "\udfff"), -1)
        assert surrogate_index(text) == scan, text
        assert has_surrogate(text) == (scan >= 0)


@pytest.mark.parametrize(
    ("name", "backend"),
    [("deepseek-v4", "auto"), ("qwen2", "auto"), ("bert", "library"), ("mistral-v1", "library"), ("o200k", "library")],
)
def test_one_call_paths_never_scan_the_text(name, backend, get_preset, monkeypatch):
    """The text is checked only when the library fails on it: a check that always raises is never reached."""
    tok = get_preset(name)
    with ParallelTokenizer(tok, workers=2, backend=backend) as pt:
        if backend == "auto" and fastokens_available():
            assert pt.strategy == "direct"

        def boom(text):
            raise AssertionError("check_text called on the one-call path")

        monkeypatch.setattr(pt.backend, "check_text", boom)
        ref = reference(tok.obj, TEXT)
        assert pt.encode(TEXT) == ref
        assert pt.encode_to_numpy(TEXT).tolist() == ref
        ids, stats = pt.encode_with_stats(TEXT)
        assert ids.dtype == np.uint32 and ids.tolist() == ref and stats.path in ("direct", "sequential")


@pytest.mark.parametrize(("name", "backend"), [("deepseek-v4", "auto"), ("bert", "library"), ("mistral-v1", "library")])
def test_one_call_paths_name_a_lone_surrogate(name, backend, get_preset):
    with ParallelTokenizer(get_preset(name), workers=2, backend=backend) as pt:
        for call in (pt.encode, pt.encode_to_numpy, pt.encode_with_stats):
            with pytest.raises(ValueError, match=r"lone surrogate .* at character 7"):
                call("abc é d\ud800 tail")


@pytest.mark.parametrize("backend", ["auto", "library"])
def test_tiktoken_vocabularies_repair_surrogates_like_tiktoken(backend, get_preset):
    tok = get_preset("qwen2")
    text = "ab\ud83dcd \udc00 é " * 40 + "\ud83d\ude00"  # lone halves and a pair written as two surrogates
    with ParallelTokenizer(tok, workers=2, backend=backend) as pt:
        assert pt.encode(text) == tok.obj.encode_ordinary(text)
        assert pt.encode_to_numpy(text).tolist() == tok.obj.encode_ordinary(text)


def test_one_call_threshold_and_closed(get_preset):
    """Texts below ``min_parallel_chars`` take one call, longer ones LoPT (the precomputed threshold); a closed
    tokenizer refuses every text, short ones included."""
    tok = get_preset("bert")
    text = ("Tokenize me, one call or many. " * 200)[:2000]
    with ParallelTokenizer(tok, workers=2, backend="library", min_parallel_chars=2000) as pt:
        for t, path in ((text[:1999], "sequential"), (text, "lopt")):
            ref = reference(tok.obj, t)
            assert pt.encode(t) == ref and pt.encode_to_numpy(t).tolist() == ref
            assert pt.encode_with_stats(t)[1].path == path
    for call in (pt.encode, pt.encode_to_numpy, pt.encode_with_stats):
        with pytest.raises(ValueError, match="closed"):
            call("short")


@pytest.mark.skipif(not fastokens_available(), reason="fastokens extra not installed")
def test_fastokens_with_every_special_allowed_keeps_the_special_ids(get_preset):
    """fastokens stands in for tiktoken only with allowed_special None or "all", where nothing is refused: its
    one-call path skips the refusal check and still gives tiktoken's ids for special strings."""
    tok = get_preset("cl100k")
    text = "before <|endoftext|> after <|fim_prefix|>" + TEXT
    with ParallelTokenizer(tok, workers=2, allowed_special="all") as pt:
        assert pt.backend.name == "cl100k+fastokens" and pt.strategy == "direct"
        ref = tok.obj.encode(text, allowed_special="all")
        assert pt.encode(text) == ref
        assert pt.encode_to_numpy(text).tolist() == ref
