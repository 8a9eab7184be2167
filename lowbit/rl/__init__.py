"""AIS: adaptive importance-sampling correction for RL with low-precision rollouts (``../shared/papers/ais.md``).

When rollouts come from an FP8 engine (μ) and the trainer runs at higher precision (π_old), the policy
gradient is biased by the mismatch. :func:`correction` turns the recorded log-probs into per-token factors
c (TIS, MIS, sequence IS, IcePop, a fixed blend, or AIS's adaptive blend ``c = (1−α) + α·min(w, C)``),
and :func:`policy_loss` is the clipped GRPO/DAPO loss that uses them. The AIS diagnostics and mixing rule
are **[reconstruction]**s of a paper whose formulas are not public; every one is pluggable by name or callable.
:func:`~lowbit.rl.verl_loss.compute_policy_loss_ais` has verl's policy-loss signature. ``lowbit rl`` runs
the toy experiment (:mod:`lowbit.rl.experiment`).
"""

from lowbit.rl.correction import METRIC_KEYS, MODES, Correction, CorrectionConfig, CorrectionState, correction
from lowbit.rl.diagnostics import DIVERGENCES, RELIABILITIES, VARIANCES, MismatchStats
from lowbit.rl.loss import LOSS_AGGREGATIONS, aggregate, policy_loss
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
    "aggregate",
    "compute_policy_loss_ais",
    "correction",
    "policy_loss",
]
