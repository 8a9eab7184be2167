"""The AIS experiment with TRL as the training engine (``lowbit rl --engine trl``).

The same study as :mod:`lowbit.lab.rl.experiment` (same task, same sizes, same arms and table), but the policy is
a ``transformers`` Llama and every GRPO step is TRL's (:class:`lowbit.rl.trl.GRPOTrainer`, a ``trl.GRPOTrainer``):

1. A Llama with the GPT's sizes (``hidden = d_model``, ``n_layer`` layers, ``n_head`` heads, MLP ``4·d_model``,
   untied head) over the task's characters plus a pad token learns reversed-digit addition by supervised
   fine-tuning until its greedy held-out accuracy reaches ``sft_target``; every arm and seed starts from it.
2. GRPO with TRL: ``prompts_per_step`` prompts × ``group`` completions per step, one optimiser step per
   generation batch (π_θ = π_old: the only off-policyness is the rollout mismatch), TRL's Adam, constant learning
   rate, ``loss_agg`` mapped to TRL's loss type (token-mean -> ``dapo``, seq-mean-token-mean -> ``grpo``,
   seq-mean-token-sum-norm -> ``dr_grpo``), ε = ``clip``, no KL, float32 trainer (``bf16=False``), sampling at
   temperature 1 over the full vocabulary. Reward 1 for the exact answer followed by EOS (the task's rule).
3. Arms: ``fp32`` samples with the float32 policy itself; the ``fp8-*`` arms sample from the policy fake-quantized
   at the dose ``strength`` (``rollout_precision``) with the arm's correction. Seeds fix TRL's seed (data order,
   sampling) and the prompt set.

Results have the layout of :func:`lowbit.lab.rl.experiment.run_experiment` (plus ``"engine": "trl"``), so the
table, the Welch conclusion and the plots are the same code.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from lowbit.lab.rl import experiment
from lowbit.lab.rl.experiment import ARMS, Engine, ExperimentConfig
from lowbit.lab.rl.task import EOS, VOCAB, AdditionTask
from lowbit.rl.rollout_precision import RolloutPrecision, fake_quantized

__all__ = ["LOSS_TYPES", "build_llama", "build_tokenizer", "greedy_accuracy", "run_arm", "run_experiment", "sft"]

PAD = len(VOCAB)  # the pad token follows the task's 13 characters; ids 0..12 are the task's own

#: lowbit's loss aggregation -> TRL's loss type with the same normaliser (one optimiser step per generation batch).
LOSS_TYPES: Mapping[str, str] = {
    "token-mean": "dapo",
    "seq-mean-token-mean": "grpo",
    "seq-mean-token-sum-norm": "dr_grpo",
}

#: Per-step logs: lab key -> key in TRL's log history.
_LOGGED = {
    "reward": "reward",
    "entropy": "entropy",
    "grad_norm": "grad_norm",
    **{
        k: f"correction/{k}"
        for k in (
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
    },
}


def build_tokenizer() -> Any:
    """Character tokenizer of the task (ids = the task's: digits, ``+``, ``=``, EOS ``;``) plus ``<pad>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(VOCAB)} | {"<pad>": PAD}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token=VOCAB[EOS])


def build_llama(config: ExperimentConfig, seed: int) -> Any:
    """A random Llama with the sizes of ``config.model`` (deterministic in ``seed``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    m = config.model
    cfg = LlamaConfig(
        vocab_size=len(VOCAB) + 1,
        hidden_size=m.d_model,
        intermediate_size=4 * m.d_model,
        num_hidden_layers=m.n_layer,
        num_attention_heads=m.n_head,
        num_key_value_heads=m.n_head,
        max_position_embeddings=m.block_size,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


@torch.no_grad()
def greedy_accuracy(
    model: Any, task: AdditionTask, n: int, *, precision: RolloutPrecision | None = None, batch: int = 256
) -> float:
    """Greedy held-out accuracy (answer and EOS exact) of ``model``, or of its FP8 engine with ``precision``."""
    prompts, targets = task.test_set(n)
    was_training = model.training
    model.eval()
    correct = 0.0
    try:
        for i in range(0, n, batch):
            p = prompts[i : i + batch]
            with fake_quantized(model, precision) if precision is not None else torch.no_grad():
                out = model.generate(
                    input_ids=p,
                    attention_mask=torch.ones_like(p),
                    max_new_tokens=task.answer_len,
                    do_sample=False,
                    pad_token_id=PAD,
                    eos_token_id=EOS,
                )
            resp = out[:, p.shape[1] :]
            resp = F.pad(resp, (0, task.answer_len - resp.shape[1]), value=PAD)
            correct += float(task.reward(resp, targets[i : i + batch]).sum())
    finally:
        model.train(was_training)
    return correct / n


def sft(config: ExperimentConfig, log: Callable[[str], None] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Supervised warm start of the Llama (teacher forcing on the answer), stopped at greedy accuracy
    ``>= sft_target``; returns (state dict, info)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        task = AdditionTask(config.digits)
        g = torch.Generator().manual_seed(config.sft_seed)
        model = build_llama(config, config.sft_seed)
        return experiment.sft_loop(
            model,
            lambda ids: model(input_ids=ids).logits,
            lambda m: greedy_accuracy(m, task, config.eval_size),
            task,
            config,
            g,
            log,
        )
    finally:
        torch.set_num_threads(threads)


def _dataset(config: ExperimentConfig, seed: int) -> Any:
    """``rl_steps · prompts_per_step`` training prompts (text) with their target answers (text, EOS excluded)."""
    from datasets import Dataset

    task = AdditionTask(config.digits)
    g = torch.Generator().manual_seed(1_000 + seed)
    prompts, targets = task.sample_train(config.rl_steps * config.prompts_per_step, g)
    return Dataset.from_dict(
        {
            "prompt": [task.decode(x) for x in prompts],
            "target": [task.decode(t[:-1]) for t in targets],
        }
    )


def exact_answer_reward(completion_ids: list[list[int]], target: list[str], **_: Any) -> list[float]:
    """1.0 when the completion is the target digits followed by EOS (the task's reward), else 0.0."""
    return [float(ids == [VOCAB.index(c) for c in t] + [EOS]) for ids, t in zip(completion_ids, target, strict=True)]


def _grpo_args(config: ExperimentConfig, seed: int, out_dir: str) -> Any:
    from trl import GRPOConfig

    task = AdditionTask(config.digits)
    if config.loss_agg not in LOSS_TYPES:
        raise ValueError(f"loss_agg must be one of {sorted(LOSS_TYPES)}, got {config.loss_agg!r}")
    return GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=config.prompts_per_step * config.group,
        num_generations=config.group,
        max_completion_length=task.answer_len,
        max_steps=config.rl_steps,
        learning_rate=config.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=config.grad_clip,
        loss_type=LOSS_TYPES[config.loss_agg],
        epsilon=config.clip[0],
        epsilon_high=config.clip[1],
        beta=0.0,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        bf16=False,
        use_cpu=True,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        seed=1_000 + seed,
        dataloader_num_workers=0,
    )


def run_arm(config: ExperimentConfig, arm_name: str, seed: int, init_state: Mapping[str, torch.Tensor]) -> dict:
    """One GRPO run with TRL; returns per-step logs and evaluations in the layout of the lab's ``run_arm``."""
    from transformers import TrainerCallback

    from lowbit.rl.trl import GRPOTrainer

    arm = ARMS[arm_name]
    task = AdditionTask(config.digits)
    model = build_llama(config, 0)
    model.load_state_dict(dict(init_state))
    precision = config.quant if arm.rollout == "fp8" else None
    evals: dict[str, list[float]] = {"step": [], "acc_fp32": [], "acc_fp8": []}

    def evaluate(step: int) -> None:
        evals["step"].append(step)
        evals["acc_fp32"].append(greedy_accuracy(model, task, config.eval_size))
        evals["acc_fp8"].append(greedy_accuracy(model, task, config.eval_size, precision=config.quant))

    class Evaluate(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step % config.eval_every == 0 or state.global_step == config.rl_steps:
                evaluate(state.global_step)

    evaluate(0)
    with tempfile.TemporaryDirectory() as out_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=exact_answer_reward,
            args=_grpo_args(config, seed, out_dir),
            train_dataset=_dataset(config, seed),
            processing_class=build_tokenizer(),
            callbacks=[Evaluate()],
            correction=arm.correction,
            rollout_precision=precision,
        )
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # the per-step logs are kept in the results, not printed
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    history = [h for h in trainer.state.log_history if "loss" in h and "step" in h]
    steps: dict[str, list[float]] = {"step": [float(h["step"]) for h in history]}
    for key, trl_key in _LOGGED.items():
        steps[key] = [float(h.get(trl_key, math.nan)) for h in history]
    step_time = sum(float(h.get("step_time", 0.0)) for h in history)
    correction_time = sum(float(h.get("correction/seconds", 0.0)) for h in history)
    return {
        "arm": arm_name,
        "seed": seed,
        "steps": steps,
        "evals": evals,
        "seconds_train": seconds,
        "seconds_step_total": step_time,
        "seconds_correction_total": correction_time,
        # correction() per generation batch against TRL's whole optimiser step (generation, scoring, loss, Adam).
        "correction_share": correction_time / step_time if step_time > 0 else 0.0,
    }


def _timed_run(config: ExperimentConfig, name: str, seed: int, init_state: Mapping[str, torch.Tensor]) -> dict:
    torch.set_num_threads(config.threads)
    t0 = time.perf_counter()
    res = run_arm(config, name, seed, init_state)
    res["seconds_wall"] = time.perf_counter() - t0
    return res


#: The TRL training engine for :func:`lowbit.lab.rl.experiment.run_experiment` (spawned workers: TRL and
#: accelerate keep process-global state that a fork would share).
ENGINE = Engine(sft=sft, timed_run=_timed_run, start_method="spawn", name="trl")


def run_experiment(
    config: ExperimentConfig,
    log: Callable[[str], None] | None = None,
    *,
    init: tuple[Mapping[str, torch.Tensor], dict] | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """SFT once (or reuse ``init``), then every arm × seed with TRL; ``jobs`` worker processes. The layout of
    :func:`lowbit.lab.rl.experiment.run_experiment` plus ``"engine": "trl"``."""
    return experiment.run_experiment(config, log, init=init, jobs=jobs, engine=ENGINE)
