"""MSD matmul ``y = x · Wqᵀ`` without dequantizing the weight, and the dequant baselines it replaces.

``docs/methods/msd.md`` §2, §3, §5, §8. With the activation decomposed as ``x ≈ Σ_i S_i ⊙ A_i``
(:func:`lowbit.msd.decompose`):

* INT8 weights (W8A16): ``y = Σ_g s_w[:, g] ⊙ Σ_i s_i[:, g] ⊙ (A_i[:, g] · Wq[:, g]ᵀ)`` where every ``A_i · Wqᵀ``
  is an exact INT8×INT8→INT32 GEMM (:func:`lowbit.msd.gemm.int_gemm`) and ``g`` runs over the K-segments on
  which both the activation and the weight scales are constant (the whole K for per-row activations and
  per-channel weights). The passes are stacked along M, so ``Wq`` is read once (msd.md §3, decode).
* MXFP4 weights (W4A16): ``y = Σ_i Σ_b X_i,b X_w,b (A_i,b · W_bᵀ)``, exact block products with the block
  scales applied afterwards (:func:`lowbit.msd.gemm.mx_block_gemm`). ``act="mxfp8", passes=1`` is the paper's
  single-pass MXFP8-activation comparison.
* Recombination in float32 (``accumulate=torch.float32``, the paper's FP32) or float64 (for checking).

Dequant baselines (``method="dequant"``), as kernels do them: the activation in BF16; INT8 weights dequantized
as ``bf16(q · s_w)`` (W8A16), MXFP4 weights dequantized exactly to BF16 (``E2M1·2^e`` fits BF16, W4A16); then a
BF16 GEMM with float32 accumulation (BF16 products are exact in float32, so this is a float32 GEMM on BF16
values).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lowbit import formats
from lowbit.msd.bounds import error_bound
from lowbit.msd.decompose import Decomposition, decompose
from lowbit.msd.gemm import int_gemm, mx_block_gemm
from lowbit.msd.weights import WeightView, weight_view

__all__ = ["METHODS", "dequant_matmul", "matmul", "matmul_error_bound", "matmul_reference"]

METHODS = ("msd", "dequant")
_FLOAT_DTYPES = formats.FLOAT_DTYPES
_U32 = 2.0**-24
_U64 = 2.0**-53


def _check_inputs(x: Any, w: WeightView) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be a float16/bfloat16/float32/float64 tensor, got dtype {x.dtype}")
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension (the last one is K)")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"x has K={x.shape[-1]} in its last axis but w_q is [N, K] = {list(w.shape)}")
    return x.reshape(-1, x.shape[-1])


def _check_accumulate(accumulate: torch.dtype) -> None:
    if accumulate not in (torch.float32, torch.float64):
        raise TypeError(f"accumulate must be torch.float32 or torch.float64, got {accumulate}")


def _act_defaults(w: WeightView, act: str | None, passes: int | None) -> tuple[str, int]:
    if act is None:
        act = "int8" if w.kind == "int" else "mxfp4"
    if w.kind == "int" and act != "int8":
        raise ValueError(f"act must be 'int8' for integer weights, got {act!r}")
    if w.kind == "mx" and act not in ("mxfp4", "mxfp8"):
        raise ValueError(f"act must be 'mxfp4' or 'mxfp8' for MX weights, got {act!r}")
    if passes is None:
        passes = 1 if act == "mxfp8" else 2
    return act, passes


def _decompose_for(
    x2: torch.Tensor,
    w: WeightView,
    act: str,
    passes: int,
    group: str | int | None,
    scale_rule: str,
    int8_qmax: int = 127,
) -> Decomposition:
    if w.kind == "mx":
        if group not in (None, w.group_size):
            raise ValueError(f"group must equal the MX weight block ({w.group_size}) for MX weights, got {group!r}")
        return decompose(x2, act, passes=passes, group=w.group_size, scale_rule=scale_rule)
    return decompose(x2, act, passes=passes, group=group, int8_qmax=int8_qmax)


# ---------------------------------------------------------------------------------------------------------------
# MSD
# ---------------------------------------------------------------------------------------------------------------


def matmul(
    x: torch.Tensor,
    w_q: Any,
    *,
    method: str = "msd",
    passes: int | None = None,
    act: str | None = None,
    group: str | int | None = None,
    scale_rule: str = "ceil",
    accumulate: torch.dtype = torch.float32,
    int8_qmax: int = 127,
) -> torch.Tensor:
    """``x · Wᵀ`` for a quantized weight ``w_q`` ``[N, K]``; returns ``[..., N]`` in ``accumulate``.

    Args:
        x: activation ``[..., K]`` (float16/bfloat16/float32/float64).
        w_q: ``formats.IntQuantized`` (per-tensor, per-channel or per-group scales) or ``formats.MXTensor``
            (blocks along K), or a :class:`lowbit.msd.weights.WeightView`.
        method: ``"msd"`` (decompose the activation, never dequantize) or ``"dequant"`` (BF16 baseline).
        passes: number of activation components (default 2; 1 for ``act="mxfp8"``).
        act: activation format: ``"int8"`` for integer weights; ``"mxfp4"`` (default) or ``"mxfp8"`` for MX.
        group: INT8 activation groups, ``"row"`` (default) or a K-block size. MX: the weight's block.
        scale_rule: MX activation scale rule, ``"ceil"`` (default) or ``"ocp"``.
        accumulate: recombination dtype, ``torch.float32`` (as in the paper) or ``torch.float64``.
        int8_qmax: INT8 activations: the largest component (127, or 63 as the fast path runs without VNNI).

    Rows of ``x`` holding NaN/Inf give NaN output rows; every other row is unaffected.

    >>> import torch
    >>> from lowbit.msd.weights import WeightView
    >>> w = WeightView("int", torch.tensor([[1, -2], [3, 4]], dtype=torch.int8), torch.tensor([[0.5], [0.25]],
    ...                dtype=torch.float64), 2, "int8")
    >>> matmul(torch.tensor([[1.0, 1.0]]), w).tolist()
    [[-0.5, 1.75]]
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _check_accumulate(accumulate)
    w = weight_view(w_q)
    x2 = _check_inputs(x, w)
    if method == "dequant":
        if passes is not None or act is not None or group is not None:
            raise ValueError("passes, act and group apply to method='msd' only")
        y = dequant_matmul(x2, w, accumulate=accumulate)
    else:
        act, passes = _act_defaults(w, act, passes)
        d = _decompose_for(x2, w, act, passes, group, scale_rule, int8_qmax)
        y = _msd_int(d, w, accumulate) if w.kind == "int" else _msd_mx(d, w, accumulate)
    return y.reshape(*x.shape[:-1], w.shape[0])


