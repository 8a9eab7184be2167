"""Two data-parallel processes (accelerate on CPU, gloo): lowbit.rl.trl.GRPOTrainer gets the same α on both ranks,
from the statistics of the whole generation batch (all-reduced), not of each rank's shard."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

ROOT = Path(__file__).resolve().parents[2]

WORKER = r"""
import json, os, sys, warnings
sys.path.insert(0, os.environ["LOWBIT_ROOT"])
warnings.simplefilter("ignore")
from tests.rl.test_trl import grpo_args, make, tiny_llama
from lowbit.rl import CorrectionConfig, correction
from lowbit.rl.trl import GRPOTrainer
from pathlib import Path

class Recording(GRPOTrainer):
    records = []
    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        m = (out["completion_mask"] * out.get("tool_mask", 1)).bool()
        local = correction(self._policy_logps(out), out["sampling_per_token_logps"], m, out["advantages"],
                           self.correction_config)
        metrics = self._correction_metrics["train"]
        self.records.append({"alpha": metrics["correction/alpha"], "n_seq": metrics["correction/n_seq"],
                             "local_alpha": local.alpha, "local_n_seq": local.metrics["n_seq"]})
        return out

tmp = Path(sys.argv[1])
args = grpo_args(tmp, per_device_train_batch_size=4, max_steps=2)
t = make(Recording, tmp, tiny_llama(), args=args, correction=CorrectionConfig(mode="ais"),
         rollout_precision="e5m2-tensor-act")
t.train()
rank = t.accelerator.process_index
(tmp / f"rank{rank}.json").write_text(json.dumps({"world": t.accelerator.num_processes, "records": t.records}))
"""


def test_alpha_is_identical_on_two_ranks(tmp_path: Path) -> None:
    """torch's launcher sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; with ``use_cpu`` the
    Trainer's accelerate state reads them and initialises a gloo process group (accelerate's MULTI_CPU)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, LOWBIT_ROOT=str(ROOT), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    cmd += ["--master_addr", "127.0.0.1"]
    cmd += ["--nnodes", "1", str(script), str(tmp_path)]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    a, b = (r["records"] for r in ranks)
    assert len(a) == len(b) == 2  # one generation batch per optimiser step
    for ra, rb in zip(a, b, strict=True):
        assert ra["alpha"] == rb["alpha"]  # identical, not merely close
        assert ra["n_seq"] == rb["n_seq"] == ra["local_n_seq"] + rb["local_n_seq"]  # stats of the whole batch
        assert 0 < ra["alpha"] <= 1
    assert any(ra["local_alpha"] != rb["local_alpha"] for ra, rb in zip(a, b, strict=True))  # shards differ
