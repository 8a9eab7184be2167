"""verl's clipped policy loss with a rollout correction, in verl's calling convention (``docs/methods/ais.md`` §7).

verl (0.9.1, ``verl/workers/utils/losses.py::ppo_loss``) calls every registered policy loss, once per
micro-batch, as::

    fn(old_log_prob=, log_prob=, advantages=, response_mask=, loss_agg_mode=, config=, rollout_is_weights=)

It never passes the rollout log-probs μ: the rollout correction is computed on the driver, over the whole
batch, and reaches the loss as ``rollout_is_weights``. With the plugin :mod:`lowbit.rl.verl` installed,
``algorithm.rollout_correction.rollout_is=ais`` makes those weights lowbit's, so *every* verl loss applies
them. :func:`compute_policy_loss_ais` is verl's ``vanilla`` loss (dual-clip PPO, ``config.global_batch_info``,
all five aggregations, the same metrics) with one difference: it refuses to run without a correction. The
plugin registers it as ``loss_mode=ais``. Outside verl it can also compute the correction itself from
``rollout_log_probs``.

verl itself is not a dependency of lowbit; nothing here imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lowbit.rl.correction import CorrectionConfig, correction
from lowbit.rl.verl.aggregate import agg_loss

__all__ = ["compute_policy_loss_ais"]


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """``obj.name`` for a dict, an omegaconf DictConfig or a verl dataclass config (``BaseConfig``)."""
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    try:
        return obj.get(name, default)  # omegaconf DictConfig
    except (AttributeError, TypeError):
        return getattr(obj, name, default)


def _ais_config(config: Any) -> CorrectionConfig:
    found = _get(config, "ais")
    if found is None:
        found = _get(_get(config, "policy_loss"), "ais")
    if found is None:
        return CorrectionConfig(mode="ais")
    if isinstance(found, CorrectionConfig):
        cfg = found
    elif isinstance(found, Mapping) or hasattr(found, "items"):
        cfg = CorrectionConfig(**{str(k): (tuple(v) if k == "band" else v) for k, v in found.items()})
    else:
        raise TypeError(f"config.ais must be a CorrectionConfig or a mapping, got {type(found).__name__}")
    if cfg.ema != 0.0 or cfg.tau_d is None:
        raise ValueError(
            "compute_policy_loss_ais is stateless (verl calls it per micro-batch): use ema=0 and a fixed tau_d, "
            "or call lowbit.rl.correction with a CorrectionState from your own training loop"
        )
    return cfg


def _clip_ranges(config: Any) -> tuple[float, float, float]:
    """``(ε_low, ε_high, c)`` read as verl's vanilla loss reads them (``clip_ratio`` 0.2, ``clip_ratio_c`` 3)."""
    clip_ratio = _get(config, "clip_ratio", 0.2)
    low = _get(config, "clip_ratio_low", None)
    high = _get(config, "clip_ratio_high", None)
    eps_low = float(clip_ratio if low is None else low)
    eps_high = float(clip_ratio if high is None else high)
    clip_c = float(_get(config, "clip_ratio_c", 3.0))
    if not clip_c > 1.0:
        raise ValueError(f"clip_ratio_c (the dual-clip bound) must be > 1, got {clip_c}")
    return eps_low, eps_high, clip_c


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    """verl's ``masked_mean`` (``Σ m·x / (Σ m + 1e-8)``) as a float, for the metrics."""
    m = mask.to(x.dtype)
    return float(torch.where(mask, x, torch.zeros_like(x)).sum() / (m.sum() + 1e-8))


