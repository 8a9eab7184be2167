import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.attention import attention_reference, flash_attention, flash_attention_traced
from lowbit.attention.amla import AMLA_KERNEL, AmlaConfig

MODES = ("mul", "amla", "amla-bf16")
TOL = {"mul": 2e-6, "amla": 2e-6, "amla-bf16": 4e-3}


def rel(x, ref):
    return float((x.double() - ref).norm() / ref.norm())


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("hq", "hk", "sq", "sk", "d", "dv", "causal", "block"),
    [
        (4, 4, 7, 7, 16, 16, True, 3),  # MHA causal prefill
        (8, 2, 5, 37, 32, 16, True, 8),  # GQA, chunked prefill (seq_q < seq_k), dv != d
        (6, 1, 1, 50, 24, 40, False, 16),  # MQA decode
        (2, 2, 3, 10, 8, 8, False, 64),  # one block larger than the sequence
        (2, 1, 1, 9, 8, 8, True, 1),  # block of one key
    ],
)
def test_flash_matches_float64(mode, hq, hk, sq, sk, d, dv, causal, block):
    q, k, v = rand(2, hq, sq, d, seed=1), rand(2, hk, sk, d, seed=2), rand(2, hk, sk, dv, seed=3)
    ref = attention_reference(q, k, v, causal=causal)
    out = flash_attention(q, k, v, causal=causal, block_k=block, rescale=mode)
    assert out.dtype == torch.float32 and out.shape == (2, hq, sq, dv)
    assert rel(out, ref) < TOL[mode]


def test_reference_matches_naive_softmax_with_repeated_heads():
    q, k, v = rand(1, 4, 3, 8, seed=1), rand(1, 2, 6, 8, seed=2), rand(1, 2, 6, 5, seed=3)
    kk, vv = k.double().repeat_interleave(2, 1), v.double().repeat_interleave(2, 1)
    s = q.double() @ kk.transpose(-1, -2) / 8**0.5
    want = torch.softmax(s, -1) @ vv
    torch.testing.assert_close(attention_reference(q, k, v), want, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    group=st.integers(1, 3),
    hk=st.integers(1, 2),
    sq=st.integers(1, 6),
    extra=st.integers(0, 20),
    block=st.integers(1, 12),
    causal=st.booleans(),
    mode=st.sampled_from(["mul", "amla"]),
    seed=st.integers(0, 1000),
)
def test_flash_property(group, hk, sq, extra, block, causal, mode, seed):
    sk = sq + extra
    q = rand(1, hk * group, sq, 8, seed=seed)
    k, v = rand(1, hk, sk, 8, seed=seed + 1), rand(1, hk, sk, 4, seed=seed + 2)
    ref = attention_reference(q, k, v, causal=causal)
    out = flash_attention(q, k, v, causal=causal, block_k=block, rescale=mode)
    assert (out.double() - ref).abs().max() < 1e-5


def test_amla_exact_agrees_with_multiply_rescale():
    q, k, v = rand(1, 16, 2, 64, seed=1), rand(1, 1, 700, 64, seed=2), rand(1, 1, 700, 32, seed=3)
    k[..., 0] += torch.linspace(0, 40, 700)  # running max keeps growing: many shifts
    q[..., 0] = 2.0
    fa = flash_attention(q, k, v, block_k=64)
    am, trace = flash_attention_traced(q, k, v, block_k=64, rescale="amla")
    assert trace.moved > 0 and trace.min_shift < -1
    assert rel(am, fa.double()) < 1e-6


@pytest.mark.parametrize("mode", MODES)
def test_all_masked_rows_are_zero_not_nan(mode):
    q, k, v = rand(1, 2, 4, 8), rand(1, 2, 20, 8), rand(1, 2, 20, 8)
    mask = torch.ones(1, 2, 4, 20, dtype=torch.bool)
    mask[:, :, 1] = False
    out = flash_attention(q, k, v, mask=mask, block_k=6, rescale=mode)
    ref = attention_reference(q, k, v, mask=mask)
    assert not out.isnan().any()
    assert (out[:, :, 1] == 0).all() and (ref[:, :, 1] == 0).all()
    assert rel(out, ref) < TOL[mode]


@pytest.mark.parametrize("mode", MODES)
def test_causal_rows_without_keys_and_minus_inf_bias(mode):
    q, k, v = rand(1, 2, 6, 8), rand(1, 2, 4, 8), rand(1, 2, 4, 8)
    out = flash_attention(q, k, v, causal=True, block_k=2, rescale=mode)  # seq_q > seq_k: first 2 rows see nothing
    assert not out.isnan().any() and (out[:, :, :2] == 0).all()
    bias = torch.zeros(1, 1, 6, 4)
    bias[..., 0] = float("-inf")  # -inf logits
    bias[..., 3, :] = float("-inf")
    out = flash_attention(q, k, v, mask=bias, block_k=3, rescale=mode)
    ref = attention_reference(q, k, v, mask=bias)
    assert not out.isnan().any() and (out[:, :, 3] == 0).all()
    assert rel(out, ref) < TOL[mode]


