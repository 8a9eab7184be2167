"""Inputs that hurt tokenizers: one repeated letter, base64, digits, minified JavaScript, CJK without spaces, and a
Gemma-like tokenizer whose normalizer makes the whole prompt one word.

Run (takes the shared benchmark lock):

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize_pathological.py          # 64K-1M chars
    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize_pathological.py --quick  # 16K-256K

For every tokenizer and input, at growing sizes: ``own`` (the library's own call), ``fastok`` (fastokens alone,
where it supports the vocabulary), ``default`` (``ParallelTokenizer(tok, workers=2).encode``) and ``lopt``
(``ParallelTokenizer(tok, workers=2, backend="library", min_parallel_chars=0)``, with its ``EncodeStats``: path,
retries, merges, characters of the sequential fallback, note). ``growth`` is the exponent ``k`` of ``t ~ n^k``
between consecutive sizes (1 linear, 2 quadratic). A size is skipped for a call whose time at the previous size,
extrapolated with that exponent (at least 1), exceeds ``--cap`` seconds; the row says so. Every id list is
compared with ``own``.

Paired mode (``--paired ROUNDS``), for ratios to quote: each call (``--calls``, default ``default`` and ``lopt``)
is timed against ``own`` alone, ``ROUNDS`` rounds of the two back to back (after one untimed round), the order
shuffled every round (seeded; the alternating order favoured the first call, see ``interleaved``). The row gives
each median, the median of the per-round ratios and its 10th/90th percentiles (a round's two calls see the same
load, so drift between rounds cancels). Each result is kept only as an array, its list freed before the next
call, so both calls start from the same memory state (``interleaved``'s ``keep``). The load average at the start
and end goes into the JSON (``tokenize_pathological_paired.json``, or ``--out``):

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize_pathological.py --paired 101 \\
        --tokenizers mistral-v1 --sizes 262144
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import measure, print_table, write_results
from benchmarks.bench_tokenize import fastokens_calls, interleaved, own_call, timing_summary
from lowbit.lab.tokenize.corpus import make_text
from lowbit.tokenize import LoadedTokenizer, ParallelTokenizer, load_tokenizer

KB = 1 << 10
TOKENIZERS = ["cl100k", "o200k", "qwen2", "deepseek-v4", "bert", "mistral-v1", "gemma-like"]
KINDS = ("letter", "base64", "digits", "minified-js", "cjk-no-spaces")


def minified_js(n: int, rng: random.Random) -> str:
    """Generated minified JavaScript: short identifiers, no spaces or newlines."""
    parts = []
    ident = lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_$") for _ in range(rng.randint(1, 3)))  # noqa: E731
    while sum(map(len, parts)) < n:
        a, b, c = ident(), ident(), ident()
        parts.append(
            rng.choice(
                [
                    f"function {a}({b},{c}){{return {b}+{c}*{rng.randint(0, 99)}}}",
                    f"var {a}=[{rng.randint(0, 9)},{rng.randint(0, 99)}].map(function({b}){{return {b}*2}});",
                    f"if({a}!=={b}){{{c}.push({a})}}else{{{c}=null}}",
                    f'{a}.{b}("{c}",{{x:{rng.randint(0, 999)},y:!0}});',
                ]
            )
        )
    return "".join(parts)[:n]


def inputs(n: int) -> dict[str, str]:
    rng = random.Random(3)
    raw = rng.randbytes(n)
    return {
        "letter": "a" * n,
        "base64": base64.b64encode(raw).decode("ascii")[:n],
        "digits": "".join(rng.choice("0123456789") for _ in range(n)),
        "minified-js": minified_js(n, rng),
        "cjk-no-spaces": "".join(make_text("chinese", 2 * n, seed=4).split())[:n],
    }


def gemma_like() -> LoadedTokenizer:
    """A Gemma-style tokenizer built with the ``tokenizers`` library: the normalizer replaces spaces by ``▁`` and
    there is no pre-tokenizer, so the BPE model sees the whole prompt as one word (trained here on a small
    corpus; Gemma's own file is not shipped offline)."""
    from tokenizers import Tokenizer, models, normalizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Replace(" ", "\u2581")])
    corpus = make_text("mixed", 200_000, seed=9).splitlines()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>"]))
    return LoadedTokenizer("gemma-like", "hf", tok)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    box: list[Any] = []
    t = measure(lambda: box.append(fn()), repeats=repeats, warmup=0)
    return t.median, box[-1]


