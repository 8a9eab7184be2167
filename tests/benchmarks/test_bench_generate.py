"""The helpers of ``benchmarks/bench_generate.py`` and ``benchmarks/_trained_llama.py`` (metrics, the
teacher-forced pass through a cache, the held-out windows), each against an independent computation. No timing."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import _trained_llama as tl
import bench_generate as bg


def _tiny_llama(vocab: int = 97) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def test_nll_matches_cross_entropy_float64() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(9, 31, generator=g) * 3
    targets = torch.randint(0, 31, (9,), generator=g)
    ref = torch.nn.functional.cross_entropy(logits.double(), targets, reduction="none")
    torch.testing.assert_close(bg.nll(logits, targets), ref, rtol=0, atol=1e-12)


def test_rel_l2_agreement_prefix() -> None:
    b = torch.tensor([3.0, 4.0])
    assert bg.rel_l2(b + torch.tensor([0.3, 0.4]), b) == pytest.approx(0.1)
    a, r = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 2, 0, 4]])
    assert bg.agreement(a, r) == 0.75
    assert bg.agreeing_prefix(a[0], r[0]) == 2
    assert bg.agreeing_prefix(a[0], a[0]) == 4
    with pytest.raises(ValueError, match="shapes differ"):
        bg.agreement(a, r[:, :3])


def test_teacher_forced_logits_equal_one_full_forward() -> None:
    """Prefill + one token at a time through DynamicCache gives the logits of a single forward over the window."""
    from transformers import DynamicCache

    model = _tiny_llama()
    window = torch.randint(0, 97, (24,), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = model(window[None]).logits[0, :-1].float()
        tf = bg.teacher_forced_logits(model, lambda: DynamicCache(config=model.config), window, prompt=10)
    assert tf.shape == full.shape
    torch.testing.assert_close(tf, full, rtol=1e-4, atol=1e-5)


def test_fill_cache_kv_bytes_and_make_setup_in_place() -> None:
    from transformers import DynamicCache

    model = _tiny_llama()
    cache = DynamicCache(config=model.config)
    bg.fill_cache(cache, model, 40, torch.float32)
    assert bg.kv_bytes(cache) == 2 * 2 * 2 * 40 * 16 * 4  # K and V, layers, kv heads, tokens, head dim, float32
    same, _ = bg.make_setup("msd", model)
    assert same is model
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    with pytest.raises(ValueError, match="unknown setup"):
        bg.make_setup("int3", _tiny_llama())


def test_eval_windows_and_unigram_loss() -> None:
    stream = torch.arange(100)
    w = tl.eval_windows(stream, 10, 4)
    assert w.shape == (4, 10)
    assert w[0, 0] == 0 and w[-1, -1] == 99  # evenly spaced from the first to the last token
    with pytest.raises(ValueError, match="too short"):
        tl.eval_windows(stream, 30, 4)
    train = torch.arange(8).repeat(5)  # uniform counts: the unigram loss is ln(vocab)
    assert tl.unigram_loss(train, torch.tensor([0, 3, 7]), 8) == pytest.approx(math.log(8))


def test_corpus_split_is_disjoint_and_deterministic() -> None:
    train, held = tl.corpus_files(tl.Recipe())
    assert train and held and not set(train) & set(held)
    assert (train, held) == tl.corpus_files(tl.Recipe())
