"""``encode_to_numpy``'s inline flat call (``Backend.flat_call``: fastokens' ``encode_batch_flat`` made right in the
method, options positional): it returns exactly what the backend's own flat call returns (called with its keyword
options, as a user writes it, and checked against the library's own list), and every other case leaves it for the
path it took before: lone surrogates, ``verify=True``, a closed tokenizer, ``add_special_tokens``, a progress
callback, texts that are not ``str``, and texts long enough for LoPT."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lowbit.tokenize import ParallelTokenizer, VerificationError, fastokens_available

from .conftest import reference

pytestmark = pytest.mark.skipif(not fastokens_available(), reason="fastokens extra not installed")

# tiktoken vocabularies (fastokens splits special-token strings: encode_ordinary) and an HF one (it does not).
FAST_PRESETS = ["qwen2", "cl100k", "o200k", "deepseek-v4"]

TEXTS = [
    "",
    "a",
    "Hello world, tokenization!",
    "ünïcödé 中文字符 😀 emoji\t\n  spaces   and 12345 digits",
    "special strings: <|endoftext|> <|im_start|>user<|im_end|> <｜begin▁of▁sentence｜> [CLS] <s>",
    ("Prose with some words and numbers 42, 3.14; code `x = f(y)`.\n" * 300),
]


class Spy:
    """Counts the calls of ``fn`` and passes them on."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.fn(*args, **kwargs)


def keyword_flat(pt: ParallelTokenizer, text: str) -> np.ndarray:
    """The backend's own flat call as a user writes it (keyword option), on the very fastokens object."""
    fast, split = pt.backend.fast, pt.backend.ordinary
    return np.frombuffer(fast.encode_batch_flat([text], split_special_tokens=split)[0], np.uint32)


