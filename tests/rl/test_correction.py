"""Invariants of the correction factors, the AIS diagnostics and the mixing rule (docs/methods/ais.md §6)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.rl import (
    METRIC_KEYS,
    MODES,
    CorrectionConfig,
    CorrectionState,
    MixInputs,
    ModeInputs,
    ModeOutput,
    correction,
    register_mode,
)
from lowbit.rl.correction import _MODES
from lowbit.rl.diagnostics import mismatch_stats, reliability_ess, variance_cv2, variance_grad
from lowbit.rl.mixing import mix_gate, mix_shrinkage


def _batch(b=6, t=9, scale=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    roll = old - scale * torch.randn(b, t, generator=g, dtype=torch.float64)
    lengths = torch.randint(0, t + 1, (b,), generator=g)
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    return old, roll, mask, adv


def test_no_mismatch_gives_alpha_zero_and_unit_factors():
    old, _, mask, adv = _batch()
    for mixing in ("gate", "shrinkage"):
        c = correction(old, old.clone(), mask, adv, CorrectionConfig(mode="ais", mixing=mixing))
        assert c.alpha == 0.0 and c.metrics["alpha_hat"] == 0.0
        assert torch.equal(c.weights, mask.to(old.dtype))
        assert c.metrics["ess_ratio"] == 1.0 and c.metrics["mean_abs_logratio"] == 0.0
        assert c.metrics["variance_amplification"] == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_metric_keys_are_stable_for_every_mode(mode):
    old, roll, mask, adv = _batch()
    c = correction(old, roll, mask, adv, CorrectionConfig(mode=mode))
    assert tuple(c.metrics) == METRIC_KEYS
    assert all(math.isfinite(v) for v in c.metrics.values())
    assert not c.weights.requires_grad


def test_tis_mis_icepop_match_trl_and_verl_formulas():
    old, roll, mask, _ = _batch(scale=1.0)
    w = torch.exp(old - roll).clamp(max=math.exp(20))
    m = mask.to(old.dtype)
    tis = correction(old, roll, mask, config=CorrectionConfig(mode="tis", cap=2.0))
    torch.testing.assert_close(tis.weights, torch.clamp(w, max=2.0) * m)  # TRL token_truncate
    mis = correction(old, roll, mask, config=CorrectionConfig(mode="mis", cap=2.0))
    torch.testing.assert_close(mis.weights, w.masked_fill(w > 2.0, 0.0) * m)  # TRL token_mask
    assert torch.equal(mis.mask, mask & (w <= 2.0))
    ice = correction(old, roll, mask, config=CorrectionConfig(mode="icepop", band=(0.5, 2.0)))
    band = (w >= 0.5) & (w <= 2.0)
    torch.testing.assert_close(ice.weights, torch.where(band, w, 0.0) * m)
    seq_w = torch.exp(((old - roll) * m).sum(-1, keepdim=True).clamp(-20, 20))
    stis = correction(old, roll, mask, config=CorrectionConfig(mode="seq-tis", cap=2.0))
    torch.testing.assert_close(stis.weights, seq_w.clamp(max=2.0).expand_as(w) * m)  # TRL sequence_truncate
    smis = correction(old, roll, mask, config=CorrectionConfig(mode="seq-mis", cap=3.0))
    torch.testing.assert_close(smis.weights, torch.where(seq_w <= 3.0, seq_w, 0.0).expand_as(w) * m)


def test_fixed_alpha_blends_none_and_tis():
    old, roll, mask, _ = _batch(scale=0.8)
    tis = correction(old, roll, mask, config=CorrectionConfig(mode="tis")).weights
    fixed = correction(old, roll, mask, config=CorrectionConfig(mode="fixed-alpha", alpha=0.25)).weights
    torch.testing.assert_close(fixed, (0.75 + 0.25 * tis) * mask)


def test_factor_bounds_and_alpha_bounds():
    old, roll, mask, adv = _batch(scale=2.0)
    cfg = CorrectionConfig(mode="ais", alpha_max=0.7, cap=2.0)
    c = correction(old, roll, mask, adv, cfg)
    assert 0.0 <= c.alpha <= 0.7
    valid = c.weights[mask]
    assert valid.min() >= 1 - c.alpha - 1e-12 and valid.max() <= 1 - c.alpha + c.alpha * 2.0 + 1e-12


def _mix(fn, d, r, v, n=64.0):
    x = MixInputs(
        torch.tensor(r, dtype=torch.float64),
        torch.tensor(d, dtype=torch.float64),
        torch.tensor(v, dtype=torch.float64),
        torch.tensor(n, dtype=torch.float64),
        tau_d=0.05,
        tau_v=1.0,
        kappa=1.0,
    )
    return float(fn(x))


@settings(max_examples=60, deadline=None)
@given(
    d1=st.floats(0, 5),
    d2=st.floats(0, 5),
    r=st.floats(0.01, 1),
    v1=st.floats(0, 50),
    v2=st.floats(0, 50),
)
def test_mixing_monotone_in_divergence_and_anti_monotone_in_variance(d1, d2, r, v1, v2):
    for fn in (mix_gate, mix_shrinkage):
        lo, hi = sorted((d1, d2))
        assert _mix(fn, lo, r, v1) <= _mix(fn, hi, r, v1) + 1e-12
        vlo, vhi = sorted((v1, v2))
        assert _mix(fn, d1, r, vhi) <= _mix(fn, d1, r, vlo) + 1e-12
        assert 0.0 <= _mix(fn, d1, r, v1) <= 1.0
        assert _mix(fn, 0.0, r, v1) == 0.0


def test_end_to_end_alpha_rises_with_mismatch():
    g = torch.Generator().manual_seed(3)
    old = -torch.rand(32, 12, generator=g, dtype=torch.float64)
    noise = torch.randn(32, 12, generator=g, dtype=torch.float64)
    mask = torch.ones(32, 12, dtype=torch.bool)
    alphas = [correction(old, old - s * noise, mask, config=CorrectionConfig()).alpha for s in (0.0, 0.01, 0.03, 0.1)]
    assert alphas[0] == 0.0 and alphas == sorted(alphas) and alphas[-1] > 0.5


def test_diagnostics_match_their_definitions():
    old, roll, mask, adv = _batch(scale=0.5)
    delta = torch.where(mask, old - roll, 0.0)
    s = mismatch_stats(delta, mask, adv, cap=2.0, lower=0.5)
    w = torch.exp(delta[mask])
    assert float(s.n_tokens) == mask.sum()
    torch.testing.assert_close(reliability_ess(s), w.sum() ** 2 / (w.numel() * (w**2).sum()))
    torch.testing.assert_close(variance_cv2(s), w.var(unbiased=False) / w.mean() ** 2)
    a = adv.unsqueeze(1).expand_as(old)[mask]
    torch.testing.assert_close(variance_grad(s), ((w * a) ** 2).mean() / (a**2).mean() - 1)


def test_padding_does_not_change_anything():
    old, roll, mask, adv = _batch(scale=0.5)
    pad = torch.full((old.shape[0], 4), float("nan"), dtype=old.dtype)
    c1 = correction(old, roll, mask, adv)
    c2 = correction(
        torch.cat([old, pad], 1),
        torch.cat([roll, -pad.abs() * float("inf")], 1),
        torch.cat([mask, torch.zeros(old.shape[0], 4, dtype=torch.bool)], 1),
        adv,
    )
    assert c1.metrics == pytest.approx(c2.metrics, rel=1e-12)
    torch.testing.assert_close(c2.weights[:, : old.shape[1]], c1.weights)
    assert torch.all(c2.weights[:, old.shape[1] :] == 0)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 5),
    t=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    scale=st.sampled_from([0.0, 1e-3, 1.0, 30.0, 1e4]),
    mode=st.sampled_from(tuple(MODES)),
    mask_kind=st.sampled_from(["random", "none", "all"]),
)
def test_never_nan_or_inf(b, t, seed, scale, mode, mask_kind):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g) * scale
    roll = -torch.rand(b, t, generator=g) * scale
    if mask_kind == "random":
        mask = torch.rand(b, t, generator=g) < 0.5
    else:
        mask = torch.full((b, t), mask_kind == "all")
    old = torch.where(mask, old, torch.tensor(float("-inf")))
    adv = torch.randn(b, generator=g) * scale
    c = correction(old, roll, mask, adv, CorrectionConfig(mode=mode, tau_d=None, mixing="shrinkage"))
    assert torch.isfinite(c.weights).all()
    assert all(math.isfinite(v) for v in c.metrics.values())
    assert 0.0 <= c.alpha <= 1.0


def test_empty_batch_and_empty_responses():
    old = torch.zeros(3, 0)
    c = correction(old, old, torch.zeros(3, 0, dtype=torch.bool), torch.zeros(3))
    assert c.alpha == 0.0 and c.metrics["n_tokens"] == 0.0 and c.weights.shape == (3, 0)
    old = torch.zeros(2, 4)
    c = correction(old, old - 1.0, torch.zeros(2, 4, dtype=torch.bool), torch.ones(2))
    assert c.alpha == 0.0 and c.metrics["ess_ratio"] == 1.0 and torch.all(c.weights == 0)


def test_ema_and_auto_tau_state():
    old, roll, mask, adv = _batch(scale=0.4)
    cfg = CorrectionConfig(mode="ais", ema=0.9)
    first = correction(old, roll, mask, adv, cfg)
    assert first.alpha == first.metrics["alpha_hat"]  # no history: α_1 = α̂_1
    second = correction(old, old, mask, adv, cfg, first.state)  # no mismatch now: α̂ = 0
    assert second.alpha == pytest.approx(0.9 * first.alpha)
    assert second.state.step == 2
    auto = CorrectionConfig(mode="ais", tau_d=None, tau_d_steps=2)
    s = CorrectionState()
    for _ in range(3):
        s = correction(old, roll, mask, adv, auto, s).state
    assert len(s.divergence_history) == 2


def test_pluggable_diagnostics_and_mixing():
    old, roll, mask, adv = _batch(scale=0.4)
    cfg = CorrectionConfig(
        mode="ais",
        divergence=lambda s: torch.tensor(1.0, dtype=torch.float64),
        mixing=lambda x: x.divergence * 0.3,
    )
    assert correction(old, roll, mask, adv, cfg).alpha == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "nope"}, "mode"),
        ({"cap": 0.0}, "cap"),
        ({"band": (2.0, 1.0)}, "band"),
        ({"alpha": 1.5}, "alpha"),
        ({"mixing": "nope"}, "mixing"),
        ({"divergence": "nope"}, "divergence"),
        ({"ema": 1.0}, "ema"),
        ({"tau_d": -1.0}, "tau_d"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CorrectionConfig(**kwargs)


def test_bad_inputs_are_clear_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="same shape"):
        correction(x, torch.zeros(2, 4), torch.ones(2, 3))
    with pytest.raises(TypeError, match="logp_old"):
        correction([[0.0]], x, torch.ones(2, 3))
    with pytest.raises(ValueError, match="advantages"):
        correction(x, x, torch.ones(2, 3), torch.zeros(5))
    with pytest.raises(TypeError, match="config"):
        correction(x, x, torch.ones(2, 3), config={"mode": "tis"})


def test_modes_are_a_registry_of_functions():
    assert tuple(MODES)[:8] == ("none", "tis", "mis", "seq-tis", "seq-mis", "icepop", "fixed-alpha", "ais")
    assert all(callable(fn) for fn in MODES.values())
    with pytest.raises(TypeError):
        MODES["x"] = MODES["tis"]  # read-only view
    with pytest.raises(ValueError, match="already registered"):
        register_mode("tis")(MODES["tis"])


def test_a_registered_mode_is_a_valid_config_and_gets_the_common_handling():
    """A new mode is one function: rejection, normaliser, metrics and state come from ``correction``."""
    old, roll, mask, adv = _batch(scale=0.5)
    with pytest.raises(ValueError, match="mode"):
        CorrectionConfig(mode="tis-half")

    @register_mode("tis-half")
    def tis_half(x: ModeInputs) -> ModeOutput:
        return ModeOutput(0.5, 0.5 * x.w.clamp(max=x.config.cap), keep=x.w <= 1.5)

    try:
        c = correction(old, roll, mask, adv, CorrectionConfig(mode="tis-half"))
        tis = correction(old, roll, mask, adv, CorrectionConfig(mode="tis"))
        w = torch.exp(torch.where(mask, old - roll, 0.0))
        assert torch.equal(c.mask, mask & (w <= 1.5))  # invalid tokens never come back
        torch.testing.assert_close(c.weights, 0.5 * tis.weights * c.mask)
        assert tuple(c.metrics) == METRIC_KEYS and c.alpha == 0.5 and c.state.alpha is None
        assert c.metrics["frac_rejected"] > 0
    finally:
        del _MODES["tis-half"]
    assert "tis-half" not in MODES
