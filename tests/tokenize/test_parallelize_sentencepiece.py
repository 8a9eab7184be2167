"""parallelize() on sentencepiece.SentencePieceProcessor: encode with out_type int / str / "numpy", add_bos,
add_eos, processor defaults and batches equal the unwrapped processor's, on texts with many cuts."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from lowbit.lab.tokenize.corpus import make_text
from lowbit.tokenize import parallelize
from lowbit.tokenize.presets import missing_package

SP_PRESETS = ["mistral-v1", "mistral-v3"]
SMALL = {"workers": 2, "min_parallel_chars": 1500, "chunk_chars": 256}


def processor(get_preset, name):
    if missing_package(name) is not None:
        pytest.skip(f"{name}: {missing_package(name)}")
    return get_preset(name).obj


def long_texts():
    return {
        "mixed": make_text("mixed", 5000, seed=11),
        "cjk": make_text("chinese", 2500),
        "emoji": "héllo 👨‍👩‍👧‍👦 wörld 🇫🇷 中文 " * 150,
    }


@pytest.mark.parametrize("name", SP_PRESETS)
def test_encode_variants_equal_the_library(name, get_preset):
    sp = processor(get_preset, name)
    fast = parallelize(sp, **SMALL)
    assert isinstance(fast, type(sp)) and type(fast).__name__ == "SentencePieceProcessor"
    for label, text in long_texts().items():
        for kw in [
            {},
            {"add_bos": True},
            {"add_eos": True, "add_bos": True},
            {"out_type": str},
            {"out_type": str, "add_bos": True},
        ]:
            assert fast.encode(text, **kw) == sp.encode(text, **kw), (name, label, kw)
        got, ref = fast.encode(text, out_type="numpy"), sp.encode(text, out_type="numpy")
        assert got.dtype == ref.dtype and np.array_equal(got, ref), (name, label)
        assert fast.EncodeAsIds(text) == sp.EncodeAsIds(text), (name, label)
        assert fast.EncodeAsPieces(text) == sp.EncodeAsPieces(text), (name, label)
        assert fast.tokenize(text) == sp.tokenize(text), (name, label)
        # Calls LoPT does not cover go to the library unchanged.
        assert fast.encode(text, out_type="serialized_proto") == sp.encode(text, out_type="serialized_proto")
    stats = fast._lowbit_parallel.tokenizer().encode_with_stats(long_texts()["mixed"])[1]
    assert stats.path == "lopt" and stats.merge.boundaries >= 8, stats  # the texts are cut many times
    batch = [*long_texts().values(), "short", ""]
    for kw in [{}, {"out_type": str, "add_eos": True}, {"num_threads": 2}]:
        assert fast.encode(batch, **kw) == sp.encode(batch, **kw), (name, kw)
    fast.close()


def test_processor_defaults_are_kept(get_preset):
    import sentencepiece as spm

    base = processor(get_preset, "mistral-v1")
    sp = spm.SentencePieceProcessor(model_proto=base.serialized_model_proto(), add_bos=True, out_type=str)
    text = make_text("mixed", 4000)
    with parallelize(sp, **SMALL) as fast:
        assert fast.encode(text) == sp.encode(text)
        assert fast.encode(text, out_type=int, add_bos=False) == sp.encode(text, out_type=int, add_bos=False)


def test_pickles_and_closes(get_preset):
    sp = processor(get_preset, "mistral-v3")
    fast = parallelize(sp, **SMALL)
    text = make_text("mixed", 4000)
    restored = pickle.loads(pickle.dumps(fast))
    assert restored.encode(text) == sp.encode(text)
    fast.close()
    with pytest.raises(ValueError, match="closed"):
        fast.encode(text)
    assert fast.encode("short") == sp.encode("short")
    restored.close()
