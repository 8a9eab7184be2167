import pytest
import torch

from lowbit.attention import attention_reference
from lowbit.attention.kv_errors import CACHE_CONFIGS, CacheConfig, kv_error_row, kv_inputs
from lowbit.attention.kvcache import quantize_kv
from lowbit.attention.quantized import quantized_attention
from lowbit.msd import decompose


def rel(x, ref):
    return float((x.double() - ref).norm() / ref.norm())


def cache_ref(q, cache, **kw):
    return attention_reference(q, cache.k.dequantize(torch.float64), cache.v.dequantize(torch.float64), **kw)


def test_int8_cache_layouts():
    k, v = torch.randn(1, 2, 40, 64), torch.randn(1, 2, 40, 32)
    c = quantize_kv(k, v, "int8", k_granularity="channel", v_granularity="token")
    assert c.k.scales.shape == (1, 2, 1, 64) and c.v.scales.shape == (1, 2, 40, 1)
    assert c.k.values.abs().max() <= 127 and c.k.values.eq(c.k.values.round()).all()
    assert (c.k.dequantize() - k).abs().max() <= c.k.scales.max() / 2 + 1e-6
    m = quantize_kv(k, v, "mxfp4")
    assert m.k.scales.shape == (1, 2, 40, 2) and m.k.bits_per_element == 4.25
    assert set(m.v.values.abs().unique().tolist()) <= {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0}


@pytest.mark.parametrize("config", CACHE_CONFIGS, ids=lambda c: c.label)
def test_msd_adds_less_error_than_dequant_for_int8_and_stays_bounded(config):
    row = kv_error_row(config, 1024, 64, block_k=256)
    if config.fmt == "int8":
        assert row.msd_method < row.dequant_method / 5  # ~16-bit decompositions vs BF16 rounding of K·s, V·s, P
        assert row.msd_method < 1e-3
    else:  # MXFP4 dequant is exact in BF16; MSD adds the two-pass MXFP4 activation error (msd.md §8)
        assert row.dequant_method < 5e-3 and row.msd_method < 5e-2
        assert abs(row.msd_total - row.dequant_total) < 0.1 * row.dequant_total


@pytest.mark.parametrize("config", CACHE_CONFIGS, ids=lambda c: c.label)
def test_msd_handles_gqa_causal_and_masks(config):
    q, k, v = kv_inputs(70, 64, heads_q=4, heads_kv=2, seq_q=5, outliers=False, seed=3)
    cache = quantize_kv(k, v, config.fmt, k_granularity=config.k_granularity, v_granularity=config.v_granularity)
    mask = torch.ones(1, 1, 5, 70, dtype=torch.bool)
    mask[..., 2, :] = False  # an all-masked row
    for method in ("dequant", "msd"):
        out = quantized_attention(q, cache, method=method, causal=True, mask=mask, block_k=32)
        ref = cache_ref(q, cache, causal=True, mask=mask)
        assert not out.isnan().any() and (out[:, :, 2] == 0).all()
        assert rel(out, ref) < (2e-2 if config.fmt == "mxfp4" and method == "msd" else 1e-2)


def test_fixed_probability_scale_bound():
    """msd.md §9: P̃ <= 1, so s1 = 1/127 and two passes err by at most 1/64516 (absolute)."""
    p = torch.exp(-torch.rand(64, 512) * 20)
    d = decompose(p, "int8", passes=2, amax=1.0)
    assert torch.allclose(d.scales[0], torch.full_like(d.scales[0], 1 / 127))
    assert (d.reconstruct(torch.float64) - p.double()).abs().max() <= 1 / 64516


def test_bad_cache_inputs_raise():
    k, v = torch.randn(1, 2, 8, 48), torch.randn(1, 2, 8, 48)
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_kv(k, v, "mxfp4")
    with pytest.raises(ValueError, match="k_granularity"):
        quantize_kv(k, v, "int8", k_granularity="block")
    with pytest.raises(ValueError, match="fmt"):
        quantize_kv(k, v, "int4")
    with pytest.raises(ValueError, match="empty sequence"):
        quantize_kv(k[:, :, :0], v[:, :, :0])
    bad = k.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="k contains NaN or Inf"):
        quantize_kv(bad, v)
    cache = quantize_kv(k, v)
    with pytest.raises(ValueError, match="method"):
        quantized_attention(torch.randn(1, 2, 1, 48), cache, method="fp8")
    with pytest.raises(ValueError, match="head dims differ"):
        quantized_attention(torch.randn(1, 2, 1, 32), cache)
    with pytest.raises(ValueError, match="multiple of k/v heads"):
        quantized_attention(torch.randn(1, 3, 1, 48), cache)
    with pytest.raises(TypeError, match="QuantizedKV"):
        quantized_attention(torch.randn(1, 2, 1, 48), (k, v))


def test_cache_config_labels():
    assert CacheConfig("int8", "channel", "token").label == "int8 K/chan V/tok"
    assert CacheConfig("mxfp4").label.startswith("mxfp4")
