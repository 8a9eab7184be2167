"""Quantized inference inside transformers (issue 12): prefill and decode of a Llama-architecture model with real
shapes, every setup a CPU user would pick, on one run.

The model is built from a config (no download; random weights ``N(0, 0.02²)``): Llama-3.2-1B dimensions by default
(hidden 2048, intermediate 8192, 32/8 heads of 64, vocabulary 128256), ``--layers`` cuts the depth (16 in the real
model) to fit the time. Setups (every ``nn.Linear`` including ``lm_head`` quantized where a setup quantizes):

=====================  ============================================================================================
``fp32``               float32 weights, transformers' default cache (``DynamicCache``) and sdpa
``bf16``               the model in bfloat16 (AMX-BF16 / AVX512-BF16 GEMMs where the CPU has them)
``quantize_dynamic``   ``torch.ao.quantization.quantize_dynamic`` (INT8 weights, one dynamic INT8 activation pass)
``torchao_int8_wo``    torchao 0.18 ``Int8WeightOnlyConfig`` (the weight-only baseline of the accuracy columns)
``torchao_int8_dyn``   torchao 0.18 ``Int8DynamicActivationInt8WeightConfig``
``quanto_kv4``         float32 weights + transformers ``QuantizedCache(backend="quanto", nbits=4)``
``msd``                lowbit ``MSDLinear`` (INT8 weights, two INT8 activation passes), default cache
``msd_int8kv``         ``msd`` + lowbit ``Int8KVCache`` read by ``use_msd_attention``
=====================  ============================================================================================

Measured per setup: prefill seconds and tokens/s at each prefill length (a fresh cache, median of repeats);
decode ms per token at each context (the cache filled with ``C`` tokens of random K/V through ``cache.update`` so
long contexts cost no prefill, then ``--decode-steps`` single-token steps, median step); KV bytes at the largest
context (``Int8KVCache.nbytes``, the float tensors of ``DynamicCache``, the quanto tensors); peak RSS above the
process before the setup was built (``/proc/self/clear_refs``). Accuracy on a real prompt (``--accuracy-prompt``
tokens, then ``--accuracy-new`` greedy tokens with each setup's own cache): relative L2 of the last prompt logits
and greedy-token agreement, against ``fp32`` and against ``torchao_int8_wo``.

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_generate.py [--quick] [--layers N]

Writes ``benchmarks/results/generate.json`` (``generate_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import resource
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import measure, print_table, write_results

LLAMA_3_2_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "num_hidden_layers": 16,
}
SETUPS = ("fp32", "bf16", "quantize_dynamic", "torchao_int8_wo", "torchao_int8_dyn", "quanto_kv4", "msd", "msd_int8kv")


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def build_float_model(layers: int, vocab: int, max_pos: int) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig

    dims = dict(LLAMA_3_2_1B, num_hidden_layers=layers, vocab_size=vocab)
    config = LlamaConfig(**dims, max_position_embeddings=max_pos, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.02)
    return model.eval()


def make_setup(name: str, base: torch.nn.Module) -> tuple[torch.nn.Module, Callable[[], Any]]:
    """(model, new_cache) for one setup; the model is a copy of ``base``."""
    from transformers import DynamicCache, QuantizedCache

    model = copy.deepcopy(base)
    cache: Callable[[], Any] = lambda: DynamicCache(config=model.config)  # noqa: E731
    if name == "bf16":
        model = model.to(torch.bfloat16)
    elif name == "quantize_dynamic":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    elif name in ("torchao_int8_wo", "torchao_int8_dyn"):
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

        cfg = Int8WeightOnlyConfig() if name == "torchao_int8_wo" else Int8DynamicActivationInt8WeightConfig()
        quantize_(model, cfg)
    elif name == "quanto_kv4":
        cache = lambda: QuantizedCache(backend="quanto", config=model.config, nbits=4)  # noqa: E731
    elif name in ("msd", "msd_int8kv"):
        from lowbit.msd import MSDConfig, quantize_model

        quantize_model(model, MSDConfig())
        if name == "msd_int8kv":
            from lowbit.attention import Int8KVCache, use_msd_attention

            use_msd_attention(model)
            cache = lambda: Int8KVCache(model.config)  # noqa: E731
    elif name != "fp32":
        raise ValueError(f"unknown setup {name!r}")
    return model.eval(), cache


def _tensor_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of the tensors reachable from ``obj`` (tensors, quanto QTensors via their inner tensors, lists)."""
    seen = set() if seen is None else seen
    if obj is None or id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        if hasattr(obj, "__tensor_flatten__") and type(obj) is not torch.Tensor:
            names, _ = obj.__tensor_flatten__()
            return sum(_tensor_bytes(getattr(obj, n), seen) for n in names)
        return obj.untyped_storage().nbytes() if obj.numel() else 0
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(o, seen) for o in obj)
    return 0


