"""How the plugin installs itself in verl (0.9.1): verl has no registry for ``rollout_is`` values.

:func:`install` (idempotent) does three things, all on verl's own module objects:

- replaces ``verl.trainer.ppo.rollout_corr_helper.compute_rollout_correction_and_add_to_batch`` by a wrapper
  that runs :func:`lowbit.rl.verl.driver.add_lowbit_weights_to_batch` when ``rollout_is == "ais"`` and
  verl's original otherwise. ``ray_trainer.fit`` imports that name lazily at each step, so it gets the
  wrapper; ``trainer/ppo/v1/trainer_base.py`` binds it at import time, so that binding is replaced too when
  the module is already loaded (the entry point runs inside ``import verl``, before either can be imported);
- wraps ``compute_rollout_correction_weights`` so that ``rollout_is="ais"`` reaching it (verl's
  ``bypass_mode``, which computes weights per micro-batch in the actor) is a clear error instead of
  verl's "Invalid rollout_is";
- registers :func:`lowbit.rl.verl_loss.compute_policy_loss_ais` as the policy loss ``"ais"`` with verl's
  ``register_policy_loss`` (its one extension point here), if that name is free.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["install", "is_installed"]

_MARK = "__lowbit_rl_verl__"
_V1_TRAINER = "verl.trainer.ppo.v1.trainer_base"


def _wrap_add_to_batch(original: Callable[..., Any]) -> Callable[..., Any]:
    from lowbit.rl.verl.driver import AIS, add_lowbit_weights_to_batch

    @functools.wraps(original)
    def compute_rollout_correction_and_add_to_batch(batch: Any, rollout_corr_config: Any) -> tuple[Any, dict]:
        if rollout_corr_config.get("rollout_is", None) == AIS:
            return add_lowbit_weights_to_batch(batch, rollout_corr_config, original)
        return original(batch, rollout_corr_config)

    setattr(compute_rollout_correction_and_add_to_batch, _MARK, original)
    return compute_rollout_correction_and_add_to_batch


def _wrap_weights(original: Callable[..., Any]) -> Callable[..., Any]:
    from lowbit.rl.verl.driver import AIS

    @functools.wraps(original)
    def compute_rollout_correction_weights(*args: Any, **kwargs: Any) -> Any:
        rollout_is = kwargs.get("rollout_is", args[2] if len(args) > 2 else None)
        if rollout_is == AIS:
            raise ValueError(
                "rollout_is='ais' is computed by lowbit on verl's driver over the whole batch "
                "(algorithm.rollout_correction.bypass_mode=false); in bypass mode verl computes rollout_is "
                "weights per micro-batch inside the actor, where lowbit's alpha would come from one micro-batch"
            )
        return original(*args, **kwargs)

    setattr(compute_rollout_correction_weights, _MARK, original)
    return compute_rollout_correction_weights


def is_installed() -> bool:
    """True when verl is imported and its driver-side rollout correction is lowbit's wrapper."""
    helper = sys.modules.get("verl.trainer.ppo.rollout_corr_helper")
    return helper is not None and hasattr(helper.compute_rollout_correction_and_add_to_batch, _MARK)


def install() -> None:
    """Hook lowbit's rollout correction into verl (imports verl; safe to call more than once)."""
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo import rollout_corr_helper as helper

    from lowbit.rl.verl_loss import compute_policy_loss_ais

    if not hasattr(helper.compute_rollout_correction_and_add_to_batch, _MARK):
        original = helper.compute_rollout_correction_and_add_to_batch
        helper.compute_rollout_correction_and_add_to_batch = _wrap_add_to_batch(original)
        v1 = sys.modules.get(_V1_TRAINER)
        if v1 is not None and getattr(v1, "compute_rollout_correction_and_add_to_batch", None) is original:
            v1.compute_rollout_correction_and_add_to_batch = helper.compute_rollout_correction_and_add_to_batch
    if not hasattr(helper.compute_rollout_correction_weights, _MARK):
        helper.compute_rollout_correction_weights = _wrap_weights(helper.compute_rollout_correction_weights)
    if "ais" not in core_algos.POLICY_LOSS_REGISTRY:
        core_algos.register_policy_loss("ais")(compute_policy_loss_ais)
