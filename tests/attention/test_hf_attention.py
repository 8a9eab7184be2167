"""use_msd_attention + Int8KVCache inside transformers: exact integer products, the kernel against a float64
reference on the same codes, and generate (greedy, sampled, batched, left-padded) against sdpa + a float cache."""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import AttentionInterface, AutoModelForCausalLM, DynamicCache, LlamaConfig  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface  # noqa: E402

from lowbit.attention import Int8KVCache, Int8KVConfig, MSDAttentionConfig, use_msd_attention  # noqa: E402
from lowbit.attention.hf_cache import Int8Keys, Int8Values  # noqa: E402
from lowbit.attention.int8_codes import quantize_rows, split_rows  # noqa: E402
from lowbit.attention.int8_gemm import FLOAT_CHUNK, int8_matmul, resolve_backend  # noqa: E402
from lowbit.attention.msd_kv_attention import int8_kv_attention  # noqa: E402
from lowbit.msd import decompose  # noqa: E402

BACKENDS = ["float-chunks"] + (["int_mm"] if resolve_backend("auto") == "int_mm" else [])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("backend", BACKENDS)
def test_int8_matmul_is_exact(backend: str) -> None:
    g = torch.Generator().manual_seed(1)
    for m, k, n in ((3, 64, 40), (8, 3 * FLOAT_CHUNK + 7, 16)):  # the second crosses the float32 chunk limit
        a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=g)
        b = torch.randint(-127, 128, (k, n), dtype=torch.int8, generator=g)
        a[0], b[:, 0] = 127, -127  # worst-case same-sign sums
        want = a.double() @ b.double()
        assert torch.equal(int8_matmul(a, b, backend).double(), want)
        assert torch.equal(int8_matmul(a, b.t().contiguous().t(), backend).double(), want)  # transposed strides


def test_split_rows_meets_the_msd_bound_like_lowbit_msd_decompose() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 7, 64, generator=g) * torch.logspace(-3, 3, 7).unsqueeze(-1)
    comps, scales = split_rows(x, passes=2)
    recon = (comps.double() * scales.double()).reshape(5, 2, 7, 64).sum(1)
    bound = x.abs().amax(-1, keepdim=True).double() / 64516
    assert bool(((recon - x.double()).abs() <= bound * 1.001).all())  # float32 residuals: within 0.1% of it
    ref = decompose(x.double(), "int8", passes=2)  # the library's float64 implementation
    assert torch.equal(comps[:, :7], ref.components[0])
    assert float((comps[:, 7:] == ref.components[1]).double().mean()) > 0.999  # float32 vs float64 rounding ties


def _views(k: torch.Tensor, v: torch.Tensor) -> tuple[Int8Keys, Int8Values]:
    kc, ks = quantize_rows(k)
    vc, vs = quantize_rows(v)
    return Int8Keys(kc, ks, "token", 1, None, False), Int8Values(vc, vs, False)


def _reference(q, keys: Int8Keys, values: Int8Values, scale, keep) -> torch.Tensor:
    """float64 attention on the dequantized codes (GQA by repeating heads)."""
    group = q.shape[1] // values.codes.shape[1]
    if keys.granularity == "token":
        kd = keys.codes.double() * keys.scales.double().unsqueeze(-1)
    else:
        b, h, n, d = keys.codes.shape
        kd = keys.codes.double().reshape(b, h, n // keys.block, keys.block, d) * keys.scales.double().unsqueeze(3)
        kd = torch.cat([kd.reshape(b, h, n, d), keys.residual.double()], 2)
    vd = values.codes.double() * values.scales.double().unsqueeze(-1)
    kd, vd = kd.repeat_interleave(group, 1), vd.repeat_interleave(group, 1)
    s = (q.double() @ kd.transpose(-1, -2)) * scale
    s = s.masked_fill(~keep, float("-inf"))
    return torch.softmax(s, -1) @ vd


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("lq", "seq"), [(1, 300), (37, 37), (5, 200)])
def test_kernel_matches_float64_attention_on_the_same_codes(backend: str, lq: int, seq: int) -> None:
    g = torch.Generator().manual_seed(lq)
    q = torch.randn(2, 8, lq, 32, generator=g)
    k, v = torch.randn(2, 2, seq, 32, generator=g), torch.randn(2, 2, seq, 32, generator=g)
    keys, values = _views(k, v)
    out = int8_kv_attention(q, keys, values, scale=32**-0.5, causal=True, backend=backend, query_block=16)
    pos = torch.arange(seq - lq, seq).unsqueeze(-1)
    keep = torch.arange(seq).unsqueeze(0) <= pos
    ref = _reference(q, keys, values, 32**-0.5, keep)
    assert _rel(out, ref) < 2e-4  # only the 2-pass decomposition of Q and P' differs
    # a boolean mask (left padding of sequence 1) gives the masked reference; a fully masked row gives 0
    mask = keep.expand(2, 1, lq, seq).clone()
    mask[1, :, :, :3] = False
    mask[1, :, 0, :] = False
    out = int8_kv_attention(q, keys, values, scale=32**-0.5, mask=mask, backend=backend, query_block=16)
    ref = _reference(q, keys, values, 32**-0.5, mask).nan_to_num(0.0)
    assert _rel(out, ref) < 2e-4 and bool((out[1, :, 0] == 0).all())


