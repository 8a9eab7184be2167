"""Fast CPU kernels for MSD linear layers: fused INT8 activation decomposition and prepacked VNNI INT8 GEMMs.

The exact reference is :func:`lowbit.msd.matmul` (float64 decomposition, exact integer GEMM); this module is the
fast path that :class:`lowbit.msd.MSDLinear` runs, tested against it (``tests/msd/test_kernels.py``).

**Fused decomposition** (``../shared/papers/msd.md`` §3, float32, p passes, one scale per token row)::

    inv = 127 / max|x_row|                     (0 for an all-zero row)
    t_1 = x · inv                              (one float32 rounding: |t_1| <= 127)
    q_i = RNE(t_i),  t_{i+1} = 254 · (t_i - q_i)    (t_i - q_i is exact in float32; |t_{i+1}| <= 127)
    x ≈ (Σ_i q_i / 254^(i-1)) / inv            (the reference's s_1 = M/127, s_{i+1} = s_i/254)

The components are written straight into one ``[p, M, K]`` float32 buffer (so "stacked along M" costs no copy);
the last one is left unrounded when the GEMM backend rounds its float input itself (fbgemm rounds half to even,
checked in the tests). Extra error against the float64 reference decomposition: ``t_1`` carries one float32
rounding, ``<= 127·2^-24`` in units of ``s_1``, i.e. below 0.4 % of the ``s_p/2`` bound.

**INT8 GEMM backends** (all exact INT8×INT8→INT32 accumulation, checked against ``lowbit.msd.gemm.int_gemm``):

* ``"fbgemm"``: ``quantized::linear_with_input_q_dq_qweight_dq_output_fp32`` on a weight prepacked once with
  ``quantized::linear_prepack`` (engine ``x86``/``fbgemm``). The float input is quantized by the kernel with
  scale 1 and zero point 128 (``u8 = q + 128``, exact for ``|q| <= 127``); the output is
  ``float32(acc)·s_w[n]``. VNNI ``vpdpbusd`` has no 16-bit intermediate, so ``u8 = 255`` against ``±127`` does
  not saturate (tested with adversarial rows).
* ``"onednn"``: ``onednn::qlinear_pointwise`` with uint8 activations ``q + 128`` (zero point 128; its int8
  activation path measured about 100× slower) and a weight prepacked by ``onednn::qlinear_prepack``; output
  ``float32(acc)·s_w[n]``.
* ``"int_mm"``: ``torch._int_mm`` (int32 result, no prepack), then ``float32(acc)·s_w[n]``.

``kernel="auto"`` prepacks fbgemm and onednn and picks by the number of activation rows (:func:`choose_kernel`).

**Recombination** in float32: ``y = (Σ_i out_i / 254^(i-1)) / inv + bias``. ``float32(acc)`` rounds relative
``2^-24``; the second component is ``≈ 2^-8`` of the first, so it keeps its 16 significant bits (checked: the
two-pass result is ~250× more accurate than one pass, ``tests/msd/test_kernels.py``).

INT32 accumulation is exact while ``K·127·127 < 2^31``: K <= 133144 (msd.md §3); longer K raises.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "AUTO_SMALL_ROWS",
    "MAX_K",
    "Int8Packed",
    "available_int8_kernels",
    "choose_kernel",
    "decompose_int8_fast",
    "int8_gemm",
    "msd_int8_linear",
    "pack_int8_weight",
    "resolve_int8_kernel",
    "resolve_int8_kernels",
    "time_stacking",
]

MAX_K = (2**31 - 1) // (127 * 127)  # 133144: exact int32 accumulation
_STEP = 254.0
_QMAX = 127.0
_ZERO_POINT = 128  # fbgemm takes uint8 activations: u8 = q + 128


@contextlib.contextmanager
def _quantized_engine(engine: str) -> Iterator[None]:
    """Temporarily select torch's quantized engine (prepacking dispatches on it); restored on exit."""
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = old


def available_int8_kernels() -> tuple[str, ...]:
    """The INT8 GEMM backends this torch build offers (``"fbgemm"``, ``"onednn"``, ``"int_mm"``)."""
    found = []
    engines = torch.backends.quantized.supported_engines
    if ("x86" in engines or "fbgemm" in engines) and hasattr(
        torch.ops.quantized, "linear_with_input_q_dq_qweight_dq_output_fp32"
    ):
        found.append("fbgemm")
    if hasattr(torch.ops.onednn, "qlinear_pointwise") and torch.backends.mkldnn.is_available():
        found.append("onednn")
    if hasattr(torch, "_int_mm"):
        found.append("int_mm")
    return tuple(found)


# [measured, benchmarks/results/msd_linear.json, msd_<kernel>_* columns] fbgemm is fastest for the smallest GEMMs
# (decode, M = 1: 0.36 ms vs 0.59 ms for onednn at K = N = 4096), onednn from a few rows on (10-20 % faster at
# M >= 128).
AUTO_SMALL_ROWS = 4
AUTO_KERNELS = ("fbgemm", "onednn")


