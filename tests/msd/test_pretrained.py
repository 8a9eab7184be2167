"""A ``lowbit quantize`` folder loads as the quantized model: ``lowbit.msd.from_pretrained`` and a plain
``AutoModelForCausalLM.from_pretrained`` (through the registered transformers quantizer) give the tensors of
``load_quantized`` bit for bit; bad input fails with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

from lowbit.cli import main  # noqa: E402
from lowbit.msd import MSDConfig, MSDLinear, from_pretrained, load_quantized, quantize_checkpoint  # noqa: E402
from lowbit.msd.hf import QUANT_METHOD, register_transformers_quantizer  # noqa: E402

VOCAB = 64


def tiny_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def save_tiny_tokenizer(directory: Path) -> None:
    """A word-level tokenizer (``w0`` .. ``w60`` plus ``[UNK]``, ``<s>``, ``</s>``) built offline and saved as a
    Hugging Face fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "<s>", "</s>"] + [f"w{i}" for i in range(VOCAB - 3)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", eos_token="</s>", pad_token="[UNK]"
    )
    fast.save_pretrained(directory)


def tiny_checkpoint(tmp_path: Path, *, config: MSDConfig | None = None, cli: bool = False) -> tuple[Path, Path]:
    """(source folder, quantized folder): a random tiny Llama saved with ``save_pretrained`` plus a tokenizer,
    quantized with ``lowbit quantize`` (``cli``) or ``quantize_checkpoint``."""
    torch.manual_seed(0)
    src, out = tmp_path / "src", tmp_path / "out"
    AutoModelForCausalLM.from_config(tiny_config()).save_pretrained(src)
    save_tiny_tokenizer(src)
    if cli:
        assert main(["quantize", str(src), str(out), "--no-progress"]) == 0
    else:
        quantize_checkpoint(src, out, config or MSDConfig())
    return src, out


def _reference(src: Path, out: Path) -> torch.nn.Module:
    """``load_quantized`` into the float model built from the source config (the existing exact loader)."""
    return load_quantized(out, AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(src)))


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("cli", [True, False], ids=["lowbit-quantize", "quantize_checkpoint"])
def test_both_loaders_give_the_load_quantized_tensors_bit_for_bit(tmp_path: Path, cli: bool) -> None:
    src, out = tiny_checkpoint(tmp_path, cli=cli)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == QUANT_METHOD
    assert "quantization_config" not in json.loads((src / "config.json").read_text())
    assert (out / "tokenizer.json").is_file()  # copied by lowbit quantize
    ref = _reference(src, out)
    ours = from_pretrained(out)
    register_transformers_quantizer()
    register_transformers_quantizer()  # idempotent
    plain = AutoModelForCausalLM.from_pretrained(out)
    for model in (ours, plain):
        assert isinstance(model.model.layers[1].mlp.down_proj, MSDLinear)
        assert isinstance(model.lm_head, MSDLinear)
        assert not model.training
        _assert_same_state(model, ref)
    x = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(x).logits
        assert torch.equal(ours(x).logits, want) and torch.equal(plain(x).logits, want)
        # and it is the quantized source model, not random weights: close to the float logits
        float_logits = AutoModelForCausalLM.from_pretrained(src)(x).logits
    err = (want - float_logits).norm() / float_logits.norm()
    assert err < 2e-2, err


def test_mxfp4_and_dequant_configs_round_trip(tmp_path: Path) -> None:
    for i, config in enumerate((MSDConfig(weight="mxfp4"), MSDConfig(method="dequant"))):
        src, out = tiny_checkpoint(tmp_path / str(i), config=config)
        model = from_pretrained(out)
        assert model.model.layers[0].self_attn.q_proj.config == config
        _assert_same_state(model, _reference(src, out))


