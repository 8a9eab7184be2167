"""Fast CPU kernels for MSD linear layers: fused INT8 activation decomposition and prepacked VNNI INT8 GEMMs.

The exact reference is :func:`lowbit.msd.matmul` (float64 decomposition, exact integer GEMM); this module is the
fast path that :class:`lowbit.msd.MSDLinear` runs, tested against it (``tests/msd/test_kernels.py``).

**Fused decomposition** (``docs/methods/msd.md`` §3, float32, p passes, one scale per token row)::

    inv = 127 / max|x_row|                     (0 for an all-zero row)
    t_1 = x · inv                              (one float32 rounding: |t_1| <= 127)
    q_i = RNE(t_i),  t_{i+1} = 254 · (t_i - q_i)    (t_i - q_i is exact in float32; |t_{i+1}| <= 127)
    x ≈ (Σ_i q_i / 254^(i-1)) / inv            (the reference's s_1 = M/127, s_{i+1} = s_i/254)

The components are written straight into one ``[p, M, K]`` float32 buffer (so "stacked along M" costs no copy);
every component, the last included, is rounded here (``torch.round``) before any backend sees it. fbgemm could
round its float input itself, but at 64 rows (not at 9 or fewer) it behaves as if it added the zero point 128
in float32 first: 79.49999237 + 128 rounds to 207.5 and then to 208, one more than ``RNE(79.49999237) = 79``,
so an unrounded last component gave batch-size-dependent results. Extra error against the float64 reference
decomposition: ``t_1`` carries one float32 rounding, ``<= 127·2^-24`` in units of ``s_1``, i.e. below 0.4 % of
the ``s_p/2`` bound.

**INT8 GEMM backends** (exact INT8×INT8→INT32 accumulation on every CPU; :mod:`lowbit.msd.isa` decides per
instruction set how each is fed, and checks it once per process on adversarial tiles):

* ``"fbgemm"``: ``quantized::linear_with_input_q_dq_qweight_dq_output_fp32`` on a weight prepacked once with
  ``quantized::linear_prepack`` (engine ``x86``/``fbgemm``). The float input is quantized by the kernel with
  scale 1 and the profile's zero point (``u8 = q + 128`` with VNNI, ``q + 64`` with 7-bit components without
  it); the output is ``float32(acc)·s_w[n]``.
* ``"onednn"``: ``onednn::qlinear_pointwise`` on a weight prepacked by ``onednn::qlinear_prepack``, with uint8
  activations ``q + 128`` (VNNI; the signed path is ~100× slower there), signed int8 activations (AMX, where the
  uint8 path rounds), or ``q + 64`` (7-bit, no VNNI); output ``float32(acc)·s_w[n]``.
* ``"int_mm"``: ``torch._int_mm`` on the ``[K, N]`` transposed view of the stored weight (int32 result, no
  prepack and no copy), then ``float32(acc)·s_w[n]``; not exact without VNNI, so not used there.

``kernel="auto"`` prepacks one backend only, the first exact one of fbgemm and onednn, for GEMMs of up to
``AUTO_SMALL_ROWS`` activation rows, and runs ``int_mm`` on the stored weight above (where it is exact with the same
component range): the weight is held twice (stored + one prepacked copy) as with a single named kernel, not three
times (:func:`resolve_int8_kernels`, :func:`choose_kernel`). Without VNNI the components are 7-bit (``|q| <= 63``,
ratio 126) and one more pass runs, so the error bound ``M/(2·63·126^p)`` stays below the 8-bit ``M/(2·127·254^(p-1))``.

**Range.** Rows are normalised by a power of two before the decomposition (exact) and the result scaled back, so
rows below ``~3.7e-37`` and float64 rows beyond float32's range give the reference's answer instead of 0 or
NaN; huge or tiny weight scales are renormalised the same way at packing time.

**Recombination** in float32: ``y = (out_1 + α_2·out_2 + ...) / inv + bias`` with ``α_i = float32((2q)^-(i-1))``,
evaluated left to right, every product and sum rounded on its own (``out_i.mul_(α_i)`` then ``add_``: no fused
multiply-add, whose single rounding the compiled decode operator could not reproduce portably, so every path
gives the same bits). ``float32(acc)`` rounds relative
``2^-24``; the second component is ``≈ 2^-8`` of the first, so it keeps its 16 significant bits (checked: the
two-pass result is ~250× more accurate than one pass, ``tests/msd/test_kernels.py``).

INT32 accumulation is exact while ``K·127·127 < 2^31``: K <= 133144 (msd.md §3); longer K raises.
"""

