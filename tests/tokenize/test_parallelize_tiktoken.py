"""parallelize() on tiktoken.Encoding: encode, encode_ordinary, encode_to_numpy and the batch calls equal the
unwrapped encoding's, with every allowed_special / disallowed_special combination, on texts with many cuts."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from lowbit.lab.tokenize.corpus import make_text
from lowbit.tokenize import parallelize
from lowbit.tokenize.presets import missing_package

TIKTOKEN_PRESETS = ["qwen2", "qwen3.5", "cl100k", "o200k", "voyage3", "tekken"]
SMALL = {"workers": 2, "min_parallel_chars": 1500, "chunk_chars": 256}


def encoding(get_preset, name):
    if missing_package(name) is not None:
        pytest.skip(f"{name}: {missing_package(name)}")
    return get_preset(name).obj


def long_texts(specials):
    sp = " ".join(sorted(specials)[:3])
    return {
        "mixed": make_text("mixed", 5000, seed=5),
        "code": make_text("code", 4000),
        "repeat": "a" * 3000 + " " + "1234567890" * 200,
        "specials": (f"text {sp} more " * 80) if sp else "no specials " * 300,
    }


@pytest.mark.parametrize("name", TIKTOKEN_PRESETS)
def test_every_call_equals_the_library(name, get_preset):
    enc = encoding(get_preset, name)
    fast = parallelize(enc, **SMALL)
    assert isinstance(fast, type(enc)) and type(fast).__name__ == "Encoding"
    specials = enc.special_tokens_set
    one = sorted(specials)[:1]
    texts = long_texts(specials)
    for label, text in texts.items():
        ctx = (name, label)
        assert fast.encode_ordinary(text) == enc.encode_ordinary(text), ctx
        assert fast.encode(text, disallowed_special=()) == enc.encode(text, disallowed_special=()), ctx
        assert fast.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all"), ctx
        got, ref = fast.encode_to_numpy(text, allowed_special="all"), enc.encode_to_numpy(text, allowed_special="all")
        assert got.dtype == ref.dtype and np.array_equal(got, ref), ctx
        if one:
            kw = {"allowed_special": set(one), "disallowed_special": ()}
            assert fast.encode(text, **kw) == enc.encode(text, **kw), ctx
        if label != "specials" or not specials:
            assert fast.encode(text) == enc.encode(text), ctx
    stats = fast._lowbit_parallel.tokenizer(frozenset()).encode_with_stats(texts["mixed"])[1]
    assert stats.path == "lopt" and stats.merge.boundaries >= 8, stats  # the texts are cut many times
    batch = [*texts.values(), "short", ""]
    assert fast.encode_ordinary_batch(batch) == enc.encode_ordinary_batch(batch), name
    kw = {"allowed_special": "all"}
    assert fast.encode_batch(batch, num_threads=2, **kw) == enc.encode_batch(batch, num_threads=2, **kw), name
    fast.close()


def test_disallowed_special_raises_the_library_error(get_preset):
    enc = encoding(get_preset, "cl100k")
    fast = parallelize(enc, **SMALL)
    text = make_text("prose", 3000) + " <|endoftext|> " + make_text("prose", 1000)
    with pytest.raises(ValueError) as ours:
        fast.encode(text)
    with pytest.raises(ValueError) as theirs:
        enc.encode(text)
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError, match="disallowed special token"):
        fast.encode_to_numpy(text, allowed_special={"<|fim_prefix|>"})
    fast.close()


def test_surrogates_are_replaced_as_tiktoken_does(get_preset):
    enc = encoding(get_preset, "o200k")
    text = make_text("mixed", 3000) + "\ud800 tail " + make_text("prose", 800)
    with parallelize(enc, **SMALL) as fast:
        assert fast.encode_ordinary(text) == enc.encode_ordinary(text)


def test_pickles_and_closes(get_preset):
    enc = encoding(get_preset, "qwen2")
    fast = parallelize(enc, **SMALL)
    text = make_text("mixed", 4000)
    ref = enc.encode_ordinary(text)
    assert fast.encode_ordinary(text) == ref
    pt = fast._lowbit_parallel.tokenizer(frozenset())
    restored = pickle.loads(pickle.dumps(fast))
    assert restored.encode_ordinary(text) == ref and restored.parallel_options == fast.parallel_options
    fast.close()
    assert pt.pool_size == 0  # the worker pool is shut down
    with pytest.raises(ValueError, match="closed"):
        fast.encode_ordinary(text)
    assert fast.encode_ordinary("short") == enc.encode_ordinary("short")
    restored.close()


def test_garbage_collection_shuts_the_pool_down(get_preset):
    import gc

    enc = encoding(get_preset, "cl100k")
    fast = parallelize(enc, **SMALL)
    text = make_text("mixed", 4000)
    assert fast.encode_ordinary(text) == enc.encode_ordinary(text)
    pt = fast._lowbit_parallel.tokenizer(frozenset())
    assert pt.strategy != "processes" or pt.pool_size > 0
    del fast
    gc.collect()
    assert pt.pool_size == 0
