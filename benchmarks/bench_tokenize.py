"""LoPT benchmark: lowbit against the call of the backend it wraps, fastokens alone, and LoPT, 16K to 16 MB.

Run (one command; takes the shared benchmark lock so timings are not disturbed by other benchmarks):

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize.py                       # full
    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize.py --quick               # ~3 min
    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize.py --workers 1,2,4,8,16  # big machine

Columns (medians of repeats measured in the same run, the calls interleaved round by round, in alternating order,
so that load drifts and call order hit every column alike; ratios are what to quote). Small inputs get many rounds
(301 at 16K characters: a 0.1 ms call timed 7 times left +-10 % of noise, more than the wrapper's cost):
- ``own``: the library's own sequential call returning a list (tiktoken ``encode_ordinary``, HF
  ``encode(...).ids``, SentencePiece ``encode``): the reference every other column is checked against;
- ``fastok``: fastokens alone, its list call ``encode(text).ids`` and its flat call ``encode_batch_flat``
  (``fastok_np``), where it supports the vocabulary;
- ``default``: ``ParallelTokenizer(tok, workers=W).encode(text)`` with every other default, and
  ``default_np`` its ``encode_to_numpy``; ``base``/``base_np``: the list call and the flat call of the very
  fastokens object the default path holds, where fastokens is the default (a separate fastokens object has its
  own word cache, so ``fastok`` alone can differ by more than any wrapper cost); ``default_vs_base`` divides
  ``default`` by ``base`` (else by ``own``), ``default_np_vs_base`` divides ``default_np`` by ``base_np`` (else by
  ``own``): the issue's targets are <= 1.05 and <= 1.00. A second loop (order shuffled every round) times only
  these four calls, with more rounds (``overhead_rounds``: 301 at 16K, 41 at 1 MB, 7 at 16 MB), giving
  ``overhead_default_vs_base`` (ratio of medians) and ``default_vs_base_paired`` (median of the per-round ratios:
  each round's calls run back to back, so a load change between rounds cancels), and the same for ``_np``;
  ``*_paired_p10``/``_p90`` are the 10th/90th percentiles of those per-round ratios. The loop also times an A/A
  control: ``base_aa`` and ``base_np_aa`` are the very same calls as ``base``/``base_np`` in separate lambdas, so
  ``aa_paired`` and ``aa_np_paired`` (ideally 1) show how far this loop's order and noise alone move a ratio;
- ``lopt``: ``ParallelTokenizer(tok, workers=W, backend="library", min_parallel_chars=0)``, LoPT over the library
  with its default strategy (processes for tiktoken, the native batch threads for HF and SentencePiece), and
  ``lopt_fastok`` (LoPT over fastokens' batch call); ``x_lopt`` = ``own / lopt``;
- ``naive_wrong``: tokens that cut-and-concatenate gets wrong (the lab's naive baseline, 2 pieces per worker).

``--parallelize`` adds a section: ``parallelize(obj, workers=W)`` against the unwrapped library object it copies,
called the same way (transformers ``tok(text, return_offsets_mapping=True)`` through
``PreTrainedTokenizerFast(tokenizer_object=...)``, tiktoken ``encode_ordinary``, SentencePiece ``encode``), every
output field compared (``x_wrapped`` = unwrapped / wrapped time: above 1 is faster than the library).

``--overhead-only`` runs only that second loop (no ``own``/LoPT columns: minutes instead of the full run), for
every tokenizer and ``--sizes``, written to ``tokenize_overhead`` unless ``--name`` says otherwise;
``--overhead-scale K`` multiplies its rounds (e.g. ``--overhead-only --sizes 16 --overhead-scale 10``: 3010 rounds
at 16K characters). Run

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize.py --overhead-only \
        --tokenizers cl100k o200k qwen2 deepseek-v4 --sizes 16,256,1024,4096,16384

``--workers 1,2,4,8,16`` also times LoPT per backend at every worker count on one text per tokenizer and prints
the parallel efficiency ``speedup / parallelism`` with ``speedup = t(1 worker) / t(w)`` and
``parallelism = min(w, usable cores)`` (a request above the cores runs on the cores).
Every result is compared with ``own``; a mismatch is recorded (``exact`` False), never hidden.
"""

