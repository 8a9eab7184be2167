"""Per-token correction factors for rollout/trainer mismatch: TIS, MIS, sequence IS, IcePop, fixed α and AIS.

See ``docs/methods/ais.md`` §5 and §7 (AIS: "AIS: Adaptive Importance Sampling for Quantized RL",
arXiv:2605.13907). With δ = log π_old − log μ and w = exp(clamp(δ, ±20)), the factor c multiplies the
per-token PPO loss before aggregation and carries no gradient:

==============  ==============================================================  ======================
mode            c_{i,t}                                                         source
==============  ==============================================================  ======================
``none``        1                                                               plain GRPO
``tis``         min(w, C)                                                       TIS, verl/TRL token_truncate
``mis``         w·[w ≤ C]   (token rejected otherwise)                          TRL token_mask
``seq-tis``     min(W_i, C),  W_i = exp(clamp(Σ_t δ, ±20))                      TRL sequence_truncate
``seq-mis``     W_i·[W_i ≤ C]   (sequence rejected otherwise)                   TRL sequence_mask
``icepop``      w·[L ≤ w ≤ U]   (token rejected otherwise)                      IcePop two-sided band
``fixed-alpha`` (1 − α) + α·min(w, C), α constant                               ablation
``ais``         (1 − α) + α·min(w, C), α from R, D, V every batch               AIS [reconstruction]
==============  ==============================================================  ======================

Each mode is a function ``ModeInputs -> ModeOutput`` in the registry :data:`MODES` (name -> function), as
the diagnostics are; :class:`CorrectionConfig` accepts any registered name, and :func:`register_mode` adds
one. Rejected tokens (mis, seq-mis, icepop) leave the loss *and its normaliser*: :attr:`Correction.mask` is
the input mask with them removed (counting them in the denominator was a bug in slime PR #657 / verl #3915).
Because the AIS loss is linear in c, ``∇L_AIS = (1−α)·∇L_none + α·∇L_tis`` exactly (same normaliser).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch

from lowbit.rl.diagnostics import (
    DIVERGENCES,
    RELIABILITIES,
    VARIANCES,
    Diagnostic,
    MismatchStats,
    divergence_k3,
    divergence_mean_abs,
    mismatch_stats,
    reduce_stats,
    reliability_ess,
    reliability_ess_seq,
    variance_chi2,
    variance_cv2,
    variance_grad,
)
from lowbit.rl.mixing import MIXINGS, Mixing, MixInputs

__all__ = [
    "METRIC_KEYS",
    "MODES",
    "Correction",
    "CorrectionConfig",
    "CorrectionMode",
    "CorrectionState",
    "ModeInputs",
    "ModeOutput",
    "correction",
    "register_mode",
]

#: Every metrics dict returned by :func:`correction` has exactly these keys, whatever the mode.
METRIC_KEYS = (
    "alpha",
    "alpha_hat",
    "ess_ratio",
    "ess_ratio_seq",
    "mean_abs_logratio",
    "max_abs_logratio",
    "kl_k1",
    "kl_k3",
    "chi2_token",
    "cv2",
    "variance_amplification",
    "divergence",
    "reliability",
    "is_weight_mean",
    "is_weight_min",
    "is_weight_max",
    "frac_above_cap",
    "frac_below_lower",
    "frac_rejected",
    "coef_mean",
    "n_tokens",
    "n_seq",
)


@dataclass(frozen=True)
class CorrectionConfig:
    """How to correct the policy gradient for the rollout/trainer mismatch.

    - ``mode``: a name registered in :data:`MODES` (the eight built-in ones, or one added by
      :func:`register_mode`).
    - ``cap``: C, the truncation (tis, seq-tis, fixed-alpha, ais) or rejection (mis, seq-mis) threshold.
    - ``band``: IcePop's accepted band [L, U] of the token ratio.
    - ``alpha``: the constant α of ``fixed-alpha``.
    - ``ais_level``: ``"token"`` (w) or ``"sequence"`` (length-normalised ``exp(mean_t δ)``) IS branch of AIS.
    - ``seq_ratio``: ``"sum"`` (W_i = exp Σδ, verl/TRL) or ``"mean"`` (geometric mean) for seq-tis / seq-mis.
    - ``reliability``, ``divergence``, ``variance``: diagnostic names (see :mod:`lowbit.rl.diagnostics`) or
      callables ``MismatchStats -> 0-dim tensor``. [reconstruction]
    - ``mixing``: ``"gate"`` (Form A, default) or ``"shrinkage"`` (Form B) or a callable ``MixInputs -> tensor``.
      [reconstruction]
    - ``tau_d``: D scale of the gate; ``None`` = the median of D over the first ``tau_d_steps`` steps
      (running until then). ``tau_v``: V scale of the gate. ``kappa``: V/B scale of the shrinkage form.
    - ``alpha_max``: upper clip of α̂. ``ema``: ρ of ``α_k = ρ·α_{k−1} + (1−ρ)·α̂_k`` (0 = per batch).
    - ``log_ratio_clamp``: |δ| is clamped here before exponentiation (verl's 20).
    """

    mode: str = "ais"
    cap: float = 2.0
    band: tuple[float, float] = (0.5, 2.0)
    alpha: float = 0.5
    ais_level: str = "token"
    seq_ratio: str = "sum"
    reliability: str | Diagnostic = "ess"
    divergence: str | Diagnostic = "mean_abs_logratio"
    variance: str | Diagnostic = "grad"
    mixing: str | Mixing = "gate"
    tau_d: float | None = 0.05
    tau_d_steps: int = 10
    tau_v: float = 1.0
    kappa: float = 1.0
    alpha_max: float = 1.0
    ema: float = 0.0
    log_ratio_clamp: float = 20.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {tuple(MODES)}, got {self.mode!r}")
        if not self.cap > 0:
            raise ValueError(f"cap must be > 0, got {self.cap}")
        if len(self.band) != 2 or not 0 <= self.band[0] < self.band[1]:
            raise ValueError(f"band must be (lower, upper) with 0 <= lower < upper, got {self.band}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        if self.ais_level not in ("token", "sequence"):
            raise ValueError(f"ais_level must be 'token' or 'sequence', got {self.ais_level!r}")
        if self.seq_ratio not in ("sum", "mean"):
            raise ValueError(f"seq_ratio must be 'sum' or 'mean', got {self.seq_ratio!r}")
        for name, table in (("reliability", RELIABILITIES), ("divergence", DIVERGENCES), ("variance", VARIANCES)):
            _resolve(name, getattr(self, name), table)
        _resolve("mixing", self.mixing, MIXINGS)
        if self.tau_d is not None and not self.tau_d > 0:
            raise ValueError(f"tau_d must be > 0 or None, got {self.tau_d}")
        if self.tau_d_steps < 1:
            raise ValueError(f"tau_d_steps must be >= 1, got {self.tau_d_steps}")
        for name in ("tau_v", "kappa", "log_ratio_clamp"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.alpha_max <= 1.0:
            raise ValueError(f"alpha_max must lie in [0, 1], got {self.alpha_max}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must lie in [0, 1), got {self.ema}")


@dataclass(frozen=True)
class CorrectionState:
    """What AIS carries between steps: the step count, the last α (EMA) and the early D values (auto τ_D)."""

    step: int = 0
    alpha: float | None = None
    divergence_history: tuple[float, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Correction:
    """Result of :func:`correction`.

    ``weights``: the per-token factors c (detached, 0 at invalid or rejected tokens); ``mask``: the loss mask
    after rejection; ``alpha``: the mixing coefficient used (0 for none, 1 for the pure IS modes);
    ``metrics``: floats under :data:`METRIC_KEYS`; ``state``: pass it to the next step's call.
    """

    weights: torch.Tensor
    mask: torch.Tensor
    alpha: float
    metrics: dict[str, float]
    state: CorrectionState


def _resolve(name: str, value: Any, table: Any) -> Callable[..., torch.Tensor]:
    if callable(value):
        return value
    if isinstance(value, str) and value in table:
        return table[value]
    raise ValueError(f"{name} must be a callable or one of {sorted(table)}, got {value!r}")


def _check_inputs(
    logp_old: torch.Tensor, logp_rollout: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor | None
) -> None:
    for name, t in (("logp_old", logp_old), ("logp_rollout", logp_rollout), ("mask", mask)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must have shape (batch, tokens), got {tuple(t.shape)}")
    if logp_rollout.shape != logp_old.shape or mask.shape != logp_old.shape:
        raise ValueError(
            f"logp_old {tuple(logp_old.shape)}, logp_rollout {tuple(logp_rollout.shape)} and mask "
            f"{tuple(mask.shape)} must have the same shape"
        )
    if not logp_old.is_floating_point() or not logp_rollout.is_floating_point():
        raise TypeError("logp_old and logp_rollout must be floating-point tensors")
    if advantages is not None:
        if not isinstance(advantages, torch.Tensor):
            raise TypeError(f"advantages must be a torch.Tensor or None, got {type(advantages).__name__}")
        if advantages.shape not in (logp_old.shape[:1], logp_old.shape):
            raise ValueError(
                f"advantages must have shape {tuple(logp_old.shape[:1])} or {tuple(logp_old.shape)}, "
                f"got {tuple(advantages.shape)}"
            )


def log_ratio(logp_old: torch.Tensor, logp_rollout: torch.Tensor, mask: torch.Tensor, clamp: float) -> torch.Tensor:
    """``δ = clamp(log π_old − log μ, ±clamp)`` at valid tokens, 0 elsewhere (NaN/Inf at padding never leak)."""
    valid = mask.bool()
    old = torch.where(valid, logp_old.detach(), torch.zeros_like(logp_old))
    roll = torch.where(valid, logp_rollout.detach(), torch.zeros_like(logp_rollout))
    d = torch.nan_to_num(old - roll, nan=0.0, posinf=clamp, neginf=-clamp).clamp(-clamp, clamp)
    return torch.where(valid, d, torch.zeros_like(d))


def _sequence_weight(delta: torch.Tensor, mask: torch.Tensor, how: str, clamp: float) -> torch.Tensor:
    """Per-sequence IS weight broadcast to tokens: ``exp(clamp(Σδ, ±L))`` or ``exp(mean δ)`` (shape (B, 1))."""
    s = delta.sum(-1, keepdim=True)
    if how == "mean":
        s = s / mask.sum(-1, keepdim=True).clamp_min(1)
    return torch.exp(s.clamp(-clamp, clamp))


def _tau_d(config: CorrectionConfig, state: CorrectionState, divergence: float) -> tuple[float, tuple[float, ...]]:
    """The gate's D scale and the updated early-D history (median of the first ``tau_d_steps`` batches)."""
    if config.tau_d is not None:
        return config.tau_d, state.divergence_history
    history = state.divergence_history
    if len(history) < config.tau_d_steps:
        history = (*history, divergence)
    tau = statistics.median(history)
    return (tau if tau > 0 else 1.0), history


def _metrics(
    s: MismatchStats, alpha: float, alpha_hat: float, r: torch.Tensor, d: torch.Tensor, v: torch.Tensor
) -> dict[str, float]:
    n = float(s.n_tokens)
    has = n > 0
    return {
        "alpha": alpha,
        "alpha_hat": alpha_hat,
        "ess_ratio": float(reliability_ess(s)),
        "ess_ratio_seq": float(reliability_ess_seq(s)),
        "mean_abs_logratio": float(divergence_mean_abs(s)),
        "max_abs_logratio": float(s.max_abs_delta) if has else 0.0,
        "kl_k1": -float(s.sum_delta) / n if has else 0.0,
        "kl_k3": float(divergence_k3(s)),
        "chi2_token": float(variance_chi2(s)),
        "cv2": float(variance_cv2(s)),
        "variance_amplification": float(variance_grad(s)),
        "divergence": float(d),
        "reliability": float(r),
        "is_weight_mean": float(s.sum_w) / n if has else 1.0,
        "is_weight_min": float(s.min_w) if has else 1.0,
        "is_weight_max": float(s.max_w) if has else 1.0,
        "frac_above_cap": float(s.n_above_cap) / n if has else 0.0,
        "frac_below_lower": float(s.n_below_lower) / n if has else 0.0,
        "frac_rejected": 0.0,
        "coef_mean": 1.0,
        "n_tokens": n,
        "n_seq": float(s.n_seq),
    }


# ---------------------------------------------------------------- the modes: a registry of functions


@dataclass(frozen=True)
class ModeInputs:
    """What a correction mode sees for one batch; every tensor has shape (B, T) and carries no gradient.

    ``delta`` = δ = clamp(log π_old − log μ, ±L) (0 at invalid tokens), ``w`` = exp(δ), ``mask`` the valid
    tokens (bool), ``config`` the :class:`CorrectionConfig`, ``alpha_hat`` this batch's AIS coefficient α̂
    (computed whatever the mode, so the metrics keep their keys) and ``previous_alpha`` the α the previous
    step stored in :class:`CorrectionState` (``None`` at the first step).
    """

    delta: torch.Tensor
    w: torch.Tensor
    mask: torch.Tensor
    config: CorrectionConfig
    alpha_hat: float
    previous_alpha: float | None


@dataclass(frozen=True)
class ModeOutput:
    """What a correction mode returns.

    ``alpha``: the mixing coefficient reported (0 = uncorrected, 1 = a pure IS correction); ``coef``: the factor
    c per token, shape (B, T); ``keep``: the tokens the mode keeps (``None`` = every valid token; the others are
    rejected: weight 0 and out of the loss normaliser); ``remember_alpha``: store ``alpha`` in the next
    :class:`CorrectionState` (AIS's EMA reads it back as ``previous_alpha``).
    """

    alpha: float
    coef: torch.Tensor
    keep: torch.Tensor | None = None
    remember_alpha: bool = False


CorrectionMode = Callable[[ModeInputs], ModeOutput]

_MODES: dict[str, CorrectionMode] = {}

#: Every correction mode by name (read-only view; :func:`register_mode` adds to it).
MODES: Mapping[str, CorrectionMode] = MappingProxyType(_MODES)


def register_mode(name: str) -> Callable[[CorrectionMode], CorrectionMode]:
    """Decorator: register ``fn(ModeInputs) -> ModeOutput`` as the correction mode ``name``.

    After registration ``CorrectionConfig(mode=name)`` is valid and :func:`correction` calls ``fn``; the
    metrics, the rejection mask and the state are handled by :func:`correction` as for the built-in modes.
    A name can be registered once.

    >>> @register_mode("half")
    ... def half(x: ModeInputs) -> ModeOutput:
    ...     return ModeOutput(alpha=0.0, coef=torch.full_like(x.w, 0.5))
    >>> lp = torch.log(torch.tensor([[0.5, 0.25]]))
    >>> correction(lp, lp, torch.ones(1, 2), config=CorrectionConfig(mode="half")).weights.tolist()
    [[0.5, 0.5]]
    >>> del _MODES["half"]  # (keep the registry as shipped)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a mode name must be a non-empty string, got {name!r}")

    def add(fn: CorrectionMode) -> CorrectionMode:
        if not callable(fn):
            raise TypeError(f"mode {name!r} must be a callable ModeInputs -> ModeOutput, got {type(fn).__name__}")
        if name in _MODES:
            raise ValueError(f"correction mode {name!r} is already registered")
        _MODES[name] = fn
        return fn

    return add


def _blend(alpha: float, branch: torch.Tensor, cap: float) -> torch.Tensor:
    """``(1 − α) + α·min(branch, C)``: the line between no correction (α = 0) and truncated IS (α = 1)."""
    return (1.0 - alpha) + alpha * branch.clamp(max=cap)


def _sequence_branch(x: ModeInputs, how: str) -> torch.Tensor:
    return _sequence_weight(x.delta, x.mask, how, x.config.log_ratio_clamp).expand_as(x.w)


@register_mode("none")
def mode_none(x: ModeInputs) -> ModeOutput:
    """Plain GRPO: ``c = 1``, α = 0."""
    return ModeOutput(0.0, torch.ones_like(x.w))


@register_mode("tis")
def mode_tis(x: ModeInputs) -> ModeOutput:
    """Token truncated IS: ``c = min(w, C)``, α = 1."""
    return ModeOutput(1.0, x.w.clamp(max=x.config.cap))


@register_mode("mis")
def mode_mis(x: ModeInputs) -> ModeOutput:
    """Token masked IS: ``c = w``, tokens with ``w > C`` rejected, α = 1."""
    return ModeOutput(1.0, x.w, keep=x.mask & (x.w <= x.config.cap))


@register_mode("seq-tis")
def mode_seq_tis(x: ModeInputs) -> ModeOutput:
    """Sequence truncated IS: ``c = min(W_i, C)`` on every token of response i, α = 1."""
    return ModeOutput(1.0, _sequence_branch(x, x.config.seq_ratio).clamp(max=x.config.cap))


@register_mode("seq-mis")
def mode_seq_mis(x: ModeInputs) -> ModeOutput:
    """Sequence masked IS: ``c = W_i``, responses with ``W_i > C`` rejected whole, α = 1."""
    ws = _sequence_branch(x, x.config.seq_ratio)
    return ModeOutput(1.0, ws, keep=x.mask & (ws <= x.config.cap))


@register_mode("icepop")
def mode_icepop(x: ModeInputs) -> ModeOutput:
    """IcePop: ``c = w`` inside the band ``L ≤ w ≤ U``, tokens outside rejected, α = 1."""
    lo, hi = x.config.band
    return ModeOutput(1.0, x.w, keep=x.mask & (x.w >= lo) & (x.w <= hi))


@register_mode("fixed-alpha")
def mode_fixed_alpha(x: ModeInputs) -> ModeOutput:
    """A constant blend: ``c = (1 − α) + α·min(w, C)`` with α = ``config.alpha``."""
    return ModeOutput(x.config.alpha, _blend(x.config.alpha, x.w, x.config.cap))


@register_mode("ais")
def mode_ais(x: ModeInputs) -> ModeOutput:
    """AIS [reconstruction]: ``c = (1 − α) + α·min(w, C)`` with ``α_k = ρ·α_{k−1} + (1−ρ)·α̂_k`` (α_1 = α̂_1).

    With ``ais_level="sequence"`` the IS branch is the length-normalised ``exp(mean_t δ)`` instead of w.
    """
    cfg = x.config
    prev = x.previous_alpha
    alpha = x.alpha_hat if prev is None else cfg.ema * prev + (1 - cfg.ema) * x.alpha_hat
    branch = _sequence_branch(x, "mean") if cfg.ais_level == "sequence" else x.w
    return ModeOutput(alpha, _blend(alpha, branch, cfg.cap), remember_alpha=True)


def correction(
    logp_old: torch.Tensor,
    logp_rollout: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor | None = None,
    config: CorrectionConfig | None = None,
    state: CorrectionState | None = None,
    *,
    process_group: Any | None = None,
) -> Correction:
    """Per-token correction factors c (detached) and the mismatch metrics for one batch.

    ``logp_old`` (trainer precision π_old) and ``logp_rollout`` (μ, recorded at sampling) have shape
    (B, T); ``mask`` marks valid response tokens; ``advantages`` (shape (B,) or (B, T)) feed the
    gradient-aware variance diagnostic. ``state`` carries AIS's EMA and auto-τ_D history from the
    previous step (``result.state``). With ``process_group`` the batch sums are all-reduced first, so
    every rank gets the same α (pass ``torch.distributed.group.WORLD`` for the default group).

    For AIS [reconstruction] (docs/methods/ais.md §3-5)::

        R, D, V = reliability(stats), divergence(stats), variance(stats)
        α̂ = clip(mixing(R, D, V), 0, α_max);   α_k = ρ·α_{k−1} + (1−ρ)·α̂  (α_1 = α̂)
        c = (1 − α) + α · min(w, C)

    >>> import torch
    >>> lp = torch.log(torch.tensor([[0.5, 0.25]]))
    >>> c = correction(lp, lp, torch.ones(1, 2), config=CorrectionConfig(mode="ais"))
    >>> c.alpha, c.weights.tolist()
    (0.0, [[1.0, 1.0]])
    """
    config = CorrectionConfig() if config is None else config
    if not isinstance(config, CorrectionConfig):
        raise TypeError(f"config must be a CorrectionConfig, got {type(config).__name__}")
    state = CorrectionState() if state is None else state
    if not isinstance(state, CorrectionState):
        raise TypeError(f"state must be a CorrectionState or None, got {type(state).__name__}")
    _check_inputs(logp_old, logp_rollout, mask, advantages)

    valid = mask.bool()
    maskf = valid.to(logp_old.dtype)
    delta = log_ratio(logp_old, logp_rollout, valid, config.log_ratio_clamp)
    w = torch.exp(delta)
    stats = mismatch_stats(delta, valid, advantages, cap=config.cap, lower=config.band[0])
    if process_group is not None:
        stats = reduce_stats(stats, process_group)

    r = _resolve("reliability", config.reliability, RELIABILITIES)(stats)
    d = _resolve("divergence", config.divergence, DIVERGENCES)(stats)
    v = _resolve("variance", config.variance, VARIANCES)(stats)
    tau_d, history = _tau_d(config, state, float(d))
    mix = _resolve("mixing", config.mixing, MIXINGS)
    inputs = MixInputs(r, d, v, stats.n_seq, tau_d=tau_d, tau_v=config.tau_v, kappa=config.kappa)
    alpha_hat = float(torch.nan_to_num(mix(inputs), nan=0.0).clamp(0.0, config.alpha_max))
    new_state = replace(state, step=state.step + 1, divergence_history=history)

    out = MODES[config.mode](
        ModeInputs(delta=delta, w=w, mask=valid, config=config, alpha_hat=alpha_hat, previous_alpha=state.alpha)
    )
    alpha, coef = out.alpha, out.coef
    keep = valid if out.keep is None else out.keep & valid
    if out.remember_alpha:
        new_state = replace(new_state, alpha=alpha)

    keepf = keep.to(logp_old.dtype)
    weights = (coef.to(logp_old.dtype) * keepf).detach()
    metrics = _metrics(stats, float(alpha), alpha_hat, r, d, v)
    n_local = float(maskf.sum())
    metrics["frac_rejected"] = 1.0 - float(keepf.sum()) / n_local if n_local > 0 else 0.0
    metrics["coef_mean"] = float(weights.sum()) / float(keepf.sum()) if float(keepf.sum()) > 0 else 1.0
    return Correction(weights=weights, mask=keep, alpha=float(alpha), metrics=metrics, state=new_state)
