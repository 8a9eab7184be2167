import pytest
import torch

from lowbit.attention import quantize_kv, quantized_attention
from lowbit.msd import decompose


def test_int8_cache_layouts():
    k, v = torch.randn(1, 2, 40, 64), torch.randn(1, 2, 40, 32)
    c = quantize_kv(k, v, "int8", k_granularity="channel", v_granularity="token")
    assert c.k.scales.shape == (1, 2, 1, 64) and c.v.scales.shape == (1, 2, 40, 1)
    assert c.k.values.abs().max() <= 127 and c.k.values.eq(c.k.values.round()).all()
    assert (c.k.dequantize() - k).abs().max() <= c.k.scales.max() / 2 + 1e-6
    m = quantize_kv(k, v, "mxfp4")
    assert m.k.scales.shape == (1, 2, 40, 2) and m.k.bits_per_element == 4.25
    assert set(m.v.values.abs().unique().tolist()) <= {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0}


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