@pytest.mark.parametrize("config", [AmlaConfig(), AMLA_KERNEL])
def test_amla_exponent_underflow_and_clamp_stay_correct(config):
    """A jump of +200 in the scores shifts old O by ~2^-288: every old entry underflows and must vanish."""
    q, k, v = rand(1, 4, 1, 16, seed=1), rand(1, 1, 96, 16, seed=2), rand(1, 1, 96, 8, seed=3)
    q[..., 0] = 1.0
    k[..., 0] = 0.0
    k[0, 0, 48:, 0] = 200.0 * 4.0  # scale 1/4: +200 in the logits from key 48 on
    ref = attention_reference(q, k, v)
    out, trace = flash_attention_traced(q, k, v, block_k=16, rescale=config)
    assert trace.min_shift < -200
    assert not out.isnan().any()
    fa = flash_attention(q, k, v, block_k=16)  # logits near 200 carry ~1e-5 FP32 rounding in any variant
    assert rel(out, ref) < (1.5 * rel(fa, ref) if config.p_dtype == torch.float32 else 4e-3)


def test_amla_kernel_clamp_counts_large_jumps():
    q, k, v = rand(1, 4, 1, 16, seed=1), rand(1, 1, 64, 16, seed=2), rand(1, 1, 64, 8, seed=3)
    q[..., 0] = 1.0
    k[..., 0] = 0.0
    k[0, 0, 32:, 0] = 25.0 * 4.0  # a 25 > 20.8 jump: Δn ~ -36 < -30
    _, trace = flash_attention_traced(q, k, v, block_k=16, rescale=AMLA_KERNEL)
    assert trace.clamped == 4


def test_empty_query_sequence_gives_empty_output():
    out = flash_attention(torch.zeros(1, 2, 0, 8), rand(1, 2, 5, 8), rand(1, 2, 5, 3))
    assert out.shape == (1, 2, 0, 3)


@pytest.mark.parametrize(
    ("q", "k", "v", "match"),
    [
        (rand(1, 3, 1, 8), rand(1, 2, 4, 8), rand(1, 2, 4, 8), "multiple of k/v heads"),
        (rand(1, 2, 1, 8), rand(1, 2, 4, 8), rand(1, 1, 4, 8), "same number of heads"),
        (rand(1, 2, 1, 8), rand(1, 2, 4, 6), rand(1, 2, 4, 8), "head dims differ"),
        (rand(1, 2, 1, 8), rand(1, 2, 4, 8), rand(1, 2, 5, 8), "sequence lengths differ"),
        (rand(1, 2, 1, 8), rand(1, 2, 0, 8), rand(1, 2, 0, 8), "empty sequence"),
        (rand(2, 2, 1, 8), rand(1, 2, 4, 8), rand(1, 2, 4, 8), "batch sizes differ"),
        (rand(2, 1, 8), rand(1, 2, 4, 8), rand(1, 2, 4, 8), "q must have 4 dimensions"),
    ],
)
def test_bad_shapes_raise_naming_the_argument(q, k, v, match):
    with pytest.raises(ValueError, match=match):
        flash_attention(q, k, v)
    with pytest.raises(ValueError, match=match):
        attention_reference(q, k, v)


def test_bad_values_and_options_raise():
    q, k, v = rand(1, 2, 1, 8), rand(1, 2, 4, 8), rand(1, 2, 4, 8)
    bad = k.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="k contains NaN"):
        flash_attention(q, bad, v)
    with pytest.raises(ValueError, match="block_k"):
        flash_attention(q, k, v, block_k=0)
    with pytest.raises(ValueError, match="rescale"):
        flash_attention(q, k, v, rescale="div")
    with pytest.raises(ValueError, match="scale"):
        flash_attention(q, k, v, scale=-1.0)
    with pytest.raises(ValueError, match="does not broadcast"):
        flash_attention(q, k, v, mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask contains NaN"):
        flash_attention(q, k, v, mask=torch.full((1, 4), float("nan")))
    with pytest.raises(ValueError, match="p_dtype"):
        flash_attention(q, k, v, rescale="amla", p_dtype=torch.bfloat16)
    with pytest.raises(TypeError, match=r"q must be a torch\.Tensor"):
        flash_attention(q.numpy(), k, v)
