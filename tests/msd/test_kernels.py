"""The fast INT8 kernels against the exact reference (``lowbit.msd.gemm.int_gemm``, ``lowbit.msd.matmul``)."""

from __future__ import annotations

import pytest
import torch

from lowbit import formats
from lowbit.msd import matmul_error_bound, matmul_reference
from lowbit.msd.gemm import int_gemm
from lowbit.msd.kernels import (
    MAX_K,
    available_int8_kernels,
    choose_kernel,
    decompose_int8_fast,
    int8_gemm,
    msd_int8_linear,
    pack_int8_weight,
    resolve_int8_kernel,
    resolve_int8_kernels,
)
from lowbit.msd.kernels_mx import mx_bands

KERNELS = available_int8_kernels()


def _activations(q: torch.Tensor, kernel: str) -> torch.Tensor:
    if kernel == "fbgemm":
        return q.to(torch.float32)
    if kernel == "onednn":
        return (q.to(torch.int16) + 128).to(torch.uint8)
    return q


def _adversarial_int8(m: int, n: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=gen)
    b = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=gen)
    a[0] = 127  # u8 = 255 against ±127: saturates a 16-bit pair sum (vpmaddubsw) but not VNNI
    b[0] = 127
    b[1] = -127
    if m > 1:
        a[1] = -127
    b[2] = torch.where(torch.arange(k) % 2 == 0, 127, -127).to(torch.int8)
    return a, b


def test_auto_uses_fbgemm_for_decode_and_onednn_above() -> None:
    assert resolve_int8_kernels("auto") == ("fbgemm", "onednn")
    assert choose_kernel(("fbgemm", "onednn"), 2) == "fbgemm"
    assert choose_kernel(("fbgemm", "onednn"), 16) == "onednn"
    assert resolve_int8_kernels("int_mm") == ("int_mm",) and choose_kernel(("int_mm",), 1) == "int_mm"
    with pytest.raises(ValueError, match="kernel"):
        resolve_int8_kernel("auto")


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("m", [1, 3, 17])
def test_int8_gemm_is_exact(kernel: str, m: int) -> None:
    gen = torch.Generator().manual_seed(m)
    k, n = 1000, 24  # |acc| <= 1000·127² < 2^24: float32 holds every int32 result exactly
    a, b = _adversarial_int8(m, n, k, gen)
    packed = pack_int8_weight(b, torch.ones(n), kernel)
    got = int8_gemm(_activations(a, kernel), packed)
    assert torch.equal(got.to(torch.int64), int_gemm(a, b))


@pytest.mark.parametrize("kernel", KERNELS)
def test_int8_gemm_applies_the_channel_scale(kernel: str) -> None:
    gen = torch.Generator().manual_seed(5)
    a, b = _adversarial_int8(4, 6, 64, gen)
    scale = torch.tensor([0.5, 0.25, 2.0, 1.0, 0.125, 4.0])  # powers of two: exact
    got = int8_gemm(_activations(a, kernel), pack_int8_weight(b, scale, kernel))
    assert torch.equal(got.double(), int_gemm(a, b).double() * scale.double())


def test_fbgemm_rounds_float_input_half_to_even() -> None:
    gen = torch.Generator().manual_seed(2)
    b = torch.randint(-127, 128, (8, 64), dtype=torch.int8, generator=gen)
    t = torch.randint(-126, 126, (5, 64), generator=gen).to(torch.float32) + 0.5  # all ties
    t[0, :8] = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5])
    got = int8_gemm(t, pack_int8_weight(b, torch.ones(8), "fbgemm"))
    want = int_gemm(torch.round(t).to(torch.int8), b)  # torch.round is round-half-to-even
    assert torch.equal(got.to(torch.int64), want)


