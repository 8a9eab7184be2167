"""Report section ``rl``: the AIS experiment (reward/accuracy/α/ESS curves per arm and the final table).

Quick mode runs :func:`~lowbit.rl.experiment.quick_config` live (about 30 s); full mode runs the full
experiment. Either way, the saved full run in ``benchmarks/results/rl.json`` (written by ``lowbit rl`` /
``benchmarks/bench_rl.py``) is shown too when present, labelled with the date it was written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lowbit.report.section import Section, SectionContext, SectionOutput

_SAVED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "rl.json"


_SUMMARY_KEYS = (
    "acc_fp32",
    "acc_fp32_sd",
    "reward_tail",
    "reward_tail_sd",
    "alpha_tail",
    "ess_tail",
    "correction_share",
)


def _summary(exp: dict[str, Any]) -> dict[str, Any]:
    return {
        "strength": exp["config"]["strength"],
        "seeds": exp["config"]["seeds"],
        "rl_steps": exp["config"]["rl_steps"],
        "arms": {r["arm"]: {k: r[k] for k in _SUMMARY_KEYS} for r in exp["table"]},
    }


def _show(out: SectionOutput, exp: dict[str, Any], label: str) -> None:
    from lowbit.rl.plots import curves_figure
    from lowbit.rl.results import TABLE_HEADER, table_rows

    cfg = exp["config"]
    out.table(
        TABLE_HEADER,
        table_rows(exp["table"]),
        caption=f"{label}: dose {cfg['strength']}, {cfg['digits']}-digit addition, {cfg['rl_steps']} GRPO steps, "
        f"{cfg['seeds']} seeds; accuracy = greedy held-out at the last step; 'last steps' = mean over the last "
        f"{cfg['tail']} steps; ± = sd over seeds",
    )
    out.figure(curves_figure(exp), caption=f"{label}: curves per arm (mean ± sd over seeds)")


def run(ctx: SectionContext) -> SectionOutput:
    """Run the experiment (quick or full) and show it, plus the saved full run when there is one."""
    from dataclasses import replace

    from lowbit.rl.experiment import ExperimentConfig, quick_config, run_experiment

    out = SectionOutput()
    out.text(
        "GRPO on a tiny GPT (reversed-digit addition, trained from scratch with a short SFT warm start). Rollouts are "
        "sampled from a copy whose Linear weights (and at the strongest doses activations) are fake-quantized to "
        "FP8, with log μ recorded at sampling; the trainer is float32 and takes one step per batch, so the only "
        "off-policyness is the FP8 mismatch. Arms: float32 rollouts, FP8 uncorrected, token TIS (C=2), IcePop "
        "[0.5, 2], fixed α=0.5 and AIS. The AIS diagnostics and mixing rule are [reconstruction]s "
        "(../shared/papers/ais.md §3-4; docs/rl.md)."
    )
    cfg = quick_config(seeds=2) if ctx.quick else ExperimentConfig()
    cfg = replace(cfg, sft_seed=ctx.seed)
    exp = run_experiment(cfg)
    _show(out, exp, "quick run (live)" if ctx.quick else "full run (live)")
    out.summary["live"] = _summary(exp)
    if _SAVED.exists():
        saved = json.loads(_SAVED.read_text())
        for i, sexp in enumerate(saved.get("experiments", [])):
            _show(out, sexp, f"saved full run {i + 1} ({saved.get('written', '?')})")
        out.summary["saved"] = [_summary(e) for e in saved.get("experiments", [])]
    else:
        out.text(f"No saved full run at {_SAVED}; run `lowbit rl --out benchmarks/results` to create it.")
    return out


SECTION = Section(name="rl", title="AIS: correcting FP8 rollouts in GRPO", order=60, run=run)
