"""The fast INT8 kernels against the exact reference (``lowbit.msd.gemm.int_gemm``, ``lowbit.msd.matmul``)."""

from __future__ import annotations

import pytest
import torch

from lowbit import formats
from lowbit.msd import matmul_error_bound, matmul_reference
from lowbit.msd.gemm import int_gemm
from lowbit.msd.isa import Int8Profile, int8_profile
from lowbit.msd.kernels import (
    AUTO_SMALL_ROWS,
    MAX_K,
    choose_kernel,
    decompose_int8_fast,
    encode_activations,
    gemm_with_profile,
    msd_int8_linear,
    pack_int8_weight,
    resolve_int8_kernel,
    resolve_int8_kernels,
)
from lowbit.msd.kernels_mx import mx_bands

# The kernels that have an exact profile on this CPU (under the ONEDNN_MAX_CPU_ISA / FBGEMM_ENABLE_INSTRUCTIONS
# caps in force: tests/msd/test_isa_caps.py reruns this file under each cap the machine allows).
PROFILES = {k: p for k in ("fbgemm", "onednn", "int_mm") if isinstance(p := int8_profile(k), Int8Profile)}
KERNELS = tuple(PROFILES)


def _activations(q: torch.Tensor, kernel: str) -> torch.Tensor:
    return encode_activations(q.to(torch.float32), PROFILES[kernel])


def _adversarial_int8(
    m: int, n: int, k: int, gen: torch.Generator, qmax: int = 127
) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.randint(-qmax, qmax + 1, (m, k), dtype=torch.int8, generator=gen)
    b = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=gen)
    a[0] = qmax  # u8 = 255 against ±127: saturates a 16-bit pair sum (vpmaddubsw) but not VNNI
    b[0] = 127
    b[1] = -127
    if m > 1:
        a[1] = -qmax
    b[2] = torch.where(torch.arange(k) % 2 == 0, 127, -127).to(torch.int8)
    return a, b


def test_some_kernel_is_exact_here() -> None:
    assert KERNELS, {k: int8_profile(k) for k in ("fbgemm", "onednn", "int_mm")}
    assert all(p.verified for p in PROFILES.values())


def test_auto_uses_the_first_exact_kernel_for_decode_and_the_second_above() -> None:
    auto = resolve_int8_kernels("auto")
    assert 1 <= len(auto) <= 2 and all(isinstance(p, Int8Profile) for p in auto)
    if "fbgemm" in KERNELS and "int_mm" in KERNELS and PROFILES["int_mm"].qmax == PROFILES["fbgemm"].qmax:
        assert [p.kernel for p in auto] == ["fbgemm", "int_mm"]  # one prepacked backend, int_mm on the stored weight
        assert choose_kernel(auto, 2).kernel == "fbgemm"
        assert choose_kernel(auto, AUTO_SMALL_ROWS + 1).kernel == "int_mm"
    for kernel in KERNELS:
        assert resolve_int8_kernels(kernel) == (PROFILES[kernel],) and choose_kernel((PROFILES[kernel],), 1).kernel
    with pytest.raises(ValueError, match="kernel"):
        resolve_int8_kernel("auto")


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("m", [1, 3, 17, 128])
def test_int8_gemm_is_exact(kernel: str, m: int) -> None:
    """Every kernel, fed as its profile says, against the float64 reference (never a fast kernel)."""
    gen = torch.Generator().manual_seed(m)
    k, n = 1000, 24  # |acc| <= 1000·127² < 2^24: float32 holds every int32 result exactly
    a, b = _adversarial_int8(m, n, k, gen, PROFILES[kernel].qmax)
    packed = pack_int8_weight(b, torch.ones(n), kernel)
    got = gemm_with_profile(_activations(a, kernel), packed, PROFILES[kernel])
    assert torch.equal(got.to(torch.int64), int_gemm(a, b))