def test_kernel_with_per_channel_keys_matches_float64() -> None:
    cache = Int8KVCache(_cfg(layers=1), Int8KVConfig(k_granularity="channel", k_block=32))
    g = torch.Generator().manual_seed(3)
    k, v = torch.randn(1, 2, 77, 32, generator=g), torch.randn(1, 2, 77, 32, generator=g)
    k[..., 5] *= 20  # an outlier channel
    keys, values = cache.update(k, v, 0)
    q = torch.randn(1, 4, 1, 32, generator=g)
    out = int8_kv_attention(q, keys, values, scale=0.2, causal=True, backend=BACKENDS[-1])
    ref = _reference(q, keys, values, 0.2, torch.ones(1, 77, dtype=torch.bool))
    assert _rel(out, ref) < 2e-4


def test_nan_propagates_to_the_rows_that_attend_it_only() -> None:
    g = torch.Generator().manual_seed(4)
    k, v = torch.randn(2, 1, 10, 16, generator=g), torch.randn(2, 1, 10, 16, generator=g)
    k[0, 0, 3, 0] = float("nan")
    v[0, 0, 6, 0] = float("nan")
    kc, ks = quantize_rows(k)
    vc, vs = quantize_rows(v)
    keys, values = Int8Keys(kc, ks, "token", 1, None, True), Int8Values(vc, vs, True)
    q = torch.randn(2, 2, 10, 16, generator=g)
    out = int8_kv_attention(q, keys, values, scale=0.25, causal=True, backend=BACKENDS[-1])
    nan_rows = torch.isnan(out).any(-1)
    assert not bool(nan_rows[1].any())  # the other sequence is untouched
    assert not bool(nan_rows[0, :, :3].any()) and bool(nan_rows[0, :, 3:].all())  # rows before the NaN key are fine


def _cfg(layers: int = 2, head_dim: int = 32) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=head_dim,
        vocab_size=512,
        max_position_embeddings=256,
    )


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    ref = AutoModelForCausalLM.from_config(_cfg()).eval()
    msd = AutoModelForCausalLM.from_config(copy.deepcopy(ref.config)).eval()  # own config: attention is per config
    msd.load_state_dict(ref.state_dict())
    use_msd_attention(msd)
    return ref, msd


def _batch():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, 512, (3, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :6] = 0  # left padding
    mask[2, :11] = 0
    ids[mask == 0] = 0
    return ids, mask


def test_registration_sets_the_attention_and_its_mask_function(models) -> None:
    _, msd = models
    assert msd.config._attn_implementation == "lowbit_msd"
    assert "lowbit_msd" in AttentionInterface._global_mapping
    assert "lowbit_msd" in AttentionMaskInterface._global_mapping


