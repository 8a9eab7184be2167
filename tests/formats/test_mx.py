import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.formats import ELEMENT_FORMATS, pack_nibbles, quantize_mx, unpack_nibbles
from lowbit.formats.e8m0 import decode_e8m0, encode_e8m0
from tests.formats.reference import max_normal, ref_mx, ref_values

ELEMS = list(ELEMENT_FORMATS)
RULES = ["ocp", "ceil"]


def gaussian_blocks(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Gaussian data whose rows span 2^-40 .. 2^40 in scale, with a few outliers."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)) * np.exp2(rng.integers(-40, 40, (rows, 1)))
    x[rng.random((rows, cols)) < 0.01] *= 1000.0
    return x.astype(np.float32)


@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("rule", RULES)
def test_bit_exact_against_reference(elem, rule):
    x = gaussian_blocks(64, 128)
    mx = quantize_mx(torch.from_numpy(x), elem, scale_rule=rule)
    codes, e8m0, deq = ref_mx(x, elem, 32, rule)
    np.testing.assert_array_equal(mx.unpacked_codes().numpy(), codes)
    np.testing.assert_array_equal(mx.scale_exponents.numpy(), e8m0)
    np.testing.assert_array_equal(mx.dequantize(torch.float64).numpy(), deq)
    np.testing.assert_array_equal(mx.dequantize().numpy(), deq.astype(np.float32))  # exact in float32
    assert mx.codes.dtype == torch.uint8 and mx.scale_exponents.dtype == torch.uint8
    assert mx.scales().shape == (64, 4)
    assert mx.element_values().shape == x.shape


@pytest.mark.parametrize("elem", ELEMS)
def test_ceil_rule_never_saturates(elem):
    x = gaussian_blocks(32, 256, seed=1)
    mx = quantize_mx(torch.from_numpy(x), elem, scale_rule="ceil")
    f = ELEMENT_FORMATS[elem]
    scaled = torch.from_numpy(x).double().reshape(32, -1, 32) / mx.scales().double().unsqueeze(-1)
    assert float(scaled.abs().max()) <= f.max_normal
    # smallest such power of two: half the scale would overflow in every block
    assert bool(((scaled.abs().amax(-1) * 2) > f.max_normal).all())


def test_ocp_rule_saturates_e2m1_block_maximum():
    x = torch.tensor([7.0] + [0.0] * 31)  # floor(log2 7) - 2 = 0 -> X = 1, 7 saturates to 6
    mx = quantize_mx(x, "e2m1")
    assert mx.scale_exponents.tolist() == [127] and mx.dequantize()[0].item() == 6.0
    assert quantize_mx(x, "e2m1", scale_rule="ceil").dequantize()[0].item() == 8.0  # X = 2, 3.5 -> 4


def test_e2m1_packs_two_per_byte_low_nibble_first():
    x = torch.tensor([0.5, 6.0, -1.0, 0.0] * 8)
    mx = quantize_mx(x, "e2m1")
    assert mx.codes.shape == (16,)
    assert mx.codes[:2].tolist() == [0x1 | 0x7 << 4, 0xA | 0x0 << 4]
    c = torch.randint(0, 16, (3, 10), dtype=torch.uint8)
    assert torch.equal(unpack_nibbles(pack_nibbles(c)), c)
    packed_ref = np.asarray(c.numpy()[:, 0::2] | c.numpy()[:, 1::2] << 4, dtype=np.uint8)
    np.testing.assert_array_equal(pack_nibbles(c).numpy(), packed_ref)


@pytest.mark.parametrize("elem", ["e2m1", "e4m3"])
def test_axis_and_block_16(elem):
    x = gaussian_blocks(64, 48, seed=2)
    mx = quantize_mx(torch.from_numpy(x), elem, block=16, axis=0, scale_rule="ceil")
    codes, e8m0, deq = ref_mx(np.ascontiguousarray(x.T), elem, 16, "ceil")
    assert mx.axis == 0 and mx.scale_exponents.shape == (4, 48)
    assert mx.codes.shape == ((32 if elem == "e2m1" else 64), 48)
    np.testing.assert_array_equal(mx.unpacked_codes().numpy(), codes.T)
    np.testing.assert_array_equal(mx.scale_exponents.numpy(), e8m0.T)
    np.testing.assert_array_equal(mx.dequantize(torch.float64).numpy(), deq.T)
    # scales() broadcast after splitting the block axis
    values = mx.element_values().double().reshape(4, 16, 48) * mx.scales().double().unsqueeze(1)
    np.testing.assert_array_equal(values.reshape(64, 48).numpy(), deq.T)


def test_three_dims_middle_axis():
    x = gaussian_blocks(6, 64 * 5, seed=3).reshape(6, 64, 5)
    mx = quantize_mx(torch.from_numpy(x), "e3m2", axis=1)
    _, _, deq = ref_mx(np.ascontiguousarray(np.moveaxis(x, 1, -1)), "e3m2", 32, "ocp")
    np.testing.assert_array_equal(mx.dequantize(torch.float64).numpy(), np.moveaxis(deq, -1, 1))
    assert mx.scale_exponents.shape == (6, 2, 5)


def test_pad():
    x = torch.arange(1.0, 41.0)
    with pytest.raises(ValueError, match=r"size 40 along axis 0.*block=32.*pad=True"):
        quantize_mx(x, "e4m3")
    mx = quantize_mx(x, "e4m3", pad=True)
    assert mx.shape == (40,) and mx.codes.shape == (64,) and mx.scale_exponents.shape == (2,)
    full = quantize_mx(torch.cat([x, torch.zeros(24)]), "e4m3")
    assert torch.equal(mx.dequantize(), full.dequantize()[:40])
    assert mx.element_values().shape == (40,)


@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("rule", RULES)
def test_nan_inf_and_zero_blocks(elem, rule):
    x = torch.randn(4, 32)
    x[0, 3] = float("nan")
    x[1, 7] = float("inf")
    x[2] = 0.0
    x[2, 5] = -0.0
    mx = quantize_mx(x, elem, scale_rule=rule)
    assert mx.scale_exponents[:3, 0].tolist() == [255, 255, 0]
    deq = mx.dequantize()
    assert torch.isnan(deq[:2]).all() and torch.isfinite(deq[2:]).all()
    assert torch.equal(deq[2], torch.zeros(32)) and torch.signbit(deq[2, 5])
    assert torch.equal(deq[3], quantize_mx(x[3:], elem, scale_rule=rule).dequantize()[0])
    assert (mx.unpacked_codes()[:2] == 0).all() and torch.isnan(mx.scales()[:2]).all()


def test_tiny_and_huge_blocks_clamp():
    tiny = torch.full((32,), 1e-44)  # float32 subnormal: exponent clamps at -127
    mx = quantize_mx(tiny, "e4m3", scale_rule="ceil")
    assert mx.scale_exponents.tolist() == [0]
    np.testing.assert_array_equal(mx.dequantize().numpy(), ref_mx(tiny.numpy(), "e4m3", 32, "ceil")[2])
    huge = torch.full((32,), 3.0e38)
    for rule in RULES:
        np.testing.assert_array_equal(
            quantize_mx(huge, "e2m1", scale_rule=rule).dequantize(torch.float64).numpy(),
            ref_mx(huge.numpy(), "e2m1", 32, rule)[2],
        )
    big64 = torch.full((32,), 2.0**200, dtype=torch.float64)  # beyond E8M0: clamps at 127 and saturates
    mx = quantize_mx(big64, "e4m3", scale_rule="ceil")
    assert mx.scale_exponents.tolist() == [254]
    assert mx.dequantize(torch.float64)[0].item() == 448.0 * 2.0**127


def test_e8m0_against_ml_dtypes():
    e = torch.arange(-127, 128)
    codes = encode_e8m0(e)
    ref = np.exp2(e.numpy().astype(np.float64)).astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)
    np.testing.assert_array_equal(codes.numpy(), ref)
    all_codes = torch.arange(256, dtype=torch.uint8)
    ref_vals = all_codes.numpy().view(ml_dtypes.float8_e8m0fnu).astype(np.float32)
    np.testing.assert_array_equal(decode_e8m0(all_codes).numpy(), ref_vals)
    with pytest.raises(ValueError, match="exponent"):
        encode_e8m0(torch.tensor([128]))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=32, max_size=32),
    st.sampled_from(ELEMS),
    st.sampled_from(RULES),
)
def test_hypothesis_blocks(values, elem, rule):
    x = np.array(values, dtype=np.float32)
    mx = quantize_mx(torch.from_numpy(x), elem, scale_rule=rule)
    codes, e8m0, deq = ref_mx(x, elem, 32, rule)
    np.testing.assert_array_equal(mx.unpacked_codes().numpy(), codes)
    np.testing.assert_array_equal(mx.scale_exponents.numpy(), e8m0)
    np.testing.assert_array_equal(mx.dequantize(torch.float64).numpy(), deq)