from __future__ import annotations

import argparse
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
from lowbit._timing import Timing
from lowbit.lab.tokenize.corpus import make_text
from lowbit.lab.tokenize.naive import naive_encode, wrong_tokens
from lowbit.tokenize import ParallelTokenizer, fastokens_available, load_tokenizer, parallelize
from lowbit.tokenize.backends import FastokensBackend, make_backend
from lowbit.tokenize.parallel import usable_cores

KB, MB = 1 << 10, 1 << 20
SIZES_FULL = [16 * KB, 256 * KB, MB, 4 * MB, 16 * MB]
FULL = {
    # tokenizer: (sizes for prose, sizes for the other kinds)
    "cl100k": (SIZES_FULL, [16 * KB, MB, 4 * MB]),
    "o200k": (SIZES_FULL, [16 * KB, MB, 4 * MB]),
    "qwen2": (SIZES_FULL, [16 * KB, MB, 4 * MB]),
    "qwen3.5": (SIZES_FULL[:4], [16 * KB, MB]),
    "deepseek-v4": (SIZES_FULL[:4], [16 * KB, MB]),
    "bert": (SIZES_FULL[:4], [16 * KB, MB]),
    "mistral-v1": (SIZES_FULL[:4], [16 * KB, MB]),
}
QUICK = {
    "cl100k": ([16 * KB, MB], []),
    "qwen2": ([16 * KB, 4 * MB], []),
    "o200k": ([4 * MB], []),
    "deepseek-v4": ([16 * KB, 4 * MB], []),
    "bert": ([256 * KB], []),
    "mistral-v1": ([256 * KB], []),
}
KINDS = ("prose", "code", "chinese", "mixed")


def sized_text(kind: str, n_bytes: int) -> str:
    """A text of ``kind`` whose UTF-8 encoding is at most ``n_bytes`` (and within a character of it)."""
    text = make_text(kind, n_bytes, seed=1)
    return text.encode("utf-8")[:n_bytes].decode("utf-8", "ignore")


def interleaved(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    prime: frozenset[str] = frozenset(),
    keep: Callable[[Any], Any] | None = None,
    shuffle_order: bool = False,
) -> tuple[dict[str, Timing], dict[str, Any]]:
    """Time every function once per round, ``repeats`` rounds (after one warm-up round), the order reversed every
    other round; also the last results and every sample (``Timing.samples``, round by round, for paired ratios).

    ``keep``, when given, turns each result into what is kept (outside the timing), and the result itself is
    freed before the next call: e.g. a compact array instead of a list of Python ints. Kept lists hold their
    small-object arenas into the next timed call, and whether those were just freed moves a call by up to ~30 %
    (SentencePiece digits, 262K ids: 17.6 vs 22.5 ms for the same call), so paired ratios then measure memory
    state, not the calls.

    ``shuffle_order`` shuffles the order every round (seeded) instead of reversing it every other round. The
    alternating order was measured to favour the first-named function on SentencePiece digits (262K
    characters, 61 rounds): the same call against itself read 1.141 and 1.133 in the alternating order, 1.004 and
    0.994 shuffled.

    Functions named in ``prime`` are called once untimed right before each timed call: fastokens runs a call ~3x
    slower when the previous call went to a *different* fastokens object (cl100k, 16K characters: 0.12 ms after
    the same object, 0.36-0.40 ms after another, whichever object is timed), so each timed fastokens call
    follows one on its own object."""
    last: dict[str, Any] = {}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    shuffle = random.Random(0).shuffle
    for r in range(repeats + 1):
        if shuffle_order:
            shuffle(keys)
        for key in keys if shuffle_order or r % 2 == 0 else keys[::-1]:  # no column always runs first
            fn = fns[key]
            if key in prime:
                fn()
            box: list[Any] = []
            t = measure(lambda fn=fn, box=box: box.append(fn()), repeats=1, warmup=0)
            if r:
                samples[key].append(t.median)
            result = box.pop()
            last[key] = result if keep is None else keep(result)
            del result
    return {k: Timing(tuple(v)) for k, v in samples.items()}, last


