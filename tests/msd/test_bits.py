"""``effective_bits``: the definitions and the errors they raise (the table that uses them is in the lab)."""

from __future__ import annotations

import math

import pytest
import torch

from lowbit import msd
from lowbit.lab.msd.distributions import activations


def test_effective_bits_definitions_and_errors():
    x = activations("uniform", (4, 64), seed=0)
    d = msd.decompose(x, "int8", passes=2)
    x_hat = d.reconstruct(torch.float64)
    assert msd.effective_bits(x, x) == math.inf
    assert msd.effective_bits(x, x_hat, "enob") < msd.effective_bits(x, x_hat, "rms")
    assert msd.effective_bits(x, x_hat, "uniform") == pytest.approx(math.log2(64516), abs=0.3)
    with pytest.raises(ValueError, match="kind"):
        msd.effective_bits(x, x_hat, "mean")
    with pytest.raises(ValueError, match="shape"):
        msd.effective_bits(x, x_hat[:2])
    with pytest.raises(ValueError, match="NaN"):
        msd.effective_bits(torch.full((1, 2), float("nan")), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="relative_to"):
        msd.effective_bits(x, x_hat, relative_to="beta")
