"""lowbit.rl.trl.GRPOTrainer against the installed TRL (1.16): training, parity with TRL's own correction, FP8
rollouts, the top-k pitfall. Tiny random Llama and a character tokenizer built here (nothing downloaded)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("trl")

from lowbit.rl import MODES, CorrectionConfig, correction
from lowbit.rl.rollout_precision import fake_quantized

CHARS = "0123456789+="
PROMPTS = ["12+34=", "5+6=", "7+8=", "90+1=", "3+3=", "41+2="]


def char_tokenizer() -> Any:
    """A character-level fast tokenizer (pad 0, eos 1, then digits, '+', '=') built with `tokenizers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(CHARS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")


def tiny_llama(seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=2 + len(CHARS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=32,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def digit_reward(completions: list[str], **_: Any) -> list[float]:
    """A graded reward (share of '1' characters), so groups differ and advantages are non-zero."""
    return [c.count("1") / max(len(c), 1) for c in completions]


def grpo_args(tmp_path: Path, **overrides: Any) -> Any:
    from trl import GRPOConfig

    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=5,
        max_steps=2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        learning_rate=1e-2,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        loss_type="grpo",
        bf16=False,  # TRL defaults to bf16 autocast for the trainer's forward; generate runs in float32
    )
    return GRPOConfig(**(base | overrides))


def dataset(n: int = 16) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [PROMPTS[i % len(PROMPTS)] for i in range(n)]})


def make(cls: Any, tmp_path: Path, model: Any = None, **kwargs: Any) -> Any:
    args = kwargs.pop("args", None) or grpo_args(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return cls(
            model=tiny_llama() if model is None else model,
            reward_funcs=digit_reward,
            args=args,
            train_dataset=dataset(),
            processing_class=char_tokenizer(),
            **kwargs,
        )


def lowbit_trainer() -> Any:
    from lowbit.rl.trl import GRPOTrainer

    return GRPOTrainer


# ---------------------------------------------------------------- training end to end


LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def test_trains_two_steps_with_every_mode_and_loss_type(tmp_path: Path) -> None:
    """2 optimiser steps (gradient accumulation 2) per mode, cycling the loss types; α etc. logged every step."""
    cls = lowbit_trainer()
    modes = sorted(MODES)
    assert len(modes) >= 8
    for i, mode in enumerate(modes):
        args = grpo_args(
            tmp_path,
            loss_type=LOSS_TYPES[i % len(LOSS_TYPES)],
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
        )
        model = tiny_llama()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        trainer = make(
            cls, tmp_path, model, args=args, correction=CorrectionConfig(mode=mode), rollout_precision="fp8-e5m2"
        )
        trainer.train()
        steps = [h for h in trainer.state.log_history if "loss" in h]
        assert len(steps) == 2, mode
        for h in steps:
            keys = ("correction/alpha", "correction/ess_ratio", "correction/mean_abs_logratio", "rollout_corr/kl")
            for key in (*keys, "correction/seconds"):
                assert key in h and math.isfinite(h[key]), (mode, key)
            assert h["correction/mean_abs_logratio"] > 0  # FP8 rollouts differ from the float32 trainer
            assert math.isfinite(h["loss"])
        changed = any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert changed, f"{mode}: no parameter moved"


def test_init_rejects_bad_arguments(tmp_path: Path) -> None:
    cls = lowbit_trainer()
    with pytest.raises(TypeError, match="CorrectionConfig"):
        make(cls, tmp_path, correction={"mode": "ais"})
    with pytest.raises(ValueError, match="rollout_precision"):
        make(cls, tmp_path, rollout_precision="fp4")
    plain = make(cls, tmp_path)
    assert plain.correction_config is None
    assert make(cls, tmp_path, rollout_precision="fp8-e4m3").correction_config.mode == "none"


def test_import_needs_no_trl_until_the_trainer_is_used() -> None:
    import lowbit.rl.trl as mod

    assert "GRPOTrainer" not in vars(mod)  # built lazily by the module __getattr__
    import trl

    assert issubclass(mod.GRPOTrainer, trl.GRPOTrainer)
    assert mod.GRPOTrainer.__module__ == "lowbit.rl.trl"


# ---------------------------------------------------------------- parity with TRL's own correction (vLLM path)


class FakeVLLM:
    """Stands in for TRL's VLLMGeneration: returns recorded completions and their engine log-probs."""

    def __init__(self, completions: list[list[int]], logprobs: list[list[float]]) -> None:
        self.completions, self.logprobs = completions, logprobs

    def sync_weights(self) -> None:
        pass

    def generate(self, prompts: list, images: Any, num_generations: int, profiler: Any) -> tuple:
        assert len(prompts) == len(self.completions)
        return None, self.completions, [[[lp] for lp in row] for row in self.logprobs], None


def recorded_rollout(n: int, seed: int = 3) -> tuple[list[list[int]], list[list[float]]]:
    """Deterministic completions (some end at EOS) and engine log-probs with a large mismatch (some w > 2)."""
    g = torch.Generator().manual_seed(seed)
    tok = char_tokenizer()
    model = tiny_llama()
    comps, lps = [], []
    for i in range(n):
        length = 2 + int(torch.randint(0, 4, (1,), generator=g))
        ids = (torch.randint(2, 2 + len(CHARS), (length,), generator=g)).tolist()
        if i % 3 == 0:
            ids[-1] = 1  # EOS
        prompt = tok(PROMPTS[(i // 4) % len(PROMPTS)]).input_ids
        seq = torch.tensor([prompt + ids])
        with torch.no_grad():
            logits = model(seq).logits[0, len(prompt) - 1 : -1].float()
        true = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids)[:, None]).squeeze(-1)
        noise = 0.6 * torch.randn(length, generator=g)
        comps.append(ids)
        lps.append((true - noise).tolist())
    return comps, lps


def vllm_pair(
    tmp_path: Path,
    lowbit_cfg: CorrectionConfig,
    trl_mode: str,
    cap: float = 2.0,
    model_path: str | None = None,
    **arg_overrides: Any,
) -> tuple[Any, Any]:
    """A lowbit trainer and a plain TRL trainer on the same weights, both fed by the same FakeVLLM."""
    import trl

    comps, lps = recorded_rollout(8)
    trainers = []
    for cls, kwargs in (
        (lowbit_trainer(), {"correction": lowbit_cfg}),
        (trl.GRPOTrainer, {}),
    ):
        args = grpo_args(
            tmp_path,
            vllm_importance_sampling_correction=True,
            vllm_importance_sampling_mode=trl_mode,
            vllm_importance_sampling_clip_max=cap,
            vllm_importance_sampling_clip_min=None,
            **arg_overrides,
        )
        model = model_path or tiny_llama()
        t = make(cls, tmp_path, model, args=args, **kwargs)
        t.use_vllm = True  # vLLM cannot run here: the engine is the recorded rollout
        t.vllm_generation = FakeVLLM(comps, lps)
        t._last_loaded_step = 0
        t.current_gradient_accumulation_steps = 2
        trainers.append(t)
    return trainers[0], trainers[1]


def loss_and_grads(trainer: Any, out: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer._compute_loss(trainer.model, out)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]


def generation_batch() -> list[dict]:
    return [{"prompt": PROMPTS[i // 4]} for i in range(8)]


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_tis_equals_trl_token_truncate(tmp_path: Path, loss_type: str) -> None:
    """Same engine log-probs: lowbit "tis" (C = 2) and TRL's token_truncate (clip_max 2) give the same loss and
    gradients for every loss type, with gradient accumulation 2 and an entropy bonus on."""
    ours, theirs = vllm_pair(
        tmp_path, CorrectionConfig(mode="tis", cap=2.0), "token_truncate", loss_type=loss_type, entropy_coef=0.01
    )
    out_a = ours._generate_and_score_completions(generation_batch())
    out_b = theirs._generate_and_score_completions(generation_batch())
    assert torch.equal(out_a["completion_ids"], out_b["completion_ids"])
    assert torch.equal(out_a["old_per_token_logps"], out_b["old_per_token_logps"])
    ratio_b = out_b["importance_sampling_ratio"]
    m = out_b["completion_mask"].bool()
    assert float(ratio_b[m].max()) == 2.0  # the cap binds somewhere: the test exercises truncation
    torch.testing.assert_close(out_a["importance_sampling_ratio"][m], ratio_b[m], rtol=1e-6, atol=1e-7)
    la, ga = loss_and_grads(ours, out_a)
    lb, gb = loss_and_grads(theirs, out_b)
    torch.testing.assert_close(la, lb, rtol=1e-6, atol=1e-8)
    assert len(ga) == len(gb) > 0
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-8)


def test_seq_tis_equals_trl_sequence_truncate_with_kl(tmp_path: Path) -> None:
    """seq-tis (seq_ratio="sum": TRL's W = exp Σδ, not a mean) equals TRL's sequence_truncate, with β > 0 (the
    reference model loaded from a local directory)."""
    path = tmp_path / "tiny"
    tiny_llama().save_pretrained(path)
    ours, theirs = vllm_pair(
        tmp_path,
        CorrectionConfig(mode="seq-tis", cap=2.0, seq_ratio="sum"),
        "sequence_truncate",
        model_path=str(path),
        beta=0.1,
        loss_type="bnpo",
    )
    out_a = ours._generate_and_score_completions(generation_batch())
    out_b = theirs._generate_and_score_completions(generation_batch())
    la, ga = loss_and_grads(ours, out_a)
    lb, gb = loss_and_grads(theirs, out_b)
    torch.testing.assert_close(la, lb, rtol=1e-6, atol=1e-8)
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-8)
    assert "ref_per_token_logps" in out_a


def test_mis_leaves_the_normaliser_unlike_trl_token_mask(tmp_path: Path) -> None:
    """lowbit "mis" = TRL's token_mask with the rejected tokens also removed from the mask (tool_mask), so they
    leave the normaliser; num_items_in_batch is recounted."""
    ours, theirs = vllm_pair(tmp_path, CorrectionConfig(mode="mis", cap=2.0), "token_mask", loss_type="dapo")
    out_a = ours._generate_and_score_completions(generation_batch())
    out_b = theirs._generate_and_score_completions(generation_batch())
    rejected = (out_b["importance_sampling_ratio"] == 0) & out_b["completion_mask"].bool()
    assert rejected.any()
    valid = out_b["completion_mask"].bool()
    assert torch.equal(out_a["tool_mask"].bool()[valid], ~rejected[valid])
    assert int(out_a["num_items_in_batch"]) == int(out_b["num_items_in_batch"]) - int(rejected.sum())
    out_b["tool_mask"] = (~rejected).long()
    out_b["num_items_in_batch"] = out_a["num_items_in_batch"]
    la, _ = loss_and_grads(ours, out_a)
    lb, _ = loss_and_grads(theirs, out_b)
    torch.testing.assert_close(la, lb, rtol=1e-6, atol=1e-8)


def test_none_equals_trl_without_correction(tmp_path: Path) -> None:
    """Mode "none", no vLLM: the same completions as plain TRL under the same seed (recording log μ does not
    perturb sampling), and the same loss and gradients, bit for bit."""
    import trl

    ours = make(lowbit_trainer(), tmp_path, correction=CorrectionConfig(mode="none"))
    theirs = make(trl.GRPOTrainer, tmp_path)
    for t in (ours, theirs):
        t.current_gradient_accumulation_steps = 2
    torch.manual_seed(11)
    out_a = ours._generate_and_score_completions(generation_batch())
    torch.manual_seed(11)
    out_b = theirs._generate_and_score_completions(generation_batch())
    assert torch.equal(out_a["completion_ids"], out_b["completion_ids"])
    assert "sampling_per_token_logps" not in out_b and "sampling_per_token_logps" in out_a
    assert torch.equal(out_a["importance_sampling_ratio"], torch.ones_like(out_a["importance_sampling_ratio"]))
    assert "tool_mask" not in out_a
    la, ga = loss_and_grads(ours, out_a)
    lb, gb = loss_and_grads(theirs, out_b)
    assert torch.equal(la, lb)
    for x, y in zip(ga, gb, strict=True):
        assert torch.equal(x, y)


def test_weights_survive_trl_shuffle_and_split(tmp_path: Path) -> None:
    """The factors ride in the generation output: after _prepare_inputs shuffles and splits, every row keeps its
    own factor (recomputed here from that row's log-probs)."""
    trainer = make(
        lowbit_trainer(),
        tmp_path,
        args=grpo_args(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2),
        correction=CorrectionConfig(mode="tis", cap=1.01),
        rollout_precision="e5m2-tensor-act",
    )
    trainer.model.train()
    batch = [{"prompt": PROMPTS[i // 4]} for i in range(8)]
    first = trainer._prepare_inputs(batch)
    parts = [first, trainer._buffered_inputs[1]]
    for part in parts:
        m = part["completion_mask"].bool()
        old = trainer._policy_logps(part)
        expected = correction(old, part["sampling_per_token_logps"], m, config=CorrectionConfig(mode="tis", cap=1.01))
        torch.testing.assert_close(part["importance_sampling_ratio"], expected.weights, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- rollouts: FP8 engine, log μ at sampling


def test_fp8_rollout_logps_are_the_quantized_models_and_weights_are_restored(tmp_path: Path) -> None:
    trainer = make(lowbit_trainer(), tmp_path, correction=CorrectionConfig(mode="ais"), rollout_precision="fp8-e4m3")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    params = list(trainer.model.parameters())
    out = trainer._generate_and_score_completions(generation_batch())
    assert all(a is b for a, b in zip(params, trainer.model.parameters(), strict=True))
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(before[k], v), k
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    att = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    n = out["completion_ids"].shape[1]
    with fake_quantized(trainer.model, "fp8-e4m3"):
        logits = trainer.model(input_ids=ids, attention_mask=att).logits[:, -n - 1 : -1].float()
    mu = torch.log_softmax(logits, -1).gather(-1, out["completion_ids"][..., None]).squeeze(-1)
    m = out["completion_mask"].bool()
    torch.testing.assert_close(out["sampling_per_token_logps"][m], mu[m], rtol=1e-4, atol=1e-5)
    old = trainer._policy_logps(out)
    assert float((old - mu)[m].abs().max()) > 1e-4  # the FP8 engine really differs from the trainer


def test_top_k_renormalises_the_sampled_probability(tmp_path: Path) -> None:
    """The pitfall, measured: with top-k and no precision change, δ = log π_old − log μ = log(kept mass) ≤ 0."""
    with pytest.warns(UserWarning, match="top_k"):
        trainer = make(
            lowbit_trainer(), tmp_path, args=grpo_args(tmp_path, top_k=3), correction=CorrectionConfig(mode="none")
        )
    out = trainer._generate_and_score_completions(generation_batch())
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    att = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    n = out["completion_ids"].shape[1]
    with torch.no_grad():
        logp_all = torch.log_softmax(trainer.model(input_ids=ids, attention_mask=att).logits[:, -n - 1 : -1], -1)
    kept_mass = logp_all.topk(3, -1).values.exp().sum(-1)
    delta = trainer._policy_logps(out) - out["sampling_per_token_logps"]
    m = out["completion_mask"].bool()
    torch.testing.assert_close(delta[m], kept_mass.log()[m], rtol=1e-4, atol=1e-5)
    assert float(delta[m].max()) < 0
