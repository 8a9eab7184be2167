"""Decode attention inside transformers: float32 DynamicCache + sdpa vs QuantizedCache (optimum-quanto, 4-bit) vs
lowbit Int8KVCache + MSD attention; plus prefill against lowbit's flash reference as the attention function.

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_kv_decode.py [--quick]

Model: a Llama-architecture model with real attention shapes (head_dim 128, 16 query heads, 8 KV heads, hidden
1024, random weights, 2 layers so attention dominates). Decode: every cache is filled with the same float K/V
context (random, ``update`` per layer, so no 16K-token prefill is needed) and then ``steps`` single-token forward
passes are timed one by one (median ms/token over the steps). Columns: ms/token, ratio to the float32 cache, KV
bytes (and ratio), logits relative L2 of each step against the float32 cache. Prefill: ``--prefill`` tokens
through the model with sdpa, with ``lowbit.attention.flash_attention`` registered as the attention function and
with the MSD attention filling an Int8KVCache.

Writes ``benchmarks/results/kv_decode.json``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks._harness import measure, print_table, write_results


def _model(layers: int) -> Any:
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(
        hidden_size=1024,
        intermediate_size=2048,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=1024,
        max_position_embeddings=32768,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval()


def _clone(model: Any, attn: str | None) -> Any:
    from transformers import AutoModelForCausalLM

    other = AutoModelForCausalLM.from_config(copy.deepcopy(model.config)).eval()
    other.load_state_dict(model.state_dict())
    if attn == "msd":
        from lowbit.attention import use_msd_attention

        use_msd_attention(other)
    elif attn == "flash":
        _use_flash(other)
    return other


def _use_flash(model: Any) -> None:
    """Today's reference: lowbit.attention.flash_attention as a transformers attention function."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    from lowbit.attention import flash_attention

    def forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        out = flash_attention(query, key, value, causal=attention_mask is None, scale=scaling, mask=attention_mask)
        return out.to(query.dtype).transpose(1, 2).contiguous(), None

    AttentionInterface.register("lowbit_fa2_reference", forward)
    AttentionMaskInterface.register("lowbit_fa2_reference", sdpa_mask)
    model.set_attn_implementation("lowbit_fa2_reference")  # no "flash" in the name: transformers takes it for a kernel


def _kv_bytes(cache: Any) -> int:
    from transformers import DynamicCache

    from lowbit.attention import Int8KVCache

    if isinstance(cache, Int8KVCache):
        return cache.nbytes
    if isinstance(cache, DynamicCache):
        return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    total = 0  # QuantizedCache: the packed quantized tensors (their inner tensors) plus the float residual
    for layer in cache.layers:
        for qt in (layer._quantized_keys, layer._quantized_values):
            names, _ = qt.__tensor_flatten__()
            total += sum(getattr(qt, n).nbytes for n in names)
        total += layer.keys.nbytes + layer.values.nbytes
    return total


def _filled_cache(kind: str, model: Any, ctx: int) -> Any:
    from transformers import DynamicCache, QuantizedCache

    from lowbit.attention import Int8KVCache

    cfg = model.config
    if kind == "float32":
        cache = DynamicCache(config=cfg)
    elif kind == "quanto4":
        cache = QuantizedCache("quanto", cfg, nbits=4)
    else:
        cache = Int8KVCache(cfg)
    g = torch.Generator().manual_seed(1)
    for layer in range(cfg.num_hidden_layers):
        k = torch.randn(1, cfg.num_key_value_heads, ctx, cfg.head_dim, generator=g)
        v = torch.randn(1, cfg.num_key_value_heads, ctx, cfg.head_dim, generator=g)
        cache.update(k, v, layer)
    return cache


