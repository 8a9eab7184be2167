"""Which INT8 GEMM is exact on this CPU: instruction-set detection and a self-check on adversarial tiles.

x86 INT8 GEMMs multiply unsigned 8-bit activations by signed 8-bit weights. How exact that is depends on the
instructions the backend actually runs:

* **AVX-512 VNNI / AVX-VNNI** (``vpdpbusd``): each ``u8·s8`` product is added straight into an int32 lane.
  Exact for the full range (``u8 = q + 128`` with ``|q| <= 127``, weights in [-127, 127]).
* **No VNNI** (AVX2 or AVX-512 without VNNI: AMD Zen 2/3, Intel before Cascade Lake, many cloud VMs):
  ``vpmaddubsw`` first adds *pairs* of products in a saturating int16: ``2·255·127 = 64770 > 32767``, so
  full-range activations silently give wrong sums. Exact only with 7-bit activations, ``u8 <= 127`` (the reason
  torch's x86 dynamic quantization uses ``reduce_range``): pairs reach at most ``2·127·127 = 32258``. lowbit then
  uses components ``|q| <= 63`` with zero point 64. Signed-by-signed GEMMs (``torch._int_mm``) shift the
  activation by 128 internally and saturate even then: they are not used without VNNI.
* **AMX-INT8** (oneDNN only): measured on a Xeon with AMX and torch 2.13, ``onednn::qlinear_pointwise`` with a
  uint8 activation and a zero point returns results off by 1-8 (the zero-point compensation is applied after a
  float32 conversion of the unsigned accumulator, which exceeds ``2^24``); with *signed* int8 activations and no
  zero point it is exact, and as fast. lowbit therefore feeds oneDNN signed activations when it runs AMX.

The ISA a backend runs is the CPU's, capped by the backend's own environment variable: ``ONEDNN_MAX_CPU_ISA``
(or ``DNNL_MAX_CPU_ISA``) for oneDNN and ``torch._int_mm``, ``FBGEMM_ENABLE_INSTRUCTIONS`` for fbgemm. Because a
prediction can be wrong (a new CPU, a new library version), every profile is also checked once per process on
adversarial tiles against exact float64 products before it is used (:func:`int8_profile`); a failing full-range
profile falls back to the 7-bit one with a warning, and a kernel with no exact profile is not used.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["KERNELS", "CpuFeatures", "Int8Profile", "int8_profile", "kernel_isa", "profile_report"]

KERNELS = ("fbgemm", "onednn", "int_mm")
FULL_QMAX, SEVEN_BIT_QMAX = 127, 63


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's int8/bf16 features (``/proc/cpuinfo`` flags where present, else torch's CPU queries).

    >>> CpuFeatures(avx2=True, avx512=True, vnni=False, avx512_bf16=False, amx_int8=False).int8_class
    'avx2'
    """

    avx2: bool
    avx512: bool
    vnni: bool  # AVX-512 VNNI or AVX-VNNI: vpdpbusd
    avx512_bf16: bool
    amx_int8: bool

    @classmethod
    def detect(cls) -> CpuFeatures:
        """Read the running CPU's features."""
        flags = _cpuinfo_flags()
        if flags:
            return cls(
                avx2="avx2" in flags,
                avx512="avx512f" in flags and "avx512bw" in flags,
                vnni="avx512_vnni" in flags or "avx_vnni" in flags,
                avx512_bf16="avx512_bf16" in flags,
                amx_int8="amx_int8" in flags and "amx_tile" in flags,
            )
        cpu = torch.cpu
        return cls(
            avx2=bool(cpu._is_avx2_supported()),
            avx512=bool(cpu._is_avx512_supported()),
            vnni=bool(cpu._is_vnni_supported()),
            avx512_bf16=bool(cpu._is_avx512_bf16_supported()),
            amx_int8=bool(cpu._is_amx_tile_supported()),
        )

    @property
    def int8_class(self) -> str:
        """``"amx"``, ``"vnni"`` or ``"avx2"`` (no VNNI): what decides INT8 exactness."""
        if self.amx_int8:
            return "amx"
        return "vnni" if self.vnni else "avx2"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable flags plus ``int8_class``."""
        return {**asdict(self), "int8_class": self.int8_class}


def _cpuinfo_flags() -> set[str]:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return set()
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


_RANK = {"avx2": 0, "vnni": 1, "amx": 2}


def _onednn_cap() -> str | None:
    """The ISA class ``ONEDNN_MAX_CPU_ISA`` allows (None: no cap, or a value lowbit does not know)."""
    value = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    if value in ("", "ALL", "DEFAULT"):
        return None
    if "AMX" in value or value.startswith("AVX10"):
        return "amx" if "AMX" in value else "vnni"
    if "VNNI" in value or "BF16" in value or "FP16" in value:
        return "vnni"
    if value in ("SSE41", "AVX", "AVX2", "AVX512_CORE", "AVX512_MIC", "AVX512_MIC_4OPS", "AVX512_COMMON"):
        return "avx2"
    return None


def _fbgemm_cap() -> str | None:
    """The ISA class ``FBGEMM_ENABLE_INSTRUCTIONS`` allows (fbgemm never uses AMX)."""
    value = (os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS") or "").strip().upper()
    if not value:
        return None
    return "vnni" if value.startswith("AVX512_E1") else "avx2"


def kernel_isa(kernel: str, features: CpuFeatures | None = None) -> str:
    """The ISA class (``"amx"``, ``"vnni"``, ``"avx2"``) that ``kernel`` runs with: the CPU's, capped by the
    backend's environment variable. fbgemm has no AMX path.

    >>> kernel_isa("fbgemm", CpuFeatures(True, True, True, True, True))
    'vnni'
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    features = CpuFeatures.detect() if features is None else features
    isa = features.int8_class
    if kernel == "fbgemm":
        isa = "vnni" if isa == "amx" else isa
        cap = _fbgemm_cap()
    else:
        cap = _onednn_cap()
    if cap is not None and _RANK[cap] < _RANK[isa]:
        isa = cap
    return isa


