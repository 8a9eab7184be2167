"""The clipped policy-gradient loss with a rollout correction factor (``docs/methods/ais.md`` §5, §7).

Per token, with r = π_θ/π_old and the (detached) correction factor c from :func:`~lowbit.rl.correction`::

    ℓ_{i,t} = −min(r·Â_i, clip(r, 1−ε_low, 1+ε_high)·Â_i)
    L = agg(c ⊙ ℓ) + β · agg(k3),   k3 = π_ref/π_θ − log(π_ref/π_θ) − 1   (GRPO's KL, optional)

Aggregations (verl's ``loss_agg_mode`` names):

- ``token-mean`` (DAPO): ``Σ_{i,t} m·x / Σ_{i,t} m``;
- ``seq-mean-token-mean`` (GRPO): ``mean_i (Σ_t m·x / Σ_t m)`` over non-empty responses;
- ``seq-mean-token-sum-norm`` (Dr. GRPO): ``Σ_{i,t} m·x / (B·L)`` with the constant L = ``max_len``
  (default: the padded length T).

The mask used by the aggregation is the correction's mask (rejected tokens removed), the same for every
branch, so the loss is linear in c: ``∇L(α) = (1−α)·∇L(0) + α·∇L(1)``.
"""

from __future__ import annotations

from typing import Any

import torch

from lowbit.rl.correction import Correction, CorrectionConfig, CorrectionState, correction

__all__ = ["LOSS_AGGREGATIONS", "aggregate", "policy_loss"]

LOSS_AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def aggregate(values: torch.Tensor, mask: torch.Tensor, loss_agg: str, *, max_len: int | None = None) -> torch.Tensor:
    """Reduce a (B, T) per-token tensor to a scalar with one of :data:`LOSS_AGGREGATIONS`; 0 with no valid token.

    >>> import torch
    >>> x = torch.tensor([[1.0, 3.0], [5.0, 0.0]]); m = torch.tensor([[1, 1], [1, 0]])
    >>> [round(float(aggregate(x, m, a)), 3) for a in LOSS_AGGREGATIONS]
    [3.0, 3.5, 2.25]
    """
    if loss_agg not in LOSS_AGGREGATIONS:
        raise ValueError(f"loss_agg must be one of {LOSS_AGGREGATIONS}, got {loss_agg!r}")
    m = mask.to(values.dtype)
    x = torch.where(mask.bool(), values, torch.zeros_like(values))
    if loss_agg == "token-mean":
        return x.sum() / m.sum().clamp_min(1.0)
    if loss_agg == "seq-mean-token-mean":
        per_seq_n = m.sum(-1)
        per_seq = x.sum(-1) / per_seq_n.clamp_min(1.0)
        return per_seq.sum() / (per_seq_n > 0).sum().clamp_min(1).to(values.dtype)
    length = values.shape[-1] if max_len is None else max_len
    if length < 1:
        raise ValueError(f"max_len must be >= 1, got {length}")
    return x.sum() / float(max(values.shape[0], 1) * length)