from __future__ import annotations

import contextlib
import functools
import math
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from lowbit._timing import median_time
from lowbit.msd.isa import KERNELS, Int8Profile, int8_profile

__all__ = [
    "AUTO_LARGE",
    "AUTO_PREPACKED",
    "AUTO_SMALL_ROWS",
    "DECODE_MAX_ROWS",
    "GEMV_MAX_ROWS",
    "MAX_K",
    "FusedDecode",
    "Int8Packed",
    "available_int8_kernels",
    "choose_kernel",
    "decompose_int8_fast",
    "encode_activations",
    "fused_decode_op",
    "gemm_with_profile",
    "int8_gemm",
    "msd_int8_linear",
    "pack_int8_weight",
    "resolve_int8_kernel",
    "resolve_int8_kernels",
    "row_exponents",
    "time_stacking",
]

MAX_K = (2**31 - 1) // (127 * 127)  # 133144: exact int32 accumulation

# [measured, docs/msd-inference.md "Decode"] up to this many token rows msd_int8_linear runs _msd_int8_decode: one
# host read of the row maxima, then ~10 torch ops (the general path runs ~70, about 0.3-0.6 ms at M = 1).
DECODE_MAX_ROWS = 16
# [measured, docs/msd-inference.md "The operator's own GEMV"] the compiled decode operator runs its own GEMV while
# comps·M is at most this many activation rows, fbgemm's GEMM above, per GEMV instruction set
# (lowbit.msd.native.GEMV_ISAS): AVX-512 VNNI up to 6 rows (M <= 3 at two passes), AVX2 up to 3 (M = 1 with the
# three 7-bit components of CPUs without VNNI; 6 rows took 1.1x fbgemm there), the portable loop never.
GEMV_MAX_ROWS = {2: 6, 1: 3, 0: 0}
_DECODE_AMAX_LO, _DECODE_AMAX_HI = 2.0**-60, 2.0**60  # 1/max|x| and the products stay normal float32 numbers
_F32 = struct.Struct("<f")


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


# [measured, benchmarks/bench_msd_decode.py --kernels, docs/msd-inference.md "Decode"] fbgemm is the fastest INT8
# GEMM for decode (2-4 rows at K = N = 4096, 1 thread: ~1.1-1.6x faster than onednn, ~1.5x than int_mm); from ~16
# rows on int_mm on the stored weight is faster than fbgemm (and onednn's AMX path faster still: ~1.3-1.7x int_mm
# at >= 128 rows, but it needs a second prepacked copy). kernel="auto" prepacks only its first backend and runs
# int_mm (no weight copy) above AUTO_SMALL_ROWS rows; kernel="onednn" is the one-copy choice for prefill speed.
AUTO_SMALL_ROWS = 16
AUTO_PREPACKED = ("fbgemm", "onednn")  # kernel="auto": the first exact one is prepacked and runs small GEMMs
AUTO_LARGE = "int_mm"  # kernel="auto": runs GEMMs above AUTO_SMALL_ROWS rows on the stored weight, when exact


def resolve_int8_kernel(kernel: str) -> Int8Profile:
    """The exact profile of one named backend (``"fbgemm"``, ``"onednn"``, ``"int_mm"``) on this CPU.

    Raises:
        ValueError: unknown name.
        RuntimeError: the backend is missing from this torch build, or has no exact path on this CPU (for example
            ``int_mm`` without VNNI); the message says why and which kernels can run (no silent fallback).
    """
    if kernel not in ("fbgemm", "onednn", "int_mm"):
        raise ValueError(f"kernel must be 'auto', 'fbgemm', 'onednn' or 'int_mm', got {kernel!r}")
    profile = int8_profile(kernel)
    if isinstance(profile, str):
        usable = [k for k in KERNELS if isinstance(int8_profile(k), Int8Profile)]
        raise RuntimeError(
            f"INT8 kernel {kernel!r} cannot run exactly here: {profile}. Exact kernels on this machine: {usable}; "
            "pass MSDConfig(kernel=...) with one of them, or kernel='auto'"
        )
    return profile


