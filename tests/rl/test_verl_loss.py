"""lowbit's verl-convention policy loss and aggregation against verl 0.9.1's own code (installed, imported here)."""

from __future__ import annotations

import pytest
import torch

from lowbit.rl import CorrectionConfig, compute_policy_loss_ais, correction, policy_loss
from lowbit.rl.verl.aggregate import VERL_LOSS_AGGREGATIONS, agg_loss

core_algos = pytest.importorskip(
    "verl.trainer.ppo.core_algos", reason="verl is installed with --no-deps (requirements/nodeps.txt)"
)
rollout_corr_helper = pytest.importorskip("verl.trainer.ppo.rollout_corr_helper")
ActorConfig = pytest.importorskip("verl.workers.config").ActorConfig


def _actor_config(loss_agg_mode: str = "token-mean", **kw: object) -> ActorConfig:
    """verl's real actor config (what ppo_loss passes as ``config``)."""
    fields = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0, **kw}
    return ActorConfig(
        strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, loss_agg_mode=loss_agg_mode, **fields
    )


def _batch(seed: int = 0, b: int = 8, t: int = 12, spread: float = 1.5):
    """Ragged responses, ratios far enough from 1 to hit both clips and the dual clip, mixed-sign advantages."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g) * 3
    logp = old + spread * torch.randn(b, t, generator=g)
    roll = old + 0.3 * torch.randn(b, t, generator=g)
    adv = torch.randn(b, 1, generator=g).expand(b, t).contiguous()
    lengths = torch.randint(3, t + 1, (b, 1), generator=g)
    lengths[0] = t
    mask = torch.arange(t) < lengths
    return old, logp, roll, adv, mask


@pytest.mark.parametrize("mode", VERL_LOSS_AGGREGATIONS)
def test_loss_with_rollout_is_weights_equals_verl_vanilla(mode):
    old, logp, _, adv, mask = _batch()
    w = torch.rand(mask.shape, generator=torch.Generator().manual_seed(1)) * 2 * mask
    cfg = _actor_config(mode)
    x = logp.clone().requires_grad_()
    ref, ref_m = core_algos.compute_policy_loss_vanilla(old, x, adv, mask, mode, cfg, rollout_is_weights=w)
    (g_ref,) = torch.autograd.grad(ref, x)
    y = logp.clone().requires_grad_()
    loss, m = compute_policy_loss_ais(old, y, adv, mask, mode, cfg, rollout_is_weights=w)
    (g,) = torch.autograd.grad(loss, y)
    assert torch.equal(loss, ref) and torch.equal(g, g_ref)
    assert m == pytest.approx(ref_m, abs=1e-7)
    assert ref_m["actor/pg_clipfrac_lower"] > 0 and ref_m["actor/pg_clipfrac"] > 0  # the dual clip was exercised
    # the plugin registers it: verl's registry gives the same function
    from lowbit.rl.verl import install

    install()
    assert core_algos.get_policy_loss_fn("ais") is compute_policy_loss_ais


@pytest.mark.parametrize("mode", VERL_LOSS_AGGREGATIONS)
@pytest.mark.parametrize("dp_size", [1, 2])
def test_micro_batches_sum_to_the_global_loss_like_verl(mode, dp_size):
    """verl splits a mini-batch into micro-batches and sets config.global_batch_info; the losses must add up.

    The issue's case (micro-batch of 1/4): lowbit ignored global_batch_info and returned each micro-batch's own
    mean (0.8019 where verl gives 0.2005). With dp_size=2, DDP averages the two ranks' gradients.
    """
    old, logp, _, adv, mask = _batch(seed=3, b=8)
    w = torch.rand(mask.shape, generator=torch.Generator().manual_seed(4)) * 2 * mask
    whole, _ = core_algos.compute_policy_loss_vanilla(
        old, logp, adv, mask, mode, _actor_config(mode), rollout_is_weights=w
    )
    cfg = _actor_config(mode)
    cfg.global_batch_info.update(
        dp_size=dp_size, batch_num_tokens=int(mask.sum()), global_batch_size=int(mask.shape[0]), loss_scale_factor=None
    )
    ours, theirs = [], []
    for idx in torch.arange(8).chunk(4):  # four micro-batches of 2 responses
        args = (old[idx], logp[idx], adv[idx], mask[idx], mode, cfg)
        ours.append(compute_policy_loss_ais(*args, rollout_is_weights=w[idx])[0])
        theirs.append(core_algos.compute_policy_loss_vanilla(*args, rollout_is_weights=w[idx])[0])
    assert torch.equal(torch.stack(ours), torch.stack(theirs))
    # each of dp_size ranks would hold half of these micro-batches; DDP averages the ranks' gradients
    total = torch.stack(ours).sum() / dp_size
    torch.testing.assert_close(total, whole, rtol=1e-6, atol=1e-7)
    assert abs(float(ours[0]) - float(whole)) > 1e-3 or mode == "token-sum"  # a micro-batch is not the whole


@pytest.mark.parametrize("mode", VERL_LOSS_AGGREGATIONS)
def test_agg_loss_equals_verl_agg_loss(mode):
    old, logp, _, _, mask = _batch(seed=5)
    x = logp - old
    for info in ({}, {"dp_size": 2, "batch_num_tokens": 41, "global_batch_size": 13, "loss_scale_factor": 7}):
        torch.testing.assert_close(
            agg_loss(x, mask, mode, info), core_algos.agg_loss(x, mask, mode, **info), rtol=1e-6, atol=0
        )


def test_tis_weights_equal_verl_token_is():
    old, _, roll, _, mask = _batch(seed=6)
    ref, _ = rollout_corr_helper.compute_rollout_correction_weights(
        old - roll, mask.float(), rollout_is="token", rollout_is_threshold=2.0
    )
    c = correction(old, roll, mask, None, CorrectionConfig(mode="tis", cap=2.0))
    torch.testing.assert_close(c.weights, ref, rtol=1.2e-7, atol=0)


def test_none_and_ais_from_rollout_log_probs_equal_verl_vanilla():
    """Outside verl the loss computes the correction itself: "none" is verl's plain loss, "ais" is verl's loss
    with lowbit's AIS weights, "tis" verl's loss with verl's token-TIS weights."""
    old, logp, roll, adv, mask = _batch(seed=7)
    for mode in VERL_LOSS_AGGREGATIONS:
        cfg = _actor_config(mode)
        plain, _ = core_algos.compute_policy_loss_vanilla(old, logp, adv, mask, mode, cfg)
        none, _ = compute_policy_loss_ais(
            old, logp, adv, mask, mode, {**cfg, "ais": {"mode": "none"}}, rollout_log_probs=roll
        )
        torch.testing.assert_close(none, plain, rtol=1e-6, atol=1e-7)
        verl_tis, _ = rollout_corr_helper.compute_rollout_correction_weights(old - roll, mask.float(), "token", 2.0)
        ref, _ = core_algos.compute_policy_loss_vanilla(old, logp, adv, mask, mode, cfg, rollout_is_weights=verl_tis)
        tis, _ = compute_policy_loss_ais(
            old, logp, adv, mask, mode, {**cfg, "ais": {"mode": "tis"}}, rollout_log_probs=roll
        )
        torch.testing.assert_close(tis, ref, rtol=1e-6, atol=1e-7)
        c = correction(old, roll, mask, adv, CorrectionConfig(mode="ais"))
        ref, _ = core_algos.compute_policy_loss_vanilla(old, logp, adv, mask, mode, cfg, rollout_is_weights=c.weights)
        ais, m = compute_policy_loss_ais(old, logp, adv, mask, mode, dict(cfg), rollout_log_probs=roll)
        torch.testing.assert_close(ais, ref, rtol=1e-6, atol=1e-7)
        assert m["rollout_corr/lowbit_alpha"] == c.alpha > 0


