"""The verl plugin against verl 0.9.1's own driver code: entry point, DataProto batch, rollout_is=ais."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lowbit.rl import CorrectionConfig, correction
from lowbit.rl.verl import install, is_installed
from lowbit.rl.verl.driver import correction_config

helper = pytest.importorskip(
    "verl.trainer.ppo.rollout_corr_helper", reason="verl is installed with --no-deps (requirements/nodeps.txt)"
)
from omegaconf import OmegaConf  # noqa: E402  (a verl dependency, present when verl imports)
from verl import DataProto  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
VERL_DIR = Path(helper.__file__).resolve().parents[2]


def _rollout_correction(**over: object):
    """verl's own default ``algorithm.rollout_correction`` (its yaml, as the driver sees it) with overrides."""
    base = OmegaConf.load(VERL_DIR / "trainer" / "config" / "algorithm" / "rollout_correction.yaml")
    return OmegaConf.merge(base, OmegaConf.create(dict(over)))


def _data(seed: int = 0, b: int = 16, t: int = 10) -> DataProto:
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g) * 3
    roll = old + 0.25 * torch.randn(b, t, generator=g)
    mask = (torch.arange(t) < torch.randint(2, t + 1, (b, 1), generator=g)).long()
    return DataProto.from_dict(
        tensors={
            "old_log_probs": old,
            "rollout_log_probs": roll,
            "response_mask": mask,
            "token_level_rewards": torch.zeros(b, t),
        }
    )


@pytest.fixture(scope="module", autouse=True)
def _installed():
    install()  # what the entry point does on `import verl` (tested in a fresh process below)
    install()  # idempotent
    assert is_installed()


@pytest.mark.slow
def test_entry_point_installs_the_plugin_on_import_verl():
    code = (  # the plugin module imported before verl, as pytest's doctest collection does: still installed
        "import lowbit.rl.verl.plugin\nimport verl\nfrom verl.trainer.ppo import core_algos\n"
        "import lowbit.rl.verl as p\nprint(p.is_installed(), 'ais' in core_algos.POLICY_LOSS_REGISTRY)"
    )
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "auto"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["True", "True"]
    env["VERL_USE_EXTERNAL_PLUGINS"] = "none"  # verl's switch: without the entry point nothing is hooked
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["False", "False"]


def test_driver_imports_the_hooked_name_at_call_time():
    """ray_trainer.fit imports compute_rollout_correction_and_add_to_batch inside the loop, so the module attribute
    the plugin replaces is what it calls (ray_trainer itself needs torchdata and more to import)."""
    source = (VERL_DIR / "trainer" / "ppo" / "ray_trainer.py").read_text()
    line = "from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch"
    assert any(row.startswith(" ") and row.strip() == line for row in source.splitlines())


def test_rollout_is_ais_puts_lowbits_global_batch_weights_in_the_batch():
    data = _data()
    old, roll = data.batch["old_log_probs"].clone(), data.batch["rollout_log_probs"].clone()
    mask = data.batch["response_mask"].bool().clone()
    cfg = _rollout_correction(rollout_is="ais", rollout_is_threshold=2.0)
    out, metrics = helper.compute_rollout_correction_and_add_to_batch(data, cfg)  # the name the driver imports
    expected = correction(old, roll, mask, None, CorrectionConfig(mode="ais", cap=2.0, variance="cv2"))
    assert 0 < expected.alpha < 1
    assert torch.equal(out.batch["rollout_is_weights"], expected.weights)
    assert torch.equal(out.batch["response_mask"].bool(), mask)
    assert metrics["rollout_corr/lowbit_alpha"] == expected.alpha
    assert metrics["rollout_corr/lowbit_n_seq"] == 16  # alpha is the whole batch's, not a micro-batch's
    half = correction(old[:4], roll[:4], mask[:4], None, CorrectionConfig(mode="ais", variance="cv2"))
    assert half.alpha != expected.alpha
    for key in ("rollout_corr/kl", "rollout_corr/chi2_token", "rollout_corr/rollout_is_eff_sample_size"):
        assert key in metrics  # verl's off-policy metrics and its IS statistics of lowbit's weights
    # every verl loss multiplies them in: the registered "ais" loss is verl's vanilla loss with these weights
    g = torch.Generator().manual_seed(1)
    logp = old + 0.2 * torch.randn(old.shape, generator=g)
    adv = torch.randn(16, 1, generator=g).expand_as(old)
    actor = {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "global_batch_info": {}}
    actor = OmegaConf.create(actor)
    w = out.batch["rollout_is_weights"]
    ref, _ = core_algos.get_policy_loss_fn("vanilla")(old, logp, adv, mask, "token-mean", actor, rollout_is_weights=w)
    loss, _ = core_algos.get_policy_loss_fn("ais")(old, logp, adv, mask, "token-mean", actor, rollout_is_weights=w)
    assert torch.equal(loss, ref)


