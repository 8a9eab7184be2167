"""Quantized inference inside transformers (issue 12): prefill and decode of a Llama-architecture model with real
shapes, every setup a CPU user would pick, on one run; accuracy on a small Llama trained on the spot.

Two models, kept apart in every column name:

* **speed / memory model** (``big``): built from a config (no download; random weights ``N(0, 0.02²)``) with
  Llama-3.2-1B dimensions (hidden 2048, intermediate 8192, 32/8 heads of 64, vocabulary 128256, untied
  ``lm_head``) and ``--layers`` of its 16 decoder layers (default 16). Its accuracy figures (``big_*``: relative L2
  of the last prompt logits, greedy agreement) are on random weights, where greedy tokens are near ties: the
  agreement there measures ties, not quality.
* **accuracy model** (``trained_*``): a 4-layer Llama (hidden 256, 4.2 M parameters, byte-level BPE of 2048
  tokens) trained in a few minutes on this Python's standard-library sources and cached
  (``benchmarks/_trained_llama.py``; its held-out loss is recorded next to the unigram and uniform baselines).
  On ``--acc-samples`` held-out windows: a ``--acc-prompt``-token prompt prefilled with the setup's own cache,
  then the next ``--acc-cont`` real tokens fed one at a time through that cache (teacher forcing, so the
  quantized KV cache is read as in decoding): perplexity of those tokens and its ratio to float32; relative L2 of
  all the logits and top-1 agreement at every position, against ``fp32`` and against ``torchao_int8_wo``; and
  ``--acc-new`` greedy tokens from the prompt (``model.generate`` with the setup's cache): position-wise
  agreement and the mean length of the agreeing prefix.

Setups (every ``nn.Linear`` including ``lm_head`` quantized where a setup quantizes):

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

Each setup runs in its own subprocess (``--worker``), which builds the float model, converts it in place, frees
the float weights (``gc`` + glibc ``malloc_trim``) and only then resets the peak-RSS counter
(``/proc/self/clear_refs``), so ``run_peak`` is that setup's own footprint while it prefills, decodes and
generates (``VmHWM``; also per phase, ``prefill_peak``, ``decode_peak``, ``accuracy_peak``, the counter reset
between phases), ``loaded`` its resident size once built, both also given above the process's RSS after
the imports (``imports``). ``build_peak`` (``VmHWM`` before the reset: the float model and the converted copy
side by side) is recorded too (``getrusage``'s ``ru_maxrss`` is not: ``clear_refs`` resets the counter it
reads). The float reference outputs go between processes as files.

Measured on the big model: prefill seconds and tokens/s at each prefill length (a fresh cache, median of
``--repeats`` after one warm-up); decode ms per token at each context: the cache filled with ``C`` tokens of
random K/V through ``cache.update`` (as the attention would; long contexts cost no prefill), then
``--decode-steps`` single-token steps (``--decode-steps-long`` at the largest context) after one warm-up step,
median and spread ``(max - min) / median``; KV bytes at the largest context (``Int8KVCache.nbytes``, the float
tensors of ``DynamicCache``, the quanto tensors).

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_generate.py [--quick] [--layers N]

Writes ``benchmarks/results/generate.json`` (``generate_quick.json`` with ``--quick``; ``--out NAME`` to change),
rewritten after every setup (``"complete": false`` until the last one).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import measure, print_table, write_results

from lowbit._timing import Timing

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
REFS = ("fp32", "torchao_int8_wo")
MIB = 2**20


# ----------------------------------------------------------------------------------------------- memory counters
def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5); False where the kernel does not allow it."""
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
    raise RuntimeError("no VmHWM in /proc/self/status")