def run(names: list[str], sizes: list[int], cap: float) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        loaded = gemma_like() if name == "gemma-like" else load_tokenizer(name)
        own = own_call(loaded)
        fast = fastokens_calls(loaded)
        with (
            ParallelTokenizer(loaded, workers=2) as pt_default,
            ParallelTokenizer(loaded, workers=2, backend="library", min_parallel_chars=0) as pt_lopt,
        ):
            calls: dict[str, Callable[[str], Any]] = {
                "own": own,
                "default": pt_default.encode,
                "lopt": pt_lopt.encode_with_stats,
            }
            if isinstance(fast, tuple):
                calls["fastok"] = fast[0]
            for kind in KINDS:
                prev: dict[str, tuple[int, float]] = {}
                growth: dict[str, float] = {}
                for n in sizes:
                    text = inputs(n)[kind]
                    row: dict[str, Any] = {"tokenizer": name, "input": kind, "chars": n}
                    out: dict[str, Any] = {}
                    for key, fn in calls.items():
                        if key in prev:
                            n0, t0 = prev[key]
                            k = max(1.0, growth.get(key, 1.0))
                            if t0 * (n / n0) ** k > cap:
                                row[f"{key}_s"] = f"skipped: {t0:.1f} s at {n0} chars, growth {k:.2f}"
                                continue
                        t, res = timed(lambda fn=fn, text=text: fn(text), 1 if n >= 256 * KB else 3)
                        if key in prev:
                            growth[key] = math.log(t / prev[key][1]) / math.log(n / prev[key][0])
                            row[f"{key}_growth"] = growth[key]
                        prev[key] = (n, t)
                        row[f"{key}_s"] = t
                        out[key] = res
                    if "own" in out:
                        ref = np.asarray(out["own"], dtype=np.uint32)
                        exact = {}
                        for key, res in out.items():
                            if key == "lopt":
                                ids, stats = res
                                exact[key] = bool(np.array_equal(ids, ref))
                                row["lopt_path"] = stats.path
                                row["lopt_note"] = stats.note
                                m = stats.merge
                                if m is not None:
                                    row.update(lopt_retries=m.retries, lopt_merges=m.merges,
                                               lopt_fallback_chars=m.fallback_chars)  # fmt: skip
                            elif key != "own":
                                exact[key] = bool(np.array_equal(np.asarray(res, dtype=np.uint32), ref))
                        row["exact"] = exact
                        if isinstance(row.get("default_s"), float):
                            row["default_vs_own"] = row["default_s"] / row["own_s"]
                        if isinstance(row.get("lopt_s"), float):
                            row["lopt_vs_own"] = row["lopt_s"] / row["own_s"]
                    rows.append(row)
                    print(
                        f"{name:12s} {kind:14s} {n:>8d}: "
                        + " ".join(
                            f"{k}={row[f'{k}_s']:.3f}s" if isinstance(row.get(f"{k}_s"), float) else f"{k}=skip"
                            for k in calls
                        )
                        + f" path={row.get('lopt_path')} exact={row.get('exact')}",
                        flush=True,
                    )
    return rows


