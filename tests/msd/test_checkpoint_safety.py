"""Crafted inputs for ``lowbit quantize`` and ``load_quantized``: nothing outside the given folders is read or
written, the source is never lost, the final rename never replaces what the run did not check, interrupted runs
leave nothing behind, headers are validated like the ``safetensors`` library does, and bad weights are clear
errors naming the tensor."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lowbit.cli import main
from lowbit.msd import checkpoint, safetensors_io
from lowbit.msd.checkpoint import load_quantized, save_quantized
from lowbit.msd.config import MSDConfig
from lowbit.msd.convert import quantize_checkpoint
from lowbit.msd.quantize_model import quantize_model
from tests.msd.test_checkpoint import _tiny, _write_source

INDEX = "model.safetensors.index.json"


def _snapshot(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_size


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _no_hidden(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def _raw_safetensors(path: Path, header: dict, data: bytes) -> None:
    """A safetensors file written by hand (so its header can be anything)."""
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.fixture(params=["renameat2", "fallback"])
def rename_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with Linux ``renameat2`` and with the portable fallback (``renameat2`` unavailable)."""
    if request.param == "fallback":
        monkeypatch.setattr(checkpoint, "_renameat2", lambda src, dst, flags: False)
    return request.param


# ---------------------------------------------------------------------------------------------------------------
# file names from the index and the metadata
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["parent", "absolute", "etc_passwd", "subfolder", "dotdot", "empty", "not_tensor"])
def test_index_with_outside_paths_touches_nothing_outside(tmp_path: Path, kind: str, capsys) -> None:
    src = _write_source(tmp_path / "src", _tiny(), shards=2)
    victim = tmp_path / "victim.safetensors"
    save_file({"x": torch.arange(8000, dtype=torch.float32)}, str(victim))
    before = _snapshot(victim)
    (src / "sub").mkdir()
    name = {
        "parent": "../victim.safetensors",
        "absolute": str(victim),
        "etc_passwd": "../../../../etc/passwd",
        "subfolder": "sub/model.safetensors",
        "dotdot": "..",
        "empty": "",
        "not_tensor": "config.json",
    }[kind]
    index = json.loads((src / INDEX).read_text())
    first = sorted(index["weight_map"])[0]
    index["weight_map"][first] = name
    (src / INDEX).write_text(json.dumps(index))
    out = tmp_path / "out"
    assert main(["quantize", str(src), str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert repr(name) in err and ("plain name" in err or "non-empty string" in err or ".safetensors" in err), err
    with pytest.raises(ValueError, match=r"plain name|non-empty|must be named"):
        quantize_checkpoint(src, out, MSDConfig())
    assert _snapshot(victim) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "victim.safetensors"]


def test_symlinked_shards_and_index_are_followed_to_regular_files(tmp_path: Path) -> None:
    """The Hugging Face cache layout: snapshot files are links to blobs elsewhere."""
    real = _write_source(tmp_path / "blobs", _tiny(), shards=2)
    snap = tmp_path / "snapshot"
    snap.mkdir()
    for p in real.iterdir():
        if p.suffix == ".safetensors" or p.name == INDEX:
            (snap / p.name).symlink_to(p)
    summary = quantize_checkpoint(snap, tmp_path / "out", MSDConfig())
    assert summary.quantized == 4
    load_quantized(tmp_path / "out", _tiny(seed=2))


@pytest.mark.parametrize("target", ["device", "folder", "dangling"])
def test_shard_link_to_something_else_than_a_regular_file_is_refused(tmp_path: Path, target: str) -> None:
    src = _write_source(tmp_path / "src", _tiny(), shards=1)
    (src / "model.safetensors").unlink()
    (tmp_path / "folder").mkdir()
    dest = {"device": Path("/dev/null"), "folder": tmp_path / "folder", "dangling": tmp_path / "nothing"}[target]
    (src / "model.safetensors").symlink_to(dest)
    error = FileNotFoundError if target == "dangling" else ValueError
    with pytest.raises(error, match=r"not a regular file|missing"):
        quantize_checkpoint(src, tmp_path / "out", MSDConfig())
    assert not (tmp_path / "out").exists()
    _no_hidden(tmp_path)


@pytest.mark.parametrize("kind", ["parent", "absolute", "subfolder", "not_tensor"])
def test_load_refuses_metadata_naming_files_outside_the_folder(tmp_path: Path, kind: str) -> None:
    model = quantize_model(_tiny(), MSDConfig(), filter_fn=lambda n, m: n != "lm_head")
    save_quantized(model, tmp_path / "q")
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes((tmp_path / "q" / "model.safetensors").read_bytes())  # valid, same SHA-256
    (tmp_path / "q" / "sub").mkdir()
    (tmp_path / "q" / "sub" / "model.safetensors").write_bytes(outside.read_bytes())
    name = {
        "parent": "../outside.safetensors",
        "absolute": str(outside),
        "subfolder": "sub/model.safetensors",
        "not_tensor": "lowbit_quant.json",
    }[kind]
    meta_path = tmp_path / "q" / "lowbit_quant.json"
    meta = json.loads(meta_path.read_text())
    meta["files"] = {name: next(iter(meta["files"].values()))}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"plain name|must be named") as info:
        load_quantized(tmp_path / "q", _tiny())
    assert repr(name) in str(info.value)