def test_bits_per_element_and_max():
    assert quantize_mx(torch.ones(32), "e2m1").bits_per_element == 4.25
    assert quantize_mx(torch.ones(32), "e4m3").bits_per_element == 8.25
    assert max_normal("e3m2") == 28.0
    assert ref_values(np.array([0x7], np.uint8), "e2m1")[0] == 6.0


def test_bad_inputs():
    x = torch.ones(4, 32)
    with pytest.raises(ValueError, match="elem"):
        quantize_mx(x, "fp4")
    with pytest.raises(ValueError, match="scale_rule"):
        quantize_mx(x, "e2m1", scale_rule="floor")
    with pytest.raises(ValueError, match="block"):
        quantize_mx(x, "e2m1", block=0)
    with pytest.raises(ValueError, match="block must be even"):
        quantize_mx(x, "e2m1", block=1)
    with pytest.raises(ValueError, match="axis"):
        quantize_mx(x, "e2m1", axis=2)
    with pytest.raises(ValueError, match="size 4 along axis 0"):
        quantize_mx(x, "e2m1", axis=0)
    with pytest.raises(ValueError, match="empty"):
        quantize_mx(torch.ones(0, 32), "e4m3")
    with pytest.raises(TypeError, match="floating-point"):
        quantize_mx(torch.ones(32, dtype=torch.int64), "e4m3")
    with pytest.raises(TypeError, match="x must be"):
        quantize_mx([1.0] * 32, "e4m3")
    with pytest.raises(ValueError, match="at least one dimension"):
        quantize_mx(torch.tensor(1.0), "e4m3")


def test_bfloat16_and_float64_inputs_match_float32():
    x = torch.randn(8, 64).to(torch.bfloat16)
    for elem in ("e2m1", "e4m3"):
        ref = quantize_mx(x.float(), elem, scale_rule="ceil")
        for variant in (x, x.double(), x.float().numpy()):
            got = quantize_mx(variant, elem, scale_rule="ceil")
            assert torch.equal(got.codes, ref.codes) and torch.equal(got.scale_exponents, ref.scale_exponents)
