"""The driver side of the plugin: lowbit's weights as verl's ``rollout_is_weights``, from the whole batch.

verl's trainer (``RayPPOTrainer.fit`` in ``verl/trainer/ppo/ray_trainer.py``, and ``trainer/ppo/v1``) calls
``compute_rollout_correction_and_add_to_batch(batch, algorithm.rollout_correction)`` once per step on the
driver, after π_old is recomputed and before the advantages and the actor update. With ``rollout_is: ais``
:func:`add_lowbit_weights_to_batch` does that step instead:

1. verl's own function runs with ``rollout_is=None``: its rejection sampling (``rollout_rs``) updates
   ``response_mask`` and it returns its off-policy metrics (``rollout_corr/kl``, ``.../chi2_token``, ...);
2. :func:`lowbit.rl.correction` computes c from ``old_log_probs`` and ``rollout_log_probs`` over every
   remaining response token of the batch (so α is the global batch's);
3. c goes into the batch as ``rollout_is_weights`` (tokens a rejecting mode drops also leave
   ``response_mask``), which every verl policy loss multiplies into its per-token loss.

Settings come from the ``rollout_correction`` config (see :func:`correction_config`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from lowbit.rl.correction import CorrectionConfig, correction

__all__ = ["AIS", "add_lowbit_weights_to_batch", "correction_config"]

#: The ``algorithm.rollout_correction.rollout_is`` value that selects lowbit's weights.
AIS = "ais"

_CONFIG_FIELDS = frozenset(CorrectionConfig.__dataclass_fields__)


def _threshold(spec: Any) -> float:
    """``rollout_is_threshold`` as lowbit's cap C; verl's ``"lower_upper"`` (IcePop) form is not a cap."""
    if isinstance(spec, bool) or not isinstance(spec, int | float | str):
        raise TypeError(f"rollout_is_threshold must be a number, got {spec!r}")
    if isinstance(spec, str) and "_" in spec:
        raise ValueError(
            f"rollout_is_threshold={spec!r} is verl's IcePop band; with rollout_is=ais give a single cap C and put "
            "an IcePop band under rollout_correction.ais (mode: icepop, band: [lower, upper])"
        )
    try:
        return float(spec)
    except ValueError as exc:
        raise ValueError(f"rollout_is_threshold must be a number, got {spec!r}") from exc


def correction_config(rollout_corr_config: Any) -> CorrectionConfig:
    """The :class:`CorrectionConfig` a ``rollout_correction`` config asks for (dict, DictConfig or verl dataclass).

    - ``rollout_is_threshold`` is the cap C (default 2.0);
    - the optional mapping ``ais`` holds any other :class:`CorrectionConfig` field (``mode`` defaults to
      ``"ais"``; any lowbit mode works, e.g. ``tis`` or ``fixed-alpha``);
    - ``variance`` defaults to ``"cv2"``: the driver runs before the advantages exist, so the gradient-aware
      ``"grad"`` cannot be computed there and is refused (it would silently equal ``"cv2"``);
    - the driver keeps no state between steps: ``ema`` must be 0 and ``tau_d`` fixed;
    - ``rollout_is_batch_normalize`` is refused (it would rescale c and change α's meaning).

    >>> cfg = correction_config({"rollout_is": "ais", "rollout_is_threshold": 3.0, "ais": {"tau_d": 0.1}})
    >>> cfg.mode, cfg.cap, cfg.variance, cfg.tau_d
    ('ais', 3.0, 'cv2', 0.1)
    """
    get = rollout_corr_config.get
    if get("rollout_is_batch_normalize", False):
        raise ValueError("rollout_is_batch_normalize=true is not supported with rollout_is=ais (it rescales c)")
    cap = _threshold(get("rollout_is_threshold", 2.0))
    extra = get("ais", None)
    if extra is None:
        extra = {}
    elif not (isinstance(extra, Mapping) or hasattr(extra, "items")):
        raise TypeError(f"rollout_correction.ais must be a mapping of CorrectionConfig fields, got {extra!r}")
    fields = {str(k): (tuple(v) if k == "band" else v) for k, v in extra.items()}
    unknown = sorted(set(fields) - _CONFIG_FIELDS)
    if unknown:
        raise ValueError(
            f"rollout_correction.ais has unknown keys {unknown}; CorrectionConfig has {sorted(_CONFIG_FIELDS)}"
        )
    if "cap" in fields and float(fields["cap"]) != cap:
        raise ValueError(
            f"rollout_correction.ais.cap={fields['cap']} contradicts rollout_is_threshold={cap}; set the cap once"
        )
    cfg = CorrectionConfig(**{"mode": AIS, "variance": "cv2", **fields, "cap": cap})
    if cfg.variance == "grad":
        raise ValueError(
            "variance='grad' needs the advantages, which verl computes after the rollout correction; "
            "use 'cv2' (the default here) or 'chi2'"
        )
    if cfg.ema != 0.0 or cfg.tau_d is None:
        raise ValueError("verl's driver hook is stateless: use ema=0 and a fixed tau_d in rollout_correction.ais")
    return cfg


def _plain(rollout_corr_config: Any, **override: Any) -> dict[str, Any]:
    """A plain-dict copy of the config (DictConfig, dataclass or dict) with some keys replaced."""
    return {str(k): rollout_corr_config.get(k) for k in rollout_corr_config.keys()} | override


def add_lowbit_weights_to_batch(
    batch: Any, rollout_corr_config: Any, verl_add_to_batch: Callable[[Any, Any], tuple[Any, dict]]
) -> tuple[Any, dict[str, float]]:
    """verl's ``compute_rollout_correction_and_add_to_batch`` for ``rollout_is=ais`` (the steps in the module doc).

    ``batch`` is verl's ``DataProto`` with ``old_log_probs``, ``rollout_log_probs`` and ``response_mask``;
    ``verl_add_to_batch`` is verl's original function. Returns ``(batch, metrics)`` like it: verl's metrics,
    verl's IS-weight statistics of c (``rollout_corr/rollout_is_mean``, ``..._eff_sample_size``, ...) and
    lowbit's (``rollout_corr/lowbit_alpha``, ``..._ess_ratio``, ``..._mean_abs_logratio``, ...).
    """
    from verl.protocol import DataProto
    from verl.trainer.ppo.rollout_corr_helper import compute_is_metrics

    cfg = correction_config(rollout_corr_config)
    batch, metrics = verl_add_to_batch(batch, _plain(rollout_corr_config, rollout_is=None))
    old = batch.batch["old_log_probs"]
    rollout = batch.batch["rollout_log_probs"]
    response_mask = batch.batch["response_mask"]
    mask = response_mask.bool()
    corr = correction(old, rollout, mask, None, cfg)
    weights = corr.weights.to(old.dtype)
    if not torch.equal(corr.mask, mask):
        batch.batch["response_mask"] = (mask & corr.mask).to(response_mask.dtype)
    batch = batch.union(DataProto.from_dict(tensors={"rollout_is_weights": weights}))

    log_ratio = torch.where(mask, old - rollout, torch.zeros_like(old))
    raw = torch.exp(log_ratio.clamp(-cfg.log_ratio_clamp, cfg.log_ratio_clamp)) * mask
    is_metrics = compute_is_metrics(weights, raw, log_ratio, corr.mask, "token", cfg.cap)
    metrics = dict(metrics)
    metrics |= {f"rollout_corr/{k}": float(v) for k, v in is_metrics.items()}
    metrics |= {f"rollout_corr/lowbit_{k}": v for k, v in corr.metrics.items()}
    return batch, metrics