@dataclass(frozen=True)
class Int8Profile:
    """How one backend is fed so that its INT8 products are exact on this CPU.

    Attributes:
        kernel: ``"fbgemm"``, ``"onednn"`` or ``"int_mm"``.
        qmax: the largest activation component magnitude: 127 (8-bit) or 63 (7-bit, no VNNI).
        zero_point: the activation zero point (``u8 = q + zero_point``); 0 means signed int8 activations.
        isa: the ISA class the backend runs (``"amx"``, ``"vnni"``, ``"avx2"``).
        verified: the self-check on adversarial tiles passed.
        note: why this profile (shown by ``lowbit`` and recorded by the benchmarks).
    """

    kernel: str
    qmax: int
    zero_point: int
    isa: str
    verified: bool
    note: str

    @property
    def step(self) -> int:
        """Scale ratio between consecutive components, ``2·qmax`` (254 or 126)."""
        return 2 * self.qmax

    def passes_for(self, passes: int) -> int:
        """Components run for a requested ``passes`` of 8-bit components: the same for 8-bit profiles, one more for
        7-bit ones, so the bound ``M/(2·q·(2q)^(p'-1))`` stays at or below the 8-bit ``M/(2·127·254^(p-1))``
        (``126^(p+1) >= 254^p`` for p <= 6).

        >>> Int8Profile("fbgemm", 63, 64, "avx2", True, "").passes_for(2)
        3
        """
        return passes if self.qmax == FULL_QMAX else passes + 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return asdict(self)


def _predicted(kernel: str, isa: str) -> tuple[int, int] | None:
    """(qmax, zero_point) that is exact for ``kernel`` on ``isa``, or None (no exact way)."""
    if isa == "avx2":
        return None if kernel == "int_mm" else (SEVEN_BIT_QMAX, 64)
    if kernel == "int_mm":
        return (FULL_QMAX, 0)
    if kernel == "onednn" and isa == "amx":
        return (FULL_QMAX, 0)  # signed activations: exact on AMX, where u8 + zero point rounds
    return (FULL_QMAX, 128)


def _encode(q: torch.Tensor, kernel: str, zero_point: int) -> torch.Tensor:
    """Integer activations ``q`` (int8) in the form ``kernel`` takes with ``zero_point``."""
    if kernel == "fbgemm":
        return q.to(torch.float32)
    if zero_point == 0:
        return q
    return (q.to(torch.int16) + zero_point).to(torch.uint8)