def resolve_int8_kernels(kernel: str) -> tuple[Int8Profile, ...]:
    """The profiles a layer runs: a named backend -> itself; ``"auto"`` -> the first exact backend of
    :data:`AUTO_PREPACKED` (the only one prepacked), followed by ``int_mm`` when it is exact here with the same
    component range (it multiplies the stored int8 weight in place, so it adds no weight copy; see
    :func:`choose_kernel`). Without an exact prepacked backend ``"auto"`` is ``int_mm`` alone; it raises only
    when no backend is exact here.

    Every backend computes ``float32(acc)·s_w`` from the same exact integer sums, so with the same component
    range the choice changes speed and memory, never a result bit (``tests/msd/test_linear.py``).
    """
    if kernel != "auto":
        return (resolve_int8_kernel(kernel),)
    prepacked = [p for p in (int8_profile(k) for k in AUTO_PREPACKED) if isinstance(p, Int8Profile)]
    large = int8_profile(AUTO_LARGE)
    if not prepacked and not isinstance(large, Int8Profile):
        reasons = {k: int8_profile(k) for k in KERNELS}
        raise RuntimeError(f"no INT8 kernel is exact on this CPU: {reasons}; use MSDConfig(method='dequant')")
    if not prepacked:
        assert isinstance(large, Int8Profile)
        return (large,)
    first = prepacked[0]
    if isinstance(large, Int8Profile) and large.qmax == first.qmax:
        return (first, large)
    return (first,)


def choose_kernel(kernels: tuple[Int8Profile, ...], rows: int) -> Int8Profile:
    """The backend for a GEMM with ``rows`` activation rows (``p·M``): the only one, or for ``"auto"`` the
    prepacked one (fbgemm where exact) up to ``AUTO_SMALL_ROWS`` rows and ``int_mm`` above."""
    if len(kernels) == 1:
        return kernels[0]
    return kernels[0] if rows <= AUTO_SMALL_ROWS else kernels[1]


# ---------------------------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Int8Packed:
    """An INT8 weight ``[N, K]`` with float32 per-output-channel scales, prepacked for one backend.

    ``out = float32(a · qᵀ) · scale[n]`` for integer-valued activations ``a``, where the kernel holds
    ``scale = s_w · 2^-shift`` (``shift`` keeps huge or tiny weight scales inside float32's range in the
    kernel's epilogue; the caller multiplies the result by ``2^shift``).
    """

    kernel: str
    handle: Any  # fbgemm LinearPackedParams, onednn packed tensor, or the [K, N] transposed view for int_mm
    scale: torch.Tensor  # float32 [N], already multiplied by 2^-shift
    n: int
    k: int
    shift: int = 0
    rows: torch.Tensor | None = None  # fbgemm: the stored int8 [N, K] itself (no copy), for the decode GEMV
    row_sums: torch.Tensor | None = None  # fbgemm: Σ_k q[n, k] as int32 [N] (the GEMV's zero-point term)


_SCALE_SAFE = 2.0**64  # kernel scales are renormalised by a power of two when max |s_w| leaves [2^-64, 2^64]


def _scale_shift(scale: torch.Tensor) -> int:
    """Power-of-two exponent ``e`` with ``max|s| · 2^-e`` in [0.5, 1) when ``max|s|`` is outside
    ``[2^-64, 2^64]``, else 0.

    >>> _scale_shift(torch.tensor([1e30])), _scale_shift(torch.tensor([0.01]))
    (100, 0)
    """
    top = float(scale.abs().max()) if scale.numel() else 0.0
    if top == 0.0 or 1 / _SCALE_SAFE <= top <= _SCALE_SAFE:
        return 0
    return math.frexp(top)[1]


def pack_int8_weight(q: torch.Tensor, scale: torch.Tensor, kernel: str) -> Int8Packed:
    """Prepack int8 codes ``q [N, K]`` (values in [-127, 127]) with float32 scales ``[N]`` for ``kernel``.

    Raises:
        TypeError: ``q`` is not int8 or ``scale`` not floating.
        ValueError: shapes do not match, K > 133144 (int32 accumulation would not be exact), or the scales are not
            finite or span more than float32's range.
    """
    if q.dtype != torch.int8:
        raise TypeError(f"q must be torch.int8, got {q.dtype}")
    if q.dim() != 2:
        raise ValueError(f"q must be [N, K], got shape {tuple(q.shape)}")
    n, k = q.shape
    scale = scale.detach().reshape(-1).to(torch.float64)
    if scale.shape[0] != n:
        raise ValueError(f"scale must have N={n} entries, got {scale.shape[0]}")
    if k > MAX_K:
        raise ValueError(f"K={k} exceeds {MAX_K}: INT32 accumulation of ±127·±127 products would not be exact")
    if not bool(torch.isfinite(scale).all()):
        raise ValueError("weight scales must be finite (an out-of-range weight gives an infinite scale)")
    shift = _scale_shift(scale)
    scale = torch.ldexp(scale, torch.tensor(-float(shift), dtype=torch.float64)).to(torch.float32)
    nonzero = scale != 0
    if bool((nonzero & (scale.abs() < 2.0**-126)).any()):
        raise ValueError("weight scales span more than float32's normal range; the kernel epilogue would round them")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be 'fbgemm', 'onednn' or 'int_mm', got {kernel!r}")
    if kernel not in available_int8_kernels():
        raise RuntimeError(f"INT8 kernel {kernel!r} is not available in this torch build")
    if kernel == "int_mm":  # torch._int_mm takes the [K, N] view of the stored weight as it is: no copy
        return Int8Packed(kernel, q.t(), scale, n, k, shift)
    q = q.contiguous()
    if kernel == "fbgemm":
        rows, row_sums = q, q.sum(dim=1, dtype=torch.int32)
        with warnings.catch_warnings():  # torch warns that quantized tensors are deprecated on every creation
            warnings.simplefilter("ignore", UserWarning)
            wq = torch._make_per_channel_quantized_tensor(
                q, scale.to(torch.float64), torch.zeros(n, dtype=torch.int64), 0
            )
        with _quantized_engine("x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"):
            handle = torch.ops.quantized.linear_prepack(wq, None)
        return Int8Packed(kernel, handle, scale, n, k, shift, rows, row_sums)
    handle = torch.ops.onednn.qlinear_prepack(q, None)
    return Int8Packed(kernel, handle, scale, n, k, shift)


