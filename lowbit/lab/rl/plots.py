"""Figures of the AIS experiment (matplotlib, Agg): reward, held-out accuracy, α and ESS curves per arm."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["curves_figure", "seed_curves"]


def _smooth(x: np.ndarray, k: int) -> np.ndarray:
    """Trailing moving average over ``k`` steps (shorter at the start)."""
    if k <= 1 or x.size == 0:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    out = np.empty_like(x)
    for i in range(x.size):
        lo = max(0, i + 1 - k)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


def seed_curves(runs: Sequence[Mapping[str, Any]], arm: str, key: str, *, evals: bool = False) -> np.ndarray:
    """Array (seeds, points) of one logged quantity of one arm."""
    src = "evals" if evals else "steps"
    return np.array([r[src][key] for r in runs if r["arm"] == arm], dtype=float)


def curves_figure(result: Mapping[str, Any], *, smooth: int = 10) -> Any:
    """A 2x2 figure: reward, held-out greedy accuracy (fp32 trainer), α, and ESS ratio, mean ± sd over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    arms = list(result["arms"])
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    panels = [
        (axes[0, 0], "reward", False, f"rollout reward (moving avg {smooth})"),
        (axes[0, 1], "acc_fp32", True, "held-out greedy accuracy (fp32 trainer)"),
        (axes[1, 0], "alpha", False, "α (mixing coefficient used)"),
        (axes[1, 1], "ess_ratio", False, "ESS / N of the token IS weights"),
    ]
    colors = plt.get_cmap("tab10")
    for ax, key, is_eval, title in panels:
        for i, arm in enumerate(arms):
            ys = seed_curves(runs, arm, key, evals=is_eval)
            if ys.size == 0:
                continue
            if key == "alpha" and arm == "fp32":
                continue
            xs = seed_curves(runs, arm, "step", evals=is_eval)[0]
            if not is_eval:
                ys = np.stack([_smooth(y, smooth) for y in ys])
            mean, sd = ys.mean(0), ys.std(0)
            ax.plot(xs, mean, label=arm, color=colors(i), lw=1.4)
            ax.fill_between(xs, mean - sd, mean + sd, color=colors(i), alpha=0.15, lw=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    cfg = result["config"]
    fig.suptitle(
        f"GRPO, FP8 rollout dose {cfg['strength']}, {cfg['seeds']} seeds (mean ± sd)",
        fontsize=11,
    )
    fig.tight_layout()
    return fig
