"""The experiment's parts: task, FP8 rollout engine (against lowbit.formats), determinism, the CLI."""

import json
from dataclasses import replace

import pytest
import torch

from lowbit.cli import main
from lowbit.formats import fp8_cast
from lowbit.lab.rl.experiment import ARMS, ExperimentConfig, _response_logp, final_table, run_arm, run_experiment
from lowbit.lab.rl.model import GPT, GPTConfig
from lowbit.lab.rl.rollout import STRENGTHS, QuantStrength, fake_quant, generate, quantized_copy
from lowbit.lab.rl.task import EOS, AdditionTask


def test_task_answers_rewards_and_held_out_split():
    task = AdditionTask(3)
    prompts, answers = task.sample_train(500, torch.Generator().manual_seed(0))
    assert prompts.shape == (500, task.prompt_len) and answers.shape == (500, task.answer_len)
    text = task.decode(prompts[0])
    a, b = int(text[:3]), int(text[4:7])
    assert task.decode(answers[0]) == str(a + b).zfill(4)[::-1] + ";"
    test_prompts, test_answers = task.test_set(64)
    train_keys = {task.decode(p) for p in prompts}
    assert not train_keys & {task.decode(p) for p in test_prompts}
    assert task.reward(test_answers, test_answers).tolist() == [1.0] * 64
    wrong = test_answers.clone()
    wrong[:, 0] = (wrong[:, 0] + 1) % 10
    assert task.reward(wrong, test_answers).sum() == 0


@pytest.mark.parametrize("element", ["e4m3", "e5m2"])
@pytest.mark.parametrize("dim", [1, None])
def test_fake_quant_matches_the_formats_reference(element, dim):
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(1)) * 3
    amax = x.abs().amax() if dim is None else x.abs().amax(dim=dim, keepdim=True)
    s = amax / {"e4m3": 448.0, "e5m2": 57344.0}[element]
    expected = fp8_cast((x / s).double(), element).double() * s.double()
    torch.testing.assert_close(fake_quant(x, element, dim=dim).double(), expected, rtol=1e-6, atol=0)


def test_quantized_copy_touches_only_linear_weights():
    model = GPT(GPTConfig(), generator=torch.Generator().manual_seed(0))
    q = quantized_copy(model, STRENGTHS["e4m3-channel"])
    assert torch.equal(q.tok.weight, model.tok.weight) and torch.equal(q.ln_f.weight, model.ln_f.weight)
    assert not torch.equal(q.head.weight, model.head.weight)
    row = q.head.weight[0] / (model.head.weight[0].abs().max() / 448.0)
    torch.testing.assert_close(row, row.to(torch.float8_e4m3fn).float(), rtol=1e-5, atol=0)  # on the E4M3 grid
    with pytest.raises(ValueError, match="granularity"):
        QuantStrength("e4m3", "block")


def test_rollout_logp_matches_trainer_without_quantization_and_differs_with_it():
    task = AdditionTask(2)
    model = GPT(GPTConfig(), generator=torch.Generator().manual_seed(0))
    prompts, _ = task.sample_train(32, torch.Generator().manual_seed(1))
    out = generate(model, prompts, task.answer_len, torch.Generator().manual_seed(2))
    assert out.mask[:, 0].all()
    after_eos = torch.cumsum((out.responses == EOS).int(), 1) - (out.responses == EOS).int() > 0
    assert torch.equal(out.mask, ~after_eos)
    lp, _ = _response_logp(model, out.sequences, task.prompt_len)
    torch.testing.assert_close(torch.where(out.mask, lp, 0.0), out.logp, rtol=0, atol=1e-5)
    strength = STRENGTHS["e5m2-tensor-act"]
    fp8 = generate(quantized_copy(model, strength), prompts, task.answer_len, torch.Generator(), strength=strength)
    lp8, _ = _response_logp(model, fp8.sequences, task.prompt_len)
    assert (torch.where(fp8.mask, lp8 - fp8.logp, 0.0).abs().max()) > 1e-3


def _tiny(**kw):
    return ExperimentConfig(digits=2, rl_steps=3, eval_every=2, eval_size=16, tail=2, seeds=1, **kw)


def test_run_arm_is_deterministic_per_seed():
    cfg = _tiny()
    init = GPT(cfg.model, generator=torch.Generator().manual_seed(0)).state_dict()
    a = run_arm(cfg, ARMS["fp8-ais"], 0, init)
    b = run_arm(cfg, ARMS["fp8-ais"], 0, init)
    assert a["steps"] == b["steps"] and a["evals"] == b["evals"]
    assert len(a["steps"]["alpha"]) == 3 and a["evals"]["step"] == [0, 2, 3]
    table = final_table([a, b], cfg)
    assert table[0]["arm"] == "fp8-ais" and table[0]["acc_fp32_sd"] == 0.0


def test_parallel_runs_equal_sequential_runs():
    """``jobs`` only changes where runs execute: logs, evaluations and the final table are identical."""
    cfg = replace(_tiny(arms=("fp8-none", "fp8-ais")), seeds=2)
    init = (GPT(cfg.model, generator=torch.Generator().manual_seed(0)).state_dict(), {"steps": 0})
    seq = run_experiment(cfg, init=init, jobs=1)
    par = run_experiment(cfg, init=init, jobs=2)
    assert [(r["arm"], r["seed"]) for r in par["runs"]] == [(r["arm"], r["seed"]) for r in seq["runs"]]
    for a, b in zip(seq["runs"], par["runs"], strict=True):
        assert a["steps"] == b["steps"] and a["evals"] == b["evals"]
    timing = ("correction_share", "correction_share_sd")
    untimed = [[{k: v for k, v in row.items() if k not in timing} for row in r["table"]] for r in (seq, par)]
    assert untimed[0] == untimed[1]
    with pytest.raises(ValueError, match="jobs"):
        run_experiment(cfg, init=init, jobs=0)


def test_config_errors():
    with pytest.raises(ValueError, match="arms"):
        ExperimentConfig(arms=("fp8-nope",))
    with pytest.raises(ValueError, match="strength"):
        ExperimentConfig(strength="fp4")
    with pytest.raises(ValueError, match="group"):
        ExperimentConfig(group=1)
    with pytest.raises(ValueError, match="block_size"):
        ExperimentConfig(digits=6)


def test_cli_quick_writes_results(tmp_path, capsys):
    code = main(["rl", "--quick", "--steps", "2", "--seeds", "2", "--arms", "fp32", "fp8-ais", "--out", str(tmp_path)])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "conclusion: AIS vs none: not compared (run both fp8-ais and fp8-none, e.g. with --arms)"
    data = json.loads((tmp_path / "rl.json").read_text())
    (exp,) = data["experiments"]
    assert [r["arm"] for r in exp["table"]] == ["fp32", "fp8-ais"]
    assert exp["table"][0]["seeds"] == 2
    assert (tmp_path / "rl.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rl.json", "rl.png"]  # no temporary files left