def test_bad_input_fails_clearly(tmp_path: Path) -> None:
    src, out = tiny_checkpoint(tmp_path)
    register_transformers_quantizer()
    with pytest.raises(ValueError, match="load in float32"):
        AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    with pytest.raises(FileNotFoundError, match="not a lowbit"):
        from_pretrained(src)  # a float folder
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        from_pretrained(tmp_path / "missing")
    # a flipped byte in the tensor file: both loaders refuse (SHA-256 in lowbit_quant.json)
    tensors = out / "model.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-3] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted or truncated"):
        from_pretrained(out)
    with pytest.raises(ValueError, match="corrupted or truncated"):
        AutoModelForCausalLM.from_pretrained(out)
    # lowbit_quant.json removed but config.json still says lowbit-msd
    (out / "lowbit_quant.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"lowbit_quant\.json"):
        AutoModelForCausalLM.from_pretrained(out)
    bad = json.loads((src / "config.json").read_text())
    bad["quantization_config"] = {"quant_method": QUANT_METHOD, "format": "lowbit-msd", "version": 99}
    (tmp_path / "v99").mkdir()
    (tmp_path / "v99" / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="version 99"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "v99")


def test_without_registration_plain_transformers_refuses_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers 5.23 skips an unknown quantization_config with a warning and would keep random linear
    weights; the guards (an empty ``<layer>.weight`` per quantized layer) turn that into a size-mismatch error.
    If this test fails, transformers changed its behaviour: update docs/msd-inference.md."""
    from transformers.quantizers import auto
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging as hf_logging

    _, out = tiny_checkpoint(tmp_path)
    register_transformers_quantizer()
    monkeypatch.delitem(auto.AUTO_QUANTIZATION_CONFIG_MAPPING, QUANT_METHOD)
    monkeypatch.delitem(auto.AUTO_QUANTIZER_MAPPING, QUANT_METHOD)
    with CaptureLogger(hf_logging.get_logger("transformers.quantizers.auto")) as cap:
        with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
            AutoModelForCausalLM.from_pretrained(out)
    assert "Unknown quantization type, got lowbit-msd" in cap.out
    # the base model (no lm_head) meets the decoder layers' guards as well
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        transformers.AutoModel.from_pretrained(out)


def test_a_process_that_never_imports_lowbit_cannot_load_the_folder_silently(tmp_path: Path) -> None:
    """The user's case: a fresh interpreter, only transformers imported."""
    import subprocess
    import sys

    _, out = tiny_checkpoint(tmp_path)
    code = (
        "import sys\n"
        "from transformers import AutoModelForCausalLM\n"
        "try:\n"
        f"    AutoModelForCausalLM.from_pretrained({str(out)!r})\n"
        "except RuntimeError as e:\n"
        "    print('REFUSED', 'lowbit' in sys.modules, e)\n"
        "else:\n"
        "    print('LOADED')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("REFUSED False"), run.stdout + run.stderr[-2000:]
    assert "MISMATCH" in run.stdout + run.stderr


def test_guards_are_listed_empty_and_checked(tmp_path: Path) -> None:
    from safetensors import safe_open

    _, out = tiny_checkpoint(tmp_path)
    meta = json.loads((out / "lowbit_quant.json").read_text())
    assert sorted(meta["guards"]) == sorted(f"{layer}.weight" for layer in meta["layers"])
    with safe_open(out / "model.safetensors", "pt") as f:
        for name in meta["guards"]:
            t = f.get_tensor(name)
            assert t.dtype == torch.int8 and t.shape == (0,)
    # a crafted list may not drop a real tensor
    meta["guards"].append("model.embed_tokens.weight")
    (out / "lowbit_quant.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not empty"):
        from_pretrained(out)
    meta["guards"] = "lm_head.weight"
    (out / "lowbit_quant.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="must be a list"):
        from_pretrained(out)


def test_save_quantized_writes_guards_too(tmp_path: Path) -> None:
    from lowbit.msd import quantize_model, save_quantized

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config())
    quantize_model(model, MSDConfig())
    save_quantized(model, tmp_path / "q")
    meta = json.loads((tmp_path / "q" / "lowbit_quant.json").read_text())
    assert len(meta["guards"]) == len(meta["layers"]) > 0
    again = load_quantized(tmp_path / "q", AutoModelForCausalLM.from_config(tiny_config()))
    _assert_same_state(again, model)