def test_load_rejects_malformed_metadata_fields(tmp_path: Path) -> None:
    model = quantize_model(_tiny(), MSDConfig(), filter_fn=lambda n, m: n != "lm_head")
    save_quantized(model, tmp_path / "q")
    meta_path = tmp_path / "q" / "lowbit_quant.json"
    meta = json.loads(meta_path.read_text())
    for field, value in (("files", ["model.safetensors"]), ("files", {}), ("layers", None)):
        meta_path.write_text(json.dumps({**meta, field: value}))
        with pytest.raises(ValueError, match=rf"'{field}' must be a JSON object|lists no tensor files"):
            load_quantized(tmp_path / "q", _tiny())


def test_symlinked_extra_files_are_neither_read_nor_copied(tmp_path: Path, capsys) -> None:
    src = _write_source(tmp_path / "src", _tiny(), shards=1)
    secret = tmp_path / "secret.txt"
    secret.write_text("private key")
    (src / "README.md").symlink_to(secret)
    wrong_config = tmp_path / "wrong.json"
    wrong_config.write_text(json.dumps({"vocab_size": 51, "hidden_size": 64, "num_hidden_layers": 2}))
    (src / "config.json").unlink()
    (src / "config.json").symlink_to(wrong_config)  # not read: its mismatch is not reported
    (src / "tokenizer.json").write_text("{}")
    out = tmp_path / "out"
    assert main(["quantize", str(src), str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "not copied" in err and "README.md" in err and "config.json" in err
    assert sorted(p.name for p in out.iterdir()) == ["lowbit_quant.json", "model.safetensors", "tokenizer.json"]
    summary = quantize_checkpoint(src, out, MSDConfig(), overwrite=True)
    assert summary.skipped == ("README.md", "config.json")


# ---------------------------------------------------------------------------------------------------------------
# the source is never lost
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["same", "parent", "child", "link_to_source", "dotdot"])
@pytest.mark.parametrize("overwrite", [True, False])
def test_out_dir_is_never_the_source_its_parent_or_inside_it(
    tmp_path: Path, where: str, overwrite: bool, capsys
) -> None:
    root = tmp_path / "models"
    src = _write_source(root / "src", _tiny(), shards=2)
    (tmp_path / "link").symlink_to(src)
    out = {
        "same": src,
        "parent": root,
        "child": src / "quantized",
        "link_to_source": tmp_path / "link",
        "dotdot": src / "x" / "..",
    }[where]
    before = _tree(tmp_path)
    argv = ["quantize", str(src), str(out), "--no-progress"] + (["--overwrite"] if overwrite else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model directory" in err and "refused" in err, err
    assert _tree(tmp_path) == before
    assert not (src / "quantized").exists()
    _no_hidden(root)
    _no_hidden(src)


def test_out_dir_through_a_link_and_dotdot_goes_where_the_kernel_resolves_it(tmp_path: Path) -> None:
    """``SRC/lnk/../q`` with ``lnk -> elsewhere/d`` is ``elsewhere/q``: checked and written there, not in SRC."""
    src = _write_source(tmp_path / "src", _tiny(), shards=1)
    (tmp_path / "elsewhere" / "d").mkdir(parents=True)
    (src / "lnk").symlink_to(tmp_path / "elsewhere" / "d")
    before = _tree(src)
    quantize_checkpoint(src, src / "lnk" / ".." / "q", MSDConfig())
    assert (tmp_path / "elsewhere" / "q" / "lowbit_quant.json").is_file()
    assert _tree(src) == before and not (src / "q").exists()
    (src / "sub").mkdir()
    (tmp_path / "lnk2").symlink_to(src / "sub")  # lnk2/.. is SRC itself
    with pytest.raises(ValueError, match="is the model directory"):
        quantize_checkpoint(src, tmp_path / "lnk2" / "..", MSDConfig(), overwrite=True)
    with pytest.raises(ValueError, match="contains the model directory"):
        quantize_checkpoint(src, tmp_path / "lnk2" / ".." / "..", MSDConfig(), overwrite=True)
    assert _tree(src) == before


def test_overwrite_replaces_only_an_empty_folder_or_a_lowbit_output(tmp_path: Path, rename_mode: str) -> None:
    src = _write_source(tmp_path / "src", _tiny(), shards=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a lowbit checkpoint"):
        quantize_checkpoint(src, out, MSDConfig(), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    quantize_checkpoint(src, out, MSDConfig(), overwrite=True)  # empty folder
    first = (out / "model.safetensors").read_bytes()
    quantize_checkpoint(src, out, MSDConfig(weight="mxfp4"), overwrite=True)  # a previous output
    assert (out / "model.safetensors").read_bytes() != first
    load_quantized(out, _tiny(seed=4))
    _no_hidden(tmp_path)
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(out)
    for target in ("file", "link"):
        with pytest.raises(FileExistsError, match="not a directory"):
            quantize_checkpoint(src, tmp_path / target, MSDConfig(), overwrite=True)
    assert (tmp_path / "file").read_text() == "x" and (tmp_path / "link").is_symlink()


# ---------------------------------------------------------------------------------------------------------------
# the final rename never replaces what this run did not check
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["empty", "files"])
def test_folder_created_during_the_run_is_not_replaced(tmp_path: Path, rename_mode: str, content: str) -> None:
    src = _write_source(tmp_path / "src", _tiny(), shards=2)
    out = tmp_path / "out"

    def meanwhile(name: str, nbytes: int) -> None:
        if not out.exists():
            out.mkdir()
            if content == "files":
                (out / "theirs.txt").write_text("another run")

    with pytest.raises(FileExistsError, match="created or replaced by another process"):
        quantize_checkpoint(src, out, MSDConfig(), progress=meanwhile)
    assert sorted(p.name for p in out.iterdir()) == ([] if content == "empty" else ["theirs.txt"])
    _no_hidden(tmp_path)


def test_two_concurrent_runs_to_one_out_dir_second_fails(tmp_path: Path, rename_mode: str) -> None:
    """A second run that starts and finishes while the first is running: the first fails, keeping the second."""
    src = _write_source(tmp_path / "src", _tiny(), shards=2)
    out = tmp_path / "out"
    done: list[int] = []

    def other_run(name: str, nbytes: int) -> None:
        if not done:
            done.append(1)
            quantize_checkpoint(src, out, MSDConfig(weight="mxfp4"))

    with pytest.raises(FileExistsError, match="another process"):
        quantize_checkpoint(src, out, MSDConfig(), progress=other_run)
    meta = json.loads((out / "lowbit_quant.json").read_text())
    assert {e["config"]["weight"] for e in meta["layers"].values()} == {"mxfp4"}
    _no_hidden(tmp_path)


def test_overwrite_does_not_replace_a_folder_swapped_in_during_the_run(tmp_path: Path, rename_mode: str) -> None:
    src = _write_source(tmp_path / "src", _tiny(), shards=1)
    out = tmp_path / "out"
    quantize_checkpoint(src, out, MSDConfig())

    def swap(name: str, nbytes: int) -> None:
        if not (out / "theirs.txt").exists():
            os.rename(out, tmp_path / "elsewhere")
            out.mkdir()
            (out / "theirs.txt").write_text("another run")

    with pytest.raises(FileExistsError, match="another process"):
        quantize_checkpoint(src, out, MSDConfig(), overwrite=True, progress=swap)
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert (tmp_path / "elsewhere" / "lowbit_quant.json").is_file()
    _no_hidden(tmp_path)


def test_fallback_overwrite_keeps_the_previous_output_when_out_dir_is_taken_between_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without renameat2 the overwrite is two renames; a folder created between them is kept, and so is the
    previous output (under a visible name that no cleanup removes)."""
    monkeypatch.setattr(checkpoint, "_renameat2", lambda src, dst, flags: False)
    src = _write_source(tmp_path / "src", _tiny(), shards=1)
    out = tmp_path / "out"
    quantize_checkpoint(src, out, MSDConfig())
    real = checkpoint._rename_noreplace

    def racing(a: Path, b: Path) -> bool:
        if b == out and not out.exists():
            out.mkdir()
            (out / "theirs.txt").write_text("another run")
        return real(a, b)

    monkeypatch.setattr(checkpoint, "_rename_noreplace", racing)
    with pytest.raises(FileExistsError, match="is kept as"):
        quantize_checkpoint(src, out, MSDConfig(), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    (kept,) = tmp_path.glob("out.previous-*")
    assert (kept / "lowbit_quant.json").is_file()
    _no_hidden(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# interrupted runs leave nothing behind
# ---------------------------------------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_folders_of_dead_runs_are_removed(tmp_path: Path) -> None:
    src = _write_source(tmp_path / "src", _tiny(), shards=1)
    out = tmp_path / "out"
    host = checkpoint._host_tag()
    dead = tmp_path / f".out.lowbit-tmp.{host}.{_dead_pid()}.0a1b2c3d"
    alive = tmp_path / f".out.lowbit-tmp.{host}.{os.getppid()}.0a1b2c3d"  # a live process's run: kept
    other_host = tmp_path / f".out.lowbit-tmp.00000000.{_dead_pid()}.0a1b2c3d"  # cannot tell: kept
    for d in (dead, alive, other_host):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x" * 1000)
    quantize_checkpoint(src, out, MSDConfig())
    assert not dead.exists() and alive.is_dir() and other_host.is_dir()


def test_previous_output_moved_aside_by_a_killed_overwrite_is_restored(tmp_path: Path) -> None:
    src = _write_source(tmp_path / "src", _tiny(), shards=1)
    out = tmp_path / "out"
    quantize_checkpoint(src, out, MSDConfig())
    aside = tmp_path / f".out.lowbit-old.{checkpoint._host_tag()}.{_dead_pid()}.0a1b2c3d"
    os.rename(out, aside)  # a run killed between its two renames (no renameat2)
    with pytest.raises(FileExistsError, match="exists"):  # restored first, so it exists
        quantize_checkpoint(src, out, MSDConfig())
    assert (out / "lowbit_quant.json").is_file() and not aside.exists()


_SLOW_RUN = """
import sys, time
from lowbit.msd import convert
real = convert._quantize_rows
def slow(w, config):
    print("quantizing", flush=True)
    time.sleep(120)
    return real(w, config)
convert._quantize_rows = slow
from lowbit.cli import main
sys.exit(main(sys.argv[1:]))
"""


@contextmanager
def _slow_run(src: Path, out: Path) -> Iterator[subprocess.Popen]:
    """A ``lowbit quantize`` subprocess paused inside its first weight, its temporary folder present."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_RUN, "quantize", str(src), str(out), "--no-progress"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "quantizing"
        assert [p for p in out.parent.iterdir() if p.name.startswith(".out.lowbit-tmp.")]
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_removes_the_temporary_folder(tmp_path: Path, sig: str) -> None:
    src = _write_source(tmp_path / "src", _tiny(), shards=1)
    with _slow_run(src, tmp_path / "out") as proc:
        proc.send_signal(getattr(signal, sig))
        assert proc.wait(timeout=60) == 128 + getattr(signal, sig)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_sigkill_leftover_is_removed_by_the_next_run(tmp_path: Path) -> None:
    src = _write_source(tmp_path / "src", _tiny(), shards=1)
    with _slow_run(src, tmp_path / "out") as proc:
        proc.kill()
        proc.wait(timeout=60)
    deadline = time.monotonic() + 10
    while not [p for p in tmp_path.iterdir() if p.name.startswith(".")] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.lowbit-tmp.")]  # SIGKILL cannot clean
    quantize_checkpoint(src, tmp_path / "out", MSDConfig())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


# ---------------------------------------------------------------------------------------------------------------
# headers validated like the safetensors library; weights checked
# ---------------------------------------------------------------------------------------------------------------


def _two_weights(offsets_b: list[int], data_len: int) -> tuple[dict, bytes]:
    header = {
        "layers.0.up.weight": {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, 128]},
        "layers.0.down.weight": {"dtype": "F32", "shape": [4, 8], "data_offsets": offsets_b},
    }
    return header, torch.randn(data_len // 4).numpy().tobytes()


@pytest.mark.parametrize("case", ["same_bytes", "overlap", "gap", "trailing", "duplicate"])
def test_overlapping_or_gapped_offsets_are_rejected(tmp_path: Path, case: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    offsets, size = {
        "same_bytes": ([0, 128], 128),
        "overlap": ([64, 192], 192),
        "gap": ([160, 288], 288),
        "trailing": ([128, 256], 320),
    }.get(case, ([128, 256], 256))
    header, data = _two_weights(offsets, size)
    if case == "duplicate":
        raw = json.dumps(header).replace("layers.0.down", "layers.0.up").encode()
        raw += b" " * (-len(raw) % 8)
        (src / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    else:
        _raw_safetensors(src / "model.safetensors", header, data)
    with pytest.raises(ValueError, match=r"not a valid safetensors file|corrupted"):
        quantize_checkpoint(src, tmp_path / "out", MSDConfig())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_own_header_checks_agree_with_the_library(tmp_path: Path) -> None:
    """``_read_header`` checks offsets itself too: with the library check bypassed, overlap and gaps still fail."""
    for offsets, size in (([64, 192], 192), ([160, 288], 288)):
        header, data = _two_weights(offsets, size)
        _raw_safetensors(tmp_path / "f.safetensors", header, data)
        with pytest.raises(ValueError, match=r"overlaps|gap"):
            safetensors_io.parse_header(tmp_path / "f.safetensors")


@pytest.mark.parametrize("weight", ["int8", "mxfp4"])
def test_f64_weight_beyond_float32_range_names_the_tensor(tmp_path: Path, weight: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    w = torch.randn(8, 64, dtype=torch.float64)
    w[2, 5] = 1e300
    save_file({"layers.0.up.weight": w, "norm.weight": torch.ones(64)}, str(src / "model.safetensors"))
    with pytest.raises(ValueError, match=r"'layers\.0\.up\.weight'.*beyond the float32 range"):
        quantize_checkpoint(src, tmp_path / "out", MSDConfig(weight=weight))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    w[2, 5] = 1e30  # large but representable: fine
    save_file({"layers.0.up.weight": w}, str(src / "model.safetensors"))
    quantize_checkpoint(src, tmp_path / "out", MSDConfig(weight=weight))


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"layers.0.up.weight": torch.zeros(0, 64)}, r"'layers\.0\.up\.weight'.*\[0, 64\].*empty"),
        ({"layers.0.up.weight": torch.zeros(64, 0)}, r"'layers\.0\.up\.weight'.*\[64, 0\].*empty"),
        ({"layers.0.up.weight": torch.ones(8, 64, dtype=torch.int32)}, r"'layers\.0\.up\.weight'.*I32.*floating"),
        ({"layers.0.up.weight": torch.ones(8, 64, dtype=torch.bool)}, r"'layers\.0\.up\.weight'.*BOOL.*floating"),
        (
            {"layers.0.up.weight": torch.ones(8, 64), "layers.0.up.bias": torch.ones(9)},
            r"layers\.0\.up\.bias has 9 elements",
        ),
    ],
)
def test_bad_weights_are_clear_errors(tmp_path: Path, tensors: dict, message: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    save_file(tensors, str(src / "model.safetensors"))
    with pytest.raises(ValueError, match=message):
        quantize_checkpoint(src, tmp_path / "out", MSDConfig())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_negative_shape_is_a_clear_error(tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _raw_safetensors(
        src / "model.safetensors",
        {"layers.0.up.weight": {"dtype": "F32", "shape": [-1, -64], "data_offsets": [0, 0]}},
        b"",
    )
    assert main(["quantize", str(src), str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not a valid safetensors file" in err and "-1" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------------
# permissions follow the umask
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_output_modes_follow_the_umask(tmp_path: Path, umask: None, mask: int) -> None:
    src = _write_source(tmp_path / "src", _tiny(), shards=2)
    (src / "tokenizer.json").write_text("{}")
    os.umask(mask)
    quantize_checkpoint(src, tmp_path / "out", MSDConfig())
    model = quantize_model(_tiny(), MSDConfig(), filter_fn=lambda n, m: n != "lm_head")
    save_quantized(model, tmp_path / "saved")
    for folder in (tmp_path / "out", tmp_path / "saved"):
        assert folder.stat().st_mode & 0o777 == 0o777 & ~mask, folder
        for f in folder.iterdir():
            assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f
