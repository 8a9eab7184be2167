"""The tiled online-softmax loop shared by every attention path (FlashAttention-2 order).

For each key block ``i`` with scores ``S_i`` (float32, ``[batch, heads_kv, rows, block]``; ``rows`` =
query heads of a group × query tokens)::

    m_i = max(m_{i-1}, rowmax S_i)
    P_i = exp(S_i - m_i)
    l_i = e^{m_{i-1} - m_i} · l_{i-1} + rowsum P_i
    O_i = e^{m_{i-1} - m_i} · O_{i-1} + P_i · V_i          (rescale="mul")
    out = O_last / l_last

With AMLA (../shared/papers/amla.md §3-§4) the reference point of O is the power of two
``2^{-n_i}``, ``n_i = round(-m_i / ln 2)``; ``P̃_i = P_i · ĉ_i`` with ``c_i = e^{m_i}·2^{n_i}`` and the
rescale of O is the integer add of ``(Δn_i + ε_i) << 23`` (:func:`lowbit.attention.amla.rescale_by_int_add`);
``out = O_last / (l_last · ĉ_last)``.

Rows whose keys are all masked so far keep ``m = -inf``, contribute nothing and are never rescaled;
rows with no visible key at all return zeros (never NaN).
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
    ``max_jump`` is the largest one-block growth of the running max ``m``.
    """

    blocks: int
    transitions: int
    moved: int
    min_shift: int
    clamped: int
    max_jump: float

    @property
    def moved_fraction(self) -> float:
        """Fraction of transitions where the reference point moved."""
        return self.moved / self.transitions if self.transitions else 0.0


def run_online_softmax(
    *,
    out_shape: tuple[int, int, int, int],
    seq_k: int,
    block_k: int,
    scores_fn: ScoresFn,
    pv_fn: PVFn,
    mask_fn: MaskFn,
    amla: AmlaConfig | None,
) -> tuple[Tensor, RescaleTrace]:
    """Run the loop over key blocks; returns float32 ``[batch, heads_kv, rows, dim_v]`` and the trace."""
    b, hk, rows, _ = out_shape
    o = torch.zeros(out_shape, dtype=torch.float32)
    m = torch.full((b, hk, rows), float("-inf"), dtype=torch.float32)
    lsum = torch.zeros((b, hk, rows), dtype=torch.float32)
    n_prev = torch.zeros((b, hk, rows), dtype=torch.float32)
    cof_prev = torch.ones((b, hk, rows), dtype=torch.float32)
    c_last = torch.ones((b, hk, rows), dtype=torch.float32)
    blocks = transitions = moved = clamped = 0
    min_shift, max_jump = 0, 0.0
    for start in range(0, seq_k, block_k):
        end = min(start + block_k, seq_k)
        blocks += 1
        s = scores_fn(start, end)
        bias = mask_fn(start, end)
        if bias is not None:
            s = s + bias
        m_new = torch.maximum(m, s.amax(dim=-1))
        had = torch.isfinite(m)
        active = torch.isfinite(m_new)
        m_safe = torch.where(active, m_new, torch.zeros_like(m_new))
        alpha = torch.where(had, torch.exp(m - m_safe), torch.zeros_like(m))
        p = torch.exp(s - m_safe.unsqueeze(-1))
        lsum = alpha * lsum + p.sum(dim=-1)
        transitions += int(had.sum())
        jump = torch.where(had, m_new - m, torch.zeros_like(m))
        max_jump = max(max_jump, float(jump.max()))
        if amla is None:
            moved += int((had & (m_new > m)).sum())
            o = alpha.unsqueeze(-1) * o + pv_fn(p, start, end)
        else:
            n = torch.where(active, torch.round(-m_safe * _LOG2E), torch.zeros_like(m_safe))
            c = torch.exp((m_safe * _LOG2E + n) * _LN2)
            c_hat = c.to(torch.bfloat16).to(torch.float32) if amla.bf16_factor else c
            cof = c / c_hat
            dn = torch.where(had, n - n_prev, torch.zeros_like(n))
            moved += int((had & (dn != 0)).sum())
            min_shift = min(min_shift, int(dn.min()))
            if amla.clamp is not None:
                clamped += int((dn < amla.clamp).sum())
                dn = torch.clamp(dn, min=float(amla.clamp))
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
    trace = RescaleTrace(blocks, transitions, moved, min_shift, clamped, max_jump)
    return out, trace
