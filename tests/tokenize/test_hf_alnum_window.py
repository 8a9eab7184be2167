"""``HFBackend.may_cut`` answers ASCII letters-and-digits windows without running the pipeline only where the
pipeline leaves such text one word; the answer is the one the normalizer and pre-tokenizer give."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from lowbit.tokenize import load_tokenizer
from lowbit.tokenize.backends.hf import HFBackend


def _pipeline_verdict(backend: HFBackend, window: str) -> bool:
    """The rule of ``may_cut`` computed by the pipeline itself (the reference: never the shortcut)."""
    tok = backend.tok
    norm = tok.normalizer.normalize_str(window) if tok.normalizer is not None else window
    edge = backend.edge_units
    return any(edge <= start <= len(norm) - edge for _, (start, _) in tok.pre_tokenizer.pre_tokenize_str(norm)[1:])


def _wordlevel(normalizer, pre_tokenizer) -> Tokenizer:  # type: ignore[no-untyped-def]
    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    return tok


SHORTCUT = {
    "bert": lambda: load_tokenizer("bert").obj,
    "whitespace+nfkc+lowercase": lambda: _wordlevel(
        normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()]), pre_tokenizers.Whitespace()
    ),
    "whitespace-split": lambda: _wordlevel(None, pre_tokenizers.WhitespaceSplit()),
}
NO_SHORTCUT = {
    "digits": lambda: _wordlevel(None, pre_tokenizers.Digits(individual_digits=True)),
    "bert+digits": lambda: _wordlevel(
        normalizers.BertNormalizer(),
        pre_tokenizers.Sequence([pre_tokenizers.BertPreTokenizer(), pre_tokenizers.Digits(individual_digits=True)]),
    ),
    "metaspace-replace": lambda: _wordlevel(normalizers.Replace("a", " "), pre_tokenizers.WhitespaceSplit()),
    "deepseek-v4": lambda: load_tokenizer("deepseek-v4").obj,
}


@pytest.mark.parametrize("name", sorted(SHORTCUT))
def test_alnum_windows_of_one_word_pipelines_agree_with_the_pipeline(name: str) -> None:
    backend = HFBackend.from_tokenizer(SHORTCUT[name]())
    assert backend._one_word_if_ascii_alnum()
    rng = random.Random(0)
    alphabet = "abcXYZ0123456789"
    for n in (1, 5, 40, 300):
        for _ in range(25):
            window = "".join(rng.choice(alphabet) for _ in range(n))
            assert backend.may_cut(window) is False
            assert _pipeline_verdict(backend, window) is False, window
    assert backend.may_cut("x" * 20 + " word " + "y" * 20) == _pipeline_verdict(backend, "x" * 20 + " word " + "y" * 20)


@pytest.mark.parametrize("name", sorted(NO_SHORTCUT))
def test_other_pipelines_run_the_pipeline(name: str) -> None:
    backend = HFBackend.from_tokenizer(NO_SHORTCUT[name]())
    assert not backend._one_word_if_ascii_alnum()
    for window in ("1" * 60, "a" * 60, "ab12" * 15, "ab" * 30):
        assert backend.may_cut(window) == _pipeline_verdict(backend, window), window
    if name == "metaspace-replace":
        assert backend.may_cut("ab" * 30)  # every "a" becomes a space: words start mid-window
    else:
        assert backend.may_cut("1" * 60)  # digits isolated (one by one, or deepseek-v4's runs of at most 3)
