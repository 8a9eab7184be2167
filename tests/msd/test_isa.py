"""ISA detection and kernel profiles (``lowbit.msd.isa``): caps, predictions, the self-check and its fallback."""

from __future__ import annotations

import pytest
import torch

from lowbit.msd import isa
from lowbit.msd.isa import CpuFeatures, Int8Profile, int8_profile, kernel_isa, profile_report

AMX = CpuFeatures(avx2=True, avx512=True, vnni=True, avx512_bf16=True, amx_int8=True)
VNNI = CpuFeatures(avx2=True, avx512=True, vnni=True, avx512_bf16=False, amx_int8=False)
AVX2 = CpuFeatures(avx2=True, avx512=False, vnni=False, avx512_bf16=False, amx_int8=False)


@pytest.fixture(autouse=True)
def _fresh_cache():
    isa._cached_profile.cache_clear()
    yield
    isa._cached_profile.cache_clear()


def test_cpu_classes() -> None:
    assert (AMX.int8_class, VNNI.int8_class, AVX2.int8_class) == ("amx", "vnni", "avx2")
    assert CpuFeatures.detect().int8_class in ("amx", "vnni", "avx2")


@pytest.mark.parametrize(
    ("env", "features", "onednn", "fbgemm"),
    [
        ({}, AMX, "amx", "vnni"),  # fbgemm has no AMX path
        ({}, VNNI, "vnni", "vnni"),
        ({}, AVX2, "avx2", "avx2"),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, AMX, "vnni", "vnni"),
        ({"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}, AMX, "vnni", "vnni"),
        ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, AMX, "avx2", "vnni"),
        ({"DNNL_MAX_CPU_ISA": "AVX512_CORE"}, VNNI, "avx2", "vnni"),
        ({"ONEDNN_MAX_CPU_ISA": "AVX2_VNNI"}, AMX, "vnni", "vnni"),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, VNNI, "vnni", "vnni"),  # a cap never raises the class
        ({"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}, AMX, "amx", "avx2"),
        ({"FBGEMM_ENABLE_INSTRUCTIONS": "AVX512_E1"}, AMX, "amx", "vnni"),
        ({"FBGEMM_ENABLE_INSTRUCTIONS": "AVX512"}, VNNI, "vnni", "avx2"),
    ],
)
def test_kernel_isa_follows_the_backend_caps(monkeypatch, env, features, onednn, fbgemm) -> None:
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert kernel_isa("onednn", features) == onednn
    assert kernel_isa("int_mm", features) == onednn
    assert kernel_isa("fbgemm", features) == fbgemm


def test_predicted_profiles() -> None:
    assert isa._predicted("fbgemm", "vnni") == (127, 128)
    assert isa._predicted("onednn", "amx") == (127, 0)  # signed activations on AMX
    assert isa._predicted("onednn", "vnni") == (127, 128)
    assert isa._predicted("fbgemm", "avx2") == (63, 64)  # u8 <= 127: pairs of products fit int16
    assert isa._predicted("int_mm", "avx2") is None


def test_seven_bit_profile_needs_one_more_pass() -> None:
    p7 = Int8Profile("fbgemm", 63, 64, "avx2", True, "")
    p8 = Int8Profile("fbgemm", 127, 128, "vnni", True, "")
    for passes in (1, 2, 3, 4):
        assert p8.passes_for(passes) == passes
        q = p7.passes_for(passes)
        bound7 = 1 / (2 * 63 * 126.0 ** (q - 1))
        bound8 = 1 / (2 * 127 * 254.0 ** (passes - 1))
        assert bound7 <= bound8


def test_a_failing_self_check_falls_back_to_seven_bits_with_a_warning(monkeypatch) -> None:
    monkeypatch.setattr(isa, "_exact_on_tiles", lambda kernel, qmax, zp: qmax == 63)
    monkeypatch.setattr(isa, "kernel_isa", lambda kernel, features=None: "vnni")
    with pytest.warns(RuntimeWarning, match="self-check"):
        profile = int8_profile("fbgemm")
    assert isinstance(profile, Int8Profile) and profile.qmax == 63 and profile.zero_point == 64
    assert "fallback" in profile.note


def test_a_kernel_that_is_never_exact_is_unusable_and_named_kernels_raise(monkeypatch) -> None:
    from lowbit.msd.kernels import resolve_int8_kernel, resolve_int8_kernels

    monkeypatch.setattr(isa, "_exact_on_tiles", lambda kernel, qmax, zp: kernel != "onednn")
    reason = int8_profile("onednn")
    assert isinstance(reason, str) and "self-check" in reason
    with pytest.raises(RuntimeError, match="cannot run exactly here"):
        resolve_int8_kernel("onednn")
    assert "onednn" not in [p.kernel for p in resolve_int8_kernels("auto")]


def test_the_self_check_catches_a_saturating_kernel(monkeypatch) -> None:
    """A kernel that saturates 16-bit pair sums like vpmaddubsw must fail the adversarial tiles."""
    from lowbit.msd import kernels

    def saturating(a: torch.Tensor, w, profile) -> torch.Tensor:
        q = (a.to(torch.int64) if a.dtype != torch.float32 else a.round().to(torch.int64)) + (
            profile.zero_point if a.dtype == torch.float32 else 0
        )
        b = w.handle if w.kernel == "int_mm" else None
        assert b is not None
        pairs = q.reshape(q.shape[0], -1, 2).unsqueeze(1) * b.t().to(torch.int64).reshape(b.shape[1], -1, 2)
        sums = pairs.sum(-1).clamp(-32768, 32767).sum(-1)
        comp = profile.zero_point * b.t().to(torch.int64).sum(-1)
        return (sums - comp).to(torch.float32)

    monkeypatch.setattr(kernels, "gemm_with_profile", saturating)
    assert not isa._exact_on_tiles("int_mm", 127, 128)
    assert isa._exact_on_tiles("int_mm", 63, 64)


def test_profile_report_lists_every_kernel() -> None:
    report = profile_report()
    assert set(report) >= {"cpu", "env", "fbgemm", "onednn", "int_mm"}
    assert report["cpu"]["int8_class"] in ("amx", "vnni", "avx2")
