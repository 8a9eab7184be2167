"""Comparing two arms of the AIS experiment: Welch's t-test over seeds and the one-line conclusion of ``lowbit rl``.

Everything here reads the experiment's final table (:func:`~lowbit.lab.rl.experiment.final_table`: per arm the
mean, the sample sd and the number of seeds), so it works on a live run and on a saved ``rl*.json`` alike.

Welch's test of two means with unequal variances::

    se² = s_a²/n_a + s_b²/n_b,   t = (m_a − m_b)/se,
    ν = se⁴ / ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1))     (Welch-Satterthwaite)
    p = P(|T_ν| ≥ |t|) = I_{ν/(ν+t²)}(ν/2, 1/2)                    (two-sided)

with I the regularised incomplete beta function (continued fraction, Lentz's method).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ArmDifference", "arm_difference", "conclusion", "welch_p"]

#: The significance level the conclusion line is judged at.
ALPHA_LEVEL = 0.05

_NAMES = {"fp8-ais": "AIS", "fp8-none": "none", "fp8-tis": "TIS", "fp8-icepop": "IcePop", "fp32": "fp32"}


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, relative tolerance 1e-15)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)`` for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def welch_p(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int) -> float:
    """Two-sided p-value of Welch's t-test from the two means, sample sds and sizes (formula in the module doc).

    NaN when it is not defined: fewer than 2 seeds in an arm, or no spread at all (both sds 0) with different
    means. Equal means give 1.

    >>> round(welch_p(0.548, 0.054, 6, 0.514, 0.034, 6), 3)  # fp8-ais vs fp8-none of docs/rl.md (3-digit means)
    0.226
    >>> welch_p(0.5, 0.1, 1, 0.4, 0.1, 3)
    nan
    """
    if n_a < 2 or n_b < 2:
        return math.nan
    va, vb = sd_a * sd_a / n_a, sd_b * sd_b / n_b
    se2 = va + vb
    diff = mean_a - mean_b
    if se2 == 0.0:
        return 1.0 if diff == 0.0 else math.nan
    t2 = diff * diff / se2
    nu = se2 * se2 / (va * va / (n_a - 1) + vb * vb / (n_b - 1))
    return _betainc(nu / 2.0, 0.5, nu / (nu + t2))


@dataclass(frozen=True)
class ArmDifference:
    """Arm ``a`` minus arm ``b`` in one column of the final table: the difference of the seed means, Welch's p
    (NaN when undefined) and the seeds of each arm."""

    a: str
    b: str
    key: str
    difference: float
    p: float
    seeds_a: int
    seeds_b: int


def arm_difference(table: Sequence[Mapping[str, Any]], a: str, b: str, key: str = "acc_fp32") -> ArmDifference:
    """``a − b`` in column ``key`` (final greedy accuracy by default) of a final table, with Welch's p.

    Raises ``KeyError`` when either arm is not in the table.
    """
    rows = {r["arm"]: r for r in table}
    missing = [arm for arm in (a, b) if arm not in rows]
    if missing:
        raise KeyError(f"arm(s) {missing} not in the table (arms: {sorted(rows)})")
    ra, rb = rows[a], rows[b]
    p = welch_p(ra[key], ra[key + "_sd"], ra["seeds"], rb[key], rb[key + "_sd"], rb["seeds"])
    return ArmDifference(a, b, key, ra[key] - rb[key], p, ra["seeds"], rb["seeds"])


def conclusion(table: Sequence[Mapping[str, Any]], *, a: str = "fp8-ais", b: str = "fp8-none") -> str:
    """One honest line: AIS minus no correction in final accuracy points, Welch's p, and whether that is significant.

    >>> row = {"acc_fp32_sd": 0.05, "seeds": 2}
    >>> conclusion([{"arm": "fp8-ais", "acc_fp32": 0.55, **row}, {"arm": "fp8-none", "acc_fp32": 0.50, **row}])
    'AIS vs none: +5.0 accuracy points (Welch p = 0.42, 2 vs 2 seeds): not significant (p >= 0.05)'
    """
    label = f"{_NAMES.get(a, a)} vs {_NAMES.get(b, b)}"
    try:
        d = arm_difference(table, a, b)
    except KeyError:
        return f"{label}: not compared (run both {a} and {b}, e.g. with --arms)"
    points = f"{100 * d.difference:+.1f} accuracy points"
    seeds = f"{d.seeds_a} vs {d.seeds_b} seeds"
    if math.isnan(d.p):
        return f"{label}: {points} ({seeds}): no p-value (needs >= 2 seeds per arm and some spread), no conclusion"
    verdict = f"significant (p < {ALPHA_LEVEL:g})" if d.p < ALPHA_LEVEL else f"not significant (p >= {ALPHA_LEVEL:g})"
    return f"{label}: {points} (Welch p = {d.p:.2g}, {seeds}): {verdict}"
