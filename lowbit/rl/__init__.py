"""AIS: adaptive importance-sampling correction for RL with low-precision rollouts.

Method: "AIS: Adaptive Importance Sampling for Quantized RL" (arXiv:2605.13907), described in our own words in
``docs/methods/ais.md``; usage in ``docs/rl.md``.

When rollouts come from an FP8 engine (μ) and the trainer runs at higher precision (π_old), the policy
gradient is biased by the mismatch. :func:`correction` turns the recorded log-probs into per-token factors
c (TIS, MIS, sequence IS, IcePop, a fixed blend, or AIS's adaptive blend ``c = (1−α) + α·min(w, C)``),
and :func:`policy_loss` is the clipped GRPO/DAPO loss that uses them. Modes live in the registry
:data:`MODES` (:func:`register_mode` adds one). The AIS diagnostics (:data:`RELIABILITIES`,
:data:`DIVERGENCES`, :data:`VARIANCES`) and mixing rules (:data:`MIXINGS`) are **[reconstruction]**s of a
paper whose formulas are not public; every one is pluggable by name or callable.
:func:`compute_policy_loss_ais` has verl's policy-loss signature. The toy GRPO experiment behind
``lowbit rl`` is a study and lives in the lab, apart from this package.

>>> import torch
>>> logp_old = torch.log(torch.tensor([[0.5, 0.25, 0.125]], dtype=torch.float64))
>>> logp_rollout = logp_old - torch.tensor([[0.1, -0.2, 0.0]], dtype=torch.float64)
>>> c = correction(logp_old, logp_rollout, torch.ones(1, 3, dtype=torch.bool), config=CorrectionConfig(mode="tis"))
>>> [round(x, 4) for x in c.weights[0].tolist()], sorted(c.metrics) == sorted(METRIC_KEYS)
([1.1052, 0.8187, 1.0], True)
"""

from lowbit.rl.correction import (
    METRIC_KEYS,
    MODES,
    Correction,
    CorrectionConfig,
    CorrectionState,
    ModeInputs,
    ModeOutput,
    correction,
    register_mode,
)
from lowbit.rl.diagnostics import DIVERGENCES, RELIABILITIES, VARIANCES, MismatchStats
from lowbit.rl.loss import LOSS_AGGREGATIONS, policy_loss
from lowbit.rl.mixing import MIXINGS, MixInputs
from lowbit.rl.verl_loss import compute_policy_loss_ais

__all__ = [
    "DIVERGENCES",
    "LOSS_AGGREGATIONS",
    "METRIC_KEYS",
    "MIXINGS",
    "MODES",
    "RELIABILITIES",
    "VARIANCES",
    "Correction",
    "CorrectionConfig",
    "CorrectionState",
    "MismatchStats",
    "MixInputs",
    "ModeInputs",
    "ModeOutput",
    "compute_policy_loss_ais",
    "correction",
    "policy_loss",
    "register_mode",
]