def resolve_int8_kernel(kernel: str) -> str:
    """Check one named backend (``"fbgemm"``, ``"onednn"``, ``"int_mm"``); an unavailable backend raises.

    Raises:
        ValueError: unknown name.
        RuntimeError: the backend is missing from this torch build (no silent fallback).
    """
    if kernel not in ("fbgemm", "onednn", "int_mm"):
        raise ValueError(f"kernel must be 'auto', 'fbgemm', 'onednn' or 'int_mm', got {kernel!r}")
    if kernel not in available_int8_kernels():
        raise RuntimeError(
            f"INT8 kernel {kernel!r} is not available in this torch build (available: {available_int8_kernels()}); "
            "pass MSDConfig(kernel=...) with one of them"
        )
    return kernel


def resolve_int8_kernels(kernel: str) -> tuple[str, ...]:
    """The backends a layer prepacks: ``"auto"`` -> ``("fbgemm", "onednn")`` (dispatched by :func:`choose_kernel`),
    a named backend -> itself. Any missing backend raises (``"auto"`` needs both; name one explicitly otherwise)."""
    if kernel == "auto":
        return tuple(resolve_int8_kernel(k) for k in AUTO_KERNELS)
    return (resolve_int8_kernel(kernel),)


def choose_kernel(kernels: tuple[str, ...], rows: int) -> str:
    """The backend for a GEMM with ``rows`` activation rows (``p·M``): the only one, or for ``"auto"`` fbgemm up to
    ``AUTO_SMALL_ROWS`` rows and onednn above."""
    if len(kernels) == 1:
        return kernels[0]
    return kernels[0] if rows <= AUTO_SMALL_ROWS else kernels[1]


# ---------------------------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Int8Packed:
    """An INT8 weight ``[N, K]`` with float32 per-output-channel scales, prepacked for one backend.

    ``out = float32(a · qᵀ) · scale[n]`` for integer-valued activations ``a``.
    """

    kernel: str
    handle: Any  # fbgemm LinearPackedParams, onednn packed tensor, or the [K, N] int8 transpose for int_mm
    scale: torch.Tensor  # float32 [N]
    n: int
    k: int


def pack_int8_weight(q: torch.Tensor, scale: torch.Tensor, kernel: str) -> Int8Packed:
    """Prepack int8 codes ``q [N, K]`` (values in [-127, 127]) with float32 scales ``[N]`` for ``kernel``.

    Raises:
        TypeError: ``q`` is not int8 or ``scale`` not floating.
        ValueError: shapes do not match, or K > 133144 (int32 accumulation would not be exact).
    """
    if q.dtype != torch.int8:
        raise TypeError(f"q must be torch.int8, got {q.dtype}")
    if q.dim() != 2:
        raise ValueError(f"q must be [N, K], got shape {tuple(q.shape)}")
    n, k = q.shape
    scale = scale.detach().reshape(-1).to(torch.float32).contiguous()
    if scale.shape[0] != n:
        raise ValueError(f"scale must have N={n} entries, got {scale.shape[0]}")
    if k > MAX_K:
        raise ValueError(f"K={k} exceeds {MAX_K}: INT32 accumulation of ±127·±127 products would not be exact")
    kernel = resolve_int8_kernel(kernel)
    q = q.contiguous()
    if kernel == "fbgemm":
        with warnings.catch_warnings():  # torch warns that quantized tensors are deprecated on every creation
            warnings.simplefilter("ignore", UserWarning)
            wq = torch._make_per_channel_quantized_tensor(
                q, scale.to(torch.float64), torch.zeros(n, dtype=torch.int64), 0
            )
        with _quantized_engine("x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"):
            handle = torch.ops.quantized.linear_prepack(wq, None)
    elif kernel == "onednn":
        handle = torch.ops.onednn.qlinear_prepack(q, None)
    else:
        handle = q.t().contiguous()
    return Int8Packed(kernel, handle, scale, n, k)


# ---------------------------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------------------------


