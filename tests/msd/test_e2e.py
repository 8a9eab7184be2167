"""End to end with Hugging Face ``transformers`` (optional extra ``hf``): a small Llama-architecture causal LM,
built from a config (nothing downloaded) and trained briefly on generated text, quantized with MSD and with
dequant from the same INT8 weights: logits agree within the stated tolerance and greedy generation is equal.
The prefill speedup is measured in ``benchmarks/bench_msd_linear.py`` (no timing here)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lowbit.cli import main  # noqa: E402
from lowbit.msd.checkpoint import load_quantized, save_quantized  # noqa: E402
from lowbit.msd.config import MSDConfig  # noqa: E402
from lowbit.msd.quantize_model import quantize_model, quantized_layers  # noqa: E402

LOGIT_TOL = 2e-3  # max |Δlogit| between MSD (two INT8 passes) and the float32 dequant layer, same INT8 weights
NAMES = ["ada", "bob", "cy", "dee", "eve", "fay"]
THINGS = ["apple", "book", "cup", "drum", "egg", "fig"]


def _corpus(n: int, seed: int) -> str:
    """Generated sentences with learnable structure: '<name> has <k> <thing>s. <name> gives one. <k-1> left.'"""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        who, what, k = rng.choice(NAMES), rng.choice(THINGS), rng.randint(2, 9)
        lines.append(f"{who} has {k} {what}s. {who} gives one. {k - 1} left.\n")
    return "".join(lines)


VOCAB = sorted(set(_corpus(200, 0)))
STOI = {c: i for i, c in enumerate(VOCAB)}


def _encode(text: str) -> torch.Tensor:
    return torch.tensor([STOI[c] for c in text], dtype=torch.long)


def _config() -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models are op-overhead bound; two threads on a shared 2-core machine measured ~20x slower per step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(one_thread) -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(_config())
    data = _encode(_corpus(400, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(150):
        starts = torch.randint(0, len(data) - 65, (16,), generator=gen)
        batch = torch.stack([data[s : s + 65] for s in starts])
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert float(loss.detach()) < 1.2  # it learned the grammar (uniform over the vocabulary would be ln 33 ≈ 3.5)
    return model


def _copy(model: transformers.LlamaForCausalLM) -> transformers.LlamaForCausalLM:
    fresh = transformers.LlamaForCausalLM(model.config)
    fresh.load_state_dict(model.state_dict())
    return fresh.eval()


PROMPTS = ["ada has 7 cups. ada gives one.", "eve has 3 f", "bob has 5 drums. bob g"]


def _greedy(model: transformers.LlamaForCausalLM, prompt: str) -> str:
    ids = _encode(prompt).unsqueeze(0)
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False, pad_token_id=0
        )
    return "".join(VOCAB[i] for i in out[0, ids.shape[1] :].tolist())


def test_msd_and_dequant_agree_on_logits_and_greedy_generation(trained) -> None:
    msd = quantize_model(_copy(trained), MSDConfig(weight="int8", passes=2, method="msd"))
    deq = quantize_model(_copy(trained), MSDConfig(weight="int8", method="dequant"))
    assert len(quantized_layers(msd)) == 2 * 7 + 1  # q, k, v, o, gate, up, down per layer + lm_head
    ids = _encode(_corpus(3, 7)).unsqueeze(0)
    with torch.no_grad():
        lm, ld, lf = msd(ids).logits, deq(ids).logits, trained(ids).logits
    assert float((lm - ld).abs().max()) <= LOGIT_TOL
    assert float((lm - ld).abs().max()) < 0.1 * float((ld - lf).abs().max())  # far below the INT8 weight error
    for prompt in PROMPTS:
        text = _greedy(msd, prompt)
        assert text == _greedy(deq, prompt)
    assert "left." in _greedy(msd, PROMPTS[0])  # the trained model completes the sentence pattern


def test_mxfp4_msd_stays_close_to_mxfp4_dequant(trained) -> None:
    msd = quantize_model(_copy(trained), MSDConfig(weight="mxfp4"))
    deq = quantize_model(_copy(trained), MSDConfig(weight="mxfp4", method="dequant"))
    ids = _encode(_corpus(2, 8)).unsqueeze(0)
    with torch.no_grad():
        lm, ld = msd(ids).logits, deq(ids).logits
    rel = float((lm - ld).norm() / ld.norm())
    assert rel < 0.05  # two MXFP4 activation passes: ~1.4e-2 per GEMM (msd.md §8)


def test_quantized_llama_checkpoint_round_trip(trained, tmp_path: Path) -> None:
    msd = quantize_model(_copy(trained), MSDConfig())
    save_quantized(msd, tmp_path / "q")
    loaded = load_quantized(tmp_path / "q", transformers.LlamaForCausalLM(_config()).eval())
    ids = _encode(PROMPTS[0]).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, msd(ids).logits)


def test_lowbit_quantize_on_a_save_pretrained_directory(trained, tmp_path: Path) -> None:
    trained.save_pretrained(tmp_path / "hf", safe_serialization=True)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["model_type"] == "llama"
    assert main(["quantize", str(tmp_path / "hf"), str(tmp_path / "q"), "--no-progress"]) == 0
    loaded = load_quantized(tmp_path / "q", transformers.LlamaForCausalLM(_config()).eval())
    expected = quantize_model(_copy(trained), MSDConfig())
    ids = _encode(PROMPTS[1]).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, expected(ids).logits)
