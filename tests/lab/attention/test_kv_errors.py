"""The quantized-KV error table (lowbit.lab.attention.kv_errors): MSD vs dequant over the table's cache layouts."""

import pytest
import torch

from lowbit.attention import attention_reference, quantize_kv, quantized_attention
from lowbit.lab.attention.kv_errors import CACHE_CONFIGS, CacheConfig, kv_error_row, kv_inputs


def rel(x, ref):
    return float((x.double() - ref).norm() / ref.norm())


def cache_ref(q, cache, **kw):
    return attention_reference(q, cache.k.dequantize(torch.float64), cache.v.dequantize(torch.float64), **kw)


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


def test_cache_config_labels():
    assert CacheConfig("int8", "channel", "token").label == "int8 K/chan V/tok"
    assert CacheConfig("mxfp4").label.startswith("mxfp4")
