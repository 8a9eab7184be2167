"""The AIS mixing rule: three diagnostics -> one coefficient α̂ (``docs/methods/ais.md`` §4). [reconstruction]

The paper combines weight reliability R, divergence severity D and variance amplification V into one
coefficient but does not publish the formula. Two reconstructions are offered, both monotone: α̂ is
non-decreasing in D (at fixed R, V) and non-increasing in V (at fixed D, R), and α̂ = 0 when D = 0.

A mixing rule is any callable ``(MixInputs) -> 0-dim tensor``; :data:`MIXINGS` names the two built-in ones
and :class:`~lowbit.rl.correction.CorrectionConfig` accepts either a name or a callable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

__all__ = ["MIXINGS", "MixInputs", "Mixing", "mix_gate", "mix_shrinkage"]


@dataclass(frozen=True)
class MixInputs:
    """What a mixing rule sees: the three diagnostics (0-dim float64 tensors) and its constants.

    ``tau_d``/``tau_v`` scale D and V in the gate; ``kappa`` scales V/B in the shrinkage form; ``n_seq``
    is the global number of non-empty responses B.
    """

    reliability: torch.Tensor
    divergence: torch.Tensor
    variance: torch.Tensor
    n_seq: torch.Tensor
    tau_d: float
    tau_v: float
    kappa: float


Mixing = Callable[[MixInputs], torch.Tensor]


def mix_gate(x: MixInputs) -> torch.Tensor:
    """Form A, multiplicative gate (the default)::

        s_D = 1 − exp(−D/τ_D),   s_V = 1/(1 + V/τ_V),   α̂ = s_D · R · s_V

    0 with no mismatch, rises towards R·s_V as the divergence grows, shrinks when the weights turn
    heavy-tailed. [reconstruction] (docs/methods/ais.md §4, Form A).
    """
    s_d = 1.0 - torch.exp(-x.divergence / x.tau_d)
    s_v = 1.0 / (1.0 + x.variance / x.tau_v)
    return s_d * x.reliability * s_v


def mix_shrinkage(x: MixInputs) -> torch.Tensor:
    """Form B, MSE-optimal shrinkage between a biased and a noisy estimator::

        MSE(α) ≈ (1−α)²·b² + α²·v  ->  α* = b²/(b² + v),  b² ∝ D²,  v ∝ V/(R·B)
        α̂ = R · D² / (D² + κ·V/B)

    0 when D = 0; R when V = 0 and D > 0. [reconstruction] (docs/methods/ais.md §4, Form B).
    """
    d2 = x.divergence * x.divergence
    noise = x.kappa * x.variance / x.n_seq.clamp_min(1.0)
    den = d2 + noise
    ratio = torch.where(den > 0, d2 / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
    return x.reliability * ratio


MIXINGS: Mapping[str, Mixing] = MappingProxyType({"gate": mix_gate, "shrinkage": mix_shrinkage})
