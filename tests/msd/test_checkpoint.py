"""save_quantized / load_quantized round trips and the streaming ``lowbit quantize`` command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lowbit.cli import main
from lowbit.msd.checkpoint import load_quantized, save_quantized
from lowbit.msd.config import MSDConfig
from lowbit.msd.convert import quantize_checkpoint
from lowbit.msd.quantize_model import quantize_model, quantized_layers


class Tiny(nn.Module):
    """A small LM-shaped model: embedding, two blocks of linears, a head tied to the embedding."""

    def __init__(self, tied: bool = True) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(50, 64)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"up": nn.Linear(64, 96), "down": nn.Linear(96, 64, bias=False)}) for _ in range(2)
        )
        self.lm_head = nn.Linear(64, 50, bias=False)
        if tied:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(ids)
        for block in self.layers:
            h = h + block["down"](torch.relu(block["up"](h)))
        return self.lm_head(h)


def _tiny(seed: int = 0, tied: bool = True) -> Tiny:
    torch.manual_seed(seed)
    return Tiny(tied)


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize(
    "config", [MSDConfig(), MSDConfig(weight="mxfp4"), MSDConfig(group_size=32), MSDConfig(method="dequant")]
)
def test_save_load_round_trip_is_bit_exact(tmp_path: Path, config: MSDConfig) -> None:
    model = quantize_model(_tiny(), config, filter_fn=lambda name, m: name != "lm_head")
    save_quantized(model, tmp_path / "q")
    fresh = _tiny(seed=1)  # other random weights: everything must come from the checkpoint
    load_quantized(tmp_path / "q", fresh)
    _assert_same_state(model, fresh)
    assert fresh.lm_head.weight is fresh.embed_tokens.weight  # still tied
    ids = torch.randint(0, 50, (2, 9))
    assert torch.equal(model(ids), fresh(ids))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_save_refuses_to_overwrite_and_needs_quantized_layers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="quantize_model"):
        save_quantized(_tiny(), tmp_path / "q")
    model = quantize_model(_tiny(), MSDConfig(), filter_fn=lambda n, m: n != "lm_head")
    save_quantized(model, tmp_path / "q")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_quantized(model, tmp_path / "q")
    save_quantized(model, tmp_path / "q", overwrite=True)


def test_load_detects_corruption_truncation_and_mismatch(tmp_path: Path) -> None:
    model = quantize_model(_tiny(), MSDConfig(), filter_fn=lambda n, m: n != "lm_head")
    save_quantized(model, tmp_path / "q")
    tensor_file = tmp_path / "q" / "model.safetensors"
    data = bytearray(tensor_file.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit pattern inside the tensor data
    tensor_file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        load_quantized(tmp_path / "q", _tiny())
    tensor_file.write_bytes(bytes(data[:-100]))
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load_quantized(tmp_path / "q", _tiny())
    tensor_file.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_quantized(tmp_path / "q", _tiny())
    save_quantized(model, tmp_path / "q2")

    class Wider(Tiny):
        def __init__(self) -> None:
            super().__init__()
            self.layers[0]["up"] = nn.Linear(64, 128)

    with pytest.raises(ValueError, match="config mismatch"):
        load_quantized(tmp_path / "q2", Wider())
    with pytest.raises(FileNotFoundError, match="not a lowbit"):
        load_quantized(tmp_path, _tiny())


def _write_source(root: Path, model: nn.Module, shards: int, config_json: dict | None = None) -> Path:
    """Write ``model``'s float state as a Hugging Face style safetensors directory (optionally sharded)."""
    root.mkdir(parents=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    names = sorted(state)
    if shards == 1:
        save_file(state, str(root / "model.safetensors"))
    else:
        weight_map = {}
        for i in range(shards):
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: state[n] for n in names[i::shards]}
            save_file(part, str(root / fname))
            weight_map.update(dict.fromkeys(part, fname))
        (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    cfg = {"vocab_size": 50, "hidden_size": 64, "num_hidden_layers": 2, **(config_json or {})}
    (root / "config.json").write_text(json.dumps(cfg))
    return root


@pytest.mark.parametrize("weight", ["int8", "mxfp4"])
def test_cli_quantize_streams_shards_and_loads_bit_exactly(tmp_path: Path, weight: str, capsys) -> None:
    src = _write_source(tmp_path / "src", _tiny(), shards=2)
    code = main(["quantize", str(src), str(tmp_path / "out"), "--weight", weight, "--method", "msd", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "quantized 4 weights" in out and "peak RSS" in out
    assert (tmp_path / "out" / "config.json").is_file()
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    loaded = load_quantized(tmp_path / "out", _tiny(seed=3))
    expected = quantize_model(_tiny(), MSDConfig(weight=weight), filter_fn=lambda n, m: n != "lm_head")
    _assert_same_state(expected, loaded)
    assert set(quantized_layers(loaded)) == {f"layers.{i}.{p}" for i in range(2) for p in ("up", "down")}


def test_cli_errors_leave_no_output(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    src = _write_source(tmp_path / "src", _tiny(), shards=2)
    shard = next(src.glob("model-00002*.safetensors"))
    shard_bytes = shard.read_bytes()
    shard.unlink()
    assert main(["quantize", str(src), str(out), "--no-progress"]) == 2
    assert "missing" in capsys.readouterr().err
    shard.write_bytes(shard_bytes[: len(shard_bytes) - 64])
    assert main(["quantize", str(src), str(out), "--no-progress"]) == 2
    assert "truncated" in capsys.readouterr().err
    shard.write_bytes(shard_bytes[:8] + b"{not json" + shard_bytes[17:])
    assert main(["quantize", str(src), str(out), "--no-progress"]) == 2
    assert "corrupted" in capsys.readouterr().err
    shard.write_bytes(shard_bytes)
    (src / "config.json").write_text(json.dumps({"vocab_size": 51, "hidden_size": 64, "num_hidden_layers": 3}))
    assert main(["quantize", str(src), str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "vocab_size=51" in err and "num_hidden_layers=3" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_nan_weight_fails_midway_without_a_half_written_directory(tmp_path: Path) -> None:
    model = _tiny()
    with torch.no_grad():
        model.layers[1]["down"].weight[3, 3] = float("nan")
    src = _write_source(tmp_path / "src", model, shards=1)
    with pytest.raises(ValueError, match="NaN"):
        quantize_checkpoint(src, tmp_path / "out", MSDConfig())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_streaming_peak_memory_stays_near_the_largest_tensor(tmp_path: Path) -> None:
    """16 float32 tensors of 16 MiB (256 MiB): the quantize run's peak RSS rises far less than the model size."""
    src = tmp_path / "big"
    src.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(4):
        part = {f"model.layers.{4 * i + j}.mlp.proj.weight": torch.randn(2048, 2048, generator=gen) for j in range(4)}
        save_file(part, str(src / f"model-{i + 1:05d}-of-00004.safetensors"))
    weight_map = {f"model.layers.{4 * i + j}.mlp.proj.weight": f"model-{i + 1:05d}-of-00004.safetensors"
                  for i in range(4) for j in range(4)}  # fmt: skip
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    proc = subprocess.run(
        [sys.executable, "-m", "lowbit", "quantize", str(src), str(tmp_path / "out"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    match = re.search(r"peak RSS ([\d.]+) MiB \(at start ([\d.]+) MiB", proc.stdout)
    assert match, proc.stdout
    rise = float(match.group(1)) - float(match.group(2))
    assert rise < 128, proc.stdout  # model 256 MiB, largest tensor 16 MiB
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out" / "model-00001-of-00004.safetensors"), "pt") as f:
        q = f.get_tensor("model.layers.0.mlp.proj.qweight")
    assert q.dtype == torch.int8 and q.shape == (2048, 2048) and q.abs().max() == 127
