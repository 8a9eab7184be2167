"""parallelize() on transformers fast tokenizers: every output field equals the unwrapped tokenizer's.

The tokenizers are the offline presets' ``tokenizers.Tokenizer`` wrapped in ``PreTrainedTokenizerFast``: bert
(WordPiece, BERT's [CLS]/[SEP] template, token type ids) and deepseek-v4 (byte-level BPE, ByteLevel
post-processor). Texts are long and the chunks small (256 characters) so that every text has many cuts.
"""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest

from lowbit.lab.tokenize.corpus import make_text
from lowbit.tokenize import parallelize
from lowbit.tokenize.presets import missing_package

transformers = pytest.importorskip("transformers")

HF_PRESETS = ["bert", "deepseek-v4"]
SMALL = {"workers": 2, "min_parallel_chars": 1500, "chunk_chars": 256}


def hf_tokenizer(get_preset, name):
    if missing_package(name) is not None:
        pytest.skip(f"{name}: {missing_package(name)}")
    obj = get_preset(name).obj
    if name == "bert":
        specials = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
        return transformers.PreTrainedTokenizerFast(tokenizer_object=obj, **specials)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=obj, pad_token="<｜end▁of▁sentence｜>")


def texts():
    return {
        "mixed": make_text("mixed", 6000, seed=3),
        "code": make_text("code", 5000),
        "cjk": make_text("chinese", 3000),
        "specials": "text <|endoftext|> more [CLS] x [SEP] <s> </s> émoji 👨‍👩‍👧‍👦 " * 60,
    }


def assert_same(a, b, ctx):
    """Every key and every Encoding field of two BatchEncodings."""
    assert set(a.keys()) == set(b.keys()), ctx
    for k in a:
        x, y = a[k], b[k]
        if hasattr(x, "shape"):
            assert type(x) is type(y) and x.shape == y.shape and (np.asarray(x) == np.asarray(y)).all(), (ctx, k)
        else:
            assert x == y, (ctx, k)
    ea, eb = a.encodings or [], b.encodings or []
    assert len(ea) == len(eb), ctx
    for e, f in zip(ea, eb, strict=True):
        for field in ("ids", "type_ids", "tokens", "offsets", "attention_mask", "special_tokens_mask", "word_ids"):
            assert getattr(e, field) == getattr(f, field), (ctx, field)
        assert e.sequence_ids == f.sequence_ids, ctx
        assert len(e.overflowing) == len(f.overflowing), ctx


CALLS = [
    {},
    {"add_special_tokens": False, "return_offsets_mapping": True, "return_special_tokens_mask": True},
    {"return_offsets_mapping": True, "return_length": True, "return_token_type_ids": True},
    {
        "truncation": True,
        "max_length": 200,
        "stride": 32,
        "return_overflowing_tokens": True,
        "return_offsets_mapping": True,
    },
    {"truncation": True, "max_length": 512},
    {"padding": "max_length", "max_length": 4096, "truncation": True, "return_tensors": "np"},
]


@pytest.mark.parametrize("name", HF_PRESETS)
def test_single_texts_every_field(name, get_preset):
    tok = hf_tokenizer(get_preset, name)
    fast = parallelize(tok, **SMALL)
    assert isinstance(fast, type(tok)) and isinstance(fast, transformers.PreTrainedTokenizerFast)
    assert type(fast).__name__ == type(tok).__name__
    for label, text in texts().items():
        for kwargs in CALLS:
            assert_same(tok(text, **kwargs), fast(text, **kwargs), (name, label, kwargs))
        assert fast.encode(text) == tok.encode(text), (name, label)
        assert fast.tokenize(text) == tok.tokenize(text), (name, label)
        stats = fast._lowbit_parallel.batch_for(fast.backend_tokenizer).last_stats
        assert stats is not None and stats.boundaries >= 8, (name, label, stats)  # many cuts were made