def rounds_for(n_bytes: int) -> int:
    """Timed rounds per size: enough that a 0.1 ms call's median is stable (16K: 301), one at 16 MB."""
    if n_bytes >= 16 * MB:
        return 1
    return 3 if n_bytes >= 4 * MB else 7 if n_bytes >= MB else 41 if n_bytes >= 256 * KB else 301


def overhead_rounds(n_bytes: int, scale: int = 1) -> int:
    """Rounds of the overhead loop (default path against its backend call only): 301 at 16K down to 7 at 16 MB,
    times ``scale``."""
    return scale * (7 if n_bytes >= 16 * MB else 15 if n_bytes >= 4 * MB else 41 if n_bytes >= MB else 301)


def timing_summary(t: Timing) -> dict[str, Any]:
    """``Timing.as_dict`` with the 10th and 90th percentiles; the samples themselves only up to 41 rounds."""
    d = t.as_dict()
    d["p10_s"], d["p90_s"] = (float(q) for q in np.percentile(t.samples, [10, 90]))
    if len(t.samples) > 41:
        del d["samples_s"]
    return d


def paired(a: Timing, b: Timing, q: float = 50) -> float:
    """Median (or the ``q``-th percentile) of the per-round ratios ``a / b`` (a round's calls ran back to back)."""
    return float(np.percentile(np.asarray(a.samples) / np.asarray(b.samples), q))


def overhead(pt: ParallelTokenizer, own: Callable[[str], list[int]], text: str, rounds: int) -> dict[str, Any]:
    """The overhead targets: ``pt``'s default path against the backend call it makes (``base``/``base_np``, on the
    very fastokens object it holds; else the library's own call), with the A/A controls (module docstring).

    Only these calls, in an order shuffled every round (seeded), each fastokens call right after an untimed call on
    its own object; per round the calls run back to back, so the paired ratios cancel the load's drift between
    rounds. Shuffled, not alternating: with the alternating order the A/A controls, whose calls sit at other
    positions of the round than their twins, read 0.995-0.999 (np) and 1.003-1.008 (list) at 16K characters with
    6020 rounds, a position effect as large as the wrapper's cost. Every result is compared with ``own``."""
    on_fast = isinstance(pt.backend, FastokensBackend)
    fns: dict[str, Callable[[], Any]] = {
        "default": lambda: pt.encode(text),
        "default_np": lambda: pt.encode_to_numpy(text),
    }
    if on_fast:
        fb, split = pt.backend.fast, pt.backend.ordinary
        fns["base"] = lambda: fb.encode(text, split_special_tokens=split).ids
        fns["base_np"] = lambda: np.frombuffer(fb.encode_batch_flat([text], split_special_tokens=split)[0], np.uint32)
        fns["base_aa"] = lambda: fb.encode(text, split_special_tokens=split).ids
        fns["base_np_aa"] = lambda: np.frombuffer(
            fb.encode_batch_flat([text], split_special_tokens=split)[0], np.uint32
        )
    else:
        fns["base"] = fns["base_np"] = lambda: own(text)
        fns["base_aa"] = fns["base_np_aa"] = lambda: own(text)
    order = ("base", "default", "base_np", "default_np", "base_aa", "base_np_aa")
    times, out = interleaved(
        {k: fns[k] for k in order},
        rounds,
        prime=frozenset(order) if on_fast else frozenset(),
        keep=lambda ids: np.asarray(ids, dtype=np.uint32),
        shuffle_order=True,
    )
    ref = np.asarray(own(text), dtype=np.uint32)
    row: dict[str, Any] = {"overhead_rounds": rounds, "overhead_base": "fastokens" if on_fast else "own"}
    for key, t in times.items():
        row[f"overhead_{key}_timing"] = timing_summary(t)
    row["overhead_default_vs_base"] = times["default"].median / times["base"].median
    row["overhead_default_np_vs_base"] = times["default_np"].median / times["base_np"].median
    for name, a, b in (
        ("default_vs_base", "default", "base"),
        ("default_np_vs_base", "default_np", "base_np"),
        ("aa", "base_aa", "base"),
        ("aa_np", "base_np_aa", "base_np"),
    ):
        row[f"{name}_paired"] = paired(times[a], times[b])
        row[f"{name}_paired_p10"] = paired(times[a], times[b], 10)
        row[f"{name}_paired_p90"] = paired(times[a], times[b], 90)
        row[f"{name}_paired_diff_us"] = float(
            np.median(np.asarray(times[a].samples) - np.asarray(times[b].samples)) * 1e6
        )
    row["overhead_exact"] = all(bool(np.array_equal(v, ref)) for v in out.values())
    return row