def _adversarial_x(gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(8, 300, generator=gen)
    x[1] = 0.0  # all-zero row
    x[2] = 0.0
    x[2, 17] = -3.5  # single outlier
    x[3] = torch.where(torch.arange(300) % 2 == 0, 1.0, -1.0)  # ±M ties
    x[4] = x[4] * 1e-30  # tiny
    x[5, :10] = 1e4  # large outliers
    x[6] = (torch.arange(300) - 150) / 127.0 * 2.0  # values on the (k + 1/2)·s grid
    return x


@pytest.mark.parametrize("passes", [1, 2])
def test_fast_decomposition_meets_the_bound(passes: int) -> None:
    x = _adversarial_x(torch.Generator().manual_seed(0))
    buf, inv = decompose_int8_fast(x, passes, round_last=True)
    assert buf.abs().max() <= 127 and torch.equal(buf, torch.round(buf))
    recon = sum(buf[i].double() / 254.0**i for i in range(passes))
    inv64 = inv.double().unsqueeze(1)
    x_hat = torch.where(inv64 > 0, recon / torch.where(inv64 > 0, inv64, 1.0), 0.0)
    amax = x.double().abs().amax(dim=1, keepdim=True)
    bound = amax / (2 * 127 * 254.0 ** (passes - 1))
    # float32 scaling t = x·(127/M) adds at most 127·2^-24 in units of s1: below 0.4 % of the p = 2 bound
    assert ((x.double() - x_hat).abs() <= bound * 1.01 + 1e-300).all()


def _weights(n: int, k: int, gen: torch.Generator) -> formats.IntQuantized:
    return formats.quantize_int(torch.randn(n, k, generator=gen) * 0.02, 8, "channel")


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("stacked", [True, False])
def test_msd_linear_within_the_reference_bound(kernel: str, stacked: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    x = _adversarial_x(gen)
    wq = _weights(40, 300, gen)
    packed = pack_int8_weight(wq.q, wq.scale, kernel)
    y = msd_int8_linear(x, [(0, 300, packed)], 2, stacked=stacked)
    exact = matmul_reference(x, wq)
    bound = matmul_error_bound(x, wq, passes=2, accumulate=torch.float32)
    assert ((y.double() - exact).abs() <= bound * 1.01 + 1e-30).all()


def test_stacked_and_split_are_bit_identical_and_kernels_agree() -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(9, 256, generator=gen)
    wq = _weights(33, 256, gen)
    outs = []
    for kernel in KERNELS:
        packed = pack_int8_weight(wq.q, wq.scale, kernel)
        for stacked in (True, False):
            outs.append(msd_int8_linear(x, [(0, 256, packed)], 2, stacked=stacked))
    for y in outs[1:]:
        assert torch.equal(y, outs[0])


def test_float32_recombination_keeps_the_second_component() -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(64, 1024, generator=gen)
    wq = _weights(128, 1024, gen)
    packed = pack_int8_weight(wq.q, wq.scale, "fbgemm")
    exact = matmul_reference(x, wq)

    def rel(p: int) -> float:
        y = msd_int8_linear(x, [(0, 1024, packed)], p, stacked=True)
        return float((y.double() - exact).norm() / exact.norm())

    one, two = rel(1), rel(2)
    assert two < one / 100  # the 2nd component brings ~8 more bits (254x); float32 rounding would cap it
    assert two < 1e-4


def test_non_finite_rows_are_nan_and_other_rows_unaffected() -> None:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(4, 128, generator=gen)
    wq = _weights(16, 128, gen)
    packed = [(0, 128, pack_int8_weight(wq.q, wq.scale, "fbgemm"))]
    clean = msd_int8_linear(x, packed, 2, stacked=True)
    bad = x.clone()
    bad[1, 5] = float("nan")
    bad[2, 0] = float("inf")
    y = msd_int8_linear(bad, packed, 2, stacked=True)
    assert torch.isnan(y[1]).all() and torch.isnan(y[2]).all()
    assert torch.equal(y[[0, 3]], clean[[0, 3]])
    zero = msd_int8_linear(torch.zeros(2, 128), packed, 2, stacked=False, bias=torch.ones(16))
    assert torch.equal(zero, torch.ones(2, 16))


def test_pack_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="int8"):
        pack_int8_weight(torch.zeros(2, 4), torch.ones(2), "fbgemm")
    with pytest.raises(ValueError, match="scale"):
        pack_int8_weight(torch.zeros(2, 4, dtype=torch.int8), torch.ones(3), "fbgemm")
    with pytest.raises(ValueError, match="exceeds"):
        pack_int8_weight(torch.zeros(1, MAX_K + 1, dtype=torch.int8), torch.ones(1), "int_mm")
    with pytest.raises(ValueError, match="kernel"):
        pack_int8_weight(torch.zeros(2, 4, dtype=torch.int8), torch.ones(2), "avx9000")


def test_mx_bands_are_exact() -> None:
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(6, 256, generator=gen)
    x[1, :32] *= 2.0**-20  # a block far below the row maximum: several bands
    x[2, 64:96] *= 2.0**9
    x[3] = 0.0
    mx = formats.mx_quantize(x, "e2m1", block=32, axis=-1, scale_rule="ceil")
    values, scales = mx.element_values(), mx.scales().double()
    ints, band_scale = mx_bands(values, scales, 32)
    assert ints.dtype == torch.int8 and ints.abs().max() <= 96
    recon = (ints.double() * band_scale.unsqueeze(-1)).sum(dim=0)
    assert torch.equal(recon, mx.dequantize(torch.float64))
    assert ints.shape[0] >= 3
