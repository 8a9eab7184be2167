"""Int8KVCache: a real transformers Cache of INT8 codes and float32 scales (storage, growth, ops, bad input)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig  # noqa: E402
from transformers.cache_utils import Cache, CacheLayerMixin  # noqa: E402

from lowbit.attention import Int8KVCache, Int8KVConfig  # noqa: E402
from lowbit.attention.hf_cache import Int8Keys, Int8Values  # noqa: E402


def _config(layers: int = 2, kv_heads: int = 2, head_dim: int = 16, max_pos: int = 4096) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=4 * head_dim,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=64,
        max_position_embeddings=max_pos,
    )


def _kv(n: int, batch: int = 2, heads: int = 2, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, heads, n, dim, generator=g), torch.randn(batch, heads, n, dim, generator=g) * 3


def _dequant_keys(keys: Int8Keys) -> torch.Tensor:
    if keys.granularity == "token":
        return keys.codes.double() * keys.scales.double().unsqueeze(-1)
    b, h, n, d = keys.codes.shape
    blocks = keys.codes.double().reshape(b, h, n // keys.block, keys.block, d) * keys.scales.double().unsqueeze(3)
    full = blocks.reshape(b, h, n, d)
    return full if keys.residual is None else torch.cat([full, keys.residual.double()], dim=2)


def test_is_a_transformers_cache_with_int8_storage_and_no_float_copy() -> None:
    cache = Int8KVCache(_config())
    assert isinstance(cache, Cache) and all(isinstance(layer, CacheLayerMixin) for layer in cache.layers)
    k, v = _kv(40)
    keys, values = cache.update(k, v, 0)
    assert isinstance(keys, Int8Keys) and isinstance(values, Int8Values)
    assert keys.codes.dtype == torch.int8 and values.codes.dtype == torch.int8
    layer = cache.layers[0]
    for name in ("k_codes", "v_codes"):
        assert getattr(layer, name).dtype == torch.int8
    for name in ("k_scales", "v_scales"):
        assert getattr(layer, name).dtype == torch.float32 and getattr(layer, name).dim() == 3  # one per token
    assert layer.keys is None and layer.values is None and layer.k_residual is None
    # the reconstruction is within half a step of every token (independent float64 check)
    for x, view in ((k, keys), (v, values)):
        step = x.abs().amax(-1, keepdim=True).double() / 127
        recon = view.codes.double() * view.scales.double().unsqueeze(-1)
        assert bool(((recon - x.double()).abs() <= step / 2 + 1e-12).all())
    assert cache.get_seq_length() == 40 and cache.get_seq_length(1) == 0


def test_append_never_requantizes_old_tokens_and_grows_geometrically() -> None:
    cache = Int8KVCache(_config(layers=1), Int8KVConfig(reserve=4, growth=2.0))
    k, v = _kv(8)
    keys0, values0 = cache.update(k, v, 0)
    first_k, first_ks = keys0.codes.clone(), keys0.scales.clone()
    first_v = values0.codes.clone()
    caps = set()
    for i in range(100):  # one token at a time, larger values than the prompt
        kn, vn = _kv(1, seed=i + 1)
        keys, values = cache.update(kn * 50, vn * 50, 0)
        caps.add(cache.layers[0].v_codes.shape[2])
    assert torch.equal(keys.codes[:, :, :8], first_k) and torch.equal(keys.scales[:, :, :8], first_ks)
    assert torch.equal(values.codes[:, :, :8], first_v)
    assert keys.seq_len == 108
    assert sorted(caps) == [12, 24, 48, 96, 192]  # 8 + reserve 4, then doubling: O(log n) copies


def test_nbytes_is_about_a_quarter_of_float32() -> None:
    cfg = _config(layers=2, head_dim=64)
    cache = Int8KVCache(cfg, Int8KVConfig(reserve=0))
    for layer in range(2):
        cache.update(*_kv(1024, batch=1, dim=64), layer)
    float32_bytes = 2 * 2 * (1 * 2 * 1024 * 64 * 4)  # layers * (K, V)
    assert cache.stored_nbytes == 2 * 2 * 1024 * (64 + 64 + 8)
    assert cache.nbytes == cache.stored_nbytes  # reserve 0: nothing beyond the tokens
    assert cache.nbytes / float32_bytes <= 0.30


def test_crop_reorder_select_repeat_reset() -> None:
    cache = Int8KVCache(_config(layers=1))
    k, v = _kv(10, batch=3)
    keys, _values = cache.update(k, v, 0)
    codes = keys.codes.clone()
    cache.crop(-4)
    assert cache.get_seq_length() == 6
    keys, _ = cache.layers[0].views()
    assert torch.equal(keys.codes, codes[:, :, :6])
    with pytest.raises(ValueError, match="negative"):
        cache.crop(3)
    cache.reorder_cache(torch.tensor([2, 0, 1]))
    assert torch.equal(cache.layers[0].views()[0].codes, codes[[2, 0, 1], :, :6])
    cache.batch_select_indices(torch.tensor([1]))
    assert torch.equal(cache.layers[0].views()[0].codes, codes[[0], :, :6])
    cache.batch_repeat_interleave(2)
    assert cache.layers[0].views()[0].codes.shape[0] == 2
    cache.reset()
    assert cache.get_seq_length() == 0 and cache.nbytes == 0


def test_channel_keys_quantize_full_blocks_once_and_keep_a_short_residual() -> None:
    cache = Int8KVCache(_config(layers=1), Int8KVConfig(k_granularity="channel", k_block=8))
    k, v = _kv(13)
    keys, _ = cache.update(k, v, 0)
    assert keys.codes.shape[2] == 8 and keys.residual.shape[2] == 5 and keys.seq_len == 13
    assert keys.scales.shape == (2, 2, 1, 16)  # one scale per channel of the block
    block0 = keys.codes.clone()
    step = k[:, :, :8].abs().amax(2, keepdim=True).double() / 127  # per channel over the block
    assert bool(((_dequant_keys(keys)[:, :, :8] - k[:, :, :8].double()).abs() <= step / 2 + 1e-12).all())
    k2, v2 = _kv(4, seed=5)
    keys, _ = cache.update(k2 * 10, v2, 0)  # completes the second block; the first is untouched
    assert keys.codes.shape[2] == 16 and keys.residual.shape[2] == 1
    assert torch.equal(keys.codes[:, :, :8], block0)
    with pytest.raises(NotImplementedError, match="quantized key block"):
        cache.crop(-3)
    cache.crop(-1)
    assert cache.get_seq_length() == 16


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda c: c.update(torch.ones(1, 2, 3, 16, dtype=torch.int32), torch.ones(1, 2, 3, 16), 0), TypeError,
         "floating-point"),
        (lambda c: c.update(*_kv(3, heads=4), 0), ValueError, "num_key_value_heads=2"),
        (lambda c: c.update(*_kv(3, dim=8), 0), ValueError, "head_dim=16"),
        (lambda c: c.update(*_kv(3, batch=0), 0), ValueError, "empty batch"),
        (lambda c: c.update(*_kv(3), 5), IndexError, "2 layers"),
        (lambda c: c.update(*_kv(40), 0), ValueError, "max_position_embeddings=32"),
        (lambda c: c.update(torch.randn(2, 2, 3, 16), torch.randn(2, 2, 4, 16), 0), ValueError, "differ"),
    ],
)  # fmt: skip
def test_bad_input_is_named(call, error, match) -> None:
    cache = Int8KVCache(_config(max_pos=32))
    with pytest.raises(error, match=match):
        call(cache)


def test_batch_size_cannot_change_and_sliding_configs_are_rejected() -> None:
    cache = Int8KVCache(_config())
    cache.update(*_kv(3, batch=2), 0)
    with pytest.raises(ValueError, match="batch size changed"):
        cache.update(*_kv(1, batch=3), 0)
    cfg = _config()
    cfg.layer_types = ["full_attention", "sliding_attention"]
    cfg.sliding_window = 8
    with pytest.raises(ValueError, match="full-attention"):
        Int8KVCache(cfg)
    with pytest.raises(ValueError, match="k_granularity"):
        Int8KVConfig(k_granularity="tensor")


def test_nonfinite_tokens_get_a_nan_scale_and_are_flagged() -> None:
    cache = Int8KVCache(_config(layers=1))
    k, v = _kv(4)
    k[0, 1, 2, 3] = float("nan")
    v[1, 0, 1, 0] = float("inf")
    keys, values = cache.update(k, v, 0)
    assert keys.has_nonfinite and values.has_nonfinite
    assert torch.isnan(keys.scales[0, 1, 2]) and int(torch.isnan(keys.scales).sum()) == 1
    assert torch.isnan(values.scales[1, 0, 1]) and int(torch.isnan(values.scales).sum()) == 1
    assert int(keys.codes[0, 1, 2].abs().sum()) == 0


def test_views_refuse_tensor_use_with_a_hint() -> None:
    cache = Int8KVCache(_config(layers=1))
    keys, values = cache.update(*_kv(4), 0)
    q = torch.randn(2, 2, 1, 16)
    with pytest.raises(TypeError, match="use_msd_attention"):
        torch.nn.functional.scaled_dot_product_attention(q, keys, values)
    with pytest.raises(AttributeError, match="use_msd_attention"):
        keys.transpose(2, 3)
    with pytest.raises(TypeError, match="use_msd_attention"):
        keys[:, :, None]
