"""``lowbit rl [--quick] [--engine lowbit|trl] [--arms ...] [--seeds N] [--strength ...] [--steps N] [--out DIR]``:
the AIS experiment, on lowbit's own GRPO loop or with TRL as the training engine."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from lowbit.lab.rl.compare import conclusion
from lowbit.lab.rl.experiment import ARMS, DEFAULT_ARMS, ExperimentConfig, quick_config, run_experiment, sft
from lowbit.lab.rl.rollout import STRENGTHS


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``rl`` subcommand."""
    p = sub.add_parser(
        "rl",
        help="GRPO on a tiny GPT with FP8 fake-quantized rollouts: no correction vs TIS/MIS/IcePop/fixed-α/AIS",
        description=(
            "The AIS experiment: a tiny GPT learns reversed-digit addition (SFT warm start), then GRPO with rollouts "
            "sampled from an FP8 fake-quantized copy, one arm per correction. Prints the final table per dose and a "
            "one-line conclusion (AIS vs no correction, Welch's t-test over seeds); writes NAME.json and NAME.png."
        ),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="short run (about a minute): 2-digit addition, 30 steps, 2 seeds, the six main arms: fp32 rollouts, "
        "and FP8 rollouts with none/tis/icepop/fixed-alpha/ais correction",
    )
    p.add_argument(
        "--arms",
        nargs="+",
        choices=sorted(ARMS),
        metavar="ARM",
        help=f"arms to run, from: {', '.join(ARMS)} (default: the six main arms {', '.join(DEFAULT_ARMS)})",
    )
    p.add_argument("--seeds", type=int, metavar="N", help="seeds per arm (default 3; --quick 2)")
    p.add_argument(
        "--strength",
        nargs="+",
        choices=list(STRENGTHS),
        metavar="DOSE",
        help=f"FP8 rollout dose(s), mild to strong: {', '.join(STRENGTHS)}; several = a dose sweep, the first is "
        "the main one (default e5m2-tensor-act)",
    )
    p.add_argument("--steps", type=int, metavar="N", help="GRPO steps per run (default 300; --quick 30)")
    p.add_argument("--lr", type=float, help="Adam learning rate of GRPO (default 5e-4)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads per run (default 1)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="arm x seed runs in N parallel worker processes (default 1; the results do not depend on N)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("rl-results"),
        metavar="DIR",
        help="folder for the results (default rl-results)",
    )
    p.add_argument(
        "--engine",
        choices=("lowbit", "trl"),
        default="lowbit",
        help="training engine: lowbit's own GRPO loop on the tiny GPT (default), or TRL's GRPOTrainer "
        "(lowbit.rl.trl.GRPOTrainer) on a Llama of the same sizes; needs pip install 'lowbit[trl]'",
    )
    p.add_argument("--name", help="file stem: NAME.json and NAME.png (default rl, or rl_trl with --engine trl)")
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
    """Run the experiment at each requested dose, print the final tables, write the results, then print the
    conclusion: AIS minus no correction in final greedy accuracy, with Welch's p over seeds (one line per dose)."""
    from lowbit.cli_tables import print_rich_table
    from lowbit.lab.rl.results import TABLE_HEADER, table_rows, write_outputs

    base = config_from_args(args)
    strengths = args.strength or [base.strength]
    engine_sft, engine_run = sft, run_experiment
    if args.engine == "trl":
        from lowbit.lab.rl import trl_experiment

        engine_sft, engine_run = trl_experiment.sft, trl_experiment.run_experiment
    name = args.name or ("rl_trl" if args.engine == "trl" else "rl")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"--name must be letters, digits, '-' or '_', got {name!r}")
    start = time.perf_counter()
    init = engine_sft(base, print)
    print(f"sft: {init[1]}")
    experiments = []
    for s in strengths:
        cfg = replace(base, strength=s)
        print(f"== dose {s}: arms {', '.join(cfg.arms)}; {cfg.seeds} seeds; {cfg.rl_steps} steps")
        exp = engine_run(cfg, print, init=init, jobs=args.jobs)
        experiments.append(exp)
        print_rich_table(f"final table, dose {s} (± = sd over seeds)", TABLE_HEADER, table_rows(exp["table"]))
    payload = {
        "quick": args.quick,
        "engine": args.engine,
        "seconds": time.perf_counter() - start,
        "experiments": experiments,
    }
    for path in write_outputs(payload, args.out, name=name):
        print(f"wrote {path}")
    for exp in experiments:
        dose = f" (dose {exp['config']['strength']})" if len(experiments) > 1 else ""
        print(f"conclusion{dose}: {conclusion(exp['table'])}")
    return 0
