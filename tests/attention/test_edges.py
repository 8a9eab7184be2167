"""Numerics at the edges: scores beyond the float32 range, empty batches, AMLA shifts past the exponent range.

Every result is compared with the float64 reference :func:`lowbit.attention.attention_reference`.
"""

import pytest
import torch

from lowbit.attention import attention_reference, flash_attention, flash_attention_traced
from lowbit.attention.amla import AMLA_KERNEL, AMLA_KERNEL_NO_COMPENSATION, AmlaConfig
from lowbit.attention.kvcache import QuantizedKV, QuantizedTensor, quantize_kv
from lowbit.attention.online_softmax import run_online_softmax
from lowbit.attention.quantized import quantized_attention

MODES = ("mul", "amla", "amla-bf16")
TOL = {"mul": 2e-6, "amla": 2e-6, "amla-bf16": 4e-3}
BIG = 2.0**64  # q·2^64 and k·2^64: |q·k| ~ 2^128·5 is beyond float32 (max ~2^128)


def rel(x, ref):
    return float((x.double() - ref).norm() / ref.norm())


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def big_inputs(d=16, dv=8, sk=40, seed=1):
    q, k, v = rand(2, 4, 3, d, seed=seed), rand(2, 2, sk, d, seed=seed + 1), rand(2, 2, sk, dv, seed=seed + 2)
    return q * BIG, k * BIG, v


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("causal", [False, True])
def test_float32_overflowing_products_with_a_small_scale_match_the_reference(mode, causal):
    """q·k overflows float32 but scale·q·k is ordinary: the softmax is far from one-hot and must be right."""
    q, k, v = big_inputs()
    scale = 0.25 / BIG**2
    ref = attention_reference(q, k, v, causal=causal, scale=scale)
    assert bool(torch.isinf(torch.matmul(q[:, :2], k.transpose(-1, -2))).any())  # float32 really overflows
    out, trace = flash_attention_traced(q, k, v, causal=causal, scale=scale, block_k=8, rescale=mode)
    assert trace.shifted and not out.isnan().any()
    assert rel(out, ref) < TOL[mode]
    # the same attention at ordinary magnitude has the same accuracy
    small = flash_attention(q / BIG, k / BIG, v, causal=causal, scale=0.25, block_k=8, rescale=mode)
    assert rel(out, ref) < max(2.0 * rel(small, ref), 1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_scores_beyond_float32_match_the_reference_not_zero(mode):
    """scale·q·k itself is ~1e38..1e40: the float32 loop used to return zeros; now the reference's answer."""
    q, k, v = big_inputs(seed=5)
    ref = attention_reference(q, k, v)
    out, trace = flash_attention_traced(q, k, v, block_k=8, rescale=mode)
    assert trace.shifted
    assert ref.abs().max() > 0.1 and not out.isnan().any()
    assert rel(out, ref) < TOL[mode]


@pytest.mark.parametrize("mode", MODES)
def test_overflow_with_masks_and_all_masked_rows(mode):
    q, k, v = big_inputs(seed=9)
    mask = torch.ones(2, 4, 3, 40, dtype=torch.bool)
    mask[:, :, 1] = False  # a row that sees no key stays zero
    mask[0, 0, 0, 10:30] = False
    scale = 0.5 / BIG**2
    ref = attention_reference(q, k, v, scale=scale, mask=mask)
    out, trace = flash_attention_traced(q, k, v, scale=scale, mask=mask, block_k=16, rescale=mode)
    assert trace.shifted and (out[:, :, 1] == 0).all() and not out.isnan().any()
    assert rel(out, ref) < TOL[mode]


def test_huge_negative_scores_are_not_treated_as_masked():
    """Every score of a row overflowing to -inf must not make the row look fully masked (zeros)."""
    q, k, v = rand(1, 1, 2, 8, seed=1), rand(1, 1, 12, 8, seed=2), rand(1, 1, 12, 4, seed=3)
    k = k.abs() * BIG
    q = -(q.abs() + 0.5) * BIG  # every q·k < 0 and beyond float32
    scale = 1.0 / BIG**2
    ref = attention_reference(q, k, v, scale=scale)
    out = flash_attention(q, k, v, scale=scale, block_k=4)
    assert ref.abs().max() > 0.05
    assert rel(out, ref) < 2e-6


def test_ordinary_inputs_do_not_take_the_float64_path():
    q, k, v = rand(1, 2, 3, 8), rand(1, 2, 20, 8, seed=1), rand(1, 2, 20, 8, seed=2)
    for mode in MODES:
        _, trace = flash_attention_traced(q, k, v, block_k=6, rescale=mode)
        assert not trace.shifted


def test_nan_inputs_keep_raising():
    q, k, v = big_inputs()
    q[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="q contains NaN"):
        flash_attention(q, k, v)


def test_loop_without_float64_scores_raises_a_clear_overflow_error():
    def scores(start, end):
        s = torch.zeros(1, 1, 2, end - start)
        s[..., 0] = float("inf")
        return s

    def pv(p, start, end):
        return torch.zeros(1, 1, 2, 3)

    with pytest.raises(OverflowError, match="overflow float32"):
        run_online_softmax(
            out_shape=(1, 1, 2, 3), seq_k=4, block_k=2, scores_fn=scores, pv_fn=pv, mask_fn=lambda s, e: None, amla=None
        )


@pytest.mark.parametrize("config", [AmlaConfig(), AMLA_KERNEL, AMLA_KERNEL_NO_COMPENSATION])
def test_amla_shift_far_below_the_exponent_range(config):
    """A score jump of ~1e6 gives Δn ~ -1.4e6: the shift must flush old O (not wrap the int32 units)."""
    q, k, v = rand(1, 2, 1, 16, seed=1), rand(1, 1, 64, 16, seed=2), rand(1, 1, 64, 8, seed=3)
    q[..., 0] = 1.0
    k[..., 0] = 0.0
    k[0, 0, 32:, 0] = 1e6 * 4.0  # scale 1/4: +1e6 in the logits from key 32 on
    ref = attention_reference(q, k, v)
    out, trace = flash_attention_traced(q, k, v, block_k=16, rescale=config)
    assert trace.min_shift < -1_000_000 and not trace.shifted
    fa = flash_attention(q, k, v, block_k=16)  # logits near 1e6 carry FP32 rounding in every variant
    assert rel(out, ref) <= max(1.5 * rel(fa, ref), 4e-3 if config.p_dtype != torch.float32 else 0.0)


# ----------------------------------------------------------------------------------------------------------
# quantized caches
# ----------------------------------------------------------------------------------------------------------

CACHES = [("int8", "channel", "token"), ("int8", "token", "channel"), ("mxfp4", "channel", "token")]


@pytest.mark.parametrize(("fmt", "kg", "vg"), CACHES)
@pytest.mark.parametrize("method", ["dequant", "msd"])
def test_quantized_attention_overflowing_scores_match_ordinary_magnitude(fmt, kg, vg, method):
    """Keys scaled by 2^64 and q by 2^64 give the same cache codes; with scale·2^-128 the attention is the same."""
    q, k, v = rand(1, 4, 3, 32, seed=1), rand(1, 2, 40, 32, seed=2), rand(1, 2, 40, 32, seed=3)
    big = quantize_kv(k * BIG, v, fmt, k_granularity=kg, v_granularity=vg)
    small = quantize_kv(k, v, fmt, k_granularity=kg, v_granularity=vg)
    ref = attention_reference(q, small.k.dequantize(torch.float64), small.v.dequantize(torch.float64), scale=0.5)
    out = quantized_attention(q * BIG, big, method=method, scale=0.5 / BIG**2, block_k=16)
    base = quantized_attention(q, small, method=method, scale=0.5, block_k=16)
    assert not out.isnan().any()
    assert rel(out, ref) < 1.05 * rel(base, ref) + 1e-6


# ----------------------------------------------------------------------------------------------------------
# empty batches
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("b", "sq"), [(0, 3), (0, 0), (2, 0)])
def test_flash_empty_batch_or_queries_give_empty_output(mode, b, sq):
    q, k, v = torch.zeros(b, 4, sq, 16), torch.zeros(b, 2, 9, 16), torch.zeros(b, 2, 9, 8)
    out, trace = flash_attention_traced(q, k, v, causal=True, block_k=4, rescale=mode)
    ref = attention_reference(q, k, v, causal=True)
    assert out.shape == ref.shape == (b, 4, sq, 8) and out.dtype == torch.float32
    assert trace.blocks == 0
    mask = torch.ones(b, 4, sq, 9, dtype=torch.bool)
    assert flash_attention(q, k, v, mask=mask, rescale=mode).shape == (b, 4, sq, 8)