def _tiles(qmax: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Adversarial (activation, weight) pairs: full-scale rows of one sign against ±127 weights (the saturating
    and rounding cases), alternating signs, random rows; shapes that reach AMX/brgemm and the small-M paths."""
    gen = torch.Generator().manual_seed(20261201)
    out = []
    for m, k, n in ((1, 512, 16), (4, 1024, 48), (17, 1024, 24), (96, 4096, 64)):
        a = torch.randint(-qmax, qmax + 1, (m, k), dtype=torch.int8, generator=gen)
        b = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=gen)
        alt = torch.where(torch.arange(k) % 2 == 0, 1, -1).to(torch.int8)
        a[0] = qmax
        if m > 1:
            a[1] = -qmax
        if m > 2:
            a[2] = alt * qmax
        b[0], b[1], b[2] = 127, -127, alt * 127
        out.append((a, b))
    return out


def _exact_on_tiles(kernel: str, qmax: int, zero_point: int) -> bool:
    from lowbit.msd.kernels import gemm_with_profile, pack_int8_weight

    probe = Int8Profile(kernel, qmax, zero_point, "", False, "")
    for a, b in _tiles(qmax):
        want = (a.to(torch.float64) @ b.to(torch.float64).T).to(torch.float32)  # float32(exact integer)
        packed = pack_int8_weight(b, torch.ones(b.shape[0]), kernel)
        got = gemm_with_profile(_encode(a, kernel, zero_point), packed, probe)
        if not torch.equal(got, want):
            return False
    return True


@functools.cache
def _cached_profile(kernel: str, onednn_env: str, fbgemm_env: str) -> Int8Profile | str:
    """The verified profile of ``kernel``, or the reason it cannot be used. Keyed by the backend environment
    variables, which the backends read (the cache only saves re-running the probe)."""
    from lowbit.msd.kernels import available_int8_kernels

    if kernel not in available_int8_kernels():
        return f"{kernel!r} is not in this torch build"
    isa = kernel_isa(kernel)
    predicted = _predicted(kernel, isa)
    if predicted is None:
        return (
            f"{kernel!r} has no exact INT8 path without VNNI (ISA class {isa!r}): signed-by-signed products "
            "saturate in vpmaddubsw"
        )
    candidates = [predicted]
    if kernel != "int_mm" and predicted != (SEVEN_BIT_QMAX, 64):
        candidates.append((SEVEN_BIT_QMAX, 64))
    for i, (qmax, zero_point) in enumerate(candidates):
        if _exact_on_tiles(kernel, qmax, zero_point):
            note = f"|q| <= {qmax}, zero point {zero_point}, ISA class {isa}"
            if i > 0:
                warnings.warn(
                    f"lowbit: the {kernel} INT8 kernel failed its exactness self-check with 8-bit components on "
                    f"this CPU (ISA class {isa!r}); using exact 7-bit components with one more pass instead",
                    RuntimeWarning,
                    stacklevel=4,
                )
                note += " (fallback: the predicted 8-bit profile failed the self-check)"
            return Int8Profile(kernel, qmax, zero_point, isa, True, note)
    return f"{kernel!r} failed its exactness self-check on adversarial tiles (ISA class {isa!r})"


def _env_key() -> tuple[str, str]:
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    return onednn, os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS") or ""


def int8_profile(kernel: str) -> Int8Profile | str:
    """The exact way to run ``kernel`` here (an :class:`Int8Profile`), or a string saying why it cannot be used.

    The first call per kernel runs the self-check (a few milliseconds).
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return _cached_profile(kernel, *_env_key())


def profile_report() -> dict[str, Any]:
    """What each INT8 backend runs on this machine: CPU features, environment caps and each kernel's verified
    profile or the reason it is unusable (recorded in benchmark JSON and shown by ``lowbit bits``)."""
    out: dict[str, Any] = {"cpu": CpuFeatures.detect().to_dict()}
    onednn, fbgemm = _env_key()
    out["env"] = {"ONEDNN_MAX_CPU_ISA": onednn or None, "FBGEMM_ENABLE_INSTRUCTIONS": fbgemm or None}
    for kernel in KERNELS:
        p = int8_profile(kernel)
        out[kernel] = p.to_dict() if isinstance(p, Int8Profile) else {"unusable": p}
    return out
