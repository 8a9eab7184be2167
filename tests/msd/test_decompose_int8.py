"""INT8 n-pass decomposition: the M/(2·127·254^(p-1)) bound (msd.md §3), adversarial inputs, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit import msd
from lowbit.lab.msd.distributions import DISTRIBUTIONS, activations
from lowbit.msd.decompose import grouped

SETTINGS = settings(max_examples=40, deadline=None)


def _max_err_per_group(x: torch.Tensor, d: msd.Decomposition) -> torch.Tensor:
    e = d.reconstruct(torch.float64) - x.double()
    return grouped(e, d.group_size).abs().amax(dim=-1)


def _assert_bound(x: torch.Tensor, passes: int, group: str | int, amax: float | None = None) -> None:
    d = msd.decompose(x, "int8", passes=passes, group=group, amax=amax)
    bound = msd.error_bound(x, "int8", passes=passes, group=group, amax=amax)
    m = grouped(x.double(), d.group_size).abs().amax(dim=-1)
    slack = (m if amax is None else torch.full_like(m, amax)) * 2.0**-48  # float64 rounding of s_i and r_i
    err = _max_err_per_group(x, d)
    assert bool((err <= bound + slack).all()), float((err / bound).max())
    for q in d.components:
        assert q.dtype == torch.int8
        assert int(q.abs().max()) <= 127


@SETTINGS
@given(
    dist=st.sampled_from(DISTRIBUTIONS),
    passes=st.integers(1, 4),
    group=st.sampled_from(["row", 1, 7, 32, 128]),
    rows=st.integers(1, 4),
    k=st.integers(1, 300),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([torch.bfloat16, torch.float32, torch.float16]),
)
def test_bound_holds_for_every_distribution_and_pass_count(dist, passes, group, rows, k, seed, dtype):
    _assert_bound(activations(dist, (rows, k), seed=seed, dtype=dtype), passes, group)


@SETTINGS
@given(
    exponent=st.integers(-140, 120),
    codes=st.lists(st.integers(-127, 126), min_size=1, max_size=40),
    fractions=st.lists(st.sampled_from([0.5, -0.5, 0.4999999, 0.5000001, 0.0]), min_size=1, max_size=40),
    passes=st.integers(1, 3),
)
def test_bound_holds_at_rounding_ties(exponent, codes, fractions, passes):
    # With M = 127·2^e the first scale is exactly 2^e, so (q + 1/2)·2^e are exact round-half-to-even ties.
    s1 = 2.0**exponent
    n = min(len(codes), len(fractions))
    vals = [(c + f) * s1 for c, f in zip(codes[:n], fractions[:n], strict=True)] + [127 * s1]
    x = torch.tensor([vals], dtype=torch.float64)
    _assert_bound(x, passes, "row")


@SETTINGS
@given(
    magnitude=st.sampled_from([1e-45, 1e-40, 1e-30, 1.0, 1e20, 3.0e38]),
    k=st.integers(1, 64),
    seed=st.integers(0, 1000),
    passes=st.integers(1, 3),
)
def test_subnormal_and_huge_magnitudes(magnitude, k, seed, passes):
    g = activations("gaussian", (3, k), seed=seed, dtype=torch.float64)
    x = (g / g.abs().amax(dim=-1, keepdim=True) * magnitude).to(torch.float32)  # row max = magnitude
    d = msd.decompose(x, "int8", passes=passes)
    assert all(bool(torch.isfinite(s).all()) for s in d.scales)
    assert bool(torch.isfinite(d.reconstruct(torch.float64)).all())
    _assert_bound(x, passes, "row")


def test_second_pass_bound_is_attained_and_equals_m_over_64516():
    x = activations("uniform", (256, 4096), seed=3)
    d = msd.decompose(x, "int8", passes=2)
    ratio = _max_err_per_group(x, d) / (grouped(x.double(), 4096).abs().amax(dim=-1) / 64516)
    assert 0.99 < float(ratio.max()) <= 1 + 1e-9
    assert int(d.components[1].abs().max()) == 127  # the residual pass uses its whole range
    assert msd.effective_bits(x, d.reconstruct(torch.float64)) == pytest.approx(math.log2(64516), abs=0.01)


def test_scales_shrink_by_254_and_first_is_m_over_127():
    x = torch.tensor([[0.5, -2.0, 1.0], [0.0, 0.25, -0.125]])
    d = msd.decompose(x, "int8", passes=3)
    assert d.scales[0][:, 0].tolist() == [2.0 / 127, 0.25 / 127]
    for a, b in zip(d.scales, d.scales[1:], strict=False):
        torch.testing.assert_close(b, a / 254, rtol=1e-15, atol=0)


def test_zero_rows_and_blocks_give_zero_not_nan():
    x = torch.zeros(3, 70)
    x[1, 40:] = 1.5
    for group in ("row", 32):
        d = msd.decompose(x, "int8", passes=2, group=group)
        x_hat = d.reconstruct()
        assert not bool(torch.isnan(x_hat).any())
        assert bool((x_hat[0] == 0).all()) and bool((x_hat[1, :32] == 0).all())
        assert all(bool(torch.isfinite(s).all()) for s in d.scales)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("group", ["row", 16])
def test_non_finite_marks_only_its_group(bad, group):
    x = activations("gaussian", (4, 64), seed=1, dtype=torch.float32)
    clean = msd.decompose(x, "int8", passes=2, group=group)
    x_bad = x.clone()
    x_bad[2, 20] = bad
    d = msd.decompose(x_bad, "int8", passes=2, group=group)
    x_hat = d.reconstruct()
    gs = 64 if group == "row" else 16
    bad_cols = slice(16, 32) if gs == 16 else slice(0, 64)
    assert bool(torch.isnan(x_hat[2, bad_cols]).all())
    mask = torch.ones_like(x_hat, dtype=torch.bool)
    mask[2, bad_cols] = False
    assert torch.equal(x_hat[mask], clean.reconstruct()[mask])


def test_k_not_a_multiple_of_the_group():
    x = activations("laplace", (5, 100), seed=2)
    d = msd.decompose(x, "int8", passes=2, group=32)
    assert d.scales[0].shape == (5, 4) and d.components[0].shape == (5, 100)
    _assert_bound(x, 2, 32)


def test_fixed_amax_for_probabilities():
    p = torch.softmax(activations("gaussian", (4, 50), seed=0, dtype=torch.float32), dim=-1)
    _assert_bound(p, 2, "row", amax=1.0)
    assert float(msd.error_bound(p, "int8", passes=2, amax=1.0).max()) == 1 / 64516
    with pytest.raises(ValueError, match="amax"):
        msd.decompose(torch.tensor([[0.5, 1.5]]), "int8", amax=1.0)


def test_reconstruct_float32_is_within_float32_rounding():
    x = activations("gaussian", (8, 256), seed=4)
    d = msd.decompose(x, "int8", passes=2)
    assert d.reconstruct().dtype == torch.float32
    torch.testing.assert_close(d.reconstruct().double(), d.reconstruct(torch.float64), rtol=2e-7, atol=0)
    with pytest.raises(TypeError, match="dtype"):
        d.reconstruct(torch.bfloat16)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": torch.ones(2, 3, dtype=torch.int32)}, TypeError, "x must be"),
        ({"x": [1.0, 2.0]}, TypeError, "x must be"),
        ({"x": torch.ones(2, 0)}, ValueError, "last axis"),
        ({"fmt": "int4"}, ValueError, "fmt"),
        ({"passes": 0}, ValueError, "passes"),
        ({"passes": 1.5}, ValueError, "passes"),
        ({"group": 0}, ValueError, "group"),
        ({"group": "column"}, ValueError, "group"),
        ({"amax": -1.0}, ValueError, "amax"),
        ({"elem": "e2m1"}, ValueError, "elem"),
    ],
)
def test_bad_input_is_rejected_with_the_argument_named(kwargs, error, match):
    args = {"x": torch.ones(2, 3), "fmt": "int8"} | kwargs
    x, fmt = args.pop("x"), args.pop("fmt")
    with pytest.raises(error, match=match):
        msd.decompose(x, fmt, **args)