def test_online_softmax_loop_accepts_empty_rows():
    out, trace = run_online_softmax(
        out_shape=(0, 2, 3, 4),
        seq_k=5,
        block_k=2,
        scores_fn=lambda s, e: torch.zeros(0, 2, 3, e - s),
        pv_fn=lambda p, s, e: torch.zeros(0, 2, 3, 4),
        mask_fn=lambda s, e: None,
        amla=AMLA_KERNEL,
    )
    assert out.shape == (0, 2, 3, 4) and trace.blocks == 3 and trace.max_jump == 0.0


def _empty_batch(cache: QuantizedKV) -> QuantizedKV:
    def cut(t: QuantizedTensor) -> QuantizedTensor:
        return QuantizedTensor(t.fmt, t.granularity, t.values[:0], t.scales[:0], t.codes)

    return QuantizedKV(cut(cache.k), cut(cache.v))


@pytest.mark.parametrize(("fmt", "kg", "vg"), CACHES)
@pytest.mark.parametrize("method", ["dequant", "msd"])
def test_quantized_attention_empty_batch(fmt, kg, vg, method):
    cache = _empty_batch(quantize_kv(rand(1, 2, 40, 32), rand(1, 2, 40, 32), fmt, k_granularity=kg, v_granularity=vg))
    q = torch.zeros(0, 4, 3, 32)
    out = quantized_attention(q, cache, method=method, causal=True, block_k=16)
    assert out.shape == (0, 4, 3, 32) and out.dtype == torch.float32


@pytest.mark.parametrize("mode", MODES)
def test_finite_scores_plus_a_huge_float_mask_overflowing(mode):
    """Scores near 1e38 plus a float mask of 3e38 reach +inf in float32 only after the mask is added."""
    x = torch.tensor([0.2, 1.5, 1.49, 0.7, 1.0, 1.2])
    q = torch.full((1, 1, 2, 1), 2.0**63)
    k = (x * 2.0**63).reshape(1, 1, 6, 1)
    v = rand(1, 1, 6, 3, seed=4)
    bias = torch.zeros(1, 1, 2, 6)
    bias[..., 0, 1] = -1.0e38  # row 0 stays finite: key 2 wins once key 1 is pushed down
    bias[..., 1, :] = 3.0e38  # row 1: every score overflows once the mask is added
    ref = attention_reference(q, k, v, scale=1.0, mask=bias)
    out, trace = flash_attention_traced(q, k, v, scale=1.0, mask=bias, block_k=4, rescale=mode)
    assert trace.shifted and not out.isnan().any()
    assert rel(out, ref) < TOL[mode]