def no_call(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the one-call closure was used where the inline flat call applies")


@pytest.mark.parametrize("name", FAST_PRESETS)
def test_inline_flat_call_returns_the_backends_flat_call(name, get_preset, monkeypatch):
    tok = get_preset(name)
    with ParallelTokenizer(tok, workers=2) as pt:
        assert pt.strategy == "direct" and pt.backend.name.endswith("+fastokens")
        spy = Spy(pt._flat)
        monkeypatch.setattr(pt, "_flat", spy)
        monkeypatch.setattr(pt, "_encode_ids", no_call)
        for i, text in enumerate(TEXTS, 1):
            got = pt.encode_to_numpy(text)
            want = keyword_flat(pt, text)
            assert got.dtype == np.uint32 and got.tolist() == want.tolist()
            assert got.tolist() == reference(tok.obj, text)
            assert spy.calls == i  # the inline call, once per text
        # the list path passes fastokens' options positionally too: the same ids as its keyword call
        fast, split = pt.backend.fast, pt.backend.ordinary
        for text in TEXTS:
            assert pt.encode(text) == fast.encode(text, split_special_tokens=split).ids


def test_special_strings_keep_their_rule(get_preset):
    """A swapped positional option would change these: tiktoken's ``encode_ordinary`` splits special-token strings
    into plain tokens (split_special_tokens=True), and an HF vocabulary keeps its added tokens whole."""
    qwen = get_preset("qwen2")
    with ParallelTokenizer(qwen, workers=2) as pt:
        text = "a<|endoftext|>b"
        ids = pt.encode_to_numpy(text).tolist()
        assert ids == qwen.obj.encode_ordinary(text)
        assert ids != qwen.obj.encode(text, allowed_special="all")
    ds = get_preset("deepseek-v4")
    with ParallelTokenizer(ds, workers=2) as pt:
        text = "a<｜begin▁of▁sentence｜>b"
        ids = pt.encode_to_numpy(text).tolist()
        assert ids == ds.obj.encode(text, add_special_tokens=False).ids
        assert ds.obj.token_to_id("<｜begin▁of▁sentence｜>") in ids


def test_lone_surrogates_leave_the_inline_call(get_preset):
    """The flat call fails on a lone surrogate; the backend's call then repairs it (tiktoken vocabularies, as
    tiktoken does) or names it (HF vocabularies)."""
    qwen = get_preset("qwen2")
    text = "ab\ud83dcd \udc00 é " * 40 + "\ud83d\ude00"
    with ParallelTokenizer(qwen, workers=2) as pt:
        used = Spy(pt._encode_ids)
        pt._encode_ids = used
        assert pt.encode_to_numpy(text).tolist() == qwen.obj.encode_ordinary(text)
        assert used.calls == 1
    with ParallelTokenizer(get_preset("deepseek-v4"), workers=2) as pt:
        with pytest.raises(ValueError, match=r"lone surrogate .* at character 7"):
            pt.encode_to_numpy("abc é d\ud800 tail")


def test_verify_closed_and_options_take_the_general_path(get_preset, monkeypatch):
    tok = get_preset("deepseek-v4")
    text = TEXTS[-1]
    ref = reference(tok.obj, text)
    with ParallelTokenizer(tok, workers=2) as pt:
        spy = Spy(pt._flat)
        monkeypatch.setattr(pt, "_flat", spy)
        # verify=True: the sequential reference is compared (a tampered reference is caught)
        pt.verify = True
        assert pt.encode_to_numpy(text).tolist() == ref
        monkeypatch.setattr(pt.backend, "reference", lambda t: [1, 2, 3])
        with pytest.raises(VerificationError):
            pt.encode_to_numpy(text)
        monkeypatch.undo()
        monkeypatch.setattr(pt, "_flat", spy)
        pt.verify = False
        assert spy.calls == 0
        assert pt.encode_to_numpy(text).tolist() == ref and spy.calls == 1
        # add_special_tokens: the backend's affixes around the ids, on the general path
        monkeypatch.setattr(pt.backend, "special_affixes", lambda: ([7], [9]))
        assert pt.encode_to_numpy(text, add_special_tokens=True).tolist() == [7, *ref, 9]
        assert spy.calls == 1
        # a progress callback: called once with (n, n), the ids unchanged
        seen: list[tuple[int, int]] = []
        ids = pt.encode_to_numpy(text, on_progress=lambda done, total: seen.append((done, total)))
        assert ids.tolist() == ref and seen == [(len(text), len(text))] and spy.calls == 2
        # not a str: named; a str subclass: the general path, the same ids
        with pytest.raises(TypeError, match="text: expected str, got bytes"):
            pt.encode_to_numpy(text.encode())  # type: ignore[arg-type]

        class Text(str):
            pass

        assert pt.encode_to_numpy(Text(text)).tolist() == ref and spy.calls == 2
    # closed: every text refused, short ones included
    with pytest.raises(ValueError, match="closed"):
        pt.encode_to_numpy("short")
    assert spy.calls == 2
    with ParallelTokenizer(get_preset("qwen2"), workers=2) as pt:
        with pytest.raises(ValueError, match="add_special_tokens"):
            pt.encode_to_numpy("x", add_special_tokens=True)


def test_long_texts_go_to_lopt_and_library_backends_have_no_flat_call(get_preset):
    """With a LoPT strategy, texts from ``min_parallel_chars`` up are split and merged, not one inline call;
    the library backends declare no flat call and keep their bound call."""
    tok = get_preset("qwen2")
    text = "Several words, then more words; numbers 1234 and 5678.\n" * 200
    with ParallelTokenizer(tok, workers=2, backend="fastokens", strategy="threads", min_parallel_chars=4000) as pt:
        spy = Spy(pt._flat)
        pt._flat = spy
        short, long = text[:3999], text
        assert pt.encode_to_numpy(short).tolist() == reference(tok.obj, short) and spy.calls == 1
        assert pt.encode_to_numpy(long).tolist() == reference(tok.obj, long) and spy.calls == 1
        assert pt.encode_with_stats(long)[1].path == "lopt"
    for name in ("qwen2", "bert", "mistral-v1"):
        with ParallelTokenizer(get_preset(name), workers=2, backend="library") as pt:
            assert pt.backend.flat_call() is None and pt._flat is None
            assert pt.encode_to_numpy(text).tolist() == reference(get_preset(name).obj, text)
