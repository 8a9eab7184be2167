"""The AIS experiment: GRPO on a tiny GPT with FP8 fake-quantized rollouts (``docs/methods/ais.md`` §9).

1. A tiny GPT learns reversed-digit addition from scratch by supervised fine-tuning, stopped once its
   greedy held-out accuracy reaches ``sft_target`` (so RL has signal); that checkpoint is shared by every
   arm and seed.
2. GRPO, one gradient step per batch (so π_θ = π_old and the only off-policyness is the rollout mismatch):
   sample G responses per prompt from the rollout engine (the float32 trainer itself, or an FP8
   fake-quantized copy re-synced every step) recording log μ; binary reward; group-normalised
   advantages; recompute log π_old with the float32 trainer; correction factor c; clipped loss; Adam.
3. Arms differ only in the rollout precision and the correction; seeds fix data order, sampling and
   nothing else, so arm k and arm j with the same seed see the same prompts.

Everything is deterministic per seed (explicit ``torch.Generator``s, single-threaded by default).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F

from lowbit.lab.rl.model import GPT, GPTConfig
from lowbit.lab.rl.rollout import STRENGTHS, QuantStrength, generate, quantized_copy
from lowbit.lab.rl.task import AdditionTask
from lowbit.rl.correction import CorrectionConfig, CorrectionState, correction
from lowbit.rl.loss import policy_loss

__all__ = ["ARMS", "DEFAULT_ARMS", "Arm", "ExperimentConfig", "final_table", "run_arm", "run_experiment", "sft"]


@dataclass(frozen=True)
class Arm:
    """One experimental arm: rollout precision (``fp32`` or ``fp8``) and correction config."""

    name: str
    rollout: str
    correction: CorrectionConfig


#: Every known arm by name; ``lowbit rl --arms`` picks from these.
ARMS: Mapping[str, Arm] = MappingProxyType(
    {
        a.name: a
        for a in (
            Arm("fp32", "fp32", CorrectionConfig(mode="none")),
            Arm("fp8-none", "fp8", CorrectionConfig(mode="none")),
            Arm("fp8-tis", "fp8", CorrectionConfig(mode="tis", cap=2.0)),
            Arm("fp8-mis", "fp8", CorrectionConfig(mode="mis", cap=2.0)),
            Arm("fp8-seq-tis", "fp8", CorrectionConfig(mode="seq-tis", cap=2.0)),
            Arm("fp8-seq-mis", "fp8", CorrectionConfig(mode="seq-mis", cap=3.0)),
            Arm("fp8-icepop", "fp8", CorrectionConfig(mode="icepop", band=(0.5, 2.0))),
            Arm("fp8-fixed-0.5", "fp8", CorrectionConfig(mode="fixed-alpha", alpha=0.5, cap=2.0)),
            Arm("fp8-ais", "fp8", CorrectionConfig(mode="ais", cap=2.0, mixing="gate")),
            Arm("fp8-ais-shrinkage", "fp8", CorrectionConfig(mode="ais", cap=2.0, mixing="shrinkage")),
        )
    }
)
DEFAULT_ARMS = ("fp32", "fp8-none", "fp8-tis", "fp8-icepop", "fp8-fixed-0.5", "fp8-ais")


@dataclass(frozen=True)
class ExperimentConfig:
    """Every hyperparameter of the experiment in one place (defaults: the full run)."""

    digits: int = 3
    model: GPTConfig = field(default_factory=lambda: GPTConfig(vocab_size=13, block_size=16))
    sft_seed: int = 0
    sft_batch: int = 64
    sft_lr: float = 2e-3
    sft_max_steps: int = 3000
    sft_eval_every: int = 25
    sft_target: float = 0.3
    rl_steps: int = 300
    prompts_per_step: int = 16
    group: int = 8
    lr: float = 5e-4
    clip: tuple[float, float] = (0.2, 0.28)
    loss_agg: str = "token-mean"
    grad_clip: float = 1.0
    eval_every: int = 25
    eval_size: int = 256
    strength: str = "e5m2-tensor-act"
    arms: tuple[str, ...] = DEFAULT_ARMS
    seeds: int = 3
    tail: int = 25
    threads: int = 1

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"arms must be a non-empty subset of {sorted(ARMS)}, got unknown {unknown}")
        if self.strength not in STRENGTHS:
            raise ValueError(f"strength must be one of {sorted(STRENGTHS)}, got {self.strength!r}")
        for name in ("rl_steps", "prompts_per_step", "seeds", "eval_every", "eval_size", "tail", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.group < 2:
            raise ValueError(f"group must be >= 2 (GRPO normalises within a group), got {self.group}")
        if not 0.0 < self.sft_target < 1.0:
            raise ValueError(f"sft_target must lie in (0, 1), got {self.sft_target}")
        task = AdditionTask(self.digits)
        if self.model.block_size < task.prompt_len + task.answer_len - 1:
            raise ValueError(
                f"model.block_size {self.model.block_size} is too short for {self.digits}-digit addition "
                f"(needs {task.prompt_len + task.answer_len - 1})"
            )
        if self.model.vocab_size != task.vocab_size:
            raise ValueError(f"model.vocab_size must be {task.vocab_size}, got {self.model.vocab_size}")

    @property
    def quant(self) -> QuantStrength:
        return STRENGTHS[self.strength]


def quick_config(**overrides: Any) -> ExperimentConfig:
    """The ``--quick`` run: 2-digit addition, the six main arms (:data:`DEFAULT_ARMS`: fp32 and FP8 with no
    correction, TIS, IcePop, fixed α = 0.5 and AIS), 2 seeds, 30 steps (about 50 s of one core)."""
    base = ExperimentConfig(
        digits=2,
        sft_lr=3e-3,
        sft_eval_every=20,
        rl_steps=30,
        arms=DEFAULT_ARMS,
        seeds=2,
        eval_every=15,
        eval_size=128,
        tail=10,
        strength="e5m2-tensor-act",
    )
    return replace(base, **overrides)


# ---------------------------------------------------------------- evaluation


def _response_logp(model: GPT, seqs: torch.Tensor, prompt_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the response tokens of ``seqs`` under ``model`` and the token entropies, both (B, R)."""
    logits = model(seqs[:, :-1])[:, prompt_len - 1 :].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    tokens = seqs[:, prompt_len:]
    lp = logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    return lp, entropy


