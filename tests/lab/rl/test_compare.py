"""The conclusion line of ``lowbit rl``: Welch's t-test between arms, and the arms of ``--quick``."""

import math
import random

import pytest

from lowbit.lab.rl.compare import arm_difference, conclusion, welch_p
from lowbit.lab.rl.experiment import DEFAULT_ARMS, quick_config


def _row(arm, acc, sd, seeds):
    return {"arm": arm, "seeds": seeds, "acc_fp32": acc, "acc_fp32_sd": sd}


def test_welch_p_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for _ in range(300):
        args = (rng.random(), rng.uniform(1e-4, 0.3), rng.randint(2, 12), rng.random(), rng.uniform(1e-4, 0.3), 3)
        expected = stats.ttest_ind_from_stats(*args, equal_var=False).pvalue
        assert welch_p(*args) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_welch_p_edges():
    assert welch_p(0.5, 0.0, 3, 0.5, 0.0, 3) == 1.0
    assert math.isnan(welch_p(0.6, 0.0, 3, 0.5, 0.0, 3))  # no spread, different means: undefined
    assert math.isnan(welch_p(0.6, 0.1, 1, 0.5, 0.1, 3))  # one seed
    assert welch_p(0.9, 0.01, 6, 0.1, 0.01, 6) < 1e-10


def test_conclusion_is_honest():
    table = [_row("fp32", 0.56, 0.03, 6), _row("fp8-none", 0.514, 0.034, 6), _row("fp8-ais", 0.548, 0.054, 6)]
    d = arm_difference(table, "fp8-ais", "fp8-none")
    assert d.difference == pytest.approx(0.034) and d.seeds_a == d.seeds_b == 6
    line = conclusion(table)
    assert line.startswith("AIS vs none: +3.4 accuracy points (Welch p = 0.23, 6 vs 6 seeds)")
    assert line.endswith("not significant (p >= 0.05)")
    strong = [_row("fp8-none", 0.30, 0.01, 6), _row("fp8-ais", 0.50, 0.01, 6)]
    assert conclusion(strong).endswith(": significant (p < 0.05)")
    assert "not compared" in conclusion(table[:2])
    assert "no p-value" in conclusion([_row("fp8-none", 0.3, 0.0, 1), _row("fp8-ais", 0.4, 0.0, 1)])


def test_quick_runs_the_arms_the_readme_names():
    """README: ``lowbit rl --quick``: arms none/tis/icepop/fixed-alpha/ais (plus the fp32 reference)."""
    modes = {"fp32": "fp32", "fp8-none": "none", "fp8-tis": "tis", "fp8-icepop": "icepop"}
    modes |= {"fp8-fixed-0.5": "fixed-alpha", "fp8-ais": "ais"}
    assert quick_config().arms == DEFAULT_ARMS == tuple(modes)