@pytest.mark.parametrize("name", HF_PRESETS)
def test_batches_pairs_padding_tensors(name, get_preset):
    tok = hf_tokenizer(get_preset, name)
    fast = parallelize(tok, **SMALL)
    t = texts()
    batch = [t["mixed"], "a short one", t["code"], "", t["cjk"]]
    calls = [
        {"padding": True},
        {"padding": True, "padding_side": "left", "return_offsets_mapping": True, "return_tensors": "pt"},
        {"padding": "longest", "pad_to_multiple_of": 64, "return_tensors": "np"},
        {"truncation": True, "max_length": 300, "stride": 50, "return_overflowing_tokens": True, "padding": True},
    ]
    for kwargs in calls:
        assert_same(tok(batch, **kwargs), fast(batch, **kwargs), (name, "batch", kwargs))
    firsts, seconds = [t["mixed"], "short", t["code"]], [t["cjk"][:2000], t["specials"], "x"]
    for kwargs in [{}, {"truncation": "longest_first", "max_length": 700, "stride": 20, "padding": "max_length"}]:
        assert_same(tok(firsts, seconds, **kwargs), fast(firsts, seconds, **kwargs), (name, "pairs", kwargs))
    assert_same(tok(t["mixed"], t["code"]), fast(t["mixed"], t["code"]), (name, "one pair"))


def test_short_texts_call_the_library_unchanged(get_preset):
    tok = hf_tokenizer(get_preset, "bert")
    fast = parallelize(tok, workers=2)  # default threshold: 32768 characters
    calls = []
    real = fast._lowbit_parallel.batch_for
    fast._lowbit_parallel.batch_for = lambda t: calls.append(1) or real(t)
    text = make_text("prose", 20_000)
    assert_same(tok(text, return_offsets_mapping=True), fast(text, return_offsets_mapping=True), "short")
    assert calls == []  # no LoPT path taken
    long_text = make_text("prose", 40_000)
    assert fast(long_text)["input_ids"] == tok(long_text)["input_ids"]
    assert calls == [1]


def test_pipeline_changes_after_wrapping_are_followed(get_preset):
    tok = hf_tokenizer(get_preset, "bert")
    fast = parallelize(tok, **SMALL)
    text = ("the new token zzqqx appears here " * 300) + make_text("mixed", 3000)
    for t in (tok, fast):
        t.add_tokens(["zzqqx appears"])
    assert_same(tok(text, return_offsets_mapping=True), fast(text, return_offsets_mapping=True), "added token")


def test_pickle_copy_close_and_original_untouched(get_preset):
    tok = hf_tokenizer(get_preset, "bert")
    before = tok.backend_tokenizer.to_str()
    fast = parallelize(tok, **SMALL)
    text = texts()["mixed"]
    ref = tok(text, return_offsets_mapping=True)
    restored = pickle.loads(pickle.dumps(fast))
    assert type(restored).__name__ == type(tok).__name__ and restored.parallel_options == fast.parallel_options
    assert_same(ref, restored(text, return_offsets_mapping=True), "unpickled")
    assert tok.backend_tokenizer.to_str() == before and not hasattr(tok, "close")
    with fast:
        assert_same(ref, fast(text, return_offsets_mapping=True), "with")
    with pytest.raises(ValueError, match="closed"):
        fast(text)
    assert fast("short")["input_ids"] == tok("short")["input_ids"]  # short texts never needed the engine
    again = parallelize(restored, workers=1)  # re-parallelizing replaces the options
    assert again.parallel_options.workers == 1 and isinstance(again, type(tok))
    del restored, again
    gc.collect()


def test_save_pretrained_writes_the_library_class(get_preset, tmp_path):
    import json

    tok = hf_tokenizer(get_preset, "bert")
    parallelize(tok, **SMALL).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "TokenizersBackend"
    assert transformers.AutoTokenizer.from_pretrained(tmp_path)("a b").input_ids == tok("a b").input_ids


def test_rejects_what_it_cannot_wrap(get_preset):
    with pytest.raises(TypeError, match="ParallelTokenizer"):
        parallelize(get_preset("bert").obj)  # a tokenizers.Tokenizer: a Rust type, not subclassable
    with pytest.raises(TypeError, match="parallelize"):
        parallelize("bert")
    with pytest.raises(ValueError, match="chunk_chars"):
        parallelize(hf_tokenizer(get_preset, "bert"), chunk_chars=10)
