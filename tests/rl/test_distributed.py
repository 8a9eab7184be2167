"""Two gloo processes: every rank gets the same α, equal to the single-process α of the concatenated batch."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from lowbit.rl import CorrectionConfig, correction

WORKER = textwrap.dedent(
    """
    import json, sys
    from datetime import timedelta
    import torch
    import torch.distributed as dist
    from lowbit.rl import CorrectionConfig, correction

    rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    g = torch.Generator().manual_seed(7)
    old = -torch.rand(11, 8, generator=g, dtype=torch.float64)
    roll = old - 0.2 * torch.randn(11, 8, generator=g, dtype=torch.float64)
    mask = torch.rand(11, 8, generator=g) < 0.7
    adv = torch.randn(11, generator=g, dtype=torch.float64)
    part = slice(0, 3) if rank == 0 else slice(3, 11)   # uneven shards: a mean of means would differ
    res = {}
    for mixing in ("gate", "shrinkage"):
        c = correction(old[part], roll[part], mask[part], adv[part], CorrectionConfig(mode="ais", mixing=mixing),
                       process_group=dist.group.WORLD)
        res[mixing] = c.metrics
    json.dump(res, open(out, "w"))
    dist.barrier()
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(180)
def test_two_rank_alpha_equals_single_process_alpha(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = str(_free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs = [tmp_path / f"rank{r}.json" for r in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), port, str(outs[r])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    try:
        logs = [p.communicate(timeout=120)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), logs
    ranks = [json.loads(o.read_text()) for o in outs]

    g = torch.Generator().manual_seed(7)
    old = -torch.rand(11, 8, generator=g, dtype=torch.float64)
    roll = old - 0.2 * torch.randn(11, 8, generator=g, dtype=torch.float64)
    mask = torch.rand(11, 8, generator=g) < 0.7
    adv = torch.randn(11, generator=g, dtype=torch.float64)
    for mixing in ("gate", "shrinkage"):
        single = correction(old, roll, mask, adv, CorrectionConfig(mode="ais", mixing=mixing)).metrics
        assert ranks[0][mixing]["alpha"] == ranks[1][mixing]["alpha"]
        assert 0.0 < single["alpha"] < 1.0
        for key in (
            "alpha",
            "ess_ratio",
            "mean_abs_logratio",
            "variance_amplification",
            "n_tokens",
            "max_abs_logratio",
        ):
            assert ranks[0][mixing][key] == pytest.approx(single[key], rel=1e-12, abs=1e-15), key
        # the shards alone give different alphas: the agreement comes from the reduction
        alone = correction(old[:3], roll[:3], mask[:3], adv[:3], CorrectionConfig(mode="ais", mixing=mixing))
        assert alone.alpha != pytest.approx(single["alpha"], rel=1e-6)


def test_process_group_without_init_is_a_clear_error():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="not initialised"):
        correction(x, x, torch.ones(1, 2), process_group=object())