@pytest.mark.parametrize("kernel", KERNELS)
def test_int8_gemm_is_correctly_rounded_beyond_2_24(kernel: str) -> None:
    """Large K: |acc| > 2^24, so the float32 output must equal float32(exact integer) (oneDNN's AMX path with a
    uint8 zero point does not; its profile feeds signed activations)."""
    gen = torch.Generator().manual_seed(11)
    a, b = _adversarial_int8(64, 32, 8192, gen, PROFILES[kernel].qmax)
    got = gemm_with_profile(_activations(a, kernel), pack_int8_weight(b, torch.ones(32), kernel), PROFILES[kernel])
    assert torch.equal(got, int_gemm(a, b).to(torch.float64).to(torch.float32))


@pytest.mark.parametrize("kernel", KERNELS)
def test_int8_gemm_applies_the_channel_scale(kernel: str) -> None:
    gen = torch.Generator().manual_seed(5)
    a, b = _adversarial_int8(4, 6, 64, gen, PROFILES[kernel].qmax)
    scale = torch.tensor([0.5, 0.25, 2.0, 1.0, 0.125, 4.0])  # powers of two: exact
    got = gemm_with_profile(_activations(a, kernel), pack_int8_weight(b, scale, kernel), PROFILES[kernel])
    assert torch.equal(got.double(), int_gemm(a, b).double() * scale.double())


@pytest.mark.skipif("fbgemm" not in KERNELS, reason="no exact fbgemm profile on this CPU")
def test_fbgemm_rounds_float_input_half_to_even() -> None:
    gen = torch.Generator().manual_seed(2)
    b = torch.randint(-127, 128, (8, 64), dtype=torch.int8, generator=gen)
    q = PROFILES["fbgemm"].qmax - 1
    t = torch.randint(-q, q, (5, 64), generator=gen).to(torch.float32) + 0.5  # all ties
    t[0, :8] = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, q + 0.5, -q - 0.5])
    got = gemm_with_profile(t, pack_int8_weight(b, torch.ones(8), "fbgemm"), PROFILES["fbgemm"])
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


