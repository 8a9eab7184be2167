"""Batch statistics of the rollout/trainer mismatch and the three AIS diagnostics (``docs/methods/ais.md`` §2-3).

Notation (docs/methods/ais.md §2): for valid tokens (mask ``m``),

    δ = log π_old − log μ          (detached; μ = rollout engine, π_old = trainer precision)
    w = exp(clamp(δ, −L, L))       (L = 20, verl's safety bound)
    N = Σ m

Every diagnostic is a function of a handful of *global sums* (:class:`MismatchStats`), so a data-parallel
run reduces those sums over the process group first and every rank then derives the same R, D, V and α
(docs/methods/ais.md §4, "Distributed runs"). Sums are kept in float64.

The diagnostics themselves are **[reconstruction]**: the AIS paper's formulas are not public. Each one is
a plain function ``MismatchStats -> 0-dim tensor`` looked up by name in a read-only table, and the config
also accepts any callable of that shape, so the published formulas can replace ours without editing this file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

import torch

__all__ = [
    "DIVERGENCES",
    "RELIABILITIES",
    "VARIANCES",
    "Diagnostic",
    "MismatchStats",
    "mismatch_stats",
    "reduce_stats",
]


@dataclass(frozen=True)
class MismatchStats:
    """Global sums over the valid tokens of a batch (all 0-dim float64 tensors).

    Token level: ``n_tokens = N``, ``sum_w = Σw``, ``sum_w2 = Σw²``, ``sum_abs_delta = Σ|δ|``,
    ``sum_delta = Σδ``, ``sum_k3 = Σ(w − 1 − δ)``, ``sum_adv2 = ΣÂ²``, ``sum_wadv2 = Σ(w·Â)²``,
    ``n_above_cap = Σ[w > C]``, ``n_below_lower = Σ[w < lower]``.
    Sequence level (non-empty sequences only, ``W_i = exp(mean_t δ_{i,t})``): ``n_seq``, ``sum_w_seq``,
    ``sum_w2_seq``. Extremes: ``max_abs_delta``, ``max_w``, ``min_w`` (reduced with MAX/MIN).
    """

    n_tokens: torch.Tensor
    sum_w: torch.Tensor
    sum_w2: torch.Tensor
    sum_abs_delta: torch.Tensor
    sum_delta: torch.Tensor
    sum_k3: torch.Tensor
    sum_adv2: torch.Tensor
    sum_wadv2: torch.Tensor
    n_above_cap: torch.Tensor
    n_below_lower: torch.Tensor
    n_seq: torch.Tensor
    sum_w_seq: torch.Tensor
    sum_w2_seq: torch.Tensor
    max_abs_delta: torch.Tensor
    max_w: torch.Tensor
    min_w: torch.Tensor


_SUM_FIELDS = tuple(f.name for f in fields(MismatchStats) if f.name.startswith(("n_", "sum_")))
_MAX_FIELDS = ("max_abs_delta", "max_w")
_MIN_FIELDS = ("min_w",)

Diagnostic = Callable[[MismatchStats], torch.Tensor]


def _safe_div(num: torch.Tensor, den: torch.Tensor, empty: float) -> torch.Tensor:
    """``num / den``, or ``empty`` where ``den == 0`` (never NaN)."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.full_like(num, empty))


def mismatch_stats(
    delta: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor | None,
    *,
    cap: float,
    lower: float,
) -> MismatchStats:
    """Local sums for one batch. ``delta`` is the clamped log-ratio (0 at invalid tokens), shape (B, T).

    ``advantages`` broadcasts to (B, T) (per-sequence advantages of shape (B,) are expanded); ``None``
    leaves ``sum_adv2 = sum_wadv2 = 0``, which makes the gradient-aware variance fall back to CV² (see
    :func:`variance_grad`).
    """
    m = mask.to(torch.float64)
    d = delta.to(torch.float64) * m
    w = torch.exp(d)
    wm = w * m
    n_tok_seq = m.sum(-1)
    nonempty = (n_tok_seq > 0).to(torch.float64)
    w_seq = torch.exp(_safe_div(d.sum(-1), n_tok_seq, 0.0)) * nonempty
    if advantages is None:
        a2 = torch.zeros_like(m)
    else:
        a = advantages.detach().to(torch.float64)
        a = a.unsqueeze(-1) if a.dim() == 1 else a
        a2 = torch.broadcast_to(a, m.shape) ** 2 * m
    valid = mask.bool()
    big = torch.finfo(torch.float64).max
    return MismatchStats(
        n_tokens=m.sum(),
        sum_w=wm.sum(),
        sum_w2=(w * wm).sum(),
        sum_abs_delta=d.abs().sum(),
        sum_delta=d.sum(),
        sum_k3=((w - 1.0 - d) * m).sum(),
        sum_adv2=a2.sum(),
        sum_wadv2=(w * w * a2).sum(),
        n_above_cap=((w > cap) & valid).to(torch.float64).sum(),
        n_below_lower=((w < lower) & valid).to(torch.float64).sum(),
        n_seq=nonempty.sum(),
        sum_w_seq=w_seq.sum(),
        sum_w2_seq=(w_seq * w_seq).sum(),
        max_abs_delta=torch.where(valid, d.abs(), torch.zeros_like(d)).amax()
        if d.numel()
        else torch.zeros((), dtype=d.dtype),
        max_w=torch.where(valid, w, torch.zeros_like(w)).amax() if w.numel() else torch.zeros((), dtype=w.dtype),
        min_w=torch.where(valid, w, torch.full_like(w, big)).amin()
        if w.numel()
        else torch.full((), big, dtype=w.dtype),
    )