def run_paired(names: list[str], kinds: list[str], sizes: list[int], calls: list[str], rounds: int) -> list[dict]:
    """Each of ``calls`` against ``own`` in rounds of two (module docstring, paired mode)."""
    rows = []
    for name in names:
        loaded = gemma_like() if name == "gemma-like" else load_tokenizer(name)
        own = own_call(loaded)
        with (
            ParallelTokenizer(loaded, workers=2) as pt_default,
            ParallelTokenizer(loaded, workers=2, backend="library", min_parallel_chars=0) as pt_lopt,
        ):
            fns: dict[str, Callable[[str], Any]] = {"default": pt_default.encode, "lopt": pt_lopt.encode}
            for n in sizes:
                texts = inputs(n)
                for kind in kinds:
                    text = texts[kind]
                    ref = np.asarray(own(text), dtype=np.int64)
                    for key in calls:
                        fn = fns[key]
                        pair = {"own": lambda own=own, t=text: own(t), key: lambda fn=fn, t=text: fn(t)}
                        # results kept as arrays: no list of Python ints outlives its call (interleaved's keep)
                        times, last = interleaved(
                            pair, rounds, keep=lambda ids: np.asarray(ids, dtype=np.int64), shuffle_order=True
                        )
                        ratios = np.asarray(times[key].samples) / np.asarray(times["own"].samples)
                        _, stats = (pt_default if key == "default" else pt_lopt).encode_with_stats(text)
                        row = {
                            "tokenizer": name, "input": kind, "chars": n, "call": key, "rounds": rounds,
                            "own_s": times["own"].median, f"{key}_s": times[key].median,
                            "paired_ratio": float(np.median(ratios)),
                            "paired_p10": float(np.percentile(ratios, 10)),
                            "paired_p90": float(np.percentile(ratios, 90)),
                            "own_timing": timing_summary(times["own"]), f"{key}_timing": timing_summary(times[key]),
                            "path": stats.path, "note": stats.note,
                            "exact": bool(np.array_equal(last[key], ref) and np.array_equal(last["own"], ref)),
                        }  # fmt: skip
                        rows.append(row)
                        print(
                            f"{name:12s} {kind:14s} {n:>8d} {key:8s} own={row['own_s'] * 1e3:.2f}ms "
                            f"{key}={row[f'{key}_s'] * 1e3:.2f}ms paired={row['paired_ratio']:.3f} "
                            f"[{row['paired_p10']:.3f}, {row['paired_p90']:.3f}] path={stats.path} "
                            f"exact={row['exact']} load={os.getloadavg()[0]:.2f}",
                            flush=True,
                        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16K-256K characters instead of 64K-1M")
    parser.add_argument("--tokenizers", nargs="*", default=TOKENIZERS, help="subset (gemma-like is built here)")
    parser.add_argument("--sizes", default=None, help="comma-separated sizes in characters (overrides --quick)")
    parser.add_argument("--cap", type=float, default=60.0, help="skip a call predicted to take longer (seconds)")
    parser.add_argument("--paired", type=int, default=0, metavar="ROUNDS", help="paired mode: rounds per call")
    parser.add_argument("--calls", default="default,lopt", help="paired mode: calls timed against own")
    parser.add_argument("--inputs", nargs="*", default=list(KINDS), choices=KINDS, help="paired mode: inputs")
    parser.add_argument("--out", default=None, help="paired mode: results name (default tokenize_pathological_paired)")
    args = parser.parse_args(argv)
    if args.paired:
        sizes = [int(x) for x in (args.sizes or str(256 * KB)).split(",")]
        calls = [c for c in args.calls.split(",") if c]
        if not set(calls) <= {"default", "lopt"}:
            parser.error(f"--calls: expected default and/or lopt, got {args.calls!r}")
        t0, load0 = time.perf_counter(), os.getloadavg()
        rows = run_paired(args.tokenizers, args.inputs, sizes, calls, args.paired)
        path = write_results(
            args.out or "tokenize_pathological_paired",
            {"command": " ".join(sys.argv), "rounds": args.paired, "sizes": sizes, "rows": rows,
             "loadavg_start": load0, "loadavg_end": os.getloadavg(), "elapsed_s": time.perf_counter() - t0},
        )  # fmt: skip
        print(f"results written to {path}")
        return 0 if all(r["exact"] for r in rows) else 1
    sizes = [16 * KB, 64 * KB, 256 * KB] if args.quick else [64 * KB, 256 * KB, 1000 * KB]
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    t0 = time.perf_counter()
    rows = run(args.tokenizers, sizes, args.cap)
    big = [r for r in rows if r["chars"] == sizes[-1]]
    table = [
        [r["tokenizer"], r["input"], r["chars"], r.get("own_s"), r.get("own_growth", "-"), r.get("fastok_s", "-"),
         r.get("default_s"), r.get("default_vs_own", "-"), r.get("lopt_s"), r.get("lopt_path"),
         r.get("lopt_merges", "-"), r.get("lopt_note") or "", all(r.get("exact", {"own": False}).values())]
        for r in big
    ]  # fmt: skip
    print_table(["tokenizer", "input", "chars", "own s", "growth", "fastok s", "default s", "dflt/own", "lopt s",
                 "lopt path", "merges", "note", "exact"], table)  # fmt: skip
    path = write_results(
        "tokenize_pathological_quick" if args.quick else "tokenize_pathological",
        {"quick": args.quick, "sizes": sizes, "cap_s": args.cap, "rows": rows, "table": table,
         "elapsed_s": time.perf_counter() - t0},
    )  # fmt: skip
    print(f"results written to {path}")
    return 0 if all(all(r.get("exact", {}).values()) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