@torch.no_grad()
def test_logits_match_sdpa_with_a_float_cache_prefill_and_decode(models) -> None:
    ref, msd = models
    ids, mask = _batch()
    rc, mc = DynamicCache(config=ref.config), Int8KVCache(msd.config)
    a = ref(ids, attention_mask=mask, past_key_values=rc, use_cache=True).logits
    b = msd(ids, attention_mask=mask, past_key_values=mc, use_cache=True).logits
    real = mask.bool()
    assert _rel(b[real], a[real]) < 3e-2
    step = torch.tensor([[5], [9], [11]])
    mask2 = torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype)], 1)
    a = ref(step, attention_mask=mask2, past_key_values=rc, use_cache=True).logits
    b = msd(step, attention_mask=mask2, past_key_values=mc, use_cache=True).logits
    assert _rel(b, a) < 3e-2
    assert mc.get_seq_length() == 25 and isinstance(mc.layers[0].v_codes, torch.Tensor)


@torch.no_grad()
def test_greedy_generate_batched_left_padded_agrees_with_sdpa(models) -> None:
    ref, msd = models
    ids, mask = _batch()
    want = ref.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
    got = msd.generate(ids, attention_mask=mask, past_key_values=Int8KVCache(msd.config), max_new_tokens=12,
                       do_sample=False)  # fmt: skip
    assert torch.equal(got, want)
    # the padding is really masked: the padded row generates what the same prompt alone generates
    alone = msd.generate(ids[2:, 11:], past_key_values=Int8KVCache(msd.config), max_new_tokens=12, do_sample=False)
    assert torch.equal(alone[0, 13:], got[2, 24:])


@torch.no_grad()
def test_sampled_generate_with_a_seed_agrees_with_sdpa(models) -> None:
    ref, msd = models
    ids, mask = _batch()
    torch.manual_seed(11)
    want = ref.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=True, top_k=0, temperature=1.0)
    torch.manual_seed(11)
    got = msd.generate(ids, attention_mask=mask, past_key_values=Int8KVCache(msd.config), max_new_tokens=8,
                       do_sample=True, top_k=0, temperature=1.0)  # fmt: skip
    assert torch.equal(got, want)


@torch.no_grad()
def test_gemm_backends_give_identical_logits_and_no_cache_runs_the_same_kernel(models) -> None:
    ref, msd = models
    ids, mask = _batch()
    base = msd(ids, attention_mask=mask, past_key_values=Int8KVCache(msd.config), use_cache=True).logits
    no_cache = msd(ids, attention_mask=mask, use_cache=False).logits  # float K/V quantized by the same rule
    assert torch.equal(no_cache, base)
    other = AutoModelForCausalLM.from_config(copy.deepcopy(ref.config)).eval()
    other.load_state_dict(ref.state_dict())
    use_msd_attention(other, MSDAttentionConfig(gemm="float-chunks", query_block=7))
    chunks = other(ids, attention_mask=mask, past_key_values=Int8KVCache(other.config), use_cache=True).logits
    assert torch.allclose(chunks, base, rtol=0, atol=1e-5)  # exact integers; tiles only reorder float sums


@torch.no_grad()
def test_bad_use_is_named(models) -> None:
    ref, msd = models
    ids, _mask = _batch()
    with pytest.raises(IndexError, match="1 layers"):
        msd(ids, past_key_values=Int8KVCache(_cfg(layers=1)), use_cache=True)
    with pytest.raises(ValueError, match="max_position_embeddings=256"):
        msd.generate(torch.randint(3, 512, (1, 250)), past_key_values=Int8KVCache(msd.config), max_new_tokens=10,
                     do_sample=False)  # fmt: skip
    with pytest.raises((TypeError, AttributeError), match="use_msd_attention"):
        ref(ids, past_key_values=Int8KVCache(ref.config), use_cache=True)  # sdpa cannot read INT8 views
    # an empty batch never reaches the attention: Llama's own q_proj reshape fails first (transformers 5.23);
    # the cache names it (tests/attention/test_hf_cache.py) and the kernel returns an empty output
    empty = torch.empty(0, 8, 1, 32)
    keys, values = _views(torch.empty(0, 2, 4, 32), torch.empty(0, 2, 4, 32))
    assert int8_kv_attention(empty, keys, values, scale=1.0).shape == (0, 8, 1, 32)
    with pytest.raises(ValueError, match="passes"):
        MSDAttentionConfig(passes=0)
