"""``lowbit.rl.trl.GRPOTrainer``: TRL's GRPO trainer with lowbit's rollout correction and FP8 rollouts.

A subclass of ``trl.GRPOTrainer`` (TRL >= 1.16, ``pip install 'lowbit[trl]'``) with two extra arguments::

    GRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...), train_dataset=...,
                correction=CorrectionConfig(mode="ais"),   # any mode of lowbit.rl.MODES
                rollout_precision="fp8-e4m3")              # "fp8-e5m2", a RolloutPrecision / dose name, or None

**Where the correction enters.** TRL applies its own vLLM importance ratio in ``_compute_loss`` as
``per_token_loss = per_token_loss * inputs["importance_sampling_ratio"]`` (after the clipped surrogate, the
off-policy and entropy masks, before ``+ β·KL``). This trainer computes lowbit's factors c **once per
generation batch** in ``_generate_and_score_completions`` (α from the whole batch, all-reduced over the
data-parallel ranks) and stores them in the generation output under that key, so they are shuffled and split
with the rest of the batch by ``_prepare_inputs``. During ``_compute_loss`` TRL's own multiplication line is
switched on (``use_vllm`` and ``vllm_importance_sampling_correction`` read as true for that call only); the loss
types (grpo, bnpo, dr_grpo, dapo, ...), their normalisers, gradient accumulation, β/KL, the entropy bonus,
``tool_mask`` and the metrics are TRL's own code. With ``correction`` set, TRL's ``vllm_importance_sampling_*``
options are not used: lowbit's correction replaces TRL's, never multiplies onto it.

**Rejected tokens** (modes ``mis``, ``seq-mis``, ``icepop``) leave the loss *and its normaliser*, as in
:func:`lowbit.rl.policy_loss`: they are removed through ``tool_mask`` (TRL's mask of tokens the policy did not
generate) and ``num_items_in_batch`` is recounted. TRL's own ``token_mask`` mode instead keeps them in the
denominator with weight 0.

**Log-probs of the rollout engine (μ).** Without vLLM, completions are sampled with ``transformers``'
``generate`` exactly as TRL does, with ``output_scores=True``; ``log μ`` of each sampled token is the log-softmax
of the *processed* scores (after temperature, top-k, top-p, repetition penalty: the distribution actually
sampled from), recorded at sampling time. With ``rollout_precision`` the sampling model is the policy with every
Linear fake-quantized (:func:`lowbit.rl.rollout_precision.fake_quantized`, the quantizer of ``lowbit rl``),
restored bit for bit afterwards. With vLLM (``use_vllm=True``) the engine's own per-token log-probs are used
(``logprobs_mode="processed_logprobs"`` in the vLLM server, as TRL asks); ``rollout_precision`` must then be
``None`` (choose the engine's precision with vLLM's ``quantization=`` option). The vLLM path cannot be run on
these machines: it is exercised in the tests with a stand-in engine returning recorded log-probs.

**Pitfalls handled.**

- TRL's sequence-level ratio (``sequence_truncate`` / ``sequence_mask``) is ``exp(Σ_t δ)``, a *sum* of token
  log-ratios: with long responses it saturates at the cap or masks almost every sequence. lowbit's ``seq-tis``
  / ``seq-mis`` reproduce it with ``seq_ratio="sum"`` (the default, for parity) and offer ``seq_ratio="mean"``.
- With top-k, top-p, min-p or a repetition penalty, the sampled probability is renormalised over the kept set,
  so ``δ = log π_old − log μ`` also measures the kept mass (``δ = log Σ_kept π`` when π = μ), not only the
  precision. The trainer warns when such sampling is configured; sample over the full vocabulary to measure
  precision alone.

**Metrics**, logged at every optimisation step: ``correction/<key>`` for every key of
:data:`lowbit.rl.METRIC_KEYS` (``correction/alpha``, ``correction/ess_ratio``, ``correction/mean_abs_logratio``,
...), plus verl's names where the quantity is the same (:data:`VERL_METRIC_NAMES`) and TRL's
``sampling/sampling_logp_difference/{mean,max}``, and ``correction/seconds`` (wall time of the ``correction()``
call for the generation batch).

``trl`` is imported only when :class:`GRPOTrainer` is first accessed, so ``import lowbit.rl.trl`` works without it.
"""

from __future__ import annotations

import copy
import functools
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from lowbit.rl.correction import Correction, CorrectionConfig, CorrectionState, correction
from lowbit.rl.rollout_precision import RolloutPrecision, fake_quantized, parse_rollout_precision