def own_call(loaded: Any) -> Callable[[str], list[int]]:
    """The library's own sequential call returning a list."""
    obj = loaded.obj
    if loaded.kind == "tiktoken":
        return obj.encode_ordinary
    if loaded.kind == "hf":
        return lambda t: obj.encode(t, add_special_tokens=False).ids
    return obj.encode


def fastokens_calls(loaded: Any) -> tuple[Callable[[str], list[int]], Callable[[str], np.ndarray]] | str:
    """fastokens' list call and flat call for this vocabulary, or why it is left out."""
    if not fastokens_available():
        return "fastokens not installed"
    try:
        fb = make_backend(loaded, backend="fastokens")[0]
    except ValueError as exc:
        return str(exc)
    assert isinstance(fb, FastokensBackend)
    fast, split = fb.fast, fb.ordinary
    return (
        lambda t: fast.encode(t, split_special_tokens=split).ids,
        lambda t: np.frombuffer(fast.encode_batch_flat([t], split_special_tokens=split)[0], np.uint32),
    )


def bench_overhead_only(name: str, loaded: Any, n_bytes: int, workers: int, scale: int) -> dict[str, Any]:
    """Only the overhead loop (:func:`overhead`) on prose of ``n_bytes``, ``overhead_rounds(n_bytes, scale)``
    rounds."""
    text = sized_text("prose", n_bytes)
    row: dict[str, Any] = {"tokenizer": name, "library": loaded.kind, "text": "prose", "chars": len(text)}
    row["MB"] = round(len(text.encode("utf-8")) / 1e6, 3)
    with ParallelTokenizer(loaded, workers=workers) as pt:
        row["default_backend"] = f"{pt.backend.name}/{pt.strategy}"
        row.update(overhead(pt, own_call(loaded), text, overhead_rounds(n_bytes, scale)))
    row["exact"] = {"overhead": row.pop("overhead_exact")}
    for key in ("base", "default", "base_np", "default_np"):
        row[f"{key}_s"] = row[f"overhead_{key}_timing"]["median_s"]
    return row