def test_seq_mean_token_mean_is_lowbit_policy_loss_up_to_verl_epsilon():
    """Plain dict config, no verl objects: the same loss as lowbit.rl.policy_loss (verl adds 1e-8 per response)."""
    old, logp, roll, adv, mask = _batch(seed=8, spread=0.1)
    cfg = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 1e9, "ais": {"mode": "ais", "cap": 2.0}}
    loss, metrics = compute_policy_loss_ais(
        old, logp, adv[:, 0], mask, "seq-mean-token-mean", cfg, rollout_log_probs=roll
    )
    ref, ref_m = policy_loss(
        logp, old, roll, adv[:, 0], mask, config=CorrectionConfig(mode="ais"), loss_agg="seq-mean-token-mean"
    )
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-7)
    assert metrics["rollout_corr/lowbit_alpha"] == ref_m["alpha"]


def test_bad_calls_are_clear_errors():
    old, logp, roll, adv, mask = _batch()
    cfg = _actor_config()
    with pytest.raises(ValueError, match=r"no rollout correction.*rollout_log_probs"):
        compute_policy_loss_ais(old, logp, adv, mask, "token-mean", cfg)
    with pytest.raises(ValueError, match="twice"):
        compute_policy_loss_ais(
            old, logp, adv, mask, "token-mean", cfg, rollout_is_weights=mask.float(), rollout_log_probs=roll
        )
    with pytest.raises(ValueError, match="stateless"):
        compute_policy_loss_ais(old, logp, adv, mask, "token-mean", {"ais": {"ema": 0.5}}, rollout_log_probs=roll)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        compute_policy_loss_ais(old, logp, adv, mask, "token-mean", {"clip_ratio_c": 1.0}, rollout_log_probs=roll)
    with pytest.raises(ValueError, match="loss_agg_mode"):
        compute_policy_loss_ais(old, logp, adv, mask, "seq-sum", cfg, rollout_is_weights=mask.float())
    with pytest.raises(ValueError, match="rollout_is_weights"):
        compute_policy_loss_ais(old, logp, adv, mask, "token-mean", cfg, rollout_is_weights=mask[:, :3].float())
    with pytest.raises(ValueError, match="batch_num_tokens"):
        agg_loss(old, mask, "token-mean", {"dp_size": 2})
    with pytest.raises(ValueError, match="unknown keys"):
        agg_loss(old, mask, "token-mean", {"dp": 2})