def decompose_int8_fast(x2: torch.Tensor, passes: int, *, round_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused float32 INT8 decomposition of ``x2 [M, K]`` (formulas in the module docstring).

    Returns ``(buf, inv)``: ``buf [passes, M, K]`` float32 with integer values in [-127, 127] (the last component
    unrounded unless ``round_last``) and ``inv [M]`` = ``127/max|x_row|`` (0 for zero rows). Rows holding NaN/Inf
    are zeroed here; the caller marks them NaN (``inv`` is NaN for them).
    """
    m, k = x2.shape
    amax = torch.linalg.vector_norm(x2, ord=float("inf"), dim=1)
    finite = torch.isfinite(amax)
    if not bool(finite.all()):
        x2 = torch.where(finite.unsqueeze(1), x2, 0.0)
    inv = torch.where(amax > 0, _QMAX / torch.where(amax > 0, amax, 1.0), 0.0)
    inv = torch.where(finite, inv, 0.0)
    buf = torch.empty(passes, m, k, dtype=torch.float32)
    work = buf[passes - 1]
    torch.mul(x2, inv.unsqueeze(1), out=work)
    for i in range(passes - 1):
        torch.round(work, out=buf[i])
        work.sub_(buf[i]).mul_(_STEP)
    if round_last:
        work.round_()
    return buf, torch.where(finite, inv, float("nan"))


# ---------------------------------------------------------------------------------------------------------------
# GEMMs
# ---------------------------------------------------------------------------------------------------------------


def int8_gemm(a: torch.Tensor, w: Int8Packed) -> torch.Tensor:
    """``float32(a · qᵀ)·scale`` for ``a [R, K]``: integer-valued float32 (fbgemm; rounded half to even by the
    kernel when not integral), uint8 ``q + 128`` (onednn) or int8 (int_mm). Returns float32 ``[R, N]``."""
    if w.kernel == "fbgemm":
        if a.dtype != torch.float32:
            raise TypeError(f"the fbgemm kernel takes float32 activations, got {a.dtype}")
        return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(a, 1.0, _ZERO_POINT, w.handle)
    if w.kernel == "onednn":
        if a.dtype != torch.uint8:
            raise TypeError(f"the onednn kernel takes uint8 activations (q + 128), got {a.dtype}")
        return torch.ops.onednn.qlinear_pointwise(
            a,
            1.0,
            _ZERO_POINT,
            w.handle,
            w.scale,
            torch.zeros(w.n, dtype=torch.int64),
            None,
            1.0,
            0,
            torch.float32,
            "none",
            [],
            "",
        )
    if a.dtype != torch.int8:
        raise TypeError(f"the int_mm kernel takes int8 activations, got {a.dtype}")
    return torch._int_mm(a, w.handle).to(torch.float32).mul_(w.scale)


def msd_int8_linear(
    x2: torch.Tensor,
    weights: list[tuple[int, int, Int8Packed]],
    passes: int,
    *,
    stacked: bool,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSD INT8 linear ``y = x · (q ⊙ s_w)ᵀ + bias`` for float32 ``x2 [M, K]``; returns float32 ``[M, N]``.

    ``weights`` lists ``(k_start, k_stop, packed)`` K-segments (one for per-channel scales, one per group for
    grouped scales). ``stacked`` runs one GEMM over the ``[p·M, K]`` components, else one GEMM per component.
    Rows of ``x2`` holding NaN/Inf give NaN rows.
    """
    m = x2.shape[0]
    kernel = weights[0][2].kernel
    buf, inv = decompose_int8_fast(x2, passes, round_last=kernel != "fbgemm")
    if kernel == "onednn":  # oneDNN's int8-activation path measured ~100x slower than uint8 with a zero point
        buf = buf.add_(_ZERO_POINT).to(torch.uint8)
    elif kernel == "int_mm":
        buf = buf.to(torch.int8)
    n = weights[0][2].n
    y: torch.Tensor | None = None
    for start, stop, packed in weights:
        comp = buf if len(weights) == 1 else buf[:, :, start:stop].contiguous()
        if stacked:
            out = int8_gemm(comp.reshape(passes * m, stop - start), packed).reshape(passes, m, n)
            parts = [out[i] for i in range(passes)]
        else:
            parts = [int8_gemm(comp[i], packed) for i in range(passes)]
        seg = parts[0]  # a fresh kernel output (or a row block of one): safe to update in place
        for i in range(1, passes):
            seg.add_(parts[i], alpha=_STEP ** (-i))
        y = seg if y is None else y.add_(seg)
    assert y is not None
    y = y.div_(inv.unsqueeze(1)) if bool((inv != 0).all()) else _divide_rows(y, inv)
    if bias is not None:
        y = y.add_(bias.to(torch.float32))
    return y


def _divide_rows(y: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    """``y / inv`` per row, with all-zero rows (inv = 0) giving exact zeros and NaN rows staying NaN."""
    safe = torch.where(inv == 0, 1.0, inv)
    out = y / safe.unsqueeze(1)
    return torch.where((inv == 0).unsqueeze(1), 0.0, out)


def time_stacking(
    x2: torch.Tensor, weights: list[tuple[int, int, Int8Packed]], passes: int, *, repeats: int = 3
) -> dict[str, float]:
    """Median seconds of the stacked and the split variants on ``x2`` (used by ``MSDLinear.tune``)."""
    times: dict[str, float] = {}
    for name, stacked in (("stacked", True), ("split", False)):
        msd_int8_linear(x2, weights, passes, stacked=stacked)  # warm-up
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            msd_int8_linear(x2, weights, passes, stacked=stacked)
            samples.append(time.perf_counter() - start)
        times[name] = statistics.median(samples)
    return times