def bench_one(name: str, loaded: Any, kind: str, n_bytes: int, workers: int) -> dict[str, Any]:
    text = sized_text(kind, n_bytes)
    repeats = rounds_for(n_bytes)
    own = own_call(loaded)
    fast = fastokens_calls(loaded)
    row: dict[str, Any] = {"tokenizer": name, "library": loaded.kind, "text": kind, "chars": len(text)}
    row["MB"] = round(len(text.encode("utf-8")) / 1e6, 3)
    pt_default = ParallelTokenizer(loaded, workers=workers)
    pt_lopt = ParallelTokenizer(loaded, workers=workers, backend="library", min_parallel_chars=0)
    fns: dict[str, Callable[[], Any]] = {
        "own": lambda: own(text),
        "default": lambda: pt_default.encode(text),
        "default_np": lambda: pt_default.encode_to_numpy(text),
        "lopt": lambda: pt_lopt.encode_with_stats(text),
    }
    on_fast = isinstance(pt_default.backend, FastokensBackend)
    if on_fast:  # the backend's own calls, on the very fastokens object the default path uses
        fb, split = pt_default.backend.fast, pt_default.backend.ordinary
        fns["base"] = lambda: fb.encode(text, split_special_tokens=split).ids
        fns["base_np"] = lambda: np.frombuffer(fb.encode_batch_flat([text], split_special_tokens=split)[0], np.uint32)
    if isinstance(fast, tuple):
        fns["fastok"] = lambda: fast[0](text)
        fns["fastok_np"] = lambda: fast[1](text)
        pt_lf = ParallelTokenizer(
            loaded, workers=workers, backend="fastokens", strategy="threads", min_parallel_chars=0
        )
        fns["lopt_fastok"] = lambda: pt_lf.encode_to_numpy(text)
    else:
        row["fastok_left_out"] = fast
    with pt_default, pt_lopt:
        fast_calls = frozenset({"base", "base_np", "fastok", "fastok_np", "lopt_fastok"})
        times, out = interleaved(fns, repeats, prime=fast_calls | ({"default", "default_np"} if on_fast else set()))
        pt_lopt_stats = out["lopt"][1]
        ref = np.asarray(out["own"], dtype=np.uint32)
        naive_ids, cuts = naive_encode(pt_lopt, text)
        over_row = overhead(pt_default, own, text, overhead_rounds(n_bytes))
    if "lopt_fastok" in fns:
        pt_lf.close()
    row["tokens"] = len(ref)
    row["default_backend"] = f"{pt_default.backend.name}/{pt_default.strategy}"
    row["lopt_backend"] = f"{pt_lopt.backend.name}/{pt_lopt.strategy}"
    for key, t in times.items():
        row[f"{key}_s"] = t.median
        row[f"{key}_timing"] = timing_summary(t)
    base_list = times["base"].median if on_fast else times["own"].median
    base_np = times["base_np"].median if on_fast else times["own"].median
    row["default_vs_base"] = times["default"].median / base_list
    row["default_np_vs_base"] = times["default_np"].median / base_np
    row["rounds"] = repeats
    row.update(over_row)
    row["x_lopt"] = times["own"].median / times["lopt"].median
    row["lopt_path"] = pt_lopt_stats.path
    row["lopt_retries"] = pt_lopt_stats.merge.retries if pt_lopt_stats.merge else 0
    row["lopt_merges"] = pt_lopt_stats.merge.merges if pt_lopt_stats.merge else 0
    row["naive_wrong"] = wrong_tokens(ref, naive_ids, cuts)
    exact = {
        "default": out["default"] == out["own"],
        "default_np": bool(np.array_equal(out["default_np"], ref)),
        "lopt": bool(np.array_equal(out["lopt"][0], ref)),
        "overhead": row.pop("overhead_exact"),
    }
    if on_fast:
        exact["base"] = out["base"] == out["own"]
    if "fastok" in fns:
        exact["fastok"] = out["fastok"] == out["own"]
        exact["lopt_fastok"] = bool(np.array_equal(out["lopt_fastok"], ref))
    row["exact"] = exact
    return row


PARALLELIZE_FULL = {
    # (library, preset): sizes in bytes of prose
    ("transformers", "bert"): [64 * KB, 256 * KB, MB, 4 * MB],
    ("transformers", "deepseek-v4"): [64 * KB, 256 * KB, MB, 4 * MB],
    ("tiktoken", "cl100k"): [64 * KB, 256 * KB, MB, 4 * MB],
    ("tiktoken", "o200k"): [MB, 4 * MB],
    ("sentencepiece", "mistral-v1"): [64 * KB, 256 * KB, MB, 4 * MB],
}
PARALLELIZE_QUICK = {
    ("transformers", "bert"): [MB],
    ("transformers", "deepseek-v4"): [MB],
    ("tiktoken", "cl100k"): [MB],
    ("sentencepiece", "mistral-v1"): [MB],
}