def compute_policy_loss_ais(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any | None = None,
    rollout_is_weights: torch.Tensor | None = None,
    rollout_log_probs: torch.Tensor | None = None,
    *,
    process_group: Any | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl's dual-clip PPO loss times a correction factor c; returns ``(pg_loss, pg_metrics)``.

    Per token, with r = exp(clamp(log π_θ − log π_old, ±20)), ε from ``config.clip_ratio_low/high`` (falling
    back to ``clip_ratio``, 0.2) and the dual-clip bound C_d = ``config.clip_ratio_c`` (3.0)::

        ℓ = max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high));   ℓ = min(ℓ, −A·C_d) where A < 0
        pg_loss = agg_loss(c ⊙ ℓ, mask, loss_agg_mode, config.global_batch_info)

    (:func:`lowbit.rl.verl.aggregate.agg_loss`: verl's five modes with its global counts, so the micro-batch
    losses sum to the mini-batch loss). The factor c is

    - ``rollout_is_weights`` as verl passes it (with ``rollout_is=ais``: lowbit's weights from the driver), or
    - computed here from ``rollout_log_probs`` (log μ) with the :class:`CorrectionConfig` in ``config.ais`` or
      ``config.policy_loss.ais`` (default ``mode="ais"``), α measured on the tensors passed in (all-reduced
      over ``process_group``); tokens the mode rejects leave the mask.

    Giving neither is an error (verl would silently train uncorrected), and so is giving both (the
    correction would be applied twice). Metrics: verl's ``actor/pg_clipfrac``, ``actor/ppo_kl`` and
    ``actor/pg_clipfrac_lower``, plus ``rollout_corr/lowbit_<key>`` when the correction is computed here.
    """
    if rollout_is_weights is not None and rollout_log_probs is not None:
        raise ValueError(
            "got both rollout_is_weights and rollout_log_probs: the correction would be applied twice; pass one"
        )
    if rollout_is_weights is None and rollout_log_probs is None:
        raise ValueError(
            "no rollout correction: verl passes rollout_is_weights only when algorithm.rollout_correction.rollout_is "
            "is set (rollout_is=ais with the lowbit.rl.verl plugin); outside verl pass rollout_log_probs"
        )
    if log_prob.shape != old_log_prob.shape or response_mask.shape != log_prob.shape:
        raise ValueError(
            f"log_prob {tuple(log_prob.shape)}, old_log_prob {tuple(old_log_prob.shape)} and response_mask "
            f"{tuple(response_mask.shape)} must have the same shape"
        )
    if advantages.shape not in (log_prob.shape[:1], log_prob.shape):
        raise ValueError(
            f"advantages must have shape {tuple(log_prob.shape[:1])} or {tuple(log_prob.shape)}, "
            f"got {tuple(advantages.shape)}"
        )
    eps_low, eps_high, clip_c = _clip_ranges(config)
    mask = response_mask.bool()
    metrics: dict[str, float] = {}
    if rollout_log_probs is not None:
        corr = correction(
            old_log_prob, rollout_log_probs, mask, advantages, _ais_config(config), process_group=process_group
        )
        mask, coef = corr.mask, corr.weights
        metrics |= {f"rollout_corr/lowbit_{k}": v for k, v in corr.metrics.items()}
    else:
        assert rollout_is_weights is not None
        if rollout_is_weights.shape != log_prob.shape:
            raise ValueError(
                f"rollout_is_weights {tuple(rollout_is_weights.shape)} must have the shape of log_prob "
                f"{tuple(log_prob.shape)}"
            )
        coef = rollout_is_weights.detach()

    zero = torch.zeros_like(log_prob)
    # Masked positions may hold -inf/NaN (padding): select before any arithmetic so no NaN reaches a gradient.
    neg_kl = (torch.where(mask, log_prob, zero) - torch.where(mask, old_log_prob.detach(), zero)).clamp(-20.0, 20.0)
    ratio = torch.exp(neg_kl)
    adv = advantages.detach().to(log_prob.dtype)
    adv = torch.where(mask, adv.unsqueeze(-1).expand_as(log_prob) if adv.dim() == 1 else adv, zero)
    loss1 = -adv * ratio
    loss2 = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    clipped = torch.maximum(loss1, loss2)
    loss3 = -adv * clip_c
    per_token = torch.where(adv < 0, torch.minimum(loss3, clipped), clipped)
    coef = torch.where(mask, coef.to(log_prob.dtype), zero)
    pg_loss = agg_loss(per_token * coef, mask, loss_agg_mode, _get(config, "global_batch_info"))

    with torch.no_grad():
        metrics["actor/pg_clipfrac"] = _masked_mean((loss2 > loss1).to(log_prob.dtype), mask)
        metrics["actor/ppo_kl"] = _masked_mean(-neg_kl, mask)
        metrics["actor/pg_clipfrac_lower"] = _masked_mean(((clipped > loss3) & (adv < 0)).to(log_prob.dtype), mask)
    return pg_loss, metrics