def greedy_accuracy(
    model: GPT, task: AdditionTask, n: int, *, strength: QuantStrength | None = None, quantize: bool = False
) -> float:
    """Greedy held-out accuracy of ``model`` (or of its FP8 copy with ``quantize``)."""
    prompts, targets = task.test_set(n)
    net = quantized_copy(model, strength) if quantize and strength is not None else model
    out = generate(
        net, prompts, task.answer_len, torch.Generator(), strength=strength if quantize else None, greedy=True
    )
    return float(task.reward(out.responses, targets).mean())


# ---------------------------------------------------------------- SFT warm start


def sft(config: ExperimentConfig, log: Callable[[str], None] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Supervised warm start, stopped at held-out greedy accuracy ``>= sft_target``; returns (state, info)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _sft(config, log)
    finally:
        torch.set_num_threads(threads)


def _sft(config: ExperimentConfig, log: Callable[[str], None] | None) -> tuple[dict[str, torch.Tensor], dict]:
    task = AdditionTask(config.digits)
    g = torch.Generator().manual_seed(config.sft_seed)
    model = GPT(config.model, generator=g)
    return sft_loop(model, model, lambda m: greedy_accuracy(m, task, config.eval_size), task, config, g, log)


def sft_loop(
    model: torch.nn.Module,
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    accuracy: Callable[[torch.nn.Module], float],
    task: AdditionTask,
    config: ExperimentConfig,
    g: torch.Generator,
    log: Callable[[str], None] | None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Teacher-forced cross-entropy on the answer tokens (AdamW, ``sft_lr``), evaluated every ``sft_eval_every``
    steps and stopped at greedy accuracy ``>= sft_target`` or ``sft_max_steps``; returns (state dict, info).
    ``logits_of(ids)`` gives ``[B, T, V]`` logits (the engines' models differ in their call)."""
    opt = torch.optim.AdamW(model.parameters(), lr=config.sft_lr, weight_decay=0.0)
    p = task.prompt_len
    acc, step = 0.0, 0
    start = time.perf_counter()
    model.train()
    for step in range(1, config.sft_max_steps + 1):
        prompts, answers = task.sample_train(config.sft_batch, g)
        seq = torch.cat([prompts, answers], dim=1)
        logits = logits_of(seq[:, :-1])[:, p - 1 :]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), seq[:, p:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % config.sft_eval_every == 0:
            acc = accuracy(model)
            if log:
                log(f"sft step {step}: loss {float(loss.detach()):.3f}, greedy accuracy {acc:.3f}")
            if acc >= config.sft_target:
                break
    info = {"steps": step, "greedy_accuracy": acc, "seconds": time.perf_counter() - start}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, info


# ---------------------------------------------------------------- GRPO


def _group_advantages(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """GRPO: ``Â_i = (r_i − mean_group r) / (std_group r + 1e-4)`` (DeepSeekMath)."""
    r = rewards.view(-1, group)
    adv = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)
    return adv.reshape(-1)


_LOGGED = (
    "alpha",
    "alpha_hat",
    "ess_ratio",
    "ess_ratio_seq",
    "mean_abs_logratio",
    "max_abs_logratio",
    "kl_k3",
    "variance_amplification",
    "frac_above_cap",
    "frac_rejected",
    "coef_mean",
)


def run_arm(config: ExperimentConfig, arm: Arm, seed: int, init_state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """One GRPO run; returns per-step logs (lists under stable keys), evaluations and timings."""
    task = AdditionTask(config.digits)
    model = GPT(config.model)
    model.load_state_dict(dict(init_state))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    g_data = torch.Generator().manual_seed(1_000 + seed)
    g_sample = torch.Generator().manual_seed(2_000 + seed)
    strength = config.quant if arm.rollout == "fp8" else None
    state = CorrectionState()
    steps: dict[str, list[float]] = {k: [] for k in ("step", "reward", "entropy", "grad_norm", *_LOGGED)}
    evals: dict[str, list[float]] = {"step": [], "acc_fp32": [], "acc_fp8": []}
    t_step = t_corr = 0.0
    p = task.prompt_len

    def evaluate(step: int) -> None:
        evals["step"].append(step)
        evals["acc_fp32"].append(greedy_accuracy(model, task, config.eval_size))
        evals["acc_fp8"].append(greedy_accuracy(model, task, config.eval_size, strength=config.quant, quantize=True))

    evaluate(0)
    for step in range(1, config.rl_steps + 1):
        t0 = time.perf_counter()
        prompts, targets = task.sample_train(config.prompts_per_step, g_data)
        prompts = prompts.repeat_interleave(config.group, 0)
        targets = targets.repeat_interleave(config.group, 0)
        engine = quantized_copy(model, strength) if strength is not None else model
        out = generate(engine, prompts, task.answer_len, g_sample, strength=strength)
        rewards = task.reward(out.responses, targets)
        adv = _group_advantages(rewards, config.group)

        logp, entropy = _response_logp(model, out.sequences, p)
        logp_old = logp.detach()
        tc = time.perf_counter()
        corr = correction(logp_old, out.logp, out.mask, adv, arm.correction, state)
        t_corr += time.perf_counter() - tc
        state = corr.state
        loss, metrics = policy_loss(
            logp, logp_old, None, adv, out.mask, clip=config.clip, loss_agg=config.loss_agg, precomputed=corr
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        t_step += time.perf_counter() - t0

        m = out.mask.float()
        steps["step"].append(step)
        steps["reward"].append(float(rewards.mean()))
        steps["entropy"].append(float((entropy.detach() * m).sum() / m.sum().clamp_min(1)))
        steps["grad_norm"].append(float(gn))
        for k in _LOGGED:
            steps[k].append(metrics[k])
        if step % config.eval_every == 0 or step == config.rl_steps:
            evaluate(step)
    return {
        "arm": arm.name,
        "seed": seed,
        "steps": steps,
        "evals": evals,
        "seconds_step_total": t_step,
        "seconds_correction_total": t_corr,
        "correction_share": t_corr / t_step if t_step > 0 else math.nan,
    }


# ---------------------------------------------------------------- the whole experiment


def run_experiment(
    config: ExperimentConfig,
    log: Callable[[str], None] | None = None,
    *,
    init: tuple[Mapping[str, torch.Tensor], dict] | None = None,
    jobs: int = 1,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """SFT once (or reuse ``init`` = the engine's SFT result), then every arm x seed.

    ``jobs`` > 1 runs the arm x seed runs in that many worker processes (``config.threads`` torch threads
    each). Every run draws only from its own seeded generators, so the results do not depend on ``jobs``.
    ``engine`` swaps the training engine (default: this module's tiny GPT loop; the TRL engine is
    :data:`lowbit.lab.rl.trl_experiment.ENGINE`). Returns a JSON-serialisable dict with the config, per-run
    logs and the final table (plus ``"engine"`` for a non-default engine).
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    engine = DEFAULT_ENGINE if engine is None else engine
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        start = time.perf_counter()
        init_state, sft_info = engine.sft(config, log) if init is None else init
        tasks = [(seed, name) for seed in range(config.seeds) for name in config.arms]

        def report(res: Mapping[str, Any]) -> None:
            if log:
                log(
                    f"{engine.label}{res['arm']} seed {res['seed']}: final acc {res['evals']['acc_fp32'][-1]:.3f}, "
                    f"reward tail {statistics.fmean(res['steps']['reward'][-config.tail :]):.3f} "
                    f"({res['seconds_wall']:.1f} s)"
                )

        runs = run_tasks(config, tasks, init_state, jobs, report, engine)
        out = {} if engine.name is None else {"engine": engine.name}
        return {
            **out,
            "config": asdict(config),
            "arms": {n: {"rollout": ARMS[n].rollout, "correction": _cfg_dict(ARMS[n].correction)} for n in config.arms},
            "sft": sft_info,
            "runs": runs,
            "table": final_table(runs, config),
            "seconds": time.perf_counter() - start,
        }
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Engine:
    """A training engine for :func:`run_experiment`: its SFT warm start and its picklable per-run function
    ``timed_run(config, arm_name, seed, init_state) -> run dict`` (with ``seconds_wall``), the process start
    method its worker pools need, and a name recorded in the results (None for the default engine)."""

    sft: Callable[..., tuple[dict[str, torch.Tensor], dict]]
    timed_run: Callable[[ExperimentConfig, str, int, Mapping[str, torch.Tensor]], dict]
    start_method: str | None = None  # None: fork where available, else spawn
    name: str | None = None

    @property
    def label(self) -> str:
        """Prefix of the progress lines (``"[trl] "`` for a named engine)."""
        return "" if self.name is None else f"[{self.name}] "


def run_tasks(
    config: ExperimentConfig,
    tasks: Sequence[tuple[int, str]],
    init_state: Mapping[str, torch.Tensor],
    jobs: int,
    report: Callable[[Mapping[str, Any]], None],
    engine: Engine,
) -> list[dict[str, Any]]:
    """The (seed, arm) runs of ``tasks`` in order (seed-major): in this process for ``jobs == 1``, else on a
    process pool of ``jobs`` workers; ``report`` is called as each run finishes."""
    if jobs == 1 or len(tasks) == 1:
        runs = []
        for seed, name in tasks:
            runs.append(engine.timed_run(config, name, seed, init_state))
            report(runs[-1])
        return runs
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_all_start_methods, get_context

    method = engine.start_method or ("fork" if "fork" in get_all_start_methods() else "spawn")
    state = {k: v.detach().clone() for k, v in init_state.items()}
    out: dict[tuple[int, str], dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=get_context(method)) as pool:
        futures = {pool.submit(engine.timed_run, config, name, seed, state): (seed, name) for seed, name in tasks}
        for fut in as_completed(futures):
            res = fut.result()
            out[futures[fut]] = res
            report(res)
    return [out[t] for t in tasks]


def _timed_run(config: ExperimentConfig, name: str, seed: int, init_state: Mapping[str, torch.Tensor]) -> dict:
    """:func:`run_arm` by arm name (picklable for worker processes), with its wall time added."""
    torch.set_num_threads(config.threads)
    t0 = time.perf_counter()
    res = run_arm(config, ARMS[name], seed, init_state)
    res["seconds_wall"] = time.perf_counter() - t0
    return res


def _cfg_dict(c: CorrectionConfig) -> dict[str, Any]:
    return {k: (v if isinstance(v, (str, int, float, tuple, type(None))) else repr(v)) for k, v in asdict(c).items()}


def _mean_sd(xs: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def final_table(runs: Sequence[Mapping[str, Any]], config: ExperimentConfig) -> list[dict[str, Any]]:
    """Per arm, mean and sample std over seeds of: final greedy accuracy (trainer, FP8 copy), reward over the
    last ``tail`` steps, α, ESS ratio and mean |δ| over the last ``tail`` steps, and the correction's share
    of the step time."""
    rows = []
    for name in config.arms:
        rs = [r for r in runs if r["arm"] == name]
        if not rs:
            continue
        tail = config.tail
        cols = {
            "acc_fp32": [r["evals"]["acc_fp32"][-1] for r in rs],
            "acc_fp8": [r["evals"]["acc_fp8"][-1] for r in rs],
            "reward_tail": [statistics.fmean(r["steps"]["reward"][-tail:]) for r in rs],
            "alpha_tail": [statistics.fmean(r["steps"]["alpha"][-tail:]) for r in rs],
            "ess_tail": [statistics.fmean(r["steps"]["ess_ratio"][-tail:]) for r in rs],
            "mean_abs_logratio_tail": [statistics.fmean(r["steps"]["mean_abs_logratio"][-tail:]) for r in rs],
            "correction_share": [r["correction_share"] for r in rs],
        }
        row: dict[str, Any] = {"arm": name, "seeds": len(rs)}
        for k, xs in cols.items():
            row[k], row[k + "_sd"] = _mean_sd(xs)
        rows.append(row)
    return rows


DEFAULT_ENGINE = Engine(sft=sft, timed_run=_timed_run)
