import numpy as np
import pytest
import torch

from lowbit.formats import FP8_DTYPES, fp8_cast, fp8_cast_native
from tests.formats.reference import ref_codes
from tests.formats.test_elements import midpoint_inputs, same_codes, special_inputs


def inputs() -> torch.Tensor:
    every_half = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
    parts = [torch.from_numpy(special_inputs()), every_half]
    parts += [torch.from_numpy(midpoint_inputs(e)) for e in FP8_DTYPES]
    return torch.cat(parts)


@pytest.mark.parametrize("fmt", list(FP8_DTYPES))
@pytest.mark.parametrize("saturate", [True, False])
def test_fp8_cast_matches_ml_dtypes(fmt, saturate):
    x = inputs()
    out = fp8_cast(x, fmt, saturate=saturate)
    assert out.dtype == FP8_DTYPES[fmt]
    same_codes(out.view(torch.uint8), ref_codes(x.numpy(), fmt, saturate=saturate), fmt)


@pytest.mark.parametrize("fmt", list(FP8_DTYPES))
def test_saturating_cast_matches_torch_clamp_then_cast(fmt):
    x = inputs()
    m = 448.0 if fmt == "e4m3" else 57344.0
    ref = x.clamp(-m, m).to(FP8_DTYPES[fmt]).view(torch.uint8)
    ours = fp8_cast(x, fmt).view(torch.uint8)
    nan = torch.isnan(x)
    assert torch.equal(ours[~nan], ref[~nan]) and (ours[nan] == 0x7F).all()


@pytest.mark.parametrize("fmt", list(FP8_DTYPES))
@pytest.mark.parametrize("saturate", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_native_fast_path_matches_reference(fmt, saturate, dtype):
    x = inputs().to(dtype)
    fast = fp8_cast_native(x, fmt, saturate=saturate).view(torch.uint8)
    ref = fp8_cast(x, fmt, saturate=saturate).view(torch.uint8)
    same_codes(fast, ref.numpy(), fmt)


def test_bad_inputs():
    with pytest.raises(ValueError, match="fmt"):
        fp8_cast(torch.ones(2), "e3m4")
    with pytest.raises(TypeError, match="float64"):
        fp8_cast_native(torch.ones(2, dtype=torch.float64), "e4m3")
    with pytest.raises(ValueError, match="empty"):
        fp8_cast(torch.ones(0), "e5m2")
    assert fp8_cast(np.array([1.5], np.float32), "e4m3").float().tolist() == [1.5]
