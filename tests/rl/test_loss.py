"""The policy loss: plain GRPO parity, the exact gradient identity, aggregations, KL, verl-style wrapper."""

import math

import pytest
import torch

from lowbit.rl import LOSS_AGGREGATIONS, CorrectionConfig, correction, policy_loss
from lowbit.rl.loss import aggregate


def _batch(b=6, t=7, scale=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, 5, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, 5, (b, t), generator=g)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = 0  # one empty response
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    roll = torch.log_softmax(logits + scale * torch.randn(b, t, 5, generator=g, dtype=torch.float64), -1)
    roll = roll.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    return logits, tokens, mask, roll, adv


def _logp(logits, tokens):
    return torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _grpo_reference(logp, old, adv, mask, eps=(0.2, 0.28)):
    """Plain GRPO/DAPO token-mean loss written out independently."""
    ratio = torch.exp(logp - old)
    a = adv.unsqueeze(1)
    per = -torch.minimum(ratio * a, ratio.clamp(1 - eps[0], 1 + eps[1]) * a)
    m = mask.to(per.dtype)
    return (per * m).sum() / m.sum()


def _grad(loss_fn, logits):
    x = logits.clone().requires_grad_()
    loss_fn(x).backward()
    return x.grad


@pytest.mark.parametrize("loss_agg", LOSS_AGGREGATIONS)
def test_gradient_identity_alpha0_none_alpha1_tis(loss_agg):
    logits, tokens, mask, roll, adv = _batch()
    # a perturbed old policy so that the PPO clip is active on some tokens
    old = _logp(logits + 0.3 * torch.randn_like(logits), tokens).detach()

    def loss_with(cfg, alpha=None):
        def fn(x):
            c = correction(old, roll, mask, adv, cfg)
            if alpha is not None:
                assert c.alpha == pytest.approx(alpha)
            return policy_loss(_logp(x, tokens), old, None, adv, mask, loss_agg=loss_agg, precomputed=c)[0]

        return fn

    g_none = _grad(loss_with(CorrectionConfig(mode="none")), logits)
    g_tis = _grad(loss_with(CorrectionConfig(mode="tis", cap=2.0)), logits)
    g_a0 = _grad(loss_with(CorrectionConfig(mode="fixed-alpha", alpha=0.0), 0.0), logits)
    g_a1 = _grad(loss_with(CorrectionConfig(mode="fixed-alpha", alpha=1.0), 1.0), logits)
    assert torch.equal(g_a0, g_none)
    assert torch.equal(g_a1, g_tis)
    ais = correction(old, roll, mask, adv, CorrectionConfig(mode="ais"))
    assert 0.0 < ais.alpha < 1.0
    g_ais = _grad(
        lambda x: policy_loss(_logp(x, tokens), old, None, adv, mask, loss_agg=loss_agg, precomputed=ais)[0], logits
    )
    torch.testing.assert_close(g_ais, (1 - ais.alpha) * g_none + ais.alpha * g_tis, rtol=1e-12, atol=1e-14)


def test_no_mismatch_equals_plain_grpo():
    logits, tokens, mask, _, adv = _batch()
    logp = _logp(logits, tokens)
    old = logp.detach() + 0.05 * torch.randn_like(logp)
    loss, metrics = policy_loss(logp, old, old.clone(), adv, mask, config=CorrectionConfig(mode="ais"))
    assert metrics["alpha"] == 0.0
    assert torch.equal(loss, _grpo_reference(logp, old, adv, mask))


def test_aggregations_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    m = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    assert float(aggregate(x, m, "token-mean")) == pytest.approx(10 / 4)
    assert float(aggregate(x, m, "seq-mean-token-mean")) == pytest.approx((2 + 4) / 2)
    assert float(aggregate(x, m, "seq-mean-token-sum-norm")) == pytest.approx(10 / (3 * 3))
    assert float(aggregate(x, m, "seq-mean-token-sum-norm", max_len=5)) == pytest.approx(10 / 15)
    assert float(aggregate(x, torch.zeros_like(m), "seq-mean-token-mean")) == 0.0
    with pytest.raises(ValueError, match="loss_agg"):
        aggregate(x, m, "sum")


def test_kl_penalty_is_k3_and_adds_to_the_loss():
    logits, tokens, mask, roll, adv = _batch()
    logp = _logp(logits, tokens)
    ref = logp.detach() - 0.2
    base, _ = policy_loss(logp, logp.detach(), roll, adv, mask, config=CorrectionConfig(mode="none"))
    loss, metrics = policy_loss(
        logp, logp.detach(), roll, adv, mask, config=CorrectionConfig(mode="none"), kl_coef=0.04, logp_ref=ref
    )
    k3 = math.exp(-0.2) + 0.2 - 1
    assert metrics["kl_penalty"] == pytest.approx(k3)
    assert float(loss.detach()) == pytest.approx(float(base.detach()) + 0.04 * k3)
    with pytest.raises(ValueError, match="logp_ref"):
        policy_loss(logp, logp.detach(), roll, adv, mask, kl_coef=0.1)


def test_mis_rejected_tokens_leave_the_denominator():
    logp = torch.zeros(1, 4, requires_grad=True)
    old = torch.zeros(1, 4)
    roll = torch.tensor([[0.0, 0.0, -5.0, 0.0]])  # token 2 has w = e^5 > C
    adv = torch.tensor([1.0])
    loss, metrics = policy_loss(logp, old, roll, adv, torch.ones(1, 4), config=CorrectionConfig(mode="mis"))
    assert float(loss.detach()) == pytest.approx(-1.0)  # mean over the 3 accepted tokens, not 3/4
    assert metrics["frac_rejected"] == pytest.approx(0.25)


@pytest.mark.parametrize("loss_agg", LOSS_AGGREGATIONS)
def test_no_nan_grad_with_padding_inf_and_extreme_ratios(loss_agg):
    logits, tokens, mask, roll, adv = _batch(scale=50.0)
    x = logits.clone().requires_grad_()
    for mode in ("ais", "seq-tis", "icepop", "mis"):
        logp = torch.where(mask, _logp(x, tokens), torch.tensor(float("-inf"), dtype=torch.float64))
        old = torch.where(mask, logp.detach() + 40.0, torch.tensor(float("nan"), dtype=torch.float64))
        loss, metrics = policy_loss(
            logp, old, roll, adv * 1e6, mask, config=CorrectionConfig(mode=mode), loss_agg=loss_agg
        )
        (g,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(loss) and torch.isfinite(g).all()
        assert all(math.isfinite(v) for v in metrics.values())


def test_all_masked_loss_is_zero_with_zero_grad():
    x = torch.zeros(2, 3, requires_grad=True)
    loss, _ = policy_loss(x, x.detach(), x.detach() - 3, torch.ones(2), torch.zeros(2, 3, dtype=torch.bool))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(x.grad, torch.zeros(2, 3))


def test_bad_arguments_are_clear_errors():
    x = torch.zeros(2, 3)
    m = torch.ones(2, 3)
    with pytest.raises(ValueError, match="clip"):
        policy_loss(x, x, x, torch.zeros(2), m, clip=(-0.1, 0.2))
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(x, x, x, torch.zeros(3), m)
    with pytest.raises(ValueError, match="logp_rollout"):
        policy_loss(x, x, None, torch.zeros(2), m)
    with pytest.raises(TypeError, match="logp"):
        policy_loss("x", x, x, torch.zeros(2), m)
