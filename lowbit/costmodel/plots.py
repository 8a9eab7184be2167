"""Plots of the cost model: per-layer linear latency vs M and decode-attention latency vs sequence length.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot state).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from lowbit.costmodel.hardware import Hardware
from lowbit.costmodel.kvcache import decode_attention_cost
from lowbit.costmodel.linear import DEFAULT_PARAMS, CostParams, low_precision_peak
from lowbit.costmodel.models import ModelShape
from lowbit.costmodel.tables import DEFAULT_MS, DEFAULT_SEQS, layer_linear_totals


def latency_figure(
    model: ModelShape,
    hws: Sequence[Hardware],
    *,
    weight: str = "int8",
    ms: Sequence[int] = DEFAULT_MS,
    seqs: Sequence[int] = DEFAULT_SEQS,
    params: CostParams = DEFAULT_PARAMS,
) -> Figure:
    """Two panels: one layer's linear layers vs M and its decode attention vs length (dequant solid, MSD dashed)."""
    fig = Figure(figsize=(11, 4.2))
    ax_m, ax_s = fig.subplots(1, 2)
    stream = CostParams(**{**params.__dict__, "stack_passes": False})
    for i, hw in enumerate(hws):
        color = f"C{i}"
        dq = [layer_linear_totals(hw, model, m, weight=weight, scheme="dequant", params=params)[0] for m in ms]
        ax_m.plot(ms, [t * 1e6 for t in dq], "-o", color=color, ms=3, label=f"{hw.name} dequant")
        if low_precision_peak(hw, weight) is not None:
            msd = [layer_linear_totals(hw, model, m, weight=weight, scheme="msd", params=params)[0] for m in ms]
            ax_m.plot(ms, [t * 1e6 for t in msd], "--s", color=color, ms=3, label=f"{hw.name} MSD")
        att_dq = [decode_attention_cost(hw, model.attention, s, kv_format=weight, params=params).latency for s in seqs]
        ax_s.plot(seqs, [t * 1e6 for t in att_dq], "-o", color=color, ms=3, label=f"{hw.name} dequant")
        if low_precision_peak(hw, weight) is not None:
            att_ms = [
                decode_attention_cost(hw, model.attention, s, kv_format=weight, scheme="msd", params=stream).latency
                for s in seqs
            ]
            ax_s.plot(seqs, [t * 1e6 for t in att_ms], "--s", color=color, ms=3, label=f"{hw.name} MSD (stream)")
    for ax in (ax_m, ax_s):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    ax_m.set_xlabel("M (tokens)")
    ax_m.set_ylabel("µs per layer (all linear layers)")
    ax_m.set_title(f"{model.name}: {weight} weights, latency vs M")
    ax_s.set_xlabel("KV sequence length")
    ax_s.set_ylabel("µs per layer (decode attention, batch 1)")
    ax_s.set_title(f"{model.name}: {weight} KV cache, latency vs length")
    ax_m.legend(fontsize=7)
    ax_s.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG through a temporary name and rename it into place."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp.png")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    tmp.replace(p)
    return p
