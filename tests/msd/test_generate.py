"""``lowbit generate`` runs a ``lowbit quantize`` folder: the text is the quantized model's own greedy generation,
sampling is seeded, ``--kv int8`` runs lowbit's INT8 cache, speeds are printed; bad input fails clearly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from transformers import AutoTokenizer

from lowbit.cli import build_parser, main
from lowbit.msd import from_pretrained
from lowbit.msd.generate import GenerateSettings, timed_generate
from tests.msd.test_pretrained import tiny_checkpoint

PROMPT = "w1 w2 w3 w4"
SPEED = re.compile(r"prefill: (\d+) tokens in [\d.]+ ms = [\d.]+ tokens/s; decode: (\d+) new tokens, [\d.]+ tokens/s")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("gen"), cli=True)[1]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["generate", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_greedy_text_is_the_quantized_models_generation(checkpoint: Path, capsys) -> None:
    code, out, _ = _run(capsys, str(checkpoint), "--prompt", PROMPT, "--max-new-tokens", "12")
    assert code == 0
    text, speed = out.strip().splitlines()
    m = SPEED.search(speed)
    assert m and m.group(1) == "4" and m.group(2) == "12" and "greedy" in speed
    model, tok = from_pretrained(checkpoint), AutoTokenizer.from_pretrained(checkpoint)
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        want = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert text == PROMPT + tok.decode(want[0, ids.shape[1] :], skip_special_tokens=True)


def test_sampling_is_seeded_and_int8_kv_runs(checkpoint: Path, capsys) -> None:
    args = [str(checkpoint), "--prompt", PROMPT, "--max-new-tokens", "10", "--do-sample", "--temperature", "0.8"]
    runs = [_run(capsys, *args, "--top-p", "0.9", "--seed", "5")[1].splitlines()[0] for _ in range(2)]
    assert runs[0] == runs[1]
    assert "sampled" in _run(capsys, *args)[1]
    code, out, _ = _run(capsys, str(checkpoint), "--prompt", PROMPT, "--max-new-tokens", "8", "--kv", "int8")
    assert code == 0 and "KV cache int8" in out and SPEED.search(out).group(2) == "8"


def test_timed_generate_counts_tokens_and_left_padded_batches(checkpoint: Path) -> None:
    model, tok = from_pretrained(checkpoint), AutoTokenizer.from_pretrained(checkpoint)
    tok.padding_side = "left"
    enc = tok(["w1 w2 w3 w4 w5", "w7 w8"], return_tensors="pt", padding=True)
    settings = GenerateSettings(max_new_tokens=6)
    t = timed_generate(model, enc["input_ids"], settings, attention_mask=enc["attention_mask"])
    assert t.new_tokens == 6 and t.sequences.shape == (2, 11) and t.prompt_tokens == 10
    assert t.prefill_s > 0 and t.decode_s > 0 and t.decode_tokens_per_s > 0
    # the left-padded row generates what it generates alone (up to its EOS, after which the batch pads it)
    alone = timed_generate(model, tok(["w7 w8"], return_tensors="pt")["input_ids"], GenerateSettings(max_new_tokens=6))
    n = alone.new_tokens
    assert n >= 1 and torch.equal(alone.sequences[0, 2:], t.sequences[1, 5 : 5 + n])


def test_bad_input_fails_clearly(checkpoint: Path, tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, str(checkpoint), "--prompt", PROMPT, "--max-new-tokens", "300")
    assert code == 2 and "max_position_embeddings=256" in err
    code, _, err = _run(capsys, str(checkpoint), "--prompt", PROMPT, "--max-new-tokens", "0")
    assert code == 2 and "max_new_tokens must be a positive int" in err
    code, _, err = _run(capsys, str(checkpoint), "--prompt", PROMPT, "--do-sample", "--temperature", "0")
    assert code == 2 and "temperature must be > 0" in err
    code, _, err = _run(capsys, str(checkpoint), "--prompt", PROMPT, "--top-p", "1.5")
    assert code == 2 and "top_p" in err
    code, _, err = _run(capsys, str(checkpoint), "--prompt", "")
    assert code == 2 and "empty" in err
    code, _, err = _run(capsys, str(tmp_path / "nowhere"), "--prompt", PROMPT)
    assert code == 2 and "config.json" in err
    with pytest.raises(ValueError, match="non-empty"):
        timed_generate(from_pretrained(checkpoint), torch.zeros(0, 3, dtype=torch.long), GenerateSettings())


def test_every_option_has_help() -> None:
    parser = build_parser(["generate"])
    sub = next(a for a in parser._actions if a.dest == "command").choices["generate"]
    for action in sub._actions:
        if action.dest != "help":
            assert action.help and len(action.help) > 10, action.dest