def _release_freed() -> None:
    """Collect garbage and hand freed heap pages back to the kernel (glibc ``malloc_trim``), so the RSS counts
    live memory only."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# ----------------------------------------------------------------------------------------------- models, setups
def build_float_model(layers: int, vocab: int, max_pos: int) -> torch.nn.Module:
    """The Llama-3.2-1B-shaped float32 model with ``layers`` decoder layers and random ``N(0, 0.02²)`` weights."""
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


def make_setup(name: str, model: torch.nn.Module) -> tuple[torch.nn.Module, Callable[[], Any]]:
    """Convert ``model`` (float32) in place to setup ``name``; returns ``(model, new_cache)``."""
    from transformers import DynamicCache, QuantizedCache

    cache: Callable[[], Any] = lambda: DynamicCache(config=model.config)  # noqa: E731
    if name == "bf16":
        model = model.to(torch.bfloat16)
    elif name == "quantize_dynamic":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
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


def _greedy(model: torch.nn.Module, prompt: torch.Tensor, new_cache: Callable[[], Any], n: int) -> torch.Tensor:
    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        past_key_values=new_cache(),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    return out[0, prompt.shape[1] :]


# ----------------------------------------------------------------------------------------------- accuracy metrics
def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖₂ / ‖b‖₂`` over all elements, in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of positions where the token ids are equal."""
    if a.shape != b.shape:
        raise ValueError(f"token shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a == b).double().mean())


def agreeing_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """Number of leading positions where the token ids are equal (the greedy continuations coincide)."""
    diff = (a != b).nonzero()
    return int(diff[0, 0]) if diff.numel() else int(a.numel())


def nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position next-token negative log-likelihood (nats), float64: ``logsumexp(z) − z[target]``."""
    z = logits.double()
    return torch.logsumexp(z, dim=-1) - z.gather(-1, targets[:, None])[:, 0]


def teacher_forced_logits(
    model: torch.nn.Module, new_cache: Callable[[], Any], window: torch.Tensor, prompt: int
) -> torch.Tensor:
    """Logits at positions ``0 .. len(window) − 2`` (each predicts the next token): the first ``prompt`` tokens
    in one prefill, then every further real token fed alone through the same cache."""
    cache = new_cache()
    ids = window[None]
    out = [model(ids[:, :prompt], past_key_values=cache).logits[0].float()]
    for t in range(prompt, window.numel() - 1):
        pos = torch.tensor([[t]])
        out.append(
            model(ids[:, t : t + 1], past_key_values=cache, position_ids=pos, cache_position=pos[0]).logits[0].float()
        )
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------- the worker
def worker(name: str, spec: dict[str, Any], out_dir: Path) -> None:
    """One setup in this process: the big model (speed, memory, random-weight accuracy), then the trained one."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    # every library any setup uses is imported before the baseline RSS, so no setup is charged for an import
    import optimum.quanto  # noqa: F401
    import torchao.quantization  # noqa: F401
    import transformers  # noqa: F401

    from lowbit.attention import Int8KVCache  # noqa: F401
    from lowbit.msd import MSDLinear  # noqa: F401

    _release_freed()
    rss_imports = _rss_now()
    row: dict[str, Any] = {"setup": name}
    t0 = time.perf_counter()
    model = build_float_model(spec["layers"], spec["vocab"], spec["max_pos"])
    model, new_cache = make_setup(name, model)
    _release_freed()
    row["build_s"] = time.perf_counter() - t0
    row["build_peak_mib"] = _peak_rss() / MIB
    rss_loaded = _rss_now()
    if not _reset_peak():
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs): peak memory would include the build")
    dtype = torch.bfloat16 if name == "bf16" else torch.float32
    ids = torch.randint(0, spec["vocab"], (1, max(spec["prefill"])), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        for p in spec["prefill"]:
            t = measure(lambda p=p: model(ids[:, :p], past_key_values=new_cache()), repeats=spec["repeats"], warmup=1)
            row[f"prefill{p}_s"] = t.median
            row[f"prefill{p}_spread"] = t.spread
            row[f"prefill{p}_tok_s"] = p / t.median
        phase_peak = {"prefill": _peak_rss()}
        _reset_peak()
        for c in spec["contexts"]:
            steps = spec["decode_steps_long"] if c == max(spec["contexts"]) else spec["decode_steps"]
            cache = new_cache()
            fill_cache(cache, model, c, dtype)
            times = []
            for s in range(steps + 1):
                pos = torch.tensor([[c + s]])
                start = time.perf_counter()
                model(ids[:, :1], past_key_values=cache, position_ids=pos, cache_position=pos[0])
                times.append(time.perf_counter() - start)
            t = Timing(tuple(times[1:]))  # the first step warms up
            row[f"decode{c}_ms"] = 1e3 * t.median
            row[f"decode{c}_spread"] = t.spread
            row[f"decode{c}_steps"] = steps
            row[f"decode{c}_tok_s"] = 1e3 / row[f"decode{c}_ms"]
            if c == max(spec["contexts"]):
                row["kv_bytes"] = kv_bytes(cache)
                row["kv_tokens"] = c + steps + 1
            del cache
        phase_peak["decode"] = _peak_rss()
        _reset_peak()
        prompt = ids[:, : spec["big_prompt"]]
        big_logits = model(prompt, past_key_values=new_cache()).logits[0, -1].float()
        big_tokens = _greedy(model, prompt, new_cache, spec["big_new"])
    phase_peak["accuracy"] = _peak_rss()
    run_peak = max(phase_peak.values())
    row["memory_mib"] = {
        "imports": rss_imports / MIB,
        "loaded": rss_loaded / MIB,
        "run_peak": run_peak / MIB,
        "loaded_above_imports": (rss_loaded - rss_imports) / MIB,
        "run_peak_above_imports": (run_peak - rss_imports) / MIB,
        **{f"{k}_peak_above_imports": (v - rss_imports) / MIB for k, v in phase_peak.items()},
        "build_peak": row.pop("build_peak_mib"),
    }
    model = new_cache = None  # the big model goes before the trained one is measured
    _release_freed()

    # the trained model: teacher-forced logits through the setup's own cache, and greedy continuations
    from _trained_llama import Recipe, load_or_train

    tmodel, _, _, _ = load_or_train(Recipe(steps=spec["train_steps"]), log=lambda *_: None)
    tmodel, tcache = make_setup(name, tmodel)
    windows = torch.load(spec["acc_windows"])
    t0 = time.perf_counter()
    logits, greedy = [], []
    with torch.inference_mode():
        for w in windows:
            logits.append(teacher_forced_logits(tmodel, tcache, w, spec["acc_prompt"]))
            greedy.append(_greedy(tmodel, w[None, : spec["acc_prompt"]], tcache, spec["acc_new"]))
    row["trained_eval_s"] = time.perf_counter() - t0
    torch.save(
        {
            "big_logits": big_logits,
            "big_tokens": big_tokens,
            "logits": torch.stack(logits),
            "greedy": torch.stack(greedy),
        },
        out_dir / f"{name}.pt",
    )
    (out_dir / f"{name}.json").write_text(json.dumps(row))


# ----------------------------------------------------------------------------------------------- the parent
def compare(
    rows: list[dict[str, Any]], outputs: dict[str, dict[str, torch.Tensor]], windows: torch.Tensor, spec: dict
) -> None:
    """Add the accuracy columns to ``rows`` (in place) from the saved outputs of each setup."""
    p = spec["acc_prompt"]
    targets = windows[:, 1:]
    for r in rows:
        o = outputs.get(r["setup"])
        if o is None:
            continue
        cont = [nll(o["logits"][i, p - 1 :], targets[i, p - 1 :]) for i in range(windows.shape[0])]
        r["trained_ppl"] = math.exp(float(torch.cat(cont).mean()))
        for ref in REFS:
            ro = outputs.get(ref)
            if ro is None:
                continue
            r[f"big_logits_rel_l2_vs_{ref}"] = rel_l2(o["big_logits"], ro["big_logits"])
            r[f"big_greedy_agree_vs_{ref}"] = agreement(o["big_tokens"], ro["big_tokens"])
            r[f"trained_logits_rel_l2_vs_{ref}"] = float(
                torch.tensor([rel_l2(a, b) for a, b in zip(o["logits"], ro["logits"], strict=True)]).mean()
            )
            r[f"trained_top1_agree_vs_{ref}"] = agreement(o["logits"].argmax(-1), ro["logits"].argmax(-1))
            r[f"trained_greedy_agree_vs_{ref}"] = agreement(o["greedy"], ro["greedy"])
            r[f"trained_greedy_prefix_vs_{ref}"] = float(
                sum(agreeing_prefix(a, b) for a, b in zip(o["greedy"], ro["greedy"], strict=True)) / len(o["greedy"])
            )
    fp32 = next((r for r in rows if r["setup"] == "fp32" and "error" not in r), None)
    for r in rows:
        if "error" in r or fp32 is None:
            continue
        r["trained_ppl_vs_fp32"] = r["trained_ppl"] / fp32["trained_ppl"]
        for c in spec["contexts"]:
            r[f"decode{c}_vs_fp32"] = r[f"decode{c}_ms"] / fp32[f"decode{c}_ms"]
        r["kv_bytes_vs_fp32"] = r["kv_bytes"] / fp32["kv_bytes"]


def print_tables(rows: list[dict[str, Any]], spec: dict[str, Any]) -> None:
    ok = [r for r in rows if "error" not in r]
    cmax = max(spec["contexts"])
    header = ["setup"] + [f"prefill{p} tok/s" for p in spec["prefill"]] + [f"decode{c} ms" for c in spec["contexts"]]
    header += [f"KV MiB @{cmax}", "KV ÷ fp32", "loaded MiB", "run peak MiB", "build peak MiB"]
    table = [
        [r["setup"]]
        + [r[f"prefill{p}_tok_s"] for p in spec["prefill"]]
        + [r[f"decode{c}_ms"] for c in spec["contexts"]]
        + [
            r["kv_bytes"] / MIB,
            r.get("kv_bytes_vs_fp32", math.nan),
            r["memory_mib"]["loaded_above_imports"],
            r["memory_mib"]["run_peak_above_imports"],
            r["memory_mib"]["build_peak"],
        ]
        for r in ok
    ]
    print_table(header, table)
    header = ["setup", "ppl", "ppl ÷ fp32"]
    for ref in ("fp32", "wo"):
        header += [f"relL2 {ref}", f"top1 {ref}", f"greedy {ref}", f"prefix {ref}"]
    header += ["big relL2 fp32", "big greedy fp32"]
    table = []
    for r in ok:
        line = [r["setup"], r.get("trained_ppl", math.nan), r.get("trained_ppl_vs_fp32", math.nan)]
        for ref in REFS:
            line += [r.get(f"trained_{k}_vs_{ref}", math.nan) for k in ("logits_rel_l2", "top1_agree", "greedy_agree")]
            line += [r.get(f"trained_greedy_prefix_vs_{ref}", math.nan)]
        line += [r.get("big_logits_rel_l2_vs_fp32", math.nan), r.get("big_greedy_agree_vs_fp32", math.nan)]
        table.append(line)
    print_table(header, table)
    for r in rows:
        if "error" in r:
            print(f"{r['setup']}: {r['error']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 layers, vocabulary 32000, prefill 128/512, contexts 1K/4K")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers of the big model (default 16; quick 2)")
    ap.add_argument("--vocab", type=int, default=None, help="vocabulary size (default 128256 as Llama-3.2-1B)")
    ap.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated subset of {','.join(SETUPS)}")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=None, help="timed prefills per length (default 2; quick 1)")
    ap.add_argument("--decode-steps", type=int, default=None, help="timed decode steps (default 32; quick 8)")
    ap.add_argument("--decode-steps-long", type=int, default=None, help="at the largest context (default 16; quick 8)")
    ap.add_argument("--acc-samples", type=int, default=None, help="held-out windows (default 16; quick 4)")
    ap.add_argument("--acc-prompt", type=int, default=64, help="prompt tokens of each window (default 64)")
    ap.add_argument("--acc-cont", type=int, default=64, help="teacher-forced tokens after the prompt (default 64)")
    ap.add_argument("--acc-new", type=int, default=32, help="greedy tokens generated from the prompt (default 32)")
    ap.add_argument("--train-steps", type=int, default=None, help="accuracy-model training steps (160)")
    ap.add_argument("--out", default=None, help="results name (default generate, quick generate_quick)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, json.loads(Path(args.spec).read_text()), Path(args.spec).parent)
        return 0

    q = args.quick
    spec: dict[str, Any] = {
        "quick": q,
        "layers": args.layers or (2 if q else LLAMA_3_2_1B["num_hidden_layers"]),
        "vocab": args.vocab or (32000 if q else LLAMA_3_2_1B["vocab_size"]),
        "prefill": [128, 512] if q else [512, 2048],
        "contexts": [1024, 4096] if q else [1024, 4096, 16384],
        "decode_steps": args.decode_steps or (8 if q else 32),
        "decode_steps_long": args.decode_steps_long or (8 if q else 16),
        "repeats": args.repeats or (1 if q else 2),
        "big_prompt": 64 if q else 256,
        "big_new": 8 if q else 16,
        "acc_samples": args.acc_samples or (4 if q else 16),
        "acc_prompt": args.acc_prompt,
        "acc_cont": args.acc_cont,
        "acc_new": args.acc_new,
        "train_steps": args.train_steps or 160,
        "threads": args.threads,
    }
    if not 1 <= spec["layers"] <= LLAMA_3_2_1B["num_hidden_layers"]:
        ap.error("--layers must be between 1 and 16")
    spec["max_pos"] = max(spec["contexts"]) + max(spec["decode_steps"], spec["decode_steps_long"]) + 8
    setups = [s for s in args.setups.split(",") if s]
    unknown = set(setups) - set(SETUPS)
    if unknown:
        ap.error(f"unknown setups {sorted(unknown)}")

    from _trained_llama import Recipe, eval_windows, load_or_train

    print("[trained model] load or train ...", flush=True)
    tmodel, _, held, meta = load_or_train(Recipe(steps=spec["train_steps"]))
    win_len = spec["acc_prompt"] + spec["acc_cont"]
    if win_len > meta["recipe"]["seq"]:
        ap.error(f"--acc-prompt + --acc-cont = {win_len} exceeds the trained context of {meta['recipe']['seq']}")
    windows = eval_windows(held, win_len, spec["acc_samples"])
    del tmodel
    print(
        f"[trained model] held-out loss {meta['held_out_loss']:.3f} nats (unigram {meta['unigram_loss']:.3f}, "
        f"uniform {meta['uniform_loss']:.3f}); cached={meta['cached']}",
        flush=True,
    )

    import torchao
    import transformers

    name = args.out or ("generate_quick" if q else "generate")
    rows: list[dict[str, Any]] = []
    outputs: dict[str, dict[str, torch.Tensor]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        spec_path = Path(tmp) / "spec.json"
        torch.save(windows, Path(tmp) / "windows.pt")
        spec["acc_windows"] = str(Path(tmp) / "windows.pt")
        spec_path.write_text(json.dumps(spec))
        for i, setup in enumerate(setups):
            print(f"[{setup}] ...", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", setup, "--spec", str(spec_path)],
                capture_output=True,
                text=True,
            )
            row_path = Path(tmp) / f"{setup}.json"
            if proc.returncode != 0 or not row_path.exists():
                # a setup that cannot run here is reported, not hidden
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
                rows.append({"setup": setup, "error": tail[0][:300]})
                print(f"[{setup}] failed: {tail[0]}", flush=True)
            else:
                row = json.loads(row_path.read_text())
                row["wall_s"] = time.perf_counter() - t0
                rows.append(row)
                outputs[setup] = torch.load(Path(tmp) / f"{setup}.pt")
                print(
                    f"[{setup}] {row['wall_s']:.0f} s, run peak {row['memory_mib']['run_peak_above_imports']:.0f} MiB "
                    "above imports",
                    flush=True,
                )
            compare(rows, outputs, windows, spec)
            payload = {
                "complete": i == len(setups) - 1,
                "quick": q,
                "model": dict(LLAMA_3_2_1B, num_hidden_layers=spec["layers"], vocab_size=spec["vocab"]),
                "trained_model": {k: v for k, v in meta.items() if k != "cached"},
                "spec": {k: v for k, v in spec.items() if k != "acc_windows"},
                "threads": spec["threads"] or torch.get_num_threads(),
                "total_s": time.perf_counter() - started,
                "command": " ".join(["benchmarks/bench_generate.py", *(sys.argv[1:] if argv is None else argv)]),
                "versions": {
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "torchao": torchao.__version__,
                },
                "rows": rows,
            }
            path = write_results(name, payload)
    print_tables(rows, spec)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