@torch.no_grad()
def decode_rows(model: Any, contexts: list[int], steps: int) -> list[dict[str, Any]]:
    setups = {"float32": _clone(model, None), "quanto4": _clone(model, None), "int8+msd": _clone(model, "msd")}
    rows = []
    for ctx in contexts:
        tokens = torch.randint(0, model.config.vocab_size, (steps + 1,), generator=torch.Generator().manual_seed(2))
        logits: dict[str, list[torch.Tensor]] = {}
        results: dict[str, dict[str, Any]] = {}
        for name, m in setups.items():
            cache = _filled_cache(name, m, ctx)
            kv = _kv_bytes(cache)
            times, outs = [], []
            for i in range(steps + 1):  # the first step is the warm-up
                pos = torch.tensor([[ctx + i]])
                start = time.perf_counter()
                out = m(tokens[i].view(1, 1), past_key_values=cache, use_cache=True, position_ids=pos)
                times.append(time.perf_counter() - start)
                outs.append(out.logits[0, -1])
            logits[name] = outs[1:]
            results[name] = {"ms_per_token": float(torch.tensor(times[1:]).median()) * 1e3, "kv_bytes": kv}
        base = results["float32"]
        for name, r in results.items():
            rel = max(float((a - b).norm() / b.norm()) for a, b in zip(logits[name], logits["float32"], strict=True))
            rows.append(
                {
                    "context": ctx,
                    "setup": name,
                    "ms_per_token": r["ms_per_token"],
                    "vs_float32": r["ms_per_token"] / base["ms_per_token"],
                    "kv_bytes": r["kv_bytes"],
                    "kv_vs_float32": r["kv_bytes"] / base["kv_bytes"],
                    "logits_rel_l2_max": rel,
                }
            )
    return rows


@torch.no_grad()
def prefill_rows(model: Any, length: int, repeats: int) -> list[dict[str, Any]]:
    from transformers import DynamicCache

    from lowbit.attention import Int8KVCache

    ids = torch.randint(0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(3))
    setups = {
        "sdpa+float32": (_clone(model, None), lambda m: DynamicCache(config=m.config)),
        "lowbit flash": (_clone(model, "flash"), lambda m: DynamicCache(config=m.config)),
        "int8+msd": (_clone(model, "msd"), lambda m: Int8KVCache(m.config)),
    }
    ref = setups["sdpa+float32"][0](ids).logits
    rows = []
    for name, (m, make_cache) in setups.items():
        timing = measure(lambda m=m, mk=make_cache: m(ids, past_key_values=mk(m), use_cache=True), repeats=repeats)
        out = m(ids, past_key_values=make_cache(m), use_cache=True).logits
        rows.append(
            {
                "prefill": length,
                "setup": name,
                "ms": timing.median * 1e3,
                "ms_spread": [min(timing.samples) * 1e3, max(timing.samples) * 1e3],
                "logits_rel_l2": float((out - ref).norm() / ref.norm()),
            }
        )
    base = rows[0]["ms"]
    for r in rows:
        r["vs_sdpa"] = r["ms"] / base
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="contexts 1K and 4K and 16K, 4 steps, prefill 512")
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    model = _model(args.layers)
    contexts = [1024, 4096, 16384]
    steps, prefill, repeats = (4, 512, 3) if args.quick else (16, 2048, 5)
    decode = decode_rows(model, contexts, steps)
    print_table(
        ["context", "setup", "ms/token", "vs f32", "KV bytes", "KV vs f32", "logits relL2"],
        [
            [r["context"], r["setup"], r["ms_per_token"], r["vs_float32"], r["kv_bytes"], r["kv_vs_float32"],
             r["logits_rel_l2_max"]]
            for r in decode
        ],
    )  # fmt: skip
    print()
    pre = prefill_rows(model, prefill, repeats)
    print_table(
        ["prefill", "setup", "ms", "vs sdpa", "logits relL2"],
        [[r["prefill"], r["setup"], r["ms"], r["vs_sdpa"], r["logits_rel_l2"]] for r in pre],
    )
    path = write_results(
        "kv_decode",
        {
            "mode": "quick" if args.quick else "full",
            "threads": torch.get_num_threads(),
            "model": {"layers": args.layers, "hidden": 1024, "heads": 16, "kv_heads": 8, "head_dim": 128},
            "decode_steps": steps,
            "decode": decode,
            "prefill": pre,
            "seconds": time.perf_counter() - started,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