# ---------------------------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------------------------


def row_exponents(x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row power-of-two normalisation: ``(xn, e)`` with ``xn = x2 · 2^-e`` (exact) and ``max|xn_row|`` in
    [0.5, 1) for every finite non-zero row (``e = 0`` for zero and non-finite rows). Returns ``xn`` in float32
    (one rounding when ``x2`` is float64, as any float32 kernel input) and ``e`` as int32 ``[M]``.

    This keeps ``inv = q/max|x|`` finite for rows below ``~3.7e-37`` and float64 rows far above float32's range.
    """
    amax = torch.linalg.vector_norm(x2, ord=float("inf"), dim=1)
    usable = torch.isfinite(amax) & (amax > 0)
    e = torch.frexp(torch.where(usable, amax, 1.0)).exponent
    e = torch.where(usable, e, 0).to(torch.int32)
    if not bool((e != 0).any()):
        return x2.to(torch.float32), e
    work = x2 if x2.dtype in (torch.float32, torch.float64) else x2.to(torch.float32)
    xn = torch.ldexp(work, (-e).to(work.dtype).unsqueeze(1))
    return xn.to(torch.float32), e


def decompose_int8_fast(x2: torch.Tensor, passes: int, *, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused float32 INT8 decomposition of ``x2 [M, K]`` (formulas in the module docstring, with ``127`` replaced
    by ``qmax`` and ``254`` by ``2·qmax``).

    Returns ``(buf, inv)``: ``buf [passes, M, K]`` float32 with integer values in [-qmax, qmax] (every component
    rounded, the last included) and ``inv [M]`` = ``qmax/max|x_row|`` (0 for zero rows). Rows holding NaN/Inf
    are zeroed here; the caller marks them NaN (``inv`` is NaN for them). ``inv`` is infinite for rows below
    ``qmax/FLT_MAX``: normalise with :func:`row_exponents` first.
    """
    m, k = x2.shape
    step = 2.0 * qmax
    amax = torch.linalg.vector_norm(x2, ord=float("inf"), dim=1)
    finite = torch.isfinite(amax)
    if not bool(finite.all()):
        x2 = torch.where(finite.unsqueeze(1), x2, 0.0)
    inv = torch.where(amax > 0, float(qmax) / torch.where(amax > 0, amax, 1.0), 0.0)
    inv = torch.where(finite, inv, 0.0)
    buf = torch.empty(passes, m, k, dtype=torch.float32)
    work = buf[passes - 1]
    torch.mul(x2, inv.unsqueeze(1), out=work)
    for i in range(passes - 1):
        torch.round(work, out=buf[i])
        work.sub_(buf[i]).mul_(step)
    work.round_()
    return buf, torch.where(finite, inv, float("nan"))


def encode_activations(buf: torch.Tensor, profile: Int8Profile) -> torch.Tensor:
    """Integer-valued float32 components in the form ``profile``'s kernel takes: float32 (fbgemm quantizes them
    itself with the profile's zero point), uint8 ``q + zero_point``, or int8 (zero point 0)."""
    if profile.kernel == "fbgemm":
        return buf
    if profile.zero_point == 0:
        return buf.to(torch.int8)
    return buf.add_(profile.zero_point).to(torch.uint8)


# ---------------------------------------------------------------------------------------------------------------
# GEMMs
# ---------------------------------------------------------------------------------------------------------------


@functools.cache
def _fbgemm_linear_fp32() -> Any:
    """``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``, resolved once: the bound C++ operator where
    torch exposes it (``OpOverload._op``; the Python ``__call__`` wrapper adds ~10 µs per call, measured at M = 1),
    else the overload itself. Both run the same kernel."""
    overload = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32.default
    return getattr(overload, "_op", overload)


def gemm_with_profile(a: torch.Tensor, w: Int8Packed, profile: Int8Profile) -> torch.Tensor:
    """``float32(a · qᵀ)·scale`` for encoded activations ``a [R, K]`` (:func:`encode_activations`): integer-valued
    float32 (fbgemm; integer-valued, see the module docstring), uint8 ``q + zero_point`` or int8.
    Returns float32 ``[R, N]`` (the kernel scale, ``s_w·2^-shift``)."""
    if w.kernel != profile.kernel:
        raise ValueError(f"weight packed for {w.kernel!r} used with a {profile.kernel!r} profile")
    if w.kernel == "fbgemm":
        if a.dtype != torch.float32:
            raise TypeError(f"the fbgemm kernel takes float32 activations, got {a.dtype}")
        return _fbgemm_linear_fp32()(a, 1.0, profile.zero_point, w.handle)
    if w.kernel == "onednn":
        want = torch.int8 if profile.zero_point == 0 else torch.uint8
        if a.dtype != want:
            raise TypeError(f"this onednn profile takes {want} activations, got {a.dtype}")
        return torch.ops.onednn.qlinear_pointwise(
            a,
            1.0,
            profile.zero_point,
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


def int8_gemm(a: torch.Tensor, w: Int8Packed) -> torch.Tensor:
    """:func:`gemm_with_profile` with this CPU's verified profile of ``w.kernel`` (raises where it has none)."""
    return gemm_with_profile(a, w, resolve_int8_kernel(w.kernel))


def msd_int8_linear(
    x2: torch.Tensor,
    weights: list[tuple[int, int, Int8Packed]],
    passes: int,
    *,
    stacked: bool,
    bias: torch.Tensor | None = None,
    profile: Int8Profile | None = None,
    fused: FusedDecode | None = None,
) -> torch.Tensor:
    """MSD INT8 linear ``y = x · (q ⊙ s_w)ᵀ + bias`` for a floating ``x2 [M, K]``.

    ``weights`` lists ``(k_start, k_stop, packed)`` K-segments (one for per-channel scales, one per group for
    grouped scales). ``stacked`` runs one GEMM over the ``[p·M, K]`` components, else one GEMM per component.
    ``profile`` (default: this CPU's verified profile of the weights' kernel) sets the component range: with a
    7-bit profile ``passes + 1`` components of ``|q| <= 63`` run (bound ``M/(2·63·126^p)``, below the 8-bit one).
    Rows are first normalised by a power of two (:func:`row_exponents`), so tiny rows and float64 rows beyond
    float32's range are handled; the result is float64 for float64 ``x2``, else float32. Rows of ``x2`` holding
    NaN/Inf give NaN rows; an empty batch gives an empty ``[0, N]`` result. ``fused`` (from
    :func:`fused_decode_op`) runs the decode path on fbgemm as one compiled call: the same bits, always stacked.
    """
    m = x2.shape[0]
    first = weights[0][2]
    profile = resolve_int8_kernel(first.kernel) if profile is None else profile
    n = first.n
    out_dtype = torch.float64 if x2.dtype == torch.float64 else torch.float32
    if m == 0:
        y0 = torch.zeros(0, n, dtype=out_dtype)
        return y0 if bias is None else y0 + bias.to(out_dtype)
    comps = profile.passes_for(passes)
    step = float(profile.step)
    if m <= DECODE_MAX_ROWS and len(weights) == 1 and first.shift == 0 and x2.dtype != torch.float64:
        if fused is not None and profile.kernel == "fbgemm":
            y_fast = fused(x2, first, comps, profile, bias)
            y_fast = y_fast if y_fast.dim() == 2 else None  # an empty [0] result: rows the general path handles
        else:
            y_fast = _msd_int8_decode(x2, first, comps, stacked=stacked, bias=bias, profile=profile)
        if y_fast is not None:
            return y_fast
    xn, exponents = row_exponents(x2)
    buf, inv = decompose_int8_fast(xn, comps, qmax=profile.qmax)
    buf = encode_activations(buf, profile)
    y: torch.Tensor | None = None
    for start, stop, packed in weights:
        comp = buf if len(weights) == 1 else buf[:, :, start:stop].contiguous()
        if stacked:
            out = gemm_with_profile(comp.reshape(comps * m, stop - start), packed, profile).reshape(comps, m, n)
            parts = [out[i] for i in range(comps)]
        else:
            parts = [gemm_with_profile(comp[i], packed, profile) for i in range(comps)]
        seg = parts[0]  # a fresh kernel output (or a row block of one): safe to update in place
        for i in range(1, comps):
            seg.add_(parts[i].mul_(_alpha_tensor(step, i)))  # module docstring: product, then sum
        if packed.shift != first.shift:
            seg.mul_(2.0 ** (packed.shift - first.shift))
        y = seg if y is None else y.add_(seg)
    assert y is not None
    y = y.div_(inv.unsqueeze(1)) if bool((inv != 0).all()) else _divide_rows(y, inv)
    y = _apply_exponents(y, exponents + first.shift, out_dtype)
    if bias is not None:
        y = y.add_(bias.to(out_dtype))
    return y


def _decode_inverse_scales(x2: torch.Tensor, qmax: int) -> list[float] | None:
    """``inv`` per row as :func:`decompose_int8_fast` computes it after :func:`row_exponents` (``float32(
    float32(1/a)·qmax)`` with ``a = max|x_row|``), but without the power-of-two normalisation, or None when a row
    is zero, non-finite or outside ``[2^-60, 2^60]`` (then the general path runs).

    Same values: ``1/a`` and ``·qmax`` are correctly rounded float32 operations (a float64 division or product of
    float32 operands rounded once to float32 equals the float32 one), and rounding commutes with the power of two
    the general path applies to ``a`` and later removes. One host read of the ``M`` row maxima replaces the
    ``.any()``/``.all()`` checks of the general path. For one row the maximum comes from ``torch.aminmax`` (one
    op, ``max(-min, max) = max|x|``; half the time of ``abs().amax()`` at K = 4096).

    >>> _decode_inverse_scales(torch.tensor([[0.5, -2.0]]), 127)
    [63.5]
    >>> _decode_inverse_scales(torch.tensor([[0.0, 0.0]]), 127) is None
    True
    >>> _decode_inverse_scales(torch.tensor([[1.0, float("nan")]]), 127) is None
    True
    """
    if x2.shape[0] == 1:
        lo_t, hi_t = torch.aminmax(x2)
        lo, hi = -lo_t.item(), hi_t.item()
        if lo != lo or hi != hi:  # NaN (aminmax propagates it)
            return None
        amax = [hi if hi >= lo else lo]
    else:
        amax = x2.abs().amax(dim=1).tolist()  # NaN propagates; 3x faster than vector_norm(ord=inf) at K = 4096
    inv = []
    for a in amax:
        if not _DECODE_AMAX_LO <= a <= _DECODE_AMAX_HI:  # also False for NaN
            return None
        inv.append(_f32(_f32(1.0 / a) * qmax))
    return inv


def _f32(v: float) -> float:
    """``v`` rounded to float32 (round half to even), as a Python float.

    >>> _f32(0.1)
    0.10000000149011612
    """
    return _F32.unpack(_F32.pack(v))[0]


@functools.cache
def _alpha_tensor(step: float, i: int) -> torch.Tensor:
    """``α_i = float32(step^-i)`` as a read-only float32 ``[1]`` tensor: ``out.mul_(α_i)`` is one float32 product
    (the compiled operator multiplies by the same float32 value), without wrapping a scalar on every call.

    >>> _alpha_tensor(254.0, 1).item() == _f32(1 / 254)
    True
    """
    return torch.tensor([step ** (-i)], dtype=torch.float32)


@functools.cache
def _step_tensor(step: float) -> torch.Tensor:
    """A read-only float32 ``[1]`` tensor holding ``step`` (multiplying by it is the same float32 product as by
    the Python scalar, and skips the ~6 µs of wrapping a scalar on every call)."""
    return torch.tensor([step], dtype=torch.float32)


def _msd_int8_decode(
    x2: torch.Tensor,
    packed: Int8Packed,
    comps: int,
    *,
    stacked: bool,
    bias: torch.Tensor | None,
    profile: Int8Profile,
) -> torch.Tensor | None:
    """The decode path of :func:`msd_int8_linear` (``M <= DECODE_MAX_ROWS``, one K-segment, no weight scale
    shift, float32/bfloat16/float16 input): the same decomposition and recombination with ~12 torch ops instead of
    ~70, bit-identical to the general path (``tests/msd/test_kernels.py``, ``test_generate_decode_path.py``).
    Returns None for rows the general path must handle (zero, NaN/Inf, or ``max|x|`` outside ``[2^-60, 2^60]``).

    Per call (``p = 2``, fbgemm): ``aminmax`` + host read, ``full`` (inv), ``empty`` + ``unbind`` (the component
    buffer), ``mul``, ``round``, ``sub_``, ``mul_`` (the components), the GEMM, ``chunk``, ``add_`` (alpha) and
    ``div_`` (or ``addcdiv`` with a bias: ``bias + 1·(y/inv)``, the same two roundings as ``div_`` then ``add_``).
    """
    inv_list = _decode_inverse_scales(x2, profile.qmax)
    if inv_list is None:
        return None
    m, k = x2.shape
    if m == 1:
        inv = torch.full((1, 1), inv_list[0], dtype=torch.float32)
    else:
        inv = torch.tensor([[v] for v in inv_list], dtype=torch.float32)
    buf = torch.empty(comps, m, k, dtype=torch.float32)
    rows = buf.unbind(0)
    work = rows[comps - 1]
    torch.mul(x2, inv, out=work)
    step = 2.0 * profile.qmax
    if comps > 1:
        step_t = _step_tensor(step)
        for i in range(comps - 1):
            torch.round(work, out=rows[i])
            work.sub_(rows[i]).mul_(step_t)
    work.round_()  # every backend gets integers (module docstring: fbgemm's own rounding is not RNE at 64 rows)
    a = encode_activations(buf, profile)
    if stacked:
        out = gemm_with_profile(a.view(comps * m, k), packed, profile)
        parts = out.chunk(comps) if comps > 1 else (out,)
    else:
        parts = tuple(gemm_with_profile(a[i], packed, profile) for i in range(comps))
    y = parts[0]
    for i in range(1, comps):
        y.add_(parts[i].mul_(_alpha_tensor(step, i)))
    if bias is None:
        return y.div_(inv)
    return torch.addcdiv(bias.to(torch.float32), y, inv)


@dataclass(frozen=True)
class FusedDecode:
    """The compiled decode operator (:mod:`lowbit.msd.native`) and how it runs here.

    Attributes:
        fbgemm: ``lowbit_msd::decode``, bound: ``fbgemm(x, packed.handle, comps, qmax, zero_point, bias)``.
        gemv: ``lowbit_msd::decode_gemv``, bound: ``gemv(x, packed.rows, packed.row_sums, packed.scale, comps, qmax,
            zero_point, bias, isa)`` (no packed fbgemm weight: passing that object from Python costs ~20 µs).
        isa: the GEMV's instruction set (:data:`lowbit.msd.native.GEMV_ISAS`): the best this CPU runs.
        gemv_max_rows: the GEMV runs while ``comps·M`` is at most this; fbgemm's GEMM above
            (``GEMV_MAX_ROWS[isa]``).
    """

    fbgemm: Callable[..., torch.Tensor]
    gemv: Callable[..., torch.Tensor]
    isa: int
    gemv_max_rows: int

    def __call__(
        self,
        x2: torch.Tensor,
        packed: Int8Packed,
        comps: int,
        profile: Int8Profile,
        bias: torch.Tensor | None = None,
        *,
        isa: int | None = None,
        gemv_max_rows: int | None = None,
    ) -> torch.Tensor:
        """The decode step on an fbgemm-packed weight: :attr:`gemv` for ``comps·M <= gemv_max_rows``, else
        :attr:`fbgemm` (``isa`` and ``gemv_max_rows`` override the fields, for tests and benchmarks). Returns
        ``[M, N]`` float32, or an empty ``[0]`` tensor for rows the general path must handle."""
        if comps * x2.shape[0] <= (self.gemv_max_rows if gemv_max_rows is None else gemv_max_rows):
            return self.gemv(
                x2,
                packed.rows,
                packed.row_sums,
                packed.scale,
                comps,
                profile.qmax,
                profile.zero_point,
                bias,
                self.isa if isa is None else isa,
            )
        return self.fbgemm(x2, packed.handle, comps, profile.qmax, profile.zero_point, bias)


@functools.cache
def fused_decode_op() -> tuple[FusedDecode | None, str]:
    """The compiled decode operator once it has passed a self-check here, and a line saying what happened:
    ``(FusedDecode, "loaded from ...")`` or ``(None, why not)``. Cached for the process.

    The self-check runs the operator and :func:`_msd_int8_decode` (the torch-call path) on a small fbgemm layer
    (K = 203, N = 27; 1, 3 and 16 rows; float32, bfloat16 and float16; with and without a bias; rows of exact
    ``.5`` ties and of tiny and huge values), on fbgemm's GEMM and on the GEMV with every instruction set this
    CPU runs, and keeps the operator only if every output is bit-identical: a compiler that fused or reassociated
    the float32 steps, or a GEMV instruction path with a wrong sum, would be caught here, not give other results.
    """
    from lowbit.msd import native

    profile = int8_profile("fbgemm")
    if not isinstance(profile, Int8Profile):
        return None, f"the fbgemm kernel is not exact on this CPU ({profile})"
    op, gemv = native.decode_op(), native.decode_gemv_op()
    status = native.decode_op_status()
    isas = native.gemv_isas()
    if op is None or gemv is None or not isas:
        return None, status.reason
    fused = FusedDecode(op, gemv, isas[-1], GEMV_MAX_ROWS[isas[-1]])
    gen = torch.Generator().manual_seed(0)
    n, k = 27, 203
    q = torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8)
    packed = pack_int8_weight(q, torch.rand(n, generator=gen) * 0.01 + 1e-3, "fbgemm")
    ties = torch.arange(k, dtype=torch.float32).remainder(9.0).sub(4.0).add(0.5)  # exact .5 ties at every scale
    qmax_row = ties.clone()
    qmax_row[0] = float(profile.qmax)  # max |x| = qmax: inv = 1, the first component rounds the ties themselves
    cases = [torch.stack([ties]), torch.stack([qmax_row, ties, -ties]), torch.randn(16, k, generator=gen)]
    cases[2][5] = ties
    extreme = torch.randn(3, k, generator=gen)
    extreme[1] *= 1e-30  # max |x| below 2^-60: both paths decline (the general path runs)
    comps = profile.passes_for(2)
    with torch.no_grad():
        for x in [*cases, extreme]:
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                xd = x.to(dtype) if x is not extreme else x
                for bias in (None, torch.randn(n, generator=gen)):
                    want = _msd_int8_decode(xd, packed, comps, stacked=True, bias=bias, profile=profile)
                    for isa, rows in [(isas[-1], 0), *((i, 8 * DECODE_MAX_ROWS) for i in isas)]:
                        got = fused(xd, packed, comps, profile, bias, isa=isa, gemv_max_rows=rows)
                        same = got.dim() == 1 if want is None else got.dim() == 2 and torch.equal(want, got)
                        if not same:
                            path = "fbgemm" if rows == 0 else f"the {native.GEMV_ISAS[isa]} GEMV"
                            return None, (
                                f"the compiled operator in {status.build_dir} failed its self-check on {path} "
                                f"(M={x.shape[0]}, {dtype}, bias={bias is not None}): its output differs from "
                                "the torch-call path"
                            )
    return fused, f"{status.reason}; GEMV on {native.GEMV_ISAS[fused.isa]}"


def _apply_exponents(y: torch.Tensor, exponents: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """``y · 2^exponents`` per row in ``out_dtype``: exact float32 multiplies while the factor is a normal float32,
    else one float64 product rounded once (as a float32 reference would be)."""
    if out_dtype == torch.float64:
        return y.to(torch.float64).mul_(torch.pow(2.0, exponents.to(torch.float64)).unsqueeze(1))
    if not bool((exponents != 0).any()):
        return y
    if bool(((exponents >= -126) & (exponents <= 127)).all()):
        return y.mul_(torch.pow(2.0, exponents.to(torch.float32)).unsqueeze(1))
    return (y.to(torch.float64) * torch.pow(2.0, exponents.to(torch.float64)).unsqueeze(1)).to(torch.float32)


def _divide_rows(y: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    """``y / inv`` per row, with all-zero rows (inv = 0) giving exact zeros and NaN rows staying NaN."""
    safe = torch.where(inv == 0, 1.0, inv)
    out = y / safe.unsqueeze(1)
    return torch.where((inv == 0).unsqueeze(1), 0.0, out)


def time_stacking(
    x2: torch.Tensor,
    weights: list[tuple[int, int, Int8Packed]],
    passes: int,
    *,
    repeats: int = 3,
    profile: Int8Profile | None = None,
) -> dict[str, float]:
    """Median seconds of the stacked and the split variants on ``x2`` (used by ``MSDLinear.tune``)."""
    times: dict[str, float] = {}
    for name, stacked in (("stacked", True), ("split", False)):
        times[name] = median_time(
            lambda stacked=stacked: msd_int8_linear(x2, weights, passes, stacked=stacked, profile=profile),
            repeats=repeats,
        )
    return times