def _msd_int(d: Decomposition, w: WeightView, accumulate: torch.dtype) -> torch.Tensor:
    m, k = d.shape
    p = d.passes
    stacked = torch.cat(d.components, dim=0)  # [p·M, K]: one GEMM, Wq read once
    segment = math.gcd(d.group_size, w.group_size)
    if segment >= k:
        acc = int_gemm(stacked, w.values).to(accumulate).reshape(p, m, w.shape[0])  # exact int64 -> FP32 (rounds)
        y = torch.zeros_like(acc[0])
        for i in range(p):
            y = y + d.scales[i].to(accumulate) * acc[i]
        return y * w.scales[:, 0].to(accumulate)
    y = torch.zeros(m, w.shape[0], dtype=accumulate)
    for start in range(0, k, segment):
        stop = min(k, start + segment)
        acc = int_gemm(stacked[:, start:stop], w.values[:, start:stop]).to(accumulate).reshape(p, m, w.shape[0])
        part = torch.zeros_like(acc[0])
        for i in range(p):
            part = part + d.scales[i][:, start // d.group_size : start // d.group_size + 1].to(accumulate) * acc[i]
        y = y + part * w.scales[:, start // w.group_size].to(accumulate)
    return y


def _unit(elem: str) -> float:
    """The smallest subnormal of an MX element format: every element value is an integer multiple of it."""
    return formats.element_format(elem).min_subnormal


def _pad_k(t: torch.Tensor, block: int) -> torch.Tensor:
    pad = -t.shape[-1] % block
    return torch.nn.functional.pad(t, (0, pad)) if pad else t


def _msd_mx(d: Decomposition, w: WeightView, accumulate: torch.dtype) -> torch.Tensor:
    m = d.shape[0]
    block = w.group_size
    a_vals = _pad_k(torch.cat(d.components, dim=0), block)
    a_scales = torch.cat(d.scales, dim=0)
    y = mx_block_gemm(
        a_vals,
        a_scales,
        _pad_k(w.values, block),
        w.scales,
        block=block,
        a_unit=_unit(d.elem),
        b_unit=_unit(w.elem),
        accumulate=accumulate,
    )
    y = y.reshape(d.passes, m, w.shape[0])
    out = y[0]
    for i in range(1, d.passes):
        out = out + y[i]
    return out


# ---------------------------------------------------------------------------------------------------------------
# dequant baselines and references
# ---------------------------------------------------------------------------------------------------------------


def dequant_matmul(x: torch.Tensor, w_q: Any, *, accumulate: torch.dtype = torch.float32) -> torch.Tensor:
    """The dequant baseline: BF16 activation, weight dequantized to BF16, GEMM with ``accumulate`` accumulation.

    INT weights: ``bf16(float32(q)·float32(s_w))`` (W8A16: the weight keeps 8 significant bits). MX weights:
    ``element·2^e`` is exact in BF16 for E2M1 and E8M0 scales within the BF16 range (W4A16). Products of BF16
    values are exact in float32, so ``float32(x_bf16) @ float32(W_bf16)ᵀ`` is a BF16 GEMM with FP32 accumulation.
    """
    _check_accumulate(accumulate)
    w = weight_view(w_q)
    x2 = _check_inputs(x, w)
    if w.kind == "int":
        w_bf16 = (w.values.to(torch.float32) * w.expanded_scales(torch.float32)).to(torch.bfloat16)
    else:
        w_bf16 = w.dequantize(torch.float64).to(torch.bfloat16)
    y = x2.to(torch.bfloat16).to(accumulate) @ w_bf16.to(accumulate).t()
    return y.reshape(*x.shape[:-1], w.shape[0])


def matmul_reference(x: torch.Tensor, w_q: Any) -> torch.Tensor:
    """``x · deq(Wq)ᵀ`` in float64 with the activation as given (the same quantized weight, no other rounding)."""
    w = weight_view(w_q)
    x2 = _check_inputs(x, w)
    return (x2.to(torch.float64) @ w.dequantize(torch.float64).t()).reshape(*x.shape[:-1], w.shape[0])


def matmul_error_bound(
    x: torch.Tensor,
    w_q: Any,
    *,
    passes: int | None = None,
    act: str | None = None,
    group: str | int | None = None,
    scale_rule: str = "ceil",
    accumulate: torch.dtype = torch.float32,
    int8_qmax: int = 127,
) -> torch.Tensor:
    """Bound on ``|matmul(x, w_q, method="msd", ...) - matmul_reference(x, w_q)|`` per output, float64 ``[..., N]``.

    [derived] ``|Δy[m, n]| <= Σ_k B[m, k]·|W[n, k]| + γ·Σ_i (|S_i ⊙ A_i| · |W|ᵀ)[m, n]``: the first term is the
    decomposition bound ``B`` (:func:`lowbit.msd.error_bound`) pushed through the exact weight; the second
    covers the recombination roundings, ``γ = (p·G + 8)·u`` with ``G`` the number of K-segments or blocks and
    ``u = 2^-24`` (float32) or ``2^-53`` (float64). Assumes finite x and scale products in the normal range.
    """
    _check_accumulate(accumulate)
    w = weight_view(w_q)
    x2 = _check_inputs(x, w)
    act, passes = _act_defaults(w, act, passes)
    d = _decompose_for(x2, w, act, passes, group, scale_rule, int8_qmax)
    if w.kind == "mx":
        bound = error_bound(x2, act, passes=passes, group=w.group_size, scale_rule=scale_rule)
    else:
        bound = error_bound(x2, act, passes=passes, group=group, int8_qmax=int8_qmax)
    b = bound.repeat_interleave(d.group_size, dim=-1)[:, : d.shape[1]]
    w_abs = w.dequantize(torch.float64).abs()
    decomposition_term = b @ w_abs.t()
    magnitude = sum(d.term(i, torch.float64).abs() for i in range(passes)) @ w_abs.t()
    segments = math.ceil(d.shape[1] / math.gcd(d.group_size, w.group_size))
    u = _U32 if accumulate == torch.float32 else _U64
    gamma = (passes * segments + 8) * u
    return (decomposition_term + gamma * magnitude).reshape(*x.shape[:-1], w.shape[0])
