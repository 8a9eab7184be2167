"""Report section ``rl``: the AIS experiment (reward/accuracy/α/ESS curves per arm and the final table).

Quick mode runs :func:`~lowbit.lab.rl.experiment.quick_config` live (the six main arms, 2 seeds, about 50 s);
full mode runs the full experiment. Either way, the saved full runs ``rl*.json`` of the report's results folder
(written by ``lowbit rl`` / ``benchmarks/bench_rl.py``: ``rl.json`` the main run, others e.g. a dose sweep; by
default the copies packaged with lowbit, else ``lowbit report --results DIR``) are shown too, labelled with their
file name, the date they were written and the machine. Packaged copies keep the curves of the main run only; the
others show their tables. A table with both fp8-ais and fp8-none is followed by its conclusion line (AIS vs no
correction, Welch's t-test over seeds, :func:`~lowbit.lab.rl.compare.conclusion`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lowbit.lab.report.section import Section, SectionContext, SectionOutput
from lowbit.lab.report.stored import ResultsSource, provenance


def _saved_runs(results: ResultsSource) -> list[Path]:
    """``rl.json`` first, then the other ``rl*.json`` files that hold experiments."""
    if not results.path.is_dir():
        return []
    paths = sorted(results.path.glob("rl*.json"), key=lambda p: (p.name != "rl.json", p.name))
    return [p for p in paths if "experiments" in json.loads(p.read_text(encoding="utf-8"))]


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
        "lr": exp["config"]["lr"],
        "arms": {r["arm"]: {k: r[k] for k in _SUMMARY_KEYS} for r in exp["table"]},
    }


def _show(out: SectionOutput, exp: dict[str, Any], label: str, *, figure: bool = True) -> None:
    from lowbit.lab.rl.compare import conclusion
    from lowbit.lab.rl.plots import curves_figure
    from lowbit.lab.rl.results import TABLE_HEADER, table_rows

    cfg = exp["config"]
    out.table(
        TABLE_HEADER,
        table_rows(exp["table"]),
        caption=f"{label}: dose {cfg['strength']}, {cfg['digits']}-digit addition, {cfg['rl_steps']} GRPO steps, "
        f"{cfg['seeds']} seeds; accuracy = greedy held-out at the last step; 'last steps' = mean over the last "
        f"{cfg['tail']} steps; ± = sd over seeds",
    )
    if figure and exp.get("runs"):
        out.figure(curves_figure(exp), caption=f"{label}: curves per arm (mean ± sd over seeds)")
    if {"fp8-ais", "fp8-none"} <= {r["arm"] for r in exp["table"]}:
        out.text(f"{label}: {conclusion(exp['table'])}.")


def run(ctx: SectionContext) -> SectionOutput:
    """Run the experiment (quick or full) and show it, plus the saved full run when there is one."""
    from dataclasses import replace

    from lowbit.lab.rl.experiment import ExperimentConfig, quick_config, run_experiment

    out = SectionOutput()
    out.text(
        "GRPO on a tiny GPT (reversed-digit addition, trained from scratch with a short SFT warm start). Rollouts are "
        "sampled from a copy whose Linear weights (and at the strongest doses activations) are fake-quantized to "
        "FP8, with log μ recorded at sampling; the trainer is float32 and takes one step per batch, so the only "
        "off-policyness is the FP8 mismatch. Arms: float32 rollouts, FP8 uncorrected, token TIS (C=2), IcePop "
        "[0.5, 2], fixed α=0.5 and AIS. The AIS diagnostics and mixing rule are [reconstruction]s "
        "of the AIS paper (arXiv:2605.13907; docs/rl.md)."
    )
    cfg = quick_config(seeds=2) if ctx.quick else ExperimentConfig()
    cfg = replace(cfg, sft_seed=ctx.seed)
    exp = run_experiment(cfg)
    _show(out, exp, "quick run (live)" if ctx.quick else "full run (live)")
    out.summary["live"] = _summary(exp)
    saved_paths = _saved_runs(ctx.results)
    for path in saved_paths:
        saved = json.loads(path.read_text(encoding="utf-8"))
        out.text(provenance(saved, path.name, ctx.results))
        for sexp in saved["experiments"]:
            lr = sexp["config"]["lr"]
            engine = "TRL engine, " if saved.get("engine") == "trl" else ""  # lowbit rl --engine trl
            label = f"saved run {path.name} ({engine}lr {lr:g}, written {saved.get('written', '?')})"
            # quick mode keeps to its time budget: the figure of the main run only (PNGs of all are saved beside)
            _show(out, sexp, label, figure=not ctx.quick or path.name == "rl.json")
        out.summary[f"saved:{path.name}"] = [_summary(e) for e in saved["experiments"]]
    if not saved_paths:
        out.text(
            f"No saved full run in {ctx.results.describe()}: "
            f"{ctx.results.rerun_hint('bench_rl.py', 'lowbit rl --out DIR')}."
        )
    return out


SECTION = Section(name="rl", title="AIS: correcting FP8 rollouts in GRPO", order=60, run=run)
