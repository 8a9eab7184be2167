import math

import pytest
import torch

from lowbit.attention import AmlaConfig, mul_pow2_via_int_add
from lowbit.attention.amla import rescale_by_int_add
from lowbit.attention.mla import DEEPSEEK_V3_MLA, mla_decode_inputs


def full_range_values() -> torch.Tensor:
    """Every float32 exponent (subnormals included), random mantissas, both signs, and ±0."""
    g = torch.Generator().manual_seed(0)
    exps = torch.arange(0, 255, dtype=torch.int32).repeat_interleave(64)
    mant = torch.randint(0, 1 << 23, exps.shape, generator=g, dtype=torch.int32)
    sign = torch.randint(0, 2, exps.shape, generator=g, dtype=torch.int32) << 31
    bits = sign | (exps << 23) | mant
    x = bits.view(torch.float32)
    return torch.cat([x, torch.tensor([0.0, -0.0])])


@pytest.mark.parametrize("n", [-150, -40, -30, -7, -1, 0, 1, 5, 40, 120])
def test_int_add_is_bit_identical_to_multiplication_where_valid(n):
    x = full_range_values()
    bits = x.view(torch.int32)
    e = (bits >> 23) & 0xFF
    nonzero = (bits & 0x7FFFFFFF) != 0
    valid = ~nonzero | ((e >= 1) & (e + n >= 1) & (e + n <= 254))
    got = mul_pow2_via_int_add(x[valid], n)
    want = x[valid] * torch.tensor(2.0**n, dtype=torch.float64).to(torch.float32) if abs(n) < 127 else None
    if want is None:
        want = (x[valid].double() * 2.0**n).float()
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


def test_zero_and_negative_zero_are_kept():
    out = mul_pow2_via_int_add(torch.tensor([0.0, -0.0]), -1)
    assert out.view(torch.int32).tolist() == [0, -(2**31)]


def test_underflow_raises_or_flushes_to_signed_zero():
    x = torch.tensor([1.0, -1.0, 2.0**-130, 3.0])
    with pytest.raises(ValueError, match="underflow"):
        mul_pow2_via_int_add(x, -127)
    out = mul_pow2_via_int_add(x, -127, underflow="flush")
    assert out.view(torch.int32).tolist() == [0, -(2**31), 0, (1 << 23) | 0x400000]  # 3·2^-127 = 1.5·2^-126


def test_overflow_nan_and_types_raise():
    with pytest.raises(ValueError, match="overflows"):
        mul_pow2_via_int_add(torch.tensor([2.0**100]), 40)
    with pytest.raises(ValueError, match="NaN or Inf"):
        mul_pow2_via_int_add(torch.tensor([float("inf")]), -1)
    with pytest.raises(TypeError, match="float32"):
        mul_pow2_via_int_add(torch.tensor([1.0], dtype=torch.float64), -1)
    with pytest.raises(TypeError, match="integer"):
        mul_pow2_via_int_add(torch.tensor([1.0]), torch.tensor(1.5))


def test_per_row_shift_tensor():
    x = torch.tensor([[1.5, -3.0], [0.25, 0.0]])
    out = mul_pow2_via_int_add(x, torch.tensor([[-1], [3]]))
    assert out.tolist() == [[0.75, -1.5], [2.0, 0.0]]


def test_blind_add_breaks_zero_which_the_guard_avoids():
    o = torch.tensor([[0.0, 1.0]])
    blind = rescale_by_int_add(o, torch.tensor([-(1 << 23)], dtype=torch.int32), zero_guard="repair")
    assert blind[0, 0].item() == float("-inf")  # amla.md §2: 0 + (-1 << 23) is the bit pattern of -inf
    guarded = rescale_by_int_add(o, torch.tensor([-(1 << 23)], dtype=torch.int32))
    assert guarded.tolist() == [[0.0, 0.5]]


def test_config_validation():
    with pytest.raises(ValueError, match="compensate"):
        AmlaConfig(compensate=True)
    with pytest.raises(ValueError, match="clamp"):
        AmlaConfig(clamp=5)
    with pytest.raises(ValueError, match="zero_guard"):
        AmlaConfig(zero_guard="ignore")


def test_deepseek_v3_preset():
    s = DEEPSEEK_V3_MLA
    assert (s.heads, s.dim_qk, s.dim_v) == (128, 576, 512)
    mscale = 0.1 * math.log(40) + 1
    assert s.softmax_scale == pytest.approx(192**-0.5 * mscale**2)
    assert round(s.softmax_scale, 4) == 0.1352
    q, k, v = mla_decode_inputs(s, 64, seq_q=2)
    assert q.shape == (1, 128, 2, 576) and k.shape == (1, 1, 64, 576) and v.shape == (1, 1, 64, 512)
    assert torch.equal(v, k[..., :512])
    with pytest.raises(ValueError, match="pattern"):
        mla_decode_inputs(s, 64, pattern="spiky")
