"""``lowbit rl --engine trl``: the TRL-engine experiment's pieces and a 2-step run of two arms."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

pytest.importorskip("trl")

from lowbit.lab.rl import trl_experiment as te
from lowbit.lab.rl.experiment import quick_config
from lowbit.lab.rl.task import EOS, AdditionTask


def test_tokenizer_ids_are_the_tasks() -> None:
    task = AdditionTask(2)
    prompts, targets = task.sample_train(4, torch.Generator().manual_seed(0))
    tok = te.build_tokenizer()
    for p, t in zip(prompts, targets, strict=True):
        assert tok(task.decode(p)).input_ids == p.tolist()
        assert tok(task.decode(t)).input_ids == t.tolist()
    assert tok.eos_token_id == EOS and tok.pad_token_id == te.PAD


def test_reward_is_exact_answer_then_eos() -> None:
    ids = [[3, 5, 0, EOS], [3, 5, 0], [3, 5, 0, EOS, EOS], [3, 5, 1, EOS]]
    assert te.exact_answer_reward(ids, ["350"] * 4) == [1.0, 0.0, 0.0, 0.0]


def test_two_arm_run_fills_the_lab_table(tmp_path) -> None:
    cfg = quick_config(rl_steps=2, seeds=1, arms=("fp32", "fp8-ais"), eval_every=2, eval_size=16, tail=2)
    init = ({k: v.clone() for k, v in te.build_llama(cfg, 0).state_dict().items()}, {"steps": 0})
    exp = te.run_experiment(cfg, init=init)
    assert exp["engine"] == "trl" and [r["arm"] for r in exp["table"]] == ["fp32", "fp8-ais"]
    runs = {r["arm"]: r for r in exp["runs"]}
    for run in runs.values():
        assert run["steps"]["step"] == [1.0, 2.0] and run["evals"]["step"] == [0, 2]
        assert all(math.isfinite(x) for x in run["steps"]["reward"] + run["steps"]["alpha"])
    assert runs["fp32"]["steps"]["alpha"] == [0.0, 0.0]
    for row in exp["table"]:  # every column is a number (the lab's final_table needs no NaN)
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))
        assert 0 < row["correction_share"] < 1
    assert min(runs["fp8-ais"]["steps"]["mean_abs_logratio"]) > min(runs["fp32"]["steps"]["mean_abs_logratio"])


def test_command_accepts_the_trl_engine() -> None:
    from lowbit.lab.rl.command import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["rl", "--engine", "trl", "--quick"])
    assert args.engine == "trl" and args.name is None
    with pytest.raises(SystemExit):
        parser.parse_args(["rl", "--engine", "verl"])