def policy_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    logp_rollout: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    config: CorrectionConfig | None = None,
    clip: tuple[float, float] = (0.2, 0.28),
    loss_agg: str = "token-mean",
    kl_coef: float = 0.0,
    logp_ref: torch.Tensor | None = None,
    max_len: int | None = None,
    state: CorrectionState | None = None,
    precomputed: Correction | None = None,
    process_group: Any | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped PPO/GRPO loss with a rollout-mismatch correction; returns ``(loss, metrics)``.

    ``logp`` (with gradient), ``logp_old`` and ``logp_rollout`` are per-token log-probs of the sampled
    tokens, shape (B, T); ``advantages`` has shape (B,) or (B, T). The factor c comes from
    ``precomputed`` when given (compute it once per global batch and reuse it for micro-batches),
    otherwise from ``correction(logp_old, logp_rollout, mask, advantages, config, state)``.
    ``clip = (ε_low, ε_high)``. ``kl_coef`` β > 0 adds GRPO's k3 penalty towards ``logp_ref``.
    Metrics: the correction's :data:`~lowbit.rl.correction.METRIC_KEYS` plus ``pg_loss``, ``pg_clipfrac``,
    ``ppo_kl`` and ``kl_penalty``.

    >>> import torch
    >>> lp = torch.log(torch.full((2, 3), 0.5)).requires_grad_()
    >>> loss, m = policy_loss(lp, lp.detach(), lp.detach(), torch.tensor([1.0, -1.0]), torch.ones(2, 3))
    >>> float(loss.detach()), m["alpha"]
    (0.0, 0.0)
    """
    if not isinstance(logp, torch.Tensor):
        raise TypeError(f"logp must be a torch.Tensor, got {type(logp).__name__}")
    if logp.shape != logp_old.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and logp_old {tuple(logp_old.shape)} must have the same shape")
    if len(clip) != 2 or clip[0] < 0 or clip[1] < 0:
        raise ValueError(f"clip must be (eps_low, eps_high) with both >= 0, got {clip}")
    if loss_agg not in LOSS_AGGREGATIONS:
        raise ValueError(f"loss_agg must be one of {LOSS_AGGREGATIONS}, got {loss_agg!r}")
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    if kl_coef > 0 and (logp_ref is None or logp_ref.shape != logp.shape):
        raise ValueError("logp_ref with the shape of logp is required when kl_coef > 0")
    if precomputed is None:
        if logp_rollout is None:
            raise ValueError("logp_rollout is required unless a precomputed Correction is given")
        corr = correction(logp_old, logp_rollout, mask, advantages, config, state, process_group=process_group)
    else:
        if not isinstance(precomputed, Correction):
            raise TypeError(f"precomputed must be a Correction, got {type(precomputed).__name__}")
        if precomputed.weights.shape != logp.shape:
            raise ValueError(f"precomputed.weights {tuple(precomputed.weights.shape)} must match logp")
        corr = precomputed
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(
            f"advantages must have shape {tuple(logp.shape[:1])} or {tuple(logp.shape)}, got {tuple(advantages.shape)}"
        )

    valid = corr.mask
    zero = torch.zeros_like(logp)
    # Masked positions may hold -inf/NaN (padding); select before any arithmetic so no NaN reaches a gradient.
    lp = torch.where(valid, logp, zero)
    lp_old = torch.where(valid, logp_old.detach(), zero)
    adv = advantages.detach().to(logp.dtype)
    adv = adv.unsqueeze(-1).expand_as(logp) if adv.dim() == 1 else adv
    adv = torch.where(valid, adv, zero)

    log_r = (lp - lp_old).clamp(-20.0, 20.0)
    ratio = torch.exp(log_r)
    eps_low, eps_high = clip
    surr1 = ratio * adv
    surr2 = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv
    per_token = -torch.minimum(surr1, surr2)
    pg_loss = aggregate(corr.weights.to(logp.dtype) * per_token, valid, loss_agg, max_len=max_len)

    kl_value = torch.zeros((), dtype=logp.dtype)
    loss = pg_loss
    if kl_coef > 0:
        assert logp_ref is not None
        ref_minus = (torch.where(valid, logp_ref.detach(), zero) - lp).clamp(-20.0, 20.0)
        k3 = torch.exp(ref_minus) - ref_minus - 1.0
        kl_value = aggregate(k3, valid, loss_agg, max_len=max_len)
        loss = pg_loss + kl_coef * kl_value

    with torch.no_grad():
        n = valid.sum().clamp_min(1)
        clipped = (surr2 < surr1) & valid
        metrics = dict(corr.metrics)
        metrics["pg_loss"] = float(pg_loss)
        metrics["pg_clipfrac"] = float(clipped.sum() / n)
        metrics["ppo_kl"] = float(torch.where(valid, -log_r, zero).sum() / n)
        metrics["kl_penalty"] = float(kl_value)
    return loss, metrics
