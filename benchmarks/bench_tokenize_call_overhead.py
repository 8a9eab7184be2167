"""Per-call cost of lowbit's one-call path over the backend call it makes (issue 14: ``encode_to_numpy`` at most
the backend's own call, ``encode`` at most 1.05x its list call), measured with many short paired rounds.

Run (takes the shared benchmark lock):

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize_call_overhead.py --rounds 2001
    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize_call_overhead.py --library \
        --sizes 16384,262144,1048576,4194304,16777216 --rounds 2001 --scale-rounds --min-rounds 7

For every tokenizer (default: the byte-level BPE presets, whose default path is one fastokens call) and size
(default 16K characters of prose), ``lowbit_np`` is ``ParallelTokenizer(tok, workers=2).encode_to_numpy(text)``,
timed against:

- ``numpy`` (always): fastokens' flat call on the very fastokens object the default path holds
  (``np.frombuffer(fast.encode_batch_flat([text])[0], np.uint32)``, one Python frame, as a user would write it):
  the "fastokens alone" column of the issue;
- ``numpy_library`` (``--library``): the tokenizer library's own call returning the same array: tiktoken's
  ``Encoding.encode_to_numpy(text, disallowed_special=())`` (``encode_ordinary``'s ids, special strings as plain
  text, as lowbit's default), and for HF tokenizers, which have no numpy call, ``np.array(tok.encode(text,
  add_special_tokens=False).ids, np.uint32)``: the "backend's own call" column of the issue;
- with ``--list`` also ``list``: ``fast.encode(text).ids`` against ``encode``.

Tokenizers whose default path is not fastokens (SentencePiece, bert) get only ``numpy_library`` (with
``--library``; skipped without).

Each round times the pair back to back, every timed call right after an untimed call on the same object
(fastokens runs a call ~3x slower after one on another object, docs/tokenize.md), the order reversed every other
round. ``--scale-rounds`` keeps the characters per row constant (``rounds * 16K / size`` rounds, at least
``--min-rounds``). The row gives each median, the median of the per-round ratios with its 10th/90th percentiles,
and the median per-round difference in microseconds (what the wrapper adds to one call). Ids are compared with
the library's own call.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import print_table, write_results
from benchmarks.bench_tokenize import own_call, sized_text
from lowbit.tokenize import ParallelTokenizer, load_tokenizer
from lowbit.tokenize.backends.fastokens import FastokensBackend

KB = 1 << 10


def paired_rounds(a: Any, b: Any, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of ``a()`` and ``b()`` per round (one untimed warm-up round first), each timed call preceded by an
    untimed call of itself, the order reversed every other round."""
    ta, tb = np.empty(rounds), np.empty(rounds)
    clock = time.perf_counter
    for r in range(-1, rounds):
        for first in (a, b) if r % 2 == 0 else (b, a):
            first()
            t0 = clock()
            first()
            dt = clock() - t0
            if r >= 0:
                (ta if first is a else tb)[r] = dt
    return ta, tb


def library_np_call(loaded: Any) -> tuple[str, Any]:
    """The tokenizer library's own call returning a ``uint32`` array of the default ids (module docstring)."""
    obj = loaded.obj
    if loaded.kind == "tiktoken":
        to_numpy = obj.encode_to_numpy
        return "tiktoken Encoding.encode_to_numpy", lambda t: to_numpy(t, disallowed_special=())
    if loaded.kind == "hf":
        encode, array, u32 = obj.encode, np.array, np.uint32
        return "tokenizers encode + np.array", lambda t: array(encode(t, add_special_tokens=False).ids, u32)
    encode, array, u32 = obj.encode, np.array, np.uint32
    return "sentencepiece encode + np.array", lambda t: array(encode(t), u32)


def make_pairs(
    fast: Any, split: bool, pt: ParallelTokenizer, text: str, with_list: bool, library: Any = None
) -> dict[str, Any]:
    """(baseline call, lowbit's call) for fastokens' flat numpy call (``fast`` None: the default path is not
    fastokens, left out), with ``library`` the library's own numpy call, and with ``with_list`` the list call."""
    ours = pt.encode_to_numpy
    pairs = {}
    if fast is not None:
        flat, frombuffer, u32 = fast.encode_batch_flat, np.frombuffer, np.uint32
        pairs["numpy"] = (lambda: frombuffer(flat([text], split_special_tokens=split)[0], u32), lambda: ours(text))
    if library is not None:
        pairs["numpy_library"] = (lambda: library(text), lambda: ours(text))
    if with_list and fast is not None:
        pairs["list"] = (lambda: fast.encode(text, split_special_tokens=split).ids, lambda: pt.encode(text))
    return pairs


