import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lowbit.formats import IntQuantized, pack_nibbles, quantize_int, unpack_nibbles


def ref_int(x: np.ndarray, bits: int, granularity: str, group_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """numpy float64 reference: scale = float32(amax/qmax) (1 for zero groups), q = clip(rint(x/scale))."""
    qmax = 2 ** (bits - 1) - 1
    x = x.astype(np.float64)
    if granularity == "tensor":
        g = x.reshape(1, -1)
    elif granularity == "group":
        g = x.reshape(*x.shape[:-1], -1, group_size)
    else:
        g = x
    amax = np.abs(g).max(-1, keepdims=True)
    scale = (amax / qmax).astype(np.float32).astype(np.float64)
    scale = np.where(amax == 0, 1.0, np.where(scale == 0, 2.0**-149, scale))  # the documented underflow rule
    q = np.clip(np.rint(g / scale), -qmax, qmax).astype(np.int8).reshape(x.shape)
    return q, scale


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group", "token"])
def test_against_float64_reference(bits, granularity):
    rng = np.random.default_rng(bits)
    x = (rng.standard_normal((16, 256)) * np.exp2(rng.integers(-10, 10, (16, 1)))).astype(np.float32)
    x[3] = 0.0
    r = quantize_int(torch.from_numpy(x), bits=bits, granularity=granularity, group_size=64)
    q, scale = ref_int(x, bits, granularity, 64)
    assert isinstance(r, IntQuantized) and r.q.dtype == torch.int8 and r.scale.dtype == torch.float32
    np.testing.assert_array_equal(r.q.numpy(), q)
    expected_shape = {"tensor": (), "channel": (16, 1), "token": (16, 1), "group": (16, 4)}[granularity]
    assert tuple(r.scale.shape) == expected_shape
    np.testing.assert_array_equal(r.scale.numpy().reshape(-1), scale.astype(np.float32).reshape(-1))
    deq = r.dequantize().double()
    assert torch.isfinite(deq).all()
    # |x - q·s| <= s/2 (plus the float32 rounding of the product)
    err = (deq - torch.from_numpy(x).double()).abs()
    assert bool((err <= r.expanded_scale().double() * 0.5 * (1 + 2**-20) + deq.abs() * 2**-24).all())
    if granularity != "tensor":
        assert torch.equal(r.q[3], torch.zeros(256, dtype=torch.int8)) and torch.equal(deq[3], torch.zeros(256))
    assert int(r.q.abs().max()) == r.qmax


def test_round_half_to_even():
    x = torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5])  # amax 127 -> scale 1
    assert quantize_int(x).q.tolist() == [127, 0, 2, 2, 0, -2, -2]


def test_zero_and_underflowing_groups():
    z = quantize_int(torch.zeros(2, 8), granularity="channel")
    assert z.scale.flatten().tolist() == [1.0, 1.0] and torch.equal(z.dequantize(), torch.zeros(2, 8))
    tiny = quantize_int(torch.tensor([[1e-45, -1e-45]]), granularity="token")
    assert tiny.scale.item() == 2.0**-149 and tiny.q.tolist() == [[1, -1]]
    assert torch.equal(tiny.dequantize(), torch.tensor([[1e-45, -1e-45]]))


def test_int4_packing():
    pairs = torch.cartesian_prod(torch.arange(-8, 8), torch.arange(-8, 8)).to(torch.int8)  # every pair
    packed = pack_nibbles(pairs)
    assert packed.dtype == torch.uint8 and packed.shape == (256, 1)
    assert torch.equal(unpack_nibbles(packed, signed=True), pairs)
    lo, hi = pairs[:, 0].numpy().astype(np.int64) & 0xF, pairs[:, 1].numpy().astype(np.int64) & 0xF
    np.testing.assert_array_equal(packed[:, 0].numpy(), (lo | hi << 4).astype(np.uint8))
    r = quantize_int(torch.randn(4, 64), bits=4, granularity="group", group_size=32)
    assert torch.equal(unpack_nibbles(r.packed(), signed=True), r.q) and r.packed().shape == (4, 32)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(-(2.0**100), 2.0**100, width=32), min_size=8, max_size=8),
    st.sampled_from([4, 8]),
)
@example(values=[0.0] * 7 + [2.0**-149], bits=4)  # amax/qmax underflows float32: scale 2^-149, q = 1
def test_hypothesis_matches_reference(values, bits):
    x = np.array(values, dtype=np.float32).reshape(2, 4)
    r = quantize_int(x, bits=bits, granularity="token")
    q, _ = ref_int(x, bits, "token")
    np.testing.assert_array_equal(r.q.numpy(), q)


def test_bad_inputs():
    with pytest.raises(ValueError, match="bits"):
        quantize_int(torch.ones(4), bits=3)
    with pytest.raises(ValueError, match="granularity"):
        quantize_int(torch.ones(4), granularity="row")
    with pytest.raises(ValueError, match="group_size=3"):
        quantize_int(torch.ones(2, 8), granularity="group", group_size=3)
    with pytest.raises(ValueError, match="at least 2 dims"):
        quantize_int(torch.ones(8), granularity="channel")
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_int(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="empty"):
        quantize_int(torch.ones(0))
    with pytest.raises(TypeError, match="floating-point"):
        quantize_int(torch.ones(4, dtype=torch.int8))
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        pack_nibbles(torch.tensor([9, 0], dtype=torch.int8))
    with pytest.raises(ValueError, match="even-length"):
        pack_nibbles(torch.tensor([1, 0, 1], dtype=torch.int8))
    with pytest.raises(TypeError, match="packed"):
        unpack_nibbles(torch.tensor([1], dtype=torch.int8), signed=True)
    with pytest.raises(ValueError, match="packed"):
        quantize_int(torch.ones(2, 2)).packed()
