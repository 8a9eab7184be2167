import math

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.formats import (
    ELEMENT_FORMATS,
    decode_element,
    element_values,
    encode_element,
    round_to_element,
)
from tests.formats.reference import BITS, ML_DTYPES, all_codes, ref_codes, ref_values

ELEMS = list(ELEMENT_FORMATS)


def same_codes(ours: torch.Tensor, ref: np.ndarray, elem: str) -> None:
    """Codes equal bit for bit, except that any NaN code matches any NaN code."""
    ours_np = ours.numpy()
    nan_ours = np.isnan(ref_values(ours_np, elem))
    nan_ref = np.isnan(ref_values(ref, elem))
    np.testing.assert_array_equal(nan_ours, nan_ref)
    np.testing.assert_array_equal(ours_np[~nan_ref], ref[~nan_ref])


def test_table_matches_ml_dtypes_and_fields():
    assert sorted(ELEMENT_FORMATS) == ["e2m1", "e2m3", "e3m2", "e4m3", "e5m2"]
    for name, f in ELEMENT_FORMATS.items():
        fi = ml_dtypes.finfo(ML_DTYPES[name])
        assert f.bits == BITS[name] == 1 + f.exp_bits + f.man_bits
        assert f.max_normal == float(fi.max)
        assert f.min_normal == float(fi.smallest_normal) == 2.0 ** (1 - f.bias)
        assert f.min_subnormal == float(fi.smallest_subnormal) == 2.0 ** (1 - f.bias - f.man_bits)
        assert math.floor(math.log2(f.max_normal)) == f.emax
        vals = ref_values(all_codes(name), name)
        assert f.has_nan == bool(np.isnan(vals).any())
        assert f.has_inf == bool(np.isinf(vals).any())


@pytest.mark.parametrize("elem", ELEMS)
def test_decode_every_code(elem):
    codes = all_codes(elem)
    ours = decode_element(torch.from_numpy(codes), elem).numpy().astype(np.float64)
    ref = ref_values(codes, elem)
    np.testing.assert_array_equal(ours, ref)  # NaN == NaN for assert_array_equal
    ok = ~np.isnan(ref)
    np.testing.assert_array_equal(np.signbit(ours[ok]), np.signbit(ref[ok]))  # -0.0 decodes with its sign
    np.testing.assert_array_equal(element_values(elem).numpy(), ref)


@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("saturate", [True, False])
def test_reencode_every_code(elem, saturate):
    codes = all_codes(elem)
    values = ref_values(codes, elem).astype(np.float32)
    finite = np.isfinite(values)
    ours = encode_element(torch.from_numpy(values[finite]), elem, saturate=saturate)
    np.testing.assert_array_equal(ours.numpy(), codes[finite])
    np.testing.assert_array_equal(round_to_element(torch.from_numpy(values[finite]), elem).numpy(), values[finite])


def midpoint_inputs(elem: str) -> np.ndarray:
    """Every midpoint between neighbouring grid values, one float32 ulp either side, and both signs."""
    vals = np.unique(ref_values(all_codes(elem), elem))
    vals = vals[np.isfinite(vals) & (vals >= 0)]
    top = vals[-1]
    step = top - vals[-2]
    vals = np.append(vals, [top + step, top + 2 * step])  # the missing grid points above max_normal
    mids = ((vals[:-1] + vals[1:]) / 2).astype(np.float32)
    pts = np.concatenate([mids, np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(np.inf))])
    return np.concatenate([pts, -pts]).astype(np.float32)


@pytest.mark.parametrize("elem", ELEMS)
def test_midpoints_ties_to_even_saturating(elem):
    x = midpoint_inputs(elem)
    same_codes(encode_element(torch.from_numpy(x), elem), ref_codes(x, elem), elem)
    np.testing.assert_array_equal(
        round_to_element(torch.from_numpy(x), elem).numpy(), ref_values(ref_codes(x, elem), elem).astype(np.float32)
    )


@pytest.mark.parametrize("elem", ["e4m3", "e5m2"])
def test_midpoints_non_saturating(elem):
    x = midpoint_inputs(elem)
    same_codes(encode_element(torch.from_numpy(x), elem, saturate=False), ref_codes(x, elem, saturate=False), elem)


@pytest.mark.parametrize("elem", ["e2m1", "e2m3", "e3m2"])
def test_non_saturating_overflow_raises_without_inf_or_nan(elem):
    f = ELEMENT_FORMATS[elem]
    x = torch.tensor([f.max_normal * 1.25])
    with pytest.raises(ValueError, match="saturate=True"):
        encode_element(x, elem, saturate=False)
    # values within range are fine
    assert encode_element(torch.tensor([f.max_normal]), elem, saturate=False).tolist() == [(1 << (f.bits - 1)) - 1]