def kv_bytes(cache: Any) -> int:
    if hasattr(cache, "nbytes"):
        return int(cache.nbytes)
    total = 0
    for layer in cache.layers:
        for attr in ("keys", "values", "_quantized_keys", "_quantized_values"):
            total += _tensor_bytes(getattr(layer, attr, None))
    return total


def fill_cache(cache: Any, model: torch.nn.Module, context: int, dtype: torch.dtype) -> None:
    """Put ``context`` tokens of random K/V into every layer through ``cache.update`` (as the attention would)."""
    cfg = model.config
    gen = torch.Generator().manual_seed(1)
    shape = (1, cfg.num_key_value_heads, context, cfg.head_dim)
    for i in range(cfg.num_hidden_layers):
        k = torch.randn(shape, generator=gen).to(dtype)
        v = torch.randn(shape, generator=gen).to(dtype)
        cache.update(k, v, i)


def run_setup(name: str, base: torch.nn.Module, args: argparse.Namespace, ids: torch.Tensor) -> dict[str, Any]:
    gc.collect()
    rss0 = _rss_now()
    peak_ok = _reset_peak()
    model, new_cache = make_setup(name, base)
    dtype = torch.bfloat16 if name == "bf16" else torch.float32
    row: dict[str, Any] = {"setup": name}
    with torch.inference_mode():
        for p in args.prefill:
            t = measure(lambda p=p: model(ids[:, :p], past_key_values=new_cache()), repeats=args.repeats, warmup=1)
            row[f"prefill{p}_s"] = t.median
            row[f"prefill{p}_tok_s"] = p / t.median
        for c in args.contexts:
            cache = new_cache()
            fill_cache(cache, model, c, dtype)
            step_ids = ids[:, :1]
            times = []
            for s in range(args.decode_steps + 1):
                pos = torch.tensor([[c + s]])
                start = time.perf_counter()
                model(step_ids, past_key_values=cache, position_ids=pos, cache_position=pos[0])
                times.append(time.perf_counter() - start)
            times = sorted(times[1:])  # the first step warms up
            row[f"decode{c}_ms"] = 1e3 * times[len(times) // 2]
            row[f"decode{c}_tok_s"] = 1e3 / row[f"decode{c}_ms"]
            if c == max(args.contexts):
                row["kv_bytes"] = kv_bytes(cache)
                row["kv_tokens"] = c + args.decode_steps + 1
            del cache
        # accuracy: a real prompt, then greedy tokens with this setup's own cache
        prompt = ids[:, : args.accuracy_prompt]
        logits = model(prompt, past_key_values=new_cache()).logits[0, -1].float()
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            past_key_values=new_cache(),
            max_new_tokens=args.accuracy_new,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
        )
    row["_logits"] = logits
    row["_tokens"] = out[0, prompt.shape[1] :]
    row["peak_rss_mib"] = (_peak_rss() - rss0) / 2**20 if peak_ok else float("nan")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 layers, vocabulary 32000, prefill 128/512, contexts 1K/4K")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers (real model: 16; default 4, quick 2)")
    ap.add_argument("--vocab", type=int, default=None, help="vocabulary size (default 128256 as Llama-3.2-1B)")
    ap.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated subset of {','.join(SETUPS)}")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.layers = args.layers or (2 if args.quick else 4)
    args.vocab = args.vocab or (32000 if args.quick else LLAMA_3_2_1B["vocab_size"])
    args.prefill = (128, 512) if args.quick else (512, 2048)
    args.contexts = (1024, 4096) if args.quick else (1024, 4096, 16384)
    args.decode_steps = 8 if args.quick else 64
    args.repeats = 1 if args.quick else 3
    args.accuracy_prompt, args.accuracy_new = (64, 8) if args.quick else (256, 32)
    setups = [s for s in args.setups.split(",") if s]
    unknown = set(setups) - set(SETUPS)
    if unknown:
        ap.error(f"unknown setups {sorted(unknown)}")
    max_pos = max(args.contexts) + args.decode_steps + 8
    base = build_float_model(args.layers, args.vocab, max_pos)
    ids = torch.randint(0, args.vocab, (1, max(args.prefill)), generator=torch.Generator().manual_seed(2))
    rows = []
    for name in setups:
        print(f"[{name}] ...", flush=True)
        try:
            rows.append(run_setup(name, base, args, ids))
        except Exception as exc:  # a setup that cannot run here is reported, not hidden
            rows.append({"setup": name, "error": f"{type(exc).__name__}: {exc}"})
            print(f"[{name}] failed: {exc}", flush=True)
    by = {r["setup"]: r for r in rows if "error" not in r}
    for r in rows:
        if "error" in r:
            continue
        for ref in ("fp32", "torchao_int8_wo"):
            if ref in by:
                a, b = r["_logits"], by[ref]["_logits"]
                r[f"logits_rel_l2_vs_{ref}"] = float((a - b).norm() / b.norm())
                ta, tb = r["_tokens"], by[ref]["_tokens"]
                n = min(len(ta), len(tb))
                r[f"greedy_agree_vs_{ref}"] = float((ta[:n] == tb[:n]).float().mean()) if n else float("nan")
    fp32 = by.get("fp32")
    for r in rows:
        if "error" in r:
            continue
        if fp32:
            for c in args.contexts:
                r[f"decode{c}_vs_fp32"] = r[f"decode{c}_ms"] / fp32[f"decode{c}_ms"]
            r["kv_bytes_vs_fp32"] = r["kv_bytes"] / fp32["kv_bytes"]
        del r["_logits"], r["_tokens"]
    cmax = max(args.contexts)
    header = ["setup"] + [f"prefill{p} tok/s" for p in args.prefill] + [f"decode{c} ms" for c in args.contexts]
    header += [f"KV MiB @{cmax}", "KV ÷ fp32", "peak MiB", "relL2 fp32", "agree fp32", "relL2 wo", "agree wo"]
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["setup"], r["error"][:60]] + [""] * (len(header) - 2))
            continue
        table.append(
            [r["setup"]]
            + [r[f"prefill{p}_tok_s"] for p in args.prefill]
            + [r[f"decode{c}_ms"] for c in args.contexts]
            + [
                r["kv_bytes"] / 2**20,
                r.get("kv_bytes_vs_fp32", math.nan),
                r["peak_rss_mib"],
                r.get("logits_rel_l2_vs_fp32", math.nan),
                r.get("greedy_agree_vs_fp32", math.nan),
                r.get("logits_rel_l2_vs_torchao_int8_wo", math.nan),
                r.get("greedy_agree_vs_torchao_int8_wo", math.nan),
            ]
        )
    print_table(header, table)
    import torchao
    import transformers

    payload = {
        "quick": args.quick,
        "model": dict(LLAMA_3_2_1B, num_hidden_layers=args.layers, vocab_size=args.vocab),
        "prefill": list(args.prefill),
        "contexts": list(args.contexts),
        "decode_steps": args.decode_steps,
        "repeats": args.repeats,
        "accuracy": {"prompt_tokens": args.accuracy_prompt, "new_tokens": args.accuracy_new},
        "threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torchao": torchao.__version__,
        },
        "rows": rows,
    }
    path = write_results("generate_quick" if args.quick else "generate", payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
