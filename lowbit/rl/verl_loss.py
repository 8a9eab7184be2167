"""A policy-loss function in verl's calling convention, so AIS drops into verl (``docs/methods/ais.md`` §7).

verl's ``verl/trainer/ppo/core_algos.py`` keeps policy losses in a registry of functions called as
``fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_log_probs=...)``.
:func:`compute_policy_loss_ais` has that signature; to register it (verl must be installed)::

    from verl.trainer.ppo.core_algos import register_policy_loss
    from lowbit.rl.verl_loss import compute_policy_loss_ais
    register_policy_loss("ais")(compute_policy_loss_ais)
    # then: actor_rollout_ref.actor.policy_loss.loss_mode=ais

verl itself is not a dependency of lowbit; nothing here imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from lowbit.rl.correction import CorrectionConfig, correction
from lowbit.rl.loss import policy_loss

__all__ = ["compute_policy_loss_ais"]


def _get(obj: Any, name: str, default: Any = None) -> Any:
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


def compute_policy_loss_ais(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any | None = None,
    rollout_log_probs: torch.Tensor | None = None,
    rollout_is_weights: torch.Tensor | None = None,
    *,
    process_group: Any | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl-style clipped PPO loss with the AIS correction; returns ``(pg_loss, pg_metrics)``.

    Reads ``clip_ratio_low``/``clip_ratio_high`` (falling back to ``clip_ratio``, default 0.2) from
    ``config`` (verl's ``ActorConfig``, a dict or a DictConfig) and the AIS settings from ``config.ais``
    or ``config.policy_loss.ais`` (a :class:`CorrectionConfig` or a mapping of its fields; default
    ``CorrectionConfig(mode="ais")``). ``rollout_log_probs`` (log μ recorded by the rollout engine) is
    required. If verl also passes its own ``rollout_is_weights`` they multiply the AIS factor; leave verl's
    rollout correction off to avoid correcting twice. Metrics are named ``rollout_corr/<key>`` plus
    ``actor/pg_loss``, ``actor/pg_clipfrac`` and ``actor/ppo_kl``.

    The α statistics are those of the tensors passed in (one micro-batch, on this rank); pass
    ``process_group`` to reduce them over data-parallel ranks.
    """
    if rollout_log_probs is None:
        raise ValueError(
            "rollout_log_probs is required: enable the rollout engine's log-probs (verl: calculate_log_probs=True)"
        )
    clip_ratio = _get(config, "clip_ratio", 0.2)
    low = _get(config, "clip_ratio_low", None)
    high = _get(config, "clip_ratio_high", None)
    clip = (float(clip_ratio if low is None else low), float(clip_ratio if high is None else high))
    mask = response_mask.bool()
    if rollout_is_weights is not None:
        mask = mask & (rollout_is_weights > 0)
    cfg = _ais_config(config)
    corr = correction(old_log_prob, rollout_log_probs, mask, advantages, cfg, process_group=process_group)
    if rollout_is_weights is not None:
        corr = replace(corr, weights=(corr.weights * rollout_is_weights.detach().to(corr.weights.dtype)).detach())
    loss, metrics = policy_loss(
        log_prob, old_log_prob, None, advantages, mask, clip=clip, loss_agg=loss_agg_mode, precomputed=corr
    )
    out = {f"rollout_corr/{k}": v for k, v in metrics.items() if not k.startswith(("pg_", "ppo_", "kl_penalty"))}
    out |= {"actor/pg_loss": metrics["pg_loss"], "actor/pg_clipfrac": metrics["pg_clipfrac"]}
    out["actor/ppo_kl"] = metrics["ppo_kl"]
    return loss, out