def special_inputs() -> np.ndarray:
    rng = np.random.default_rng(0)
    parts = [
        np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf], np.float32),
        np.array([1e-45, -1e-45, 1.1754942e-38, 1e-30, 3.4028235e38, -3.4028235e38, 1e30], np.float32),
        (rng.standard_normal(4000) * np.exp2(rng.integers(-20, 20, 4000))).astype(np.float32),
        np.exp2(rng.uniform(-30, 20, 4000)).astype(np.float32) * rng.choice([-1, 1], 4000).astype(np.float32),
        (rng.integers(1, 2**23, 2000) * 2.0**-149).astype(np.float32),  # float32 subnormals
    ]
    return np.concatenate(parts).astype(np.float32)


@pytest.mark.parametrize("elem", ELEMS)
def test_random_tiny_huge_special_saturating(elem):
    x = special_inputs()
    if not ELEMENT_FORMATS[elem].has_nan:
        x = x[~np.isnan(x)]
    same_codes(encode_element(torch.from_numpy(x), elem), ref_codes(x, elem), elem)
    out = round_to_element(torch.from_numpy(x), elem).numpy()
    ref = ref_values(ref_codes(x, elem), elem).astype(np.float32)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(np.signbit(out[~np.isnan(out)]), np.signbit(ref[~np.isnan(ref)]))


@pytest.mark.parametrize("elem", ["e4m3", "e5m2"])
def test_random_tiny_huge_special_non_saturating(elem):
    x = special_inputs()
    same_codes(encode_element(torch.from_numpy(x), elem, saturate=False), ref_codes(x, elem, saturate=False), elem)


def test_nan_and_inf_rules():
    x = torch.tensor([float("nan"), float("inf"), -float("inf")])
    assert encode_element(x, "e4m3").tolist() == [0x7F, 0x7E, 0xFE]  # NaN, ±448
    assert encode_element(x, "e4m3", saturate=False).tolist() == [0x7F, 0x7F, 0x7F]
    assert encode_element(x, "e5m2", saturate=False).tolist() == [0x7F, 0x7C, 0xFC]
    assert encode_element(x, "e5m2").tolist() == [0x7F, 0x7B, 0xFB]  # ±57344
    for elem in ("e2m1", "e2m3", "e3m2"):
        with pytest.raises(ValueError, match="no NaN"):
            encode_element(x[:1], elem)
        assert torch.isnan(round_to_element(x[:1], elem)).all()
    assert round_to_element(x[1:], "e2m1").tolist() == [6.0, -6.0]


@pytest.mark.parametrize("elem", ELEMS)
def test_float64_input_rounds_once(elem):
    """Values a hair off a midpoint in float64 must not be double-rounded through float32."""
    vals = np.unique(ref_values(all_codes(elem), elem))
    vals = vals[np.isfinite(vals) & (vals >= 0)][:-1]
    mids = (vals[:-1] + vals[1:]) / 2
    x = np.concatenate([mids * (1 + 2.0**-40), mids * (1 - 2.0**-40)])
    ours = round_to_element(torch.from_numpy(x), elem).numpy().astype(np.float64)
    lo = np.searchsorted(vals, x) - 1
    expect = np.where(x > mids[np.clip(lo, 0, len(mids) - 1)], vals[lo + 1], vals[lo])
    np.testing.assert_array_equal(ours, expect)


def test_numpy_and_low_precision_inputs_accepted():
    x = np.array([0.3, 1.7, -2.6], dtype=np.float32)
    expect = round_to_element(torch.from_numpy(x), "e2m1")
    assert torch.equal(round_to_element(x, "e2m1"), expect)
    assert torch.equal(round_to_element(x.astype(ml_dtypes.bfloat16), "e2m1"), expect)
    xb = torch.from_numpy(x).to(torch.bfloat16)
    assert torch.equal(round_to_element(xb, "e4m3"), round_to_element(xb.float(), "e4m3"))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=64),
    st.sampled_from(ELEMS),
)
def test_hypothesis_matches_ml_dtypes(values, elem):
    x = np.array(values, dtype=np.float32)
    same_codes(encode_element(torch.from_numpy(x), elem), ref_codes(x, elem), elem)


def test_bad_inputs():
    with pytest.raises(ValueError, match="elem"):
        round_to_element(torch.ones(2), "e3m3")
    with pytest.raises(ValueError, match="elem"):
        encode_element(torch.ones(2), 4)
    with pytest.raises(TypeError, match="floating-point"):
        round_to_element(torch.ones(2, dtype=torch.int32), "e4m3")
    with pytest.raises(TypeError, match=r"torch\.Tensor or numpy"):
        round_to_element([1.0, 2.0], "e4m3")
    with pytest.raises(ValueError, match="empty"):
        encode_element(torch.ones(0), "e4m3")
    with pytest.raises(TypeError, match="codes"):
        decode_element(torch.ones(2), "e4m3")
    with pytest.raises(ValueError, match="codes"):
        decode_element(torch.tensor([16], dtype=torch.uint8), "e2m1")
