"""``lowbit rl [--quick] [--arms ...] [--seeds N] [--strength ...] [--steps N] [--out DIR]``: the AIS experiment."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from lowbit.lab.rl.experiment import ARMS, ExperimentConfig, quick_config, run_experiment, sft
from lowbit.lab.rl.rollout import STRENGTHS


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``rl`` subcommand."""
    p = sub.add_parser(
        "rl",
        help="GRPO on a tiny GPT with FP8 fake-quantized rollouts: no correction vs TIS/MIS/IcePop/fixed-α/AIS",
    )
    p.add_argument("--quick", action="store_true", help="short run (about 30 s): fewer steps, arms and seeds")
    p.add_argument("--arms", nargs="+", choices=sorted(ARMS), help="arms to run (default: the six main arms)")
    p.add_argument("--seeds", type=int, help="seeds per arm (default 3; quick 2)")
    p.add_argument(
        "--strength",
        nargs="+",
        choices=list(STRENGTHS),
        help="FP8 dose(s); several = a dose sweep, the first is the main one (default e5m2-tensor-act)",
    )
    p.add_argument("--steps", type=int, help="GRPO steps per run")
    p.add_argument("--lr", type=float, help="Adam learning rate of GRPO (default 5e-4)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel worker processes (default 1; same results)")
    p.add_argument("--out", type=Path, default=Path("rl-results"), help="folder for the results (default rl-results)")
    p.add_argument("--name", default="rl", help="file stem: NAME.json and NAME.png (default rl)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The experiment configuration the flags ask for (before choosing the dose)."""
    cfg = quick_config() if args.quick else ExperimentConfig()
    overrides: dict = {"threads": args.threads}
    if args.arms:
        overrides["arms"] = tuple(args.arms)
    if args.seeds is not None:
        overrides["seeds"] = args.seeds
    if args.steps is not None:
        overrides["rl_steps"] = args.steps
    if args.lr is not None:
        if not args.lr > 0:
            raise ValueError(f"--lr must be > 0, got {args.lr}")
        overrides["lr"] = args.lr
    return replace(cfg, **overrides)


def run(args: argparse.Namespace) -> int:
    """Run the experiment at each requested dose, print the final tables and write the results."""
    from lowbit.lab.report.section import format_cell
    from lowbit.lab.rl.results import TABLE_HEADER, table_rows, write_outputs

    base = config_from_args(args)
    strengths = args.strength or [base.strength]
    start = time.perf_counter()
    init = sft(base, print)
    print(f"sft: {init[1]}")
    experiments = []
    for s in strengths:
        cfg = replace(base, strength=s)
        print(f"== dose {s}: arms {', '.join(cfg.arms)}; {cfg.seeds} seeds; {cfg.rl_steps} steps")
        exp = run_experiment(cfg, print, init=init, jobs=args.jobs)
        experiments.append(exp)
        rows = table_rows(exp["table"])
        widths = [max(len(h), *(len(format_cell(r[i])) for r in rows)) for i, h in enumerate(TABLE_HEADER)]
        print("  ".join(h.rjust(w) for h, w in zip(TABLE_HEADER, widths, strict=True)))
        for r in rows:
            print("  ".join(format_cell(c).rjust(w) for c, w in zip(r, widths, strict=True)))
    payload = {"quick": args.quick, "seconds": time.perf_counter() - start, "experiments": experiments}
    if not args.name or not args.name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"--name must be letters, digits, '-' or '_', got {args.name!r}")
    for path in write_outputs(payload, args.out, name=args.name):
        print(f"wrote {path}")
    return 0
