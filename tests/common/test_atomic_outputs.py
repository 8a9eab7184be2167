"""Outputs get the user's umask (not mkstemp's 0600 / mkdtemp's 0700) and nothing partial is left behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lowbit._atomic import atomic_write, atomic_write_text, temporary_dir


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_files_and_folders_follow_the_umask(tmp_path, umask) -> None:
    atomic_write_text(tmp_path / "a.json", "{}")
    assert _mode(tmp_path / "a.json") == 0o666 & ~umask
    d = temporary_dir(tmp_path, ".x-")
    assert _mode(d) == 0o777 & ~umask


def test_a_failed_write_leaves_nothing(tmp_path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_tokenize_ids_follow_the_umask(tmp_path, umask) -> None:
    from lowbit.cli import main

    src = tmp_path / "a.txt"
    src.write_text("hello world " * 100, encoding="utf-8")
    out = tmp_path / "ids.npy"
    assert main(["tokenize", str(src), "--tokenizer", "cl100k", "--out", str(out)]) == 0
    assert _mode(out) == 0o666 & ~umask  # was 0600 whatever the umask
    assert np.load(out).size > 0


def test_formats_json_follows_the_umask(tmp_path, umask) -> None:
    from lowbit.formats.command import _write_json

    _write_json(tmp_path / "f.json", {"a": 1})
    assert _mode(tmp_path / "f.json") == 0o666 & ~umask