# GRPOTrainer is defined on first access (module __getattr__), so importing this module needs no TRL.
__all__ = ["TRL_METRIC_NAMES", "VERL_METRIC_NAMES", "GRPOTrainer", "correction_metrics", "sampled_logps"]  # noqa: F822

#: lowbit metric key -> verl's ``rollout_corr/`` name, for the quantities verl computes the same way
#: (``verl/trainer/ppo/rollout_corr_helper.py``: ``kl = mean(log μ − log π_old)``, ``k3_kl = mean(w − 1 − δ)``,
#: ``rollout_is_ratio_fraction_high = mean[w > C]`` on the raw token weights).
VERL_METRIC_NAMES: Mapping[str, str] = {
    "kl_k1": "rollout_corr/kl",
    "kl_k3": "rollout_corr/k3_kl",
    "frac_above_cap": "rollout_corr/rollout_is_ratio_fraction_high",
}

#: lowbit metric key -> TRL's name for the same quantity (TRL logs them only under vLLM).
TRL_METRIC_NAMES: Mapping[str, str] = {
    "mean_abs_logratio": "sampling/sampling_logp_difference/mean",
    "max_abs_logratio": "sampling/sampling_logp_difference/max",
}

#: Generation output keys that are model inputs (multimodal) besides ids and masks; passed on as TRL does.
_FORWARD_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "pixel_attention_mask",
    "spatial_shapes",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)