def reduce_stats(stats: MismatchStats, group: Any) -> MismatchStats:
    """All-reduce the sums (SUM) and extremes (MAX/MIN) over a ``torch.distributed`` process group.

    Global sums, never means of per-rank means: R = (Σw)²/(N·Σw²) over the whole data-parallel batch.
    Three collectives per call whatever the number of statistics.
    """
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("process_group was given but torch.distributed is not initialised")
    sums = torch.stack([getattr(stats, k) for k in _SUM_FIELDS])
    maxes = torch.stack([getattr(stats, k) for k in _MAX_FIELDS])
    mins = torch.stack([getattr(stats, k) for k in _MIN_FIELDS])
    dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
    dist.all_reduce(maxes, op=dist.ReduceOp.MAX, group=group)
    dist.all_reduce(mins, op=dist.ReduceOp.MIN, group=group)
    values = dict(zip(_SUM_FIELDS, sums.unbind(), strict=True))
    values |= dict(zip(_MAX_FIELDS, maxes.unbind(), strict=True))
    values |= dict(zip(_MIN_FIELDS, mins.unbind(), strict=True))
    return MismatchStats(**values)


# ---------------------------------------------------------------- weight reliability R ∈ (0, 1]


def reliability_ess(s: MismatchStats) -> torch.Tensor:
    """Kish normalised ESS of the token weights: ``R = (Σw)² / (N·Σw²) = 1/(1 + CV²)``; 1 when N = 0.

    verl's ``rollout_is_eff_sample_size``. [reconstruction] as the AIS "weight reliability"
    (docs/methods/ais.md §3.1).
    """
    return _safe_div(s.sum_w * s.sum_w, s.n_tokens * s.sum_w2, 1.0).clamp(0.0, 1.0)


def reliability_ess_seq(s: MismatchStats) -> torch.Tensor:
    """Kish ESS of the length-normalised sequence weights ``W_i = exp(mean_t δ)``; 1 with no sequence."""
    return _safe_div(s.sum_w_seq * s.sum_w_seq, s.n_seq * s.sum_w2_seq, 1.0).clamp(0.0, 1.0)


# ---------------------------------------------------------------- divergence severity D ≥ 0


def divergence_mean_abs(s: MismatchStats) -> torch.Tensor:
    """``D = (1/N) Σ|δ|`` (TRL's ``sampling_logp_difference/mean``); 0 when N = 0. [reconstruction]"""
    return _safe_div(s.sum_abs_delta, s.n_tokens, 0.0)


def divergence_k3(s: MismatchStats) -> torch.Tensor:
    """k3 estimate of KL(μ‖π_old): ``(1/N) Σ (w − 1 − δ)`` (verl ``k3_kl``), ≥ 0; 0 when N = 0."""
    return _safe_div(s.sum_k3, s.n_tokens, 0.0).clamp_min(0.0)


def divergence_max_abs(s: MismatchStats) -> torch.Tensor:
    """``max |δ|`` over valid tokens: the worst token, which means hide (docs/methods/ais.md §8 "Monitoring")."""
    return s.max_abs_delta


# ---------------------------------------------------------------- variance amplification V ≥ 0


def variance_cv2(s: MismatchStats) -> torch.Tensor:
    """``CV²(w) = N·Σw²/(Σw)² − 1 = 1/R − 1`` (population variance); 0 when N = 0."""
    return (_safe_div(s.n_tokens * s.sum_w2, s.sum_w * s.sum_w, 1.0) - 1.0).clamp_min(0.0)


def variance_chi2(s: MismatchStats) -> torch.Tensor:
    """verl's ``chi2_token = E[w²] − 1``, clipped at 0."""
    return (_safe_div(s.sum_w2, s.n_tokens, 1.0) - 1.0).clamp_min(0.0)


def variance_grad(s: MismatchStats) -> torch.Tensor:
    """Gradient-aware ``V_g = max(0, E[(w·Â)²]/E[Â²] − 1)`` (docs/methods/ais.md §3.3). [reconstruction]

    The factor by which reweighting inflates the second moment of the per-token advantage signal. When
    the batch carries no advantage signal (``ΣÂ² = 0``: advantages not given, or every group tied) the
    gradient is zero whatever the weights, and V_g is undefined; the rule then uses CV², documented here
    and in docs/rl.md.
    """
    vg = (_safe_div(s.sum_wadv2, s.sum_adv2, 1.0) - 1.0).clamp_min(0.0)
    return torch.where(s.sum_adv2 > 0, vg, variance_cv2(s))


RELIABILITIES: Mapping[str, Diagnostic] = MappingProxyType({"ess": reliability_ess, "ess_seq": reliability_ess_seq})
DIVERGENCES: Mapping[str, Diagnostic] = MappingProxyType(
    {"mean_abs_logratio": divergence_mean_abs, "kl_k3": divergence_k3, "max_abs_logratio": divergence_max_abs}
)
VARIANCES: Mapping[str, Diagnostic] = MappingProxyType(
    {"grad": variance_grad, "cv2": variance_cv2, "chi2": variance_chi2}
)
