"""The tiled online-softmax loop shared by every attention path (FlashAttention-2 order).

For each key block ``i`` with scores ``S_i`` (float32, ``[batch, heads_kv, rows, block]``; ``rows`` =
query heads of a group × query tokens)::

    m_i = max(m_{i-1}, rowmax S_i)
    P_i = exp(S_i - m_i)
    l_i = e^{m_{i-1} - m_i} · l_{i-1} + rowsum P_i
    O_i = e^{m_{i-1} - m_i} · O_{i-1} + P_i · V_i          (rescale="mul")
    out = O_last / l_last

With AMLA (docs/methods/amla.md §3-§4) the reference point of O is the power of two
``2^{-n_i}``, ``n_i = round(-m_i / ln 2)``; ``P̃_i = P_i · ĉ_i`` with ``c_i = e^{m_i}·2^{n_i}`` and the
rescale of O is the integer add of ``(Δn_i + ε_i) << 23`` (:func:`lowbit.attention.amla.rescale_by_int_add`);
``out = O_last / (l_last · ĉ_last)``.

Rows whose keys are all masked so far keep ``m = -inf``, contribute nothing and are never rescaled;
rows with no visible key at all return zeros (never NaN). Empty inputs (batch, heads or rows 0) return an
empty output.

Scores beyond the float32 range. The inputs are finite, so a non-finite score (``±inf`` or NaN before the
mask, ``+inf`` after it) can only come from float32 overflow in ``scale·q·kᵀ`` (or a huge float mask). The
float32 loop would then return zeros or NaN silently, so instead the loop is run a second time on scores
recomputed in float64 relative to each row's maximum (``S - max_row S``, mask included, rounded once to
float32, all ``<= 0``): the softmax is unchanged by the shift and matches the float64 reference. This needs
``scores64_fn``; without it an :class:`OverflowError` names the problem. ``RescaleTrace.shifted`` records it.
AMLA shifts ``Δn <= -255`` flush every normal float32 to zero; they are clamped there before the ``<< 23``
so the int32 units never wrap. ``n`` is kept in float64 (it is ``±inf`` in float32 for
``|m| > 2^127·ln 2``; there ``c = 1``, since every move of such an ``m`` flushes ``O``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lowbit.attention.amla import AmlaConfig, repair_zeros, rescale_by_int_add

_LOG2E = torch.tensor(1.0 / math.log(2.0), dtype=torch.float32)
_LN2 = torch.tensor(math.log(2.0), dtype=torch.float32)
_TWO23 = float(2**23)
_FLUSH_SHIFT = -255.0  # Δn <= -254 takes every normal float32 (biased exponent <= 254) below 2^-126

ScoresFn = Callable[[int, int], Tensor]
"""``(start, end) -> S`` float32 ``[batch, heads_kv, rows, end - start]``, scale applied, masks not yet."""
PVFn = Callable[[Tensor, int, int], Tensor]
"""``(P, start, end) -> P·V_block`` float32 ``[batch, heads_kv, rows, dim_v]``; ``P`` is float32."""
MaskFn = Callable[[int, int], Tensor | None]
"""``(start, end) -> additive float32 bias`` broadcastable to the scores block, or ``None``."""


@dataclass(frozen=True)
class RescaleTrace:
    """What the rescales did: how often the reference moved, and the AMLA shift statistics.

    ``transitions`` counts (row, block) pairs after a row's first visible block; ``moved`` those where
    the reference changed (``m`` grew for "mul", ``Δn != 0`` for AMLA); ``min_shift`` is the most
    negative AMLA ``Δn`` before clamping (0 for "mul"); ``clamped`` counts shifts cut by the clamp;
    ``max_jump`` is the largest one-block growth of the running max ``m``; ``shifted`` is True when the float32
    scores overflowed and the loop ran on float64 scores shifted by their row maximum (module docstring).
    """

    blocks: int
    transitions: int
    moved: int
    min_shift: int
    clamped: int
    max_jump: float
    shifted: bool = False

    @property
    def moved_fraction(self) -> float:
        """Fraction of transitions where the reference point moved."""
        return self.moved / self.transitions if self.transitions else 0.0


class _ScoresOverflow(Exception):
    """A float32 score block held a non-finite value although the inputs are finite (internal signal)."""

    def __init__(self, start: int, end: int) -> None:
        super().__init__(f"keys [{start}, {end})")
        self.start, self.end = start, end


def run_online_softmax(
    *,
    out_shape: tuple[int, int, int, int],
    seq_k: int,
    block_k: int,
    scores_fn: ScoresFn,
    pv_fn: PVFn,
    mask_fn: MaskFn,
    amla: AmlaConfig | None,
    scores64_fn: ScoresFn | None = None,
) -> tuple[Tensor, RescaleTrace]:
    """Run the loop over key blocks; returns float32 ``[batch, heads_kv, rows, dim_v]`` and the trace.

    ``scores64_fn`` (same contract as ``scores_fn``, float64) is used only when the float32 scores overflow
    (module docstring); without it that case raises :class:`OverflowError`.
    """
    try:
        return _loop(out_shape, seq_k, block_k, scores_fn, pv_fn, mask_fn, amla, shifted=False)
    except _ScoresOverflow as exc:
        if scores64_fn is None:
            raise OverflowError(
                f"attention scores scale·q·kᵀ (+ mask) overflow float32 for keys [{exc.start}, {exc.end}) although "
                "the inputs are finite; the float32 softmax cannot represent them (scale q or k down)"
            ) from None
    rows_max = _row_max64(out_shape, seq_k, block_k, scores64_fn, mask_fn)

    def shifted_scores(start: int, end: int) -> Tensor:
        s = scores64_fn(start, end)
        bias = mask_fn(start, end)
        if bias is not None:
            s = s + bias.to(torch.float64)
        return (s - rows_max.unsqueeze(-1)).to(torch.float32)  # <= 0; far below the max rounds to -inf (p = 0)

    def no_mask(start: int, end: int) -> Tensor | None:
        return None

    return _loop(out_shape, seq_k, block_k, shifted_scores, pv_fn, no_mask, amla, shifted=True)


def _all_finite(x: Tensor) -> bool:
    """No NaN and no ±inf in ``x``: one min/max pass (NaN propagates), far cheaper than ``isfinite(x).all()``."""
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def _row_max64(
    out_shape: tuple[int, int, int, int], seq_k: int, block_k: int, scores64_fn: ScoresFn, mask_fn: MaskFn
) -> Tensor:
    """float64 ``max_j (S + bias)`` per row over all keys (0 for rows with no visible key)."""
    b, hk, rows, _ = out_shape
    best = torch.full((b, hk, rows), float("-inf"), dtype=torch.float64)
    for start in range(0, seq_k, block_k):
        end = min(start + block_k, seq_k)
        s = scores64_fn(start, end)
        if not _all_finite(s):
            raise OverflowError(f"attention scores overflow even float64 for keys [{start}, {end})")
        bias = mask_fn(start, end)
        if bias is not None:
            s = s + bias.to(torch.float64)
        if s.numel():
            best = torch.maximum(best, s.amax(dim=-1))
    return torch.where(torch.isfinite(best), best, torch.zeros_like(best))


def _loop(
    out_shape: tuple[int, int, int, int],
    seq_k: int,
    block_k: int,
    scores_fn: ScoresFn,
    pv_fn: PVFn,
    mask_fn: MaskFn,
    amla: AmlaConfig | None,
    *,
    shifted: bool,
) -> tuple[Tensor, RescaleTrace]:
    """The loop of the module docstring; raises :class:`_ScoresOverflow` on a non-finite score (first pass)."""
    b, hk, rows, _ = out_shape
    o = torch.zeros(out_shape, dtype=torch.float32)
    m = torch.full((b, hk, rows), float("-inf"), dtype=torch.float32)
    lsum = torch.zeros((b, hk, rows), dtype=torch.float32)
    n_prev = torch.zeros((b, hk, rows), dtype=torch.float64)  # integers; float64 holds -m/ln 2 for any float32 m
    cof_prev = torch.ones((b, hk, rows), dtype=torch.float32)
    c_last = torch.ones((b, hk, rows), dtype=torch.float32)
    blocks = transitions = moved = clamped = 0
    min_shift, max_jump = 0, 0.0
    empty = m.numel() == 0
    for start in range(0, seq_k, block_k):
        end = min(start + block_k, seq_k)
        blocks += 1
        s = scores_fn(start, end)
        if not shifted and not _all_finite(s):
            raise _ScoresOverflow(start, end)
        bias = mask_fn(start, end)
        if bias is not None:
            s = s + bias
        row_max = s.amax(dim=-1)
        if not shifted and bias is not None and bool(torch.isposinf(row_max).any()):
            raise _ScoresOverflow(start, end)  # finite + huge float mask; NaN cannot appear here
        m_new = torch.maximum(m, row_max)
        had = torch.isfinite(m)
        active = torch.isfinite(m_new)
        m_safe = torch.where(active, m_new, torch.zeros_like(m_new))
        alpha = torch.where(had, torch.exp(m - m_safe), torch.zeros_like(m))
        p = torch.exp(s - m_safe.unsqueeze(-1))
        lsum = alpha * lsum + p.sum(dim=-1)
        transitions += int(had.sum())
        jump = torch.where(had, m_new.double() - m.double(), torch.zeros_like(m, dtype=torch.float64))
        if not empty:
            max_jump = max(max_jump, float(jump.max()))
        if amla is None:
            moved += int((had & (m_new > m)).sum())
            o = alpha.unsqueeze(-1) * o + pv_fn(p, start, end)
        else:
            t = m_safe * _LOG2E  # float32, as the kernel
            n32 = torch.where(active, torch.round(-t), torch.zeros_like(t))
            frac = t + n32
            n = n32.to(torch.float64)
            wide = ~torch.isfinite(t)  # |m| > 2^127·ln 2: m·log2(e) overflows float32
            if bool(wide.any()):
                # Only float64 holds n there. float32 m then moves by >= 2^103, so every move flushes O and the
                # residual factor c only has to agree between blocks that keep m: c = 1.
                n = torch.where(wide, torch.round(-m_safe.to(torch.float64) / math.log(2.0)), n)
                frac = torch.where(wide, torch.zeros_like(frac), frac)
            c = torch.exp(frac * _LN2)
            c_hat = c.to(torch.bfloat16).to(torch.float32) if amla.bf16_factor else c
            cof = c / c_hat
            dn = torch.where(had, n - n_prev, torch.zeros_like(n))
            moved += int((had & (dn != 0)).sum())
            if not empty:
                min_shift = min(min_shift, int(dn.min()))
            if amla.clamp is not None:
                clamped += int((dn < amla.clamp).sum())
                dn = torch.clamp(dn, min=float(amla.clamp))
            # Below -254 the product flushes to zero anyway; the clamp keeps the int32 units from wrapping.
            dn = torch.clamp(dn, min=_FLUSH_SHIFT).to(torch.float32)
            eps = torch.zeros_like(dn)
            if amla.compensate:
                eps = torch.where(had, 1.5 * (cof_prev / cof - 1.0) + amla.bias, eps)
            units = torch.round((dn + eps) * _TWO23).to(torch.int32)
            if bool((units != 0).any()):
                o = rescale_by_int_add(o, units, zero_guard=amla.zero_guard)
            o = o + pv_fn(p * c_hat.unsqueeze(-1), start, end)
            n_prev = torch.where(active, n, n_prev)
            cof_prev = torch.where(active, cof, cof_prev)
            c_last = torch.where(active, c_hat, c_last)
        m = m_new
    if amla is not None and amla.zero_guard == "repair":
        o = repair_zeros(o)
    denom = lsum * c_last
    ok = (denom > 0).unsqueeze(-1)
    out = torch.where(ok, o / torch.where(ok, denom.unsqueeze(-1), torch.ones_like(o)), torch.zeros_like(o))
    trace = RescaleTrace(blocks, transitions, moved, min_shift, clamped, max_jump, shifted)
    return out, trace