@pytest.mark.parametrize("qmax", [127, 63])
@pytest.mark.parametrize("passes", [1, 2, 3])
def test_fast_decomposition_meets_the_bound(passes: int, qmax: int) -> None:
    """``|x - x̂| <= M/(2·q·(2q)^(p-1))`` for 8-bit (q = 127) and 7-bit (q = 63, no-VNNI CPUs) components."""
    x = _adversarial_x(torch.Generator().manual_seed(0))
    buf, inv = decompose_int8_fast(x, passes, qmax=qmax)
    assert buf.abs().max() <= qmax and torch.equal(buf, torch.round(buf))
    recon = sum(buf[i].double() / (2.0 * qmax) ** i for i in range(passes))
    inv64 = inv.double().unsqueeze(1)
    x_hat = torch.where(inv64 > 0, recon / torch.where(inv64 > 0, inv64, 1.0), 0.0)
    amax = x.double().abs().amax(dim=1, keepdim=True)
    bound = amax / (2 * qmax * (2.0 * qmax) ** (passes - 1))
    # the float32 scaling t_1 = x·(q/M) rounds once: at most M·2^-24 more (0.4 % of the 8-bit p = 2 bound; the
    # 7-bit p = 3 bound the no-VNNI path runs is M/2000376, still 32x below the 8-bit p = 2 one with it)
    assert ((x.double() - x_hat).abs() <= bound + amax * 2.0**-24 + 1e-300).all()


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
    """Kernels with the same component range give bit-identical outputs (they compute the same exact integers)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(9, 256, generator=gen)
    wq = _weights(33, 256, gen)
    outs: dict[int, list[torch.Tensor]] = {}
    for kernel in KERNELS:
        packed = pack_int8_weight(wq.q, wq.scale, kernel)
        for stacked in (True, False):
            outs.setdefault(PROFILES[kernel].qmax, []).append(
                msd_int8_linear(x, [(0, 256, packed)], 2, stacked=stacked)
            )
    for group in outs.values():
        for y in group[1:]:
            assert torch.equal(y, group[0])


def test_float32_recombination_keeps_the_second_component() -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(64, 1024, generator=gen)
    wq = _weights(128, 1024, gen)
    packed = pack_int8_weight(wq.q, wq.scale, KERNELS[0])
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
    packed = [(0, 128, pack_int8_weight(wq.q, wq.scale, KERNELS[0]))]
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
    mx = formats.quantize_mx(x, "e2m1", block=32, axis=-1, scale_rule="ceil")
    values, scales = mx.element_values(), mx.scales().double()
    ints, band_scale = mx_bands(values, scales, 32)
    assert ints.dtype == torch.int8 and ints.abs().max() <= 96
    recon = (ints.double() * band_scale.unsqueeze(-1)).sum(dim=0)
    assert torch.equal(recon, mx.dequantize(torch.float64))
    assert ints.shape[0] >= 3


@pytest.mark.parametrize("kernel", KERNELS)
def test_rows_far_outside_float32_scaling_match_the_reference(kernel: str) -> None:
    """Rows with max|x| below ~3.7e-37 used to give exactly 0, float64 rows near 1e300 and weights near 1e37
    -inf/NaN; rows are now normalised by powers of two, so each matches the float64 reference within the bound."""
    gen = torch.Generator().manual_seed(12)
    wq = _weights(24, 256, gen)
    packed = [(0, 256, pack_int8_weight(wq.q, wq.scale, kernel))]
    x = torch.randn(5, 256, generator=gen, dtype=torch.float64)
    x[0] *= 1e-38  # inv = 127/M overflowed float32
    x[1] *= 1e-44  # subnormal float32 row
    x[2] *= 1e300  # float64 only
    x[3] *= 1e-300
    y = msd_int8_linear(x, packed, 2, stacked=True)
    assert y.dtype == torch.float64 and bool(torch.isfinite(y).all())
    exact = matmul_reference(x, wq)
    bound = matmul_error_bound(x, wq, passes=2, accumulate=torch.float32)
    assert ((y - exact).abs() <= bound * 1.01 + exact.abs() * 2.0**-22).all()
    assert (y[0] != 0).any() and (y[1] != 0).any()
    # float32 rows: the tiny one is no longer zero
    y32 = msd_int8_linear(x[:2].float(), packed, 2, stacked=True)
    assert y32.dtype == torch.float32 and (y32[0] != 0).any()
    rel = (y32[0].double() - exact[0]).norm() / exact[0].norm()
    assert rel < 1e-4


@pytest.mark.parametrize("kernel", KERNELS)
def test_huge_weight_scales_stay_finite(kernel: str) -> None:
    gen = torch.Generator().manual_seed(13)
    w = torch.randn(16, 128, generator=gen, dtype=torch.float64) * 1e37
    wq = formats.quantize_int(w, 8, "channel")
    packed = pack_int8_weight(wq.q, wq.scale, kernel)
    assert packed.shift > 0
    x = torch.randn(3, 128, generator=gen)
    y = msd_int8_linear(x, [(0, 128, packed)], 2, stacked=True)
    exact = matmul_reference(x, wq)
    assert bool(torch.isfinite(y).all())
    assert float((y.double() - exact).norm() / exact.norm()) < 1e-4
    with pytest.raises(ValueError, match="finite"):
        pack_int8_weight(wq.q, torch.full((16,), float("inf")), kernel)


@pytest.mark.parametrize("kernel", KERNELS)
def test_empty_batch_gives_an_empty_result(kernel: str) -> None:
    wq = _weights(8, 64, torch.Generator().manual_seed(14))
    packed = [(0, 64, pack_int8_weight(wq.q, wq.scale, kernel))]
    y = msd_int8_linear(torch.zeros(0, 64), packed, 2, stacked=True, bias=torch.ones(8))
    assert y.shape == (0, 8)


def test_mx_bands_with_three_levels_fit_seven_bits() -> None:
    gen = torch.Generator().manual_seed(15)
    x = torch.randn(6, 256, generator=gen)
    x[1, :32] *= 2.0**-20
    mx = formats.quantize_mx(x, "e2m1", block=32, axis=-1, scale_rule="ceil")
    ints, band_scale = mx_bands(mx.element_values(), mx.scales().double(), 32, levels=3)
    assert ints.abs().max() <= 48
    recon = (ints.double() * band_scale.unsqueeze(-1)).sum(dim=0)
    assert torch.equal(recon, mx.dequantize(torch.float64))
