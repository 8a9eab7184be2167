"""verl's loss aggregation (``agg_loss`` in ``verl/trainer/ppo/core_algos.py``, verl 0.9.1), without importing verl.

verl calls a policy loss once per micro-batch and sums the gradients, so every mode divides by a *global*
count that verl stores in ``config.global_batch_info`` (``dp_size``, ``batch_num_tokens`` = valid tokens of
the global mini-batch, ``global_batch_size`` = its non-empty responses, ``loss_scale_factor``). With m the
mask, x the per-token loss, D = ``dp_size``, N = ``batch_num_tokens``, S = ``global_batch_size``::

    token-mean               D · Σ m·x / N                        (N = Σ m of this call when not given)
    token-sum                D · Σ m·x
    seq-mean-token-sum       D · Σ_i (Σ_t m·x) / S                (S = non-empty responses when not given)
    seq-mean-token-mean      D · Σ_i (Σ_t m·x / (Σ_t m + 1e-8)) / S
    seq-mean-token-sum-norm  seq-mean-token-sum / L               (L = loss_scale_factor, default padded T)

Summing the calls over the micro-batches of a mini-batch gives the loss of the whole mini-batch, whatever
the split (tested against verl's own ``agg_loss`` in ``tests/rl/test_verl_loss.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["VERL_LOSS_AGGREGATIONS", "GlobalBatchInfo", "agg_loss"]

#: The five ``loss_agg_mode`` values verl 0.9.1 accepts (``ActorConfig.__post_init__``).
VERL_LOSS_AGGREGATIONS = (
    "token-mean",
    "token-sum",
    "seq-mean-token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
)

GlobalBatchInfo = Mapping[str, Any]

_INFO_KEYS = ("dp_size", "batch_num_tokens", "global_batch_size", "loss_scale_factor")


def _count(value: Any) -> torch.Tensor | float | None:
    """A global count as verl stores it (int, float, 0-dim tensor or None), left as a tensor when it is one."""
    if value is None or isinstance(value, torch.Tensor):
        return value
    return float(value)


def agg_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    loss_agg_mode: str,
    global_batch_info: GlobalBatchInfo | None = None,
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss to a scalar exactly as verl's ``agg_loss(..., **config.global_batch_info)``.

    ``global_batch_info`` holds any of ``dp_size`` (default 1), ``batch_num_tokens``, ``global_batch_size`` and
    ``loss_scale_factor``; missing counts are taken from this call's mask, as verl does (and, like verl, that is
    refused when ``dp_size > 1``). Masked positions are selected before any arithmetic, so padding holding NaN
    or -inf never reaches the loss.

    >>> x = torch.tensor([[1.0, 3.0], [5.0, 0.0]]); m = torch.tensor([[1, 1], [1, 0]])
    >>> [round(float(agg_loss(x, m, a)), 3) for a in VERL_LOSS_AGGREGATIONS]
    [3.0, 9.0, 4.5, 3.5, 2.25]
    >>> round(float(agg_loss(x[:1], m[:1], "token-mean", {"batch_num_tokens": 3})), 3)  # one micro-batch of two
    1.333
    """
    if loss_agg_mode not in VERL_LOSS_AGGREGATIONS:
        raise ValueError(f"loss_agg_mode must be one of {VERL_LOSS_AGGREGATIONS}, got {loss_agg_mode!r}")
    info = {} if global_batch_info is None else dict(global_batch_info)
    unknown = sorted(set(info) - set(_INFO_KEYS))
    if unknown:
        raise ValueError(f"global_batch_info has unknown keys {unknown}; verl uses {list(_INFO_KEYS)}")
    dp_size = int(info.get("dp_size") or 1)
    if dp_size < 1:
        raise ValueError(f"global_batch_info['dp_size'] must be >= 1, got {dp_size}")
    mask = loss_mask.bool()
    maskf = mask.to(loss_mat.dtype)
    x = torch.where(mask, loss_mat, torch.zeros_like(loss_mat))
    if loss_agg_mode == "token-mean":
        n = _count(info.get("batch_num_tokens"))
        if n is None:
            if dp_size > 1:
                raise ValueError("global_batch_info['batch_num_tokens'] (global) is required when dp_size > 1")
            n = maskf.sum()
        return x.sum() / n * dp_size
    if loss_agg_mode == "token-sum":
        return x.sum() * dp_size
    per_seq_n = maskf.sum(-1)
    seq_valid = (per_seq_n > 0).to(loss_mat.dtype)
    if loss_agg_mode == "seq-mean-token-mean":
        seq_losses = x.sum(-1) / (per_seq_n + 1e-8)
    else:
        seq_losses = x.sum(-1)
    s = _count(info.get("global_batch_size"))
    if s is None:
        if dp_size > 1:
            raise ValueError("global_batch_info['global_batch_size'] is required when dp_size > 1")
        s = seq_valid.sum()
    loss = (seq_losses * seq_valid).sum() / s * dp_size
    if loss_agg_mode == "seq-mean-token-sum-norm":
        scale = info.get("loss_scale_factor")
        loss = loss / (loss_mask.shape[-1] if scale is None else scale)
    return loss
