"""The ``lowbit tokenize`` command (the report section is tested in ``tests/lab/tokenize``)."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from lowbit.cli import main
from lowbit.lab.tokenize.corpus import make_text

from .conftest import reference


def test_cli_npy_jsonl_verify_stats(tmp_path, capsys, get_preset):
    text = make_text("mixed", 50_000, seed=5)
    f1 = tmp_path / "a.txt"
    f1.write_text(text, encoding="utf-8")
    f2 = tmp_path / "b.txt"
    f2.write_text("second file ✓", encoding="utf-8")
    tok = get_preset("deepseek-v4")
    out = tmp_path / "ids.npy"
    rc = main(["tokenize", str(f1), "--tokenizer", "deepseek-v4", "--workers", "2", "--out", str(out), "--verify",
               "--stats", "--min-parallel-chars", "0", "--backend", "library"])  # fmt: skip
    assert rc == 0
    assert np.load(out).tolist() == reference(tok.obj, text)
    err = capsys.readouterr().err
    assert "speedup" in err and "verified identical" in err
    assert not list(tmp_path.glob(".ids.npy.*"))  # no temporary file left behind
    jl = tmp_path / "ids.jsonl"
    assert main(["tokenize", str(f1), str(f2), "--tokenizer", "deepseek-v4", "--out", str(jl)]) == 0
    lines = [json.loads(line) for line in jl.read_text().splitlines()]
    assert [d["file"] for d in lines] == [str(f1), str(f2)]
    assert lines[0]["ids"] == reference(tok.obj, text)
    assert lines[1]["ids"] == reference(tok.obj, "second file ✓")


def test_cli_progress_bar_on_large_input(tmp_path, monkeypatch, get_preset):
    """Inputs of 1 MB and more show a progress bar (rich, on stderr) driven by the chunk callbacks."""
    import lowbit.tokenize.command as command

    updates: list[int] = []
    real = command.ParallelTokenizer.encode_with_stats

    def spy(self, text, **kw):
        cb = kw.get("on_progress")
        assert cb is not None  # the bar is wired to the encoder
        kw["on_progress"] = lambda done, total: (updates.append(done), cb(done, total))
        return real(self, text, **kw)

    monkeypatch.setattr(command.ParallelTokenizer, "encode_with_stats", spy)
    text = make_text("prose", command.PROGRESS_MIN_CHARS + 1000)
    path, out = tmp_path / "big.txt", tmp_path / "ids.npy"
    path.write_text(text, encoding="utf-8")
    args = ["tokenize", str(path), "--tokenizer", "mistral-v1", "--workers", "2", "--out", str(out)]
    assert main(args) == 0
    assert np.load(out).tolist() == reference(get_preset("mistral-v1").obj, text)
    assert len(updates) > 1 and updates[-1] == len(text)


def test_cli_stdin(monkeypatch, capsys, get_preset):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Hello world, tokenization!")))
    assert main(["tokenize", "--tokenizer", "cl100k"]) == 0
    assert capsys.readouterr().out.split() == ["9906", "1917", "11", "4037", "2065", "0"]


def test_cli_invalid_utf8(tmp_path, capsys, get_preset):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xe4\xb8 world")
    assert main(["tokenize", str(bad), "--tokenizer", "mistral-v1"]) == 2
    assert "invalid UTF-8 at byte offset 6" in capsys.readouterr().err
    assert main(["tokenize", str(bad), "--tokenizer", "mistral-v1", "--errors", "replace"]) == 0
    sp = get_preset("mistral-v1").obj
    assert capsys.readouterr().out.split() == [str(i) for i in sp.encode("hello \ufffd world")]


def test_cli_bad_arguments(tmp_path, capsys):
    f = tmp_path / "a.txt"
    f.write_text("x")
    assert main(["tokenize", str(f), "--out", str(tmp_path / "ids.txt")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["tokenize", str(f), str(f), "--out", str(tmp_path / "ids.npy")]) == 2
    assert main(["tokenize", str(f), "--tokenizer", "nope"]) == 2
    assert "presets" in capsys.readouterr().err
    assert main(["tokenize", str(tmp_path / "missing.txt")]) == 2


@pytest.mark.slow
def test_large_file_memory_bounded(tmp_path, get_preset):
    """A 20 MB file: peak memory stays a small multiple of the text (no per-chunk copies of the whole text)."""
    import resource

    text = make_text("code", 20_000_000)
    path = tmp_path / "big.txt"
    path.write_text(text, encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = tmp_path / "big.npy"
    assert main(["tokenize", str(path), "--tokenizer", "cl100k", "--out", str(out), "--no-progress"]) == 0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 400  # text (20 MB str + 20 MB bytes) + ids (~5M x 4 B) + slack; not O(chunks x text)
    assert np.load(out).tolist() == get_preset("cl100k").obj.encode_ordinary(text)


def test_every_option_has_help_and_the_default_tokenizer_is_named():
    import argparse

    from lowbit.tokenize.command import register

    parser = argparse.ArgumentParser(prog="lowbit")
    register(parser.add_subparsers())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["tokenize"]
    for action in sub._actions:
        assert action.help and action.help.strip(), action.option_strings or action.dest
    text = sub.format_help()
    assert "default: qwen2" in text and "--chunk-chars" in text and "at least 256" in text