def parallelize_calls(library: str, preset: str, workers: int) -> tuple[Any, Callable[[Any, str], Any]]:
    """The unwrapped library object for ``preset`` and the call that both it and its parallelized copy get."""
    loaded = load_tokenizer(preset)
    if library == "transformers":
        from transformers import PreTrainedTokenizerFast

        obj = PreTrainedTokenizerFast(tokenizer_object=loaded.obj)

        def call(tok: Any, text: str) -> Any:
            enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True)
            return dict(enc), enc.word_ids(), enc.tokens()

        return obj, call
    if library == "tiktoken":
        return loaded.obj, lambda tok, text: tok.encode_ordinary(text)
    return loaded.obj, lambda tok, text: tok.encode(text)


def bench_parallelize(grid: dict[tuple[str, str], list[int]], workers: int) -> list[dict[str, Any]]:
    """``parallelize(obj, workers=W)`` against ``obj`` itself, same call, every output field compared."""
    rows = []
    for (library, preset), sizes in grid.items():
        try:
            obj, call = parallelize_calls(library, preset, workers)
        except (ImportError, ValueError) as exc:  # a preset's package missing: say so in the results
            rows.append({"library": library, "tokenizer": preset, "left_out": str(exc)})
            continue
        wrapped = parallelize(obj, workers=workers)
        for n_bytes in sizes:
            text = sized_text("prose", n_bytes)
            repeats = rounds_for(n_bytes) if n_bytes >= MB else 9
            fns = {
                "library": lambda call=call, obj=obj, text=text: call(obj, text),
                "wrapped": lambda call=call, wrapped=wrapped, text=text: call(wrapped, text),
            }
            times, out = interleaved(fns, repeats)
            t_lib, t_wrap = times["library"], times["wrapped"]
            row = {
                "library": library, "tokenizer": preset, "chars": len(text),
                "MB": round(len(text.encode("utf-8")) / 1e6, 3), "workers": workers, "rounds": repeats,
                "library_s": t_lib.median, "wrapped_s": t_wrap.median, "x_wrapped": t_lib.median / t_wrap.median,
                "x_wrapped_paired": 1 / paired(t_wrap, t_lib), "library_timing": timing_summary(t_lib),
                "wrapped_timing": timing_summary(t_wrap), "identical": out["library"] == out["wrapped"],
            }  # fmt: skip
            rows.append(row)
            print(
                f"parallelize {library} {preset} {row['MB']:.3f} MB: library {t_lib.median:.3f}s wrapped "
                f"{t_wrap.median:.3f}s x{row['x_wrapped']:.2f} identical {row['identical']}",
                flush=True,
            )
        wrapped.close()
    keys = ["library", "tokenizer", "MB", "library_s", "wrapped_s", "x_wrapped", "x_wrapped_paired", "identical"]
    print_table(
        ["library", "tokenizer", "MB", "library s", "wrapped s", "x wrapped", "x paired", "identical"],
        [[r[k] for k in keys] for r in rows if "left_out" not in r],
    )
    return rows


