"""Exact low-precision GEMM primitives against float64 (msd.md §3, §5)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.msd.gemm import int_gemm, int_gemm_segments, max_exact_k, mx_block_gemm

E2M1_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def _ints(shape, seed, lo=-127, hi=127):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi + 1, shape, generator=g, dtype=torch.int8)


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(1, 9),
    n=st.integers(1, 9),
    k=st.integers(1, 300),
    seed=st.integers(0, 10_000),
    chunk=st.sampled_from([None, 1, 7, 64]),
)
def test_int_gemm_is_exact(m, n, k, seed, chunk):
    a, b = _ints((m, k), seed), _ints((n, k), seed + 1)
    y = int_gemm(a, b, max_chunk=chunk)
    assert y.dtype == torch.int64
    assert torch.equal(y.double(), a.double() @ b.double().t())


def test_k_guard_prevents_int32_overflow():
    assert max_exact_k(127, 127) == 133144  # msd.md §3
    k = 140_000  # K·127·127 > 2^31: a single int32 GEMM would wrap
    a = torch.full((1, k), 127, dtype=torch.int8)
    b = torch.full((2, k), -127, dtype=torch.int8)
    b[1] = 127
    y = int_gemm(a, b)
    assert y.tolist() == [[-k * 127 * 127, k * 127 * 127]]
    assert abs(y[0, 1].item()) > 2**31


def test_int_gemm_segments_are_exact_partial_sums():
    a, b = _ints((3, 100), 5), _ints((4, 100), 6)
    p = int_gemm_segments(a, b, 32)
    assert p.shape == (4, 3, 4)
    for g, s in enumerate(range(0, 100, 32)):
        assert torch.equal(p[g].double(), a[:, s : s + 32].double() @ b[:, s : s + 32].double().t())
    assert torch.equal(p.sum(0), int_gemm(a, b))


def test_int_gemm_rejects_bad_operands():
    with pytest.raises(TypeError, match="int8"):
        int_gemm(torch.ones(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="share K"):
        int_gemm(_ints((2, 3), 0), _ints((2, 4), 0))


def _mx_operand(rows, k, block, seed, unit_exp_range=(-20, 20)):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 8, (rows, k), generator=g)
    sign = torch.where(torch.rand(rows, k, generator=g) < 0.5, -1.0, 1.0)
    vals = E2M1_GRID[idx] * sign
    exps = torch.randint(*unit_exp_range, (rows, k // block), generator=g)
    return vals, torch.exp2(exps.double())


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 6), n=st.integers(1, 6), blocks=st.integers(1, 6), seed=st.integers(0, 10_000), wide=st.booleans()
)
def test_mx_block_gemm_matches_float64(m, n, blocks, seed, wide):
    k = 32 * blocks
    exps = (-40, 40) if wide else (-8, 8)
    a, sa = _mx_operand(m, k, 32, seed, exps)
    b, sb = _mx_operand(n, k, 32, seed + 1, exps)
    a_full, b_full = a.double() * sa.repeat_interleave(32, 1), b.double() * sb.repeat_interleave(32, 1)
    ref = a_full @ b_full.t()
    magnitude = a_full.abs() @ b_full.abs().t()
    y64 = mx_block_gemm(a, sa, b, sb, block=32, a_unit=0.5, b_unit=0.5, accumulate=torch.float64)
    y32 = mx_block_gemm(a, sa, b, sb, block=32, a_unit=0.5, b_unit=0.5)
    assert y32.dtype == torch.float32
    if not wide:
        # every term is a multiple of 2^-18 below 2^40: float64 sums in any order are exact, so equality
        assert torch.equal(y64, ref)
    assert bool(((y64 - ref).abs() <= 2 * (k + blocks) * 2.0**-53 * magnitude).all())
    assert bool(((y32.double() - ref).abs() <= (blocks + 1) * 2.0**-24 * magnitude + k * 2.0**-53 * magnitude).all())


def test_mx_block_gemm_single_block_integer_products():
    a = torch.tensor([[6.0, -0.5] + [0.0] * 30])
    b = torch.tensor([[6.0, 1.5] + [0.0] * 30])
    y = mx_block_gemm(a, torch.tensor([[4.0]]), b, torch.tensor([[0.125]]), block=32, a_unit=0.5, b_unit=0.5)
    assert y.item() == (36.0 - 0.75) * 4.0 * 0.125


def test_mx_block_gemm_rejects_off_grid_values_and_bad_shapes():
    a = torch.full((1, 32), 0.3)
    s = torch.ones(1, 1)
    with pytest.raises(ValueError, match="grid"):
        mx_block_gemm(a, s, a, s, block=32, a_unit=0.5, b_unit=0.5)
    with pytest.raises(ValueError, match="multiple of block"):
        mx_block_gemm(torch.zeros(1, 30), s, torch.zeros(1, 30), s, block=32, a_unit=0.5, b_unit=0.5)
    with pytest.raises(TypeError, match="accumulate"):
        mx_block_gemm(a, s, a, s, block=32, a_unit=0.5, b_unit=0.5, accumulate=torch.bfloat16)