def test_ais_settings_rejection_sampling_and_rejecting_modes():
    data = _data(seed=2)
    old, roll = data.batch["old_log_probs"].clone(), data.batch["rollout_log_probs"].clone()
    mask = data.batch["response_mask"].bool().clone()
    # verl's rejection sampling runs first; lowbit's weights are computed on the tokens it keeps
    cfg = _rollout_correction(
        rollout_is="ais",
        rollout_rs="token_k1",
        rollout_rs_threshold="0.8_1.25",
        ais={"mode": "fixed-alpha", "alpha": 0.3},
    )
    out, metrics = helper.compute_rollout_correction_and_add_to_batch(data, cfg)
    kept = out.batch["response_mask"].bool()
    assert kept.sum() < mask.sum() and metrics["rollout_corr/rollout_rs_masked_fraction"] > 0
    expected = correction(old, roll, kept, None, CorrectionConfig(mode="fixed-alpha", alpha=0.3, variance="cv2"))
    assert torch.equal(out.batch["rollout_is_weights"], expected.weights)
    # a lowbit mode that rejects tokens takes them out of verl's response_mask too
    data = _data(seed=2)
    out, _ = helper.compute_rollout_correction_and_add_to_batch(
        data, _rollout_correction(rollout_is="ais", rollout_is_threshold=1.1, ais={"mode": "mis"})
    )
    rejected = correction(old, roll, mask, None, CorrectionConfig(mode="mis", cap=1.1, variance="cv2"))
    assert rejected.metrics["frac_rejected"] > 0
    assert torch.equal(out.batch["response_mask"].bool(), rejected.mask)


def test_other_rollout_is_values_are_verls_own():
    cfg = _rollout_correction(rollout_is="token", rollout_is_threshold=2.0)
    ours, m1 = helper.compute_rollout_correction_and_add_to_batch(_data(seed=3), cfg)
    original = helper.compute_rollout_correction_and_add_to_batch.__lowbit_rl_verl__
    theirs, m2 = original(_data(seed=3), cfg)
    assert torch.equal(ours.batch["rollout_is_weights"], theirs.batch["rollout_is_weights"]) and m1 == m2
    # lowbit "tis" through the plugin gives verl's own token-TIS weights (to float32 rounding)
    tis, _ = helper.compute_rollout_correction_and_add_to_batch(
        _data(seed=3), _rollout_correction(rollout_is="ais", ais={"mode": "tis"})
    )
    torch.testing.assert_close(tis.batch["rollout_is_weights"], theirs.batch["rollout_is_weights"], rtol=1.2e-7, atol=0)


def test_unsupported_settings_are_clear_errors():
    data = _data()
    for bad, match in (
        ({"rollout_is_threshold": "0.5_2.0"}, "IcePop band"),
        ({"rollout_is_batch_normalize": True}, "batch_normalize"),
        ({"ais": {"variance": "grad"}}, "advantages"),
        ({"ais": {"ema": 0.9}}, "stateless"),
        ({"ais": {"tau_d": None}}, "stateless"),
        ({"ais": {"cap": 3.0}}, "contradicts"),
        ({"ais": {"capp": 3.0}}, "unknown keys"),
    ):
        with pytest.raises(ValueError, match=match):
            helper.compute_rollout_correction_and_add_to_batch(data, _rollout_correction(rollout_is="ais", **bad))
    # bypass mode computes rollout_is weights per micro-batch in the actor: refused with the reason
    with pytest.raises(ValueError, match="bypass mode"):
        helper.compute_rollout_correction_and_rejection_mask(
            data.batch["old_log_probs"], data.batch["rollout_log_probs"], data.batch["response_mask"], rollout_is="ais"
        )
    assert correction_config({"rollout_is": "ais"}).variance == "cv2"


def test_verl_dataclass_config_works_like_the_yaml_one():
    from verl.trainer.config.algorithm import RolloutCorrectionConfig

    typed, m1 = helper.compute_rollout_correction_and_add_to_batch(
        _data(seed=4), RolloutCorrectionConfig(rollout_is="ais", rollout_is_threshold=2.0)
    )
    plain, m2 = helper.compute_rollout_correction_and_add_to_batch(_data(seed=4), _rollout_correction(rollout_is="ais"))
    assert torch.equal(typed.batch["rollout_is_weights"], plain.batch["rollout_is_weights"]) and m1 == m2