def efficiency(names: list[str], worker_counts: list[int], n_bytes: int) -> list[dict[str, Any]]:
    """LoPT time per worker count for each backend (library, and fastokens where it applies) on one prose text."""
    rows = []
    text = sized_text("prose", n_bytes)
    cores = usable_cores()
    for name in names:
        loaded = load_tokenizer(name)
        ref = own_call(loaded)(text)
        backends = ["library"] + (["fastokens"] if isinstance(fastokens_calls(loaded), tuple) else [])
        for backend in backends:
            base = None
            for w in worker_counts:
                strategy = "threads" if backend == "fastokens" else "auto"
                with ParallelTokenizer(
                    loaded, workers=w, backend=backend, strategy=strategy, min_parallel_chars=0
                ) as pt:
                    pt.encode_to_numpy(text[:200_000])  # start the pool once: a one-off cost, not per call
                    times, out = interleaved({"lopt": lambda pt=pt: pt.encode_to_numpy(text)}, 3)
                    t = times["lopt"].median
                    base = t if base is None else base
                    par = min(w, cores) if w > 1 else 1
                    rows.append({
                        "tokenizer": name, "backend": f"{pt.backend.name}/{pt.strategy}", "workers": w,
                        "parallelism": pt.parallelism, "lopt_s": t, "speedup": base / t,
                        "efficiency": base / t / par, "exact": bool(np.array_equal(out["lopt"], ref)),
                    })  # fmt: skip
    print_table(
        ["tokenizer", "backend", "workers", "parallelism", "lopt s", "speedup", "efficiency", "exact"],
        [list(r.values()) for r in rows],
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and kinds (~3 min on 2 cores)")
    parser.add_argument("--tokenizers", nargs="*", default=None, help="subset of the tokenizers to run")
    parser.add_argument(
        "--kinds", nargs="*", default=None, choices=KINDS, help="text kinds (default: all; quick: prose)"
    )
    parser.add_argument(
        "--workers", default=None, help="comma-separated worker counts for the efficiency table, e.g. 1,2,4,8,16"
    )
    parser.add_argument(
        "--sizes", default=None, help="comma-separated prose sizes in KB for every tokenizer, e.g. 16,256,1024"
    )
    parser.add_argument("--parallelize", action="store_true", help="add the parallelize() section")
    parser.add_argument("--parallelize-only", action="store_true", help="only the parallelize() section")
    parser.add_argument("--name", default=None, help="results file name (default tokenize / tokenize_quick)")
    parser.add_argument(
        "--overhead-only", action="store_true", help="only the overhead loop with its A/A control (prose, --sizes)"
    )
    parser.add_argument("--overhead-scale", type=int, default=1, help="multiply the overhead loop's rounds")
    args = parser.parse_args(argv)
    if args.overhead_scale < 1:
        parser.error("--overhead-scale: expected a positive int")
    if args.overhead_only:
        return main_overhead(args, argv)
    grid = QUICK if args.quick else FULL
    names = args.tokenizers or list(grid)
    kinds = args.kinds or (["prose"] if args.quick else list(KINDS))
    counts = [int(w) for w in args.workers.split(",")] if args.workers else []
    if any(w < 1 for w in counts):
        parser.error("--workers: counts must be positive integers")
    workers = max([2, *counts]) if counts else 2
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()  # other processes on the machine: the figures are only as quiet as this
    t0 = time.perf_counter()
    sizes = [int(k) * KB for k in args.sizes.split(",")] if args.sizes else None
    for name in [] if args.parallelize_only else names:
        loaded = load_tokenizer(name)
        prose_sizes, other_sizes = grid.get(name, FULL.get(name, ([MB], [MB])))
        if sizes is not None:
            prose_sizes, other_sizes = sizes, sizes
        for kind in kinds:
            for size in prose_sizes if kind == "prose" else other_sizes:
                row = bench_one(name, loaded, kind, size, workers)
                rows.append(row)
                print(
                    f"[{time.perf_counter() - t0:6.0f}s] {name} {kind} {row['MB']:.3f} MB: own {row['own_s']:.4f}s "
                    f"default x{row['default_vs_base_paired']:.3f} of its backend ({row['default_backend']}), "
                    f"numpy x{row['default_np_vs_base_paired']:.3f} (paired); lopt x{row['x_lopt']:.2f} over own "
                    f"({row['lopt_backend']}); exact {all(row['exact'].values())}",
                    flush=True,
                )
    header = ["tokenizer", "text", "MB", "own s", "fastok s", "base s", "default s", "dflt/base", "np/base_np",
              "lopt s", "x lopt", "lopt+fastok s", "naive wrong", "exact"]  # fmt: skip
    table = [
        [r["tokenizer"], r["text"], r["MB"], r["own_s"], r.get("fastok_s", "-"), r.get("base_s", "-"),
         r["default_s"], r["default_vs_base_paired"], r["default_np_vs_base_paired"], r["lopt_s"], r["x_lopt"],
         r.get("lopt_fastok_s", "-"), r["naive_wrong"], all(r["exact"].values())]
        for r in rows
    ]  # fmt: skip
    print_table(header, table)
    eff = efficiency(names, counts, 4 * MB if not args.quick else MB) if counts else []
    par = (
        bench_parallelize(PARALLELIZE_QUICK if args.quick else PARALLELIZE_FULL, workers)
        if args.parallelize or args.parallelize_only
        else []
    )
    path = write_results(
        args.name or ("tokenize_quick" if args.quick else "tokenize"),
        {
            "quick": args.quick,
            "argv": sys.argv[1:] if argv is None else argv,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "workers": workers,
            "usable_cores": usable_cores(),
            "columns": header,
            "rows": rows,
            "table": table,
            "efficiency": eff,
            "parallelize": par,
        },
    )
    print(f"results written to {path}")
    exact = (
        all(all(r["exact"].values()) for r in rows)
        and all(r["exact"] for r in eff)
        and all(r.get("identical", True) for r in par)
    )
    return 0 if exact else 1


def main_overhead(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``--overhead-only``: the overhead loop for every tokenizer and size, its table, and the results file."""
    names = args.tokenizers or ["cl100k", "o200k", "qwen2", "deepseek-v4"]
    sizes = [int(k) * KB for k in args.sizes.split(",")] if args.sizes else [16 * KB, 256 * KB, MB, 4 * MB, 16 * MB]
    workers = 2
    load_before, t0 = os.getloadavg(), time.perf_counter()
    rows = []
    for name in names:
        loaded = load_tokenizer(name)
        for size in sizes:
            row = bench_overhead_only(name, loaded, size, workers, args.overhead_scale)
            row["load_average_after"] = os.getloadavg()
            rows.append(row)
            print(
                f"[{time.perf_counter() - t0:6.0f}s] {name} {row['MB']:.3f} MB ({row['overhead_rounds']} rounds): "
                f"encode x{row['default_vs_base_paired']:.4f} (A/A {row['aa_paired']:.4f}), encode_to_numpy "
                f"x{row['default_np_vs_base_paired']:.4f} (A/A {row['aa_np_paired']:.4f}); exact "
                f"{row['exact']['overhead']}",
                flush=True,
            )
    header = ["tokenizer", "MB", "rounds", "base s", "default s", "dflt/base", "A/A", "base_np s", "default_np s",
              "np/base_np", "[p10, p90]", "A/A np", "[p10, p90]", "exact"]  # fmt: skip
    table = [
        [r["tokenizer"], r["MB"], r["overhead_rounds"], r["base_s"], r["default_s"], r["default_vs_base_paired"],
         r["aa_paired"], r["base_np_s"], r["default_np_s"], r["default_np_vs_base_paired"],
         f"[{r['default_np_vs_base_paired_p10']:.3f}, {r['default_np_vs_base_paired_p90']:.3f}]",
         r["aa_np_paired"], f"[{r['aa_np_paired_p10']:.3f}, {r['aa_np_paired_p90']:.3f}]", r["exact"]["overhead"]]
        for r in rows
    ]  # fmt: skip
    print_table(header, table)
    path = write_results(
        args.name or "tokenize_overhead",
        {
            "overhead_only": True,
            "argv": sys.argv[1:] if argv is None else argv,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "workers": workers,
            "usable_cores": usable_cores(),
            "columns": header,
            "rows": rows,
            "table": table,
        },
    )
    print(f"results written to {path}")
    return 0 if all(r["exact"]["overhead"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
