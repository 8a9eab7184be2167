"""Multi-scale activation decomposition: ``x ≈ Σ_i S_i ⊙ A_i`` with low-precision components ``A_i``.

MSD (``docs/methods/msd.md`` §2) never dequantizes the weight; it writes the high-precision activation
as a short sum of low-precision parts with shrinking scales, each of which a native low-precision GEMM can
multiply with the quantized weight directly.

Formats (the number of passes ``p`` is any integer >= 1):

* ``"int8"`` (msd.md §3, [paper] bound, [derived] n-pass rule), per scale group with ``M = max|x|``::

      s_1 = M / 127,  s_{i+1} = s_i / 254,  q_i = clip(RNE(r_{i-1} / s_i), -127, 127),  r_i = r_{i-1} - s_i q_i
      |x - Σ s_i q_i| <= s_p / 2 = M / (2·127·254^(p-1))        (p = 2: M / 64516)

  A scale group is one token row (``group="row"``) or one K-block of a row (``group=<int>``).
* ``"mxfp4"`` (msd.md §5, [inferred] algorithm, [derived] bound): blocks of 32 along the last axis, one E8M0
  power-of-two scale per block *and pass*; each pass quantizes the residual of the previous ones with its own
  scale. With the non-saturating ``"ceil"`` rule ``X = 2^ceil(log2(amax / 6))`` one pass errs by at most
  ``β/8`` (``β = 2^ceil(log2 amax)``), so ``p`` passes err by at most ``β/8^p <= α/8^p`` with
  ``α = 2^(floor(log2 amax) + 1)`` (the paper's ``α/64`` for p = 2). The OCP spec rule (``scale_rule="ocp"``,
  floor rule plus saturation) is kept for comparison only: it breaks the bound (msd.md §5).
* ``"mxfp8"`` (msd.md §6): the same MX machinery with E4M3 elements (``elem="e5m2"`` also accepted); one pass
  is the paper's baseline (5.24 bits).

Element rounding and the E8M0 scale rules come from :mod:`lowbit.formats`; this module only chains passes.

Non-finite input (NaN/±Inf) is not representable in any component. The policy is per scale group: a group
(row or block) holding a non-finite value gets zero components and a NaN scale in every pass, so it
reconstructs to NaN and a GEMM row that touches it is NaN. Every other group is decomposed exactly as if the
bad group were absent (no silent wrong number elsewhere). All-zero groups get scale 0 (INT8) or the format's
zero-block scale (MX) and zero components: never NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lowbit import formats

__all__ = ["FORMATS", "Decomposition", "decompose"]

FORMATS = ("int8", "mxfp4", "mxfp8")
_INT8_QMAX = 127
_FLOAT_DTYPES = formats.FLOAT_DTYPES
_MX_ELEMENTS = {"mxfp4": ("e2m1",), "mxfp8": ("e4m3", "e5m2")}
_SCALE_RULES = formats.SCALE_RULES


@dataclass(frozen=True, eq=False)
class Decomposition:
    """The result of :func:`decompose`: ``x ≈ Σ_i expand(scales[i]) ⊙ components[i]``.

    Attributes:
        fmt: ``"int8"``, ``"mxfp4"`` or ``"mxfp8"``.
        components: one tensor per pass, shape ``shape``. INT8: ``torch.int8`` codes in [-127, 127].
            MX: the unscaled element values (``torch.float32``, on the element grid, e.g. ±{0, .5, ..., 6}).
        scales: one ``torch.float64`` tensor per pass, shape ``shape[:-1] + (n_groups,)``; NaN marks a group
            that held a non-finite input. INT8 scales are ``M/127/254^i``; MX scales are powers of two (E8M0).
        group_size: elements per scale along the last axis (the row length for per-row INT8 groups).
        shape: the shape of the decomposed tensor.
        elem: the element format of each component (``"int8"``, ``"e2m1"``, ``"e4m3"``, ``"e5m2"``).
        scale_rule: ``"absmax"`` for INT8; ``"ceil"`` or ``"ocp"`` for MX.
    """

    fmt: str
    components: tuple[torch.Tensor, ...]
    scales: tuple[torch.Tensor, ...]
    group_size: int
    shape: tuple[int, ...]
    elem: str
    scale_rule: str

    @property
    def passes(self) -> int:
        """The number of components."""
        return len(self.components)

    def expanded_scales(self, index: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Scale of pass ``index`` broadcast to every element, shape ``shape``."""
        s = self.scales[index].to(dtype)
        return s.repeat_interleave(self.group_size, dim=-1)[..., : self.shape[-1]]

    def term(self, index: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The ``index``-th term ``S_i ⊙ A_i`` in ``dtype`` (each product rounded once to ``dtype``)."""
        return self.expanded_scales(index, dtype) * self.components[index].to(dtype)

    def reconstruct(self, dtype: torch.dtype = torch.float32, *, passes: int | None = None) -> torch.Tensor:
        """``Σ_{i<passes} S_i ⊙ A_i`` summed in pass order in ``dtype`` (``torch.float32`` or ``torch.float64``).

        ``passes`` (default: all) keeps only the first terms: the first ``q`` components of a ``p``-pass
        decomposition are exactly the ``q``-pass decomposition, so one call serves every pass count.
        float64 is exact up to one float64 rounding per term, so the error bounds of
        :func:`lowbit.msd.error_bound` are checked against it; float32 models the FP32 recombination of the
        paper and adds up to ``p·2^-24·|x|`` per element (which exceeds the INT8 bound from p = 3 on).

        >>> import torch
        >>> d = decompose(torch.tensor([[1.0, -0.3, 0.001]]), "int8", passes=2)
        >>> (d.reconstruct(torch.float64) - torch.tensor([[1.0, -0.3, 0.001]]).double()).abs().max() <= 1 / 64516
        tensor(True)
        """
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        count = self.passes if passes is None else passes
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= self.passes:
            raise ValueError(f"passes must be an int in [1, {self.passes}], got {passes!r}")
        out = self.term(0, dtype)
        for i in range(1, count):
            out = out + self.term(i, dtype)
        return out


# ---------------------------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------------------------


def decompose(
    x: torch.Tensor,
    fmt: str,
    *,
    passes: int = 2,
    group: str | int | None = None,
    scale_rule: str = "ceil",
    elem: str | None = None,
    amax: float | None = None,
    int8_qmax: int = _INT8_QMAX,
) -> Decomposition:
    """Decompose ``x`` (float tensor, groups along the last axis) into ``passes`` low-precision components.

    Args:
        x: float16/bfloat16/float32/float64 tensor with at least one dimension; the last axis is K.
        fmt: ``"int8"``, ``"mxfp4"`` or ``"mxfp8"``.
        passes: number of components, >= 1.
        group: INT8: ``"row"`` (default; one scale per row, M = row max) or a positive block size along K.
            MX: the block size (default 32, the OCP block). A K that is not a multiple of the block gets a
            shorter last group (its padding is zeros, which change no maximum).
        scale_rule: MX only: ``"ceil"`` (non-saturating, default, keeps the α/8^p bound) or ``"ocp"``
            (OCP v1.0 floor rule with saturation; comparison only).
        elem: MX element format; ``"e2m1"`` for mxfp4, ``"e4m3"`` (default) or ``"e5m2"`` for mxfp8.
        amax: INT8 only: a fixed group maximum ``M`` to use instead of the measured one (for example 1.0 for
            softmax probabilities, msd.md §9); it must be >= every finite ``|x|``.
        int8_qmax: INT8 only: the largest component ``q`` (127; 63 for the 7-bit components that CPUs without
            VNNI need, :mod:`lowbit.msd.isa`). Then ``s_1 = M/q``, ``s_{i+1} = s_i/(2q)`` and the bound is
            ``M/(2·q·(2q)^(p-1))``.

    Returns:
        A :class:`Decomposition`.

    Raises:
        TypeError: ``x`` is not a floating tensor.
        ValueError: unknown ``fmt``/``scale_rule``/``elem``, ``passes < 1``, a bad ``group``, or ``amax`` too small.

    >>> import torch
    >>> d = decompose(torch.tensor([[0.5, -1.0, 0.25]]), "int8", passes=2)
    >>> d.components[0].tolist(), d.scales[0].tolist()
    ([[64, -127, 32]], [[0.007874015748031496]])
    """
    fmt, passes, group_size, scale_rule, elem = _decompose_args(x, fmt, passes, group, scale_rule, elem, amax)
    if fmt == "int8":
        _check_qmax(int8_qmax)
        return _decompose_int8(x, passes, group_size, amax, int8_qmax)
    return _decompose_mx(x, fmt, elem, passes, group_size, scale_rule)


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


def _decompose_args(
    x: torch.Tensor,
    fmt: str,
    passes: int,
    group: str | int | None,
    scale_rule: str,
    elem: str | None,
    amax: float | None,
) -> tuple[str, int, int, str, str]:
    """Validate the arguments of :func:`decompose`; return ``(fmt, passes, group_size, scale_rule, elem)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be a float16/bfloat16/float32/float64 tensor, got dtype {x.dtype}")
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x must have at least one dimension with a non-empty last axis, got shape {tuple(x.shape)}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be an integer >= 1, got {passes!r}")
    if fmt == "int8":
        if elem not in (None, "int8"):
            raise ValueError(f"elem must be None for fmt='int8', got {elem!r}")
        if amax is not None and not (
            isinstance(amax, (int, float)) and not isinstance(amax, bool) and math.isfinite(amax) and amax > 0
        ):
            raise ValueError(f"amax must be a finite positive number, got {amax!r}")
        return fmt, passes, _int8_group_size(group, x.shape[-1]), "absmax", "int8"
    if amax is not None:
        raise ValueError("amax is only supported for fmt='int8' (MX scales are chosen per block by the scale rule)")
    if scale_rule not in _SCALE_RULES:
        raise ValueError(f"scale_rule must be one of {_SCALE_RULES}, got {scale_rule!r}")
    elements = _MX_ELEMENTS[fmt]
    elem = elements[0] if elem is None else elem
    if elem not in elements:
        raise ValueError(f"elem must be one of {elements} for fmt={fmt!r}, got {elem!r}")
    block = 32 if group is None else group
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"group must be a positive block size for fmt={fmt!r}, got {group!r}")
    return fmt, passes, block, scale_rule, elem


