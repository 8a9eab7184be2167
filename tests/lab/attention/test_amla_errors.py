"""The AMLA error table (lowbit.lab.attention.amla_errors) on DeepSeek-V3 MLA decode shapes."""

import pytest

from lowbit.lab.attention.amla_errors import amla_error_row


@pytest.mark.parametrize(("seq_q", "block", "pattern"), [(1, 256, "ramp"), (2, 128, "jump")])
def test_amla_error_row_on_mla_shapes(seq_q, block, pattern):
    row = amla_error_row(1024, seq_q=seq_q, block_k=block, pattern=pattern)
    assert row.fa_mul_fp32 < 3e-6 and row.amla_exact < 3e-6
    assert row.amla_exact_vs_fa_mul < 1e-6  # FP32 rounding only (amla.md §6: 3.9e-7)
    assert row.fa_mul_bf16 < 2e-3 and row.amla_bf16_comp < 2e-3 and row.amla_bf16_nocomp < 3e-3
    assert row.moved_fraction > 0
    if pattern == "jump":
        assert row.min_shift < -30 and row.clamped > 0