def summary(base: np.ndarray, ours: np.ndarray) -> dict[str, float]:
    ratio = ours / base
    return {
        "base_s": float(np.median(base)),
        "lowbit_s": float(np.median(ours)),
        "paired_ratio": float(np.median(ratio)),
        "paired_p10": float(np.percentile(ratio, 10)),
        "paired_p90": float(np.percentile(ratio, 90)),
        "paired_diff_us": float(np.median(ours - base) * 1e6),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizers", nargs="*", default=["cl100k", "o200k", "qwen2", "deepseek-v4"])
    parser.add_argument("--sizes", default=str(16 * KB), help="comma-separated sizes in bytes of prose")
    parser.add_argument("--rounds", type=int, default=2001)
    parser.add_argument("--list", action="store_true", help="also time encode against the list call")
    parser.add_argument("--library", action="store_true", help="also time against the library's own numpy call")
    parser.add_argument("--scale-rounds", action="store_true", help="rounds * 16K / size rounds per size")
    parser.add_argument("--min-rounds", type=int, default=7, help="with --scale-rounds: at least this many")
    parser.add_argument("--out", default="tokenize_call_overhead", help="results name under benchmarks/results")
    args = parser.parse_args(argv)
    t0, load0 = time.perf_counter(), os.getloadavg()
    rows: list[dict[str, Any]] = []
    for name in args.tokenizers:
        loaded = load_tokenizer(name)
        own = own_call(loaded)
        with ParallelTokenizer(loaded, workers=2) as pt:
            on_fastokens = isinstance(pt.backend, FastokensBackend)
            if not on_fastokens and not args.library:
                print(f"{name}: default path is not one fastokens call ({pt.backend.name}); skipped", flush=True)
                continue
            fast, split = (pt.backend.fast, pt.backend.ordinary) if on_fastokens else (None, False)
            lib_name, lib_call = library_np_call(loaded) if args.library else (None, None)
            for n in (int(x) for x in args.sizes.split(",")):
                text = sized_text("prose", n)
                ref = own(text)
                rounds = args.rounds
                if args.scale_rounds:
                    rounds = max(args.min_rounds, min(args.rounds, args.rounds * 16 * KB // max(n, 1)))
                pairs = make_pairs(fast, split, pt, text, args.list, lib_call)
                for kind, (base, ours) in pairs.items():
                    got, want = ours(), base()
                    exact = np.asarray(got, dtype=np.uint32).tolist() == ref and np.asarray(want).tolist() == ref
                    tb, to = paired_rounds(base, ours, rounds)
                    row = {"tokenizer": name, "chars": len(text), "call": kind, "rounds": rounds,
                           **summary(tb, to), "exact": exact, "loadavg": os.getloadavg()[0]}  # fmt: skip
                    if kind == "numpy_library":
                        row["baseline"] = lib_name
                    rows.append(row)
                    print(
                        f"{name:12s} {len(text):>8d} {kind:13s} base={row['base_s'] * 1e6:.2f}us "
                        f"lowbit={row['lowbit_s'] * 1e6:.2f}us paired={row['paired_ratio']:.4f} "
                        f"[{row['paired_p10']:.3f}, {row['paired_p90']:.3f}] diff={row['paired_diff_us']:+.3f}us "
                        f"exact={exact} load={row['loadavg']:.2f}",
                        flush=True,
                    )
    print_table(
        ["tokenizer", "chars", "call", "base us", "lowbit us", "paired ratio", "p10", "p90", "diff us", "exact"],
        [[r["tokenizer"], r["chars"], r["call"], r["base_s"] * 1e6, r["lowbit_s"] * 1e6, r["paired_ratio"],
          r["paired_p10"], r["paired_p90"], r["paired_diff_us"], r["exact"]] for r in rows],
    )  # fmt: skip
    path = write_results(
        args.out,
        {"command": " ".join(sys.argv), "rounds": args.rounds, "rows": rows, "loadavg_start": load0,
         "loadavg_end": os.getloadavg(), "elapsed_s": time.perf_counter() - t0},
    )  # fmt: skip
    print(f"results written to {path}")
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