def _int8_group_size(group: str | int | None, k: int) -> int:
    if group is None or group == "row":
        return k
    if isinstance(group, bool) or not isinstance(group, int) or group < 1:
        raise ValueError(f"group must be 'row' or a positive block size, got {group!r}")
    return min(group, k)


def grouped(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """``x`` (float64) zero-padded along the last axis to a multiple of ``group_size``, shape ``[..., G, g]``."""
    k = x.shape[-1]
    n_groups = math.ceil(k / group_size)
    pad = n_groups * group_size - k
    if pad:
        x = torch.nn.functional.pad(x, (0, pad))
    return x.reshape(*x.shape[:-1], n_groups, group_size)


def _finite_groups(xg: torch.Tensor) -> torch.Tensor:
    """Whether each group ``[..., G, g]`` is all finite: ``amax|x|`` propagates NaN and Inf, and is cheaper than
    an elementwise ``isfinite`` on float64."""
    return torch.isfinite(xg.abs().amax(dim=-1))


def ungrouped(xg: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`grouped`: flatten the last two axes and drop the padding."""
    return xg.reshape(*xg.shape[:-2], xg.shape[-2] * xg.shape[-1])[..., :k]


def _check_qmax(qmax: int) -> None:
    if isinstance(qmax, bool) or not isinstance(qmax, int) or not 1 <= qmax <= _INT8_QMAX:
        raise ValueError(f"int8_qmax must be an integer in [1, 127], got {qmax!r}")


def _decompose_int8(
    x: torch.Tensor, passes: int, group_size: int, amax: float | None, qmax: int = _INT8_QMAX
) -> Decomposition:
    xg = grouped(x.detach().to(torch.float64), group_size)
    finite = _finite_groups(xg)  # [..., G]
    r = torch.where(finite.unsqueeze(-1), xg, 0.0)
    m = r.abs().amax(dim=-1)
    if amax is not None:
        if bool((m > amax).any()):
            raise ValueError(f"amax={amax} is below max|x|={m.max().item()}; pass amax >= max|x|")
        m = torch.full_like(m, float(amax))
    s = m / qmax
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    components, scales = [], []
    for _ in range(passes):
        safe = torch.where(s > 0, s, 1.0).unsqueeze(-1)  # zero groups: q = 0, scale stays 0
        q = torch.round(r / safe).clamp_(-qmax, qmax)  # torch.round is round-half-to-even
        r = r - q * s.unsqueeze(-1)
        components.append(ungrouped(q, x.shape[-1]).to(torch.int8))
        scales.append(torch.where(finite, s, nan))
        s = s / (2 * qmax)
    return Decomposition("int8", tuple(components), tuple(scales), group_size, tuple(x.shape), "int8", "absmax")


def _decompose_mx(x: torch.Tensor, fmt: str, elem: str, passes: int, block: int, scale_rule: str) -> Decomposition:
    if elem == "e2m1" and block % 2:
        raise ValueError(f"group (the MX block) must be even for mxfp4 (two E2M1 codes per byte), got {block}")
    k = x.shape[-1]
    xg = grouped(x.detach().to(torch.float64), block)
    if xg.numel() == 0:  # no rows (an MoE expert without tokens): empty components, no scales to compute
        empty_scale = torch.zeros(xg.shape[:-1], dtype=torch.float64)
        comps = tuple(torch.zeros(x.shape, dtype=torch.float32) for _ in range(passes))
        return Decomposition(fmt, comps, (empty_scale,) * passes, block, tuple(x.shape), elem, scale_rule)
    finite = _finite_groups(xg)
    r = torch.where(finite.unsqueeze(-1), xg, 0.0)  # non-finite blocks: zero components, NaN scales below
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    components, scales = [], []
    for _ in range(passes):
        # formats works in float64, so the residual is quantized as it is (no intermediate float32 rounding)
        mx = formats.quantize_mx(ungrouped(r, r.shape[-2] * block), elem, block=block, axis=-1, scale_rule=scale_rule)
        values = mx.element_values().to(torch.float32).reshape(r.shape)
        scale = mx.scales().to(torch.float64).reshape(r.shape[:-1])
        r = r - values.to(torch.float64) * scale.unsqueeze(-1)  # exact for float32/bf16 inputs (short operands)
        components.append(ungrouped(values, k).contiguous())
        scales.append(torch.where(finite, scale, nan))
    return Decomposition(fmt, tuple(components), tuple(scales), block, tuple(x.shape), elem, scale_rule)
