"""The decode path of the INT8 MSD linear (``kernels._msd_int8_decode``, M <= DECODE_MAX_ROWS, and the compiled
operator of ``lowbit.msd.native`` on fbgemm) gives the same bits as the general path (row normalisation,
``decompose_int8_fast``, recombination), and the general path still runs for the rows the decode path hands back
(zero, NaN/Inf, extreme magnitudes)."""

from __future__ import annotations

import pytest
import torch

from lowbit import formats
from lowbit.msd import MSDConfig, MSDLinear
from lowbit.msd import kernels as kn
from lowbit.msd.isa import Int8Profile, int8_profile

PROFILES = [p for k in ("fbgemm", "onednn", "int_mm") if isinstance(p := int8_profile(k), Int8Profile)]
# A 7-bit profile (|q| <= 63, zero point 64, one more pass) is exact wherever the 8-bit one is: it covers the
# arithmetic of CPUs without VNNI on this one.
SEVEN_BIT = [Int8Profile(p.kernel, 63, 64, p.isa, True, "7-bit") for p in PROFILES if p.kernel != "int_mm"]


def _general(monkeypatch: pytest.MonkeyPatch, *args, **kwargs) -> torch.Tensor:
    with monkeypatch.context() as mp:
        mp.setattr(kn, "DECODE_MAX_ROWS", 0)
        return kn.msd_int8_linear(*args, **kwargs)


def _rows(m: int, k: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Rows spanning magnitudes 2^-58 .. 2^58 (inside the decode range), with a few exact powers of two."""
    x = torch.randn(m, k, generator=gen, dtype=torch.float64)
    scales = torch.tensor([2.0 ** (((7 * i) % 117) - 58) for i in range(m)], dtype=torch.float64)
    x = x * scales.unsqueeze(1)
    x[0, 0] = 2.0**-3  # a row whose max may be an exact power of two
    return x.to(dtype)


@pytest.mark.parametrize("profile", PROFILES + SEVEN_BIT, ids=lambda p: f"{p.kernel}-q{p.qmax}-zp{p.zero_point}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_decode_path_is_bit_identical_to_the_general_path(
    profile: Int8Profile, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = torch.Generator().manual_seed(3)
    k, n = 192, 24
    w = formats.quantize_int(torch.randn(n, k, generator=gen) * 0.05, 8, "channel")
    packed = kn.pack_int8_weight(w.q, w.scale.reshape(-1), profile.kernel)
    bias = torch.randn(n, generator=gen)
    fused = kn.fused_decode_op()[0] if profile.kernel == "fbgemm" else None
    for m in (1, 2, 5, kn.DECODE_MAX_ROWS):
        x = _rows(m, k, torch.float32, gen)
        if dtype == torch.float16:  # float16 cannot hold 2^±58: keep its rows in range
            x = x / x.abs().amax(dim=1, keepdim=True) * 3.0
        x = x.to(dtype)
        for passes in (1, 2, 3):
            for stacked in (True, False):
                args = (x, [(0, k, packed)], passes)
                kwargs = {"stacked": stacked, "bias": bias, "profile": profile}
                fast = kn.msd_int8_linear(*args, **kwargs)
                slow = _general(monkeypatch, *args, **kwargs)
                assert fast.dtype == slow.dtype == torch.float32
                assert torch.equal(fast, slow), (m, passes, stacked, (fast - slow).abs().max())
                if fused is not None:  # the compiled operator (test_native.py), 8- and 7-bit fbgemm profiles
                    assert torch.equal(kn.msd_int8_linear(*args, **kwargs, fused=fused), slow), (m, passes)


def test_decode_path_is_taken_and_skipped_where_it_should(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count calls: finite in-range rows take the decode path; a zero row, a NaN row or a row beyond 2^60 fall
    back to the general path (same results as with the decode path disabled)."""
    calls = {"decode": 0}
    real = kn._msd_int8_decode

    def counting(*a, **kw):
        out = real(*a, **kw)
        calls["decode"] += out is not None
        return out

    monkeypatch.setattr(kn, "_msd_int8_decode", counting)
    layer = MSDLinear.from_linear(torch.nn.Linear(64, 8), MSDConfig(decode_op="torch"))  # the torch-call path
    x = torch.randn(3, 64)
    layer(x)
    assert calls["decode"] == 1
    for bad_row in (torch.zeros(64), torch.full((64,), float("nan")), torch.full((64,), 2.0**70)):
        xb = x.clone()
        xb[1] = bad_row
        y = layer(xb)
        assert calls["decode"] == 1  # handed back
        ref = layer.reference_forward(xb.double())
        ok = torch.isfinite(ref[0]).all() and torch.allclose(y[0].double(), ref[0], rtol=1e-4, atol=1e-4)
        assert ok
        if torch.isnan(bad_row).any():
            assert torch.isnan(y[1]).all()  # NaN propagates per row, as documented
        else:
            assert torch.allclose(y[1].double(), ref[1], rtol=1e-4, atol=1e-4 * float(ref[1].abs().max() + 1))
    big = torch.randn(kn.DECODE_MAX_ROWS + 1, 64)
    layer(big)
    assert calls["decode"] == 1  # above DECODE_MAX_ROWS: general path
