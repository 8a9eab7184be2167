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


def test_without_registration_transformers_warns_and_does_not_load_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documents transformers 5.23: without lowbit's registration (a process that never imports lowbit),
    transformers logs 'Unknown quantization type' and keeps random linear weights; the folder alone cannot make it
    fail. If this test fails, transformers changed its behaviour: update docs/msd-inference.md."""
    from transformers.quantizers import auto
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging as hf_logging

    _, out = tiny_checkpoint(tmp_path)
    register_transformers_quantizer()
    monkeypatch.delitem(auto.AUTO_QUANTIZATION_CONFIG_MAPPING, QUANT_METHOD)
    monkeypatch.delitem(auto.AUTO_QUANTIZER_MAPPING, QUANT_METHOD)
    with CaptureLogger(hf_logging.get_logger("transformers.quantizers.auto")) as cap:
        model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert "Unknown quantization type, got lowbit-msd" in cap.out