def sampled_logps(scores: tuple[torch.Tensor, ...] | list[torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of each sampled token under the distribution it was sampled from, shape (B, L).

    ``scores`` are ``generate(..., output_scores=True).scores``: L tensors (B, V) of *processed* logits (after
    temperature and the top-k/top-p filters, which set dropped tokens to −inf); ``tokens`` (B, L) the sampled ids.
    ``log μ_t = scores_t[token_t] − logsumexp(scores_t)``, in float32.

    >>> s = (torch.tensor([[0.0, 0.0, -float("inf")]]),)           # top-2 of 3 tokens kept, uniform
    >>> sampled_logps(s, torch.tensor([[1]])).exp().tolist()        # renormalised over the kept pair
    [[0.5]]
    """
    if len(scores) != tokens.shape[-1]:
        raise ValueError(f"{len(scores)} score tensors for {tokens.shape[-1]} sampled tokens")
    if not scores:
        return torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
    logits = torch.stack(list(scores), dim=1).float()
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def correction_metrics(result: Correction) -> dict[str, float]:
    """The metrics the trainer logs for one correction: ``correction/<key>``, verl's and TRL's names.

    >>> lp = torch.log(torch.tensor([[0.5, 0.25]]))
    >>> m = correction_metrics(correction(lp, lp - 0.1, torch.ones(1, 2), config=CorrectionConfig(mode="tis")))
    >>> round(m["correction/mean_abs_logratio"], 6), m["rollout_corr/kl"] == m["correction/kl_k1"]
    (0.1, True)
    """
    out = {f"correction/{k}": float(v) for k, v in result.metrics.items()}
    for table in (VERL_METRIC_NAMES, TRL_METRIC_NAMES):
        out |= {name: float(result.metrics[k]) for k, name in table.items()}
    return out


@contextmanager
def _record_generate(model: torch.nn.Module, record: Callable[[torch.Tensor], None]) -> Iterator[None]:
    """Within the block ``model.generate(...)`` also returns the processed scores to ``record(log μ)``, and
    still returns the token tensor TRL expects. The instance attribute is removed (or restored) on exit."""
    had = "generate" in vars(model)
    previous = vars(model).get("generate")
    original = model.generate

    def generate(*args: Any, **kwargs: Any) -> torch.Tensor:
        config = kwargs.get("generation_config")
        config = copy.deepcopy(model.generation_config if config is None else config)
        config.return_dict_in_generate, config.output_scores = True, True
        out = original(*args, **(kwargs | {"generation_config": config}))
        steps = len(out.scores)
        record(sampled_logps(out.scores, out.sequences[:, out.sequences.shape[1] - steps :]))
        return out.sequences

    model.generate = generate
    try:
        yield
    finally:
        if had:
            model.generate = previous
        else:
            del model.generate


def _check_correction(correction_cfg: Any) -> CorrectionConfig | None:
    if correction_cfg is not None and not isinstance(correction_cfg, CorrectionConfig):
        raise TypeError(f"correction must be a lowbit.rl.CorrectionConfig or None, got {type(correction_cfg).__name__}")
    return correction_cfg


@functools.cache
def _trainer_class() -> type:
    """Define the subclass (imports ``trl`` and ``transformers``)."""
    try:
        import trl
        from trl.models.utils import disable_gradient_checkpointing
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("lowbit.rl.trl.GRPOTrainer needs TRL: pip install 'lowbit[trl]'") from e

    class GRPOTrainer(trl.GRPOTrainer):
        """``trl.GRPOTrainer`` with lowbit's rollout correction and FP8 fake-quantized rollouts.

        ``correction``: a :class:`~lowbit.rl.CorrectionConfig` (any registered mode), or ``None``. ``None`` with
        ``rollout_precision=None`` is plain TRL; ``None`` with a precision means mode ``"none"`` (FP8 rollouts,
        no correction, mismatch metrics logged). ``rollout_precision``: ``None`` (the engine's own precision),
        ``"fp8-e4m3"``, ``"fp8-e5m2"``, a dose name of :data:`lowbit.rl.rollout_precision.PRECISIONS` or a
        :class:`~lowbit.rl.rollout_precision.RolloutPrecision`. See the module docstring for where the
        correction enters TRL's loss. ``correction_state`` holds AIS's state between generation batches.
        """

        def __init__(
            self,
            *args: Any,
            correction: CorrectionConfig | None = None,
            rollout_precision: str | RolloutPrecision | None = None,
            **kwargs: Any,
        ) -> None:
            cfg = _check_correction(correction)
            precision = parse_rollout_precision(rollout_precision)
            super().__init__(*args, **kwargs)
            if cfg is None and precision is not None:
                cfg = CorrectionConfig(mode="none")
            self.correction_config: CorrectionConfig | None = cfg
            self.rollout_precision: RolloutPrecision | None = precision
            self.correction_state = CorrectionState()
            self._correction_metrics: dict[str, dict[str, float]] = {}
            if cfg is None:
                return
            self._check_setup()
            # lowbit's factors replace TRL's vLLM ratio: TRL must not compute (or log) its own.
            self.vllm_importance_sampling_correction = False

        def _check_setup(self) -> None:
            if self.use_vllm and self.rollout_precision is not None:
                raise ValueError(
                    "rollout_precision fake-quantizes the transformers sampling model; with use_vllm=True choose the "
                    "engine's precision in vLLM (quantization=...) and pass rollout_precision=None"
                )
            if getattr(self, "use_transformers_continuous_batching", False):
                raise ValueError(
                    "correction needs the sampling log-probs, which transformers' continuous batching does not "
                    "return; use regular generation or vLLM"
                )
            if self.rollout_func is not None and self.rollout_precision is not None:
                raise ValueError("rollout_precision cannot quantize a custom rollout_func's engine; pass None")
            if self.rollout_precision is not None and (self.is_deepspeed_enabled or self.is_fsdp_enabled):
                raise NotImplementedError(
                    "rollout_precision rebinds Linear weights of the unwrapped model, which DeepSpeed and FSDP shard"
                )
            filters = {
                "top_p": self.top_p is not None and self.top_p < 1.0,
                "top_k": self.top_k not in (None, 0),
                "min_p": self.min_p not in (None, 0.0),
                "repetition_penalty": self.repetition_penalty not in (None, 1.0),
            }
            used = [k for k, on in filters.items() if on]
            if used:
                warnings.warn(
                    f"sampling with {', '.join(used)}: the sampled probability is renormalised over the kept tokens, "
                    "so log π_old − log μ also measures the kept mass, not only the rollout precision (sample over "
                    "the full vocabulary to measure precision alone)",
                    stacklevel=3,
                )

        # ------------------------------------------------------------ sampling (log μ recorded)

        def _generate_single_turn(
            self,
            prompt_ids: Any,
            images: Any,
            multimodal_fields: Any,
            num_generations: int,
            has_tool_images: bool = False,
        ) -> tuple[list[list[int]], list[list[float]] | None]:
            if self.correction_config is None or self.use_vllm:
                return super()._generate_single_turn(
                    prompt_ids, images, multimodal_fields, num_generations, has_tool_images
                )
            model = self.accelerator.unwrap_model(self.model_wrapped)
            recorded: list[torch.Tensor] = []
            with self._sampling_engine(model), _record_generate(model, recorded.append):
                completion_ids, logprobs = super()._generate_single_turn(
                    prompt_ids, images, multimodal_fields, num_generations, has_tool_images
                )
            if logprobs is not None or len(recorded) != 1:
                raise RuntimeError(
                    f"unexpected TRL generation path: {len(recorded)} generate calls, logprobs "
                    f"{'given' if logprobs is not None else 'None'} (lowbit.rl.trl supports TRL 1.16's)"
                )
            full = recorded[0].cpu()
            if full.shape[0] != len(completion_ids):
                raise RuntimeError(f"{full.shape[0]} sampled rows for {len(completion_ids)} completions")
            return completion_ids, [full[i, : len(ids)].tolist() for i, ids in enumerate(completion_ids)]

        def _sampling_engine(self, model: torch.nn.Module) -> Any:
            if self.rollout_precision is None:
                return torch.no_grad()
            return fake_quantized(model, self.rollout_precision)

        # ------------------------------------------------------------ the correction, once per generation batch

        def _policy_logps(self, output: Mapping[str, Any]) -> torch.Tensor:
            """log π_old of the completions: the same call TRL makes when it needs ``old_per_token_logps``."""
            mode = "train" if self.model.training else "eval"
            ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
            att = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
            batch_size = (
                self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
            )
            forward = {k: output[k] for k in _FORWARD_KEYS if k in output}
            with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model,
                    ids,
                    att,
                    output["completion_ids"].size(1),
                    batch_size=batch_size,
                    num_images=output.get("num_images"),
                    num_tiles=output.get("num_tiles"),
                    **forward,
                )
            return logps

        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            output = super()._generate_and_score_completions(inputs)
            cfg = self.correction_config
            if cfg is None:
                return output
            mode = "train" if self.model.training else "eval"
            sampling = output.get("sampling_per_token_logps")
            if sampling is None:
                raise RuntimeError("the rollout returned no per-token log-probs; lowbit's correction needs them")
            completion_mask = output["completion_mask"]
            tool_mask = output.get("tool_mask")
            loss_mask = completion_mask if tool_mask is None else completion_mask * tool_mask
            old = output.get("old_per_token_logps")
            if old is None:
                old = self._policy_logps(output)
                if self.use_vllm:  # TRL stores π_old under vLLM; the loss then uses it, as TRL's own path does
                    output["old_per_token_logps"] = old
            group = torch.distributed.group.WORLD if self.accelerator.num_processes > 1 else None
            t0 = time.perf_counter()
            result = correction(
                old, sampling, loss_mask.bool(), output["advantages"], cfg, self.correction_state, process_group=group
            )
            seconds = time.perf_counter() - t0
            if mode == "train":
                self.correction_state = result.state
            # Factors at valid tokens (0 where rejected); 1 at padding, as TRL's own ratio, so the mask decides there.
            ratio = torch.where(loss_mask.bool(), result.weights, torch.ones_like(result.weights))
            output["importance_sampling_ratio"] = ratio.to(old.dtype)
            keep = result.mask
            if not torch.equal(keep, loss_mask.bool()):
                base = torch.ones_like(completion_mask) if tool_mask is None else tool_mask
                output["tool_mask"] = base * keep.to(base.dtype)
            # Recount TRL's normaliser of the dapo/cispo losses over the kept tokens (a collective: every rank).
            kept = completion_mask * output["tool_mask"] if "tool_mask" in output else completion_mask
            output["num_items_in_batch"] = self.accelerator.gather(kept.sum()).sum()
            self._correction_metrics[mode] = correction_metrics(result) | {"correction/seconds": seconds}
            return output

        # ------------------------------------------------------------ the loss: TRL's, with its ratio line on

        @contextmanager
        def _trl_ratio_applied(self) -> Iterator[None]:
            saved = (self.use_vllm, self.vllm_importance_sampling_correction)
            self.use_vllm, self.vllm_importance_sampling_correction = True, True
            try:
                yield
            finally:
                self.use_vllm, self.vllm_importance_sampling_correction = saved

        def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
            if self.correction_config is None:
                return super()._compute_loss(model, inputs)
            if "importance_sampling_ratio" not in inputs:
                raise RuntimeError("the batch carries no correction factors (importance_sampling_ratio)")
            mode = "train" if self.model.training else "eval"
            for name, value in self._correction_metrics.get(mode, {}).items():
                self._metrics[mode][name].append(value)
            with self._trl_ratio_applied():
                return super()._compute_loss(model, inputs)

    GRPOTrainer.__module__ = __name__
    GRPOTrainer.__qualname__ = "GRPOTrainer"
    return GRPOTrainer


def __getattr__(name: str) -> Any:
    if name == "GRPOTrainer":
        return _trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
