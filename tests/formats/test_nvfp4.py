import ml_dtypes
import numpy as np
import pytest
import torch

from lowbit.formats import quantize_nvfp4
from tests.formats.reference import ref_codes, ref_values


def ref_nvfp4(x: np.ndarray, global_scale: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy float64 + ml_dtypes reference along the last axis (finite input)."""
    xb = x.astype(np.float64).reshape(*x.shape[:-1], -1, 16)
    amax_b = np.abs(xb).max(-1, keepdims=True)
    g = np.float64(np.float32(np.abs(x).max() / (448.0 * 6.0))) if global_scale else 1.0
    sb = np.clip(amax_b / (6.0 * g), -448, 448).astype(ml_dtypes.float8_e4m3fn)
    total = sb.astype(np.float64) * g
    safe = np.where(total == 0, 1.0, total)
    codes = np.where(total == 0, 0, ref_codes(xb / safe, "e2m1"))
    deq = ref_values(codes, "e2m1") * total
    return codes.reshape(x.shape), sb.view(np.uint8)[..., 0], deq.reshape(x.shape)


@pytest.mark.parametrize("global_scale", [True, False])
def test_against_reference(global_scale):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((32, 128)) * np.exp2(rng.integers(-6, 6, (32, 1)))).astype(np.float32)
    q = quantize_nvfp4(torch.from_numpy(x), global_scale=global_scale)
    codes, scales, deq = ref_nvfp4(x, global_scale)
    unpacked = np.stack([q.codes.numpy() & 0xF, q.codes.numpy() >> 4], -1).reshape(x.shape)
    np.testing.assert_array_equal(unpacked, codes)
    np.testing.assert_array_equal(q.block_scales.numpy(), scales)
    np.testing.assert_array_equal(q.dequantize(torch.float64).numpy(), deq)
    assert q.bits_per_element == 4.5 and q.block_scales.shape == (32, 8)
    rel = np.linalg.norm(q.dequantize().numpy() - x) / np.linalg.norm(x)
    assert rel < 0.12  # E2M1 elements: about 3.2-3.5 bits on Gaussian data


def test_special_blocks_and_axis():
    x = torch.randn(3, 16, 2)
    x[0, 3, 0] = float("nan")
    x[1, :, 1] = 0.0
    q = quantize_nvfp4(x, axis=1)
    assert q.block_scales.shape == (3, 1, 2) and q.block_scales[0, 0, 0].item() == 0x7F
    d = q.dequantize()
    assert torch.isnan(d[0, :, 0]).all() and torch.isfinite(d[1:]).all() and torch.isfinite(d[0, :, 1]).all()
    assert torch.equal(d[1, :, 1], torch.zeros(16))
    zeros = quantize_nvfp4(torch.zeros(32))
    assert zeros.global_scale.item() == 1.0 and torch.equal(zeros.dequantize(), torch.zeros(32))


def test_bad_inputs():
    with pytest.raises(ValueError, match="size 20 along axis 0"):
        quantize_nvfp4(torch.ones(20))
    assert quantize_nvfp4(torch.ones(20), pad=True).dequantize().shape == (20,)
    with pytest.raises(ValueError, match="axis"):
        quantize_nvfp4(torch.ones(16), axis=1)
    with pytest.raises(TypeError, match="floating-point"):
        quantize_nvfp4(torch.ones(16, dtype=torch.int32))
