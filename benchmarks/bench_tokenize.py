"""LoPT benchmark: lossless parallel tokenization against sequential encode, naive chunking and fast peers.

Run (one command; takes the shared benchmark lock so timings are not disturbed by other benchmarks):

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize.py          # full, ~10 min
    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize.py --quick  # ~2 min

Columns (all times are medians of repeats measured in the same run; ratios are what to quote):
- ``seq``: the library's own sequential encode (tiktoken ``encode_ordinary``, HF ``encode(...).ids``,
  SentencePiece ``encode``), the reference every other column is checked against;
- ``naive2``: cut / encode on 2 workers / concatenate, with ``wrong`` = reference tokens it does not reproduce;
- ``lopt1``, ``lopt2``: ``ParallelTokenizer`` on the library backend with 1 worker (chunks in the caller) and
  2 workers (persistent process pool); ``thr2``: the same with the library's own multi-threaded batch call;
- ``default``: ``ParallelTokenizer(tok, workers=2)`` with every default (one direct fastokens call when it
  supports the vocabulary), first call on a fresh object and warm (second call; fastokens caches words between
  calls); ``lopt+fastok``: LoPT chunking on top of fastokens' batch call (first call);
- peers, each alone on the whole text: ``fastok`` first/warm, ``bpe-openai``; tiktoken and HF ``tokenizers``
  are the ``seq`` column of their own vocabularies;
- ``peak_MB``: the largest rise of resident memory (this process and its workers, sampled every 5 ms) during
  the LoPT 2-worker call.
Every parallel and peer result is compared with ``seq``; a mismatch is recorded (``exact`` = False), not hidden.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import median_time, print_table, write_results
from lowbit.lab.tokenize.corpus import make_text
from lowbit.lab.tokenize.naive import naive_encode, wrong_tokens
from lowbit.tokenize import ParallelTokenizer, fastokens_available, load_tokenizer
from lowbit.tokenize.backends import make_backend
from lowbit.tokenize.backends.fastokens import byte_level_lengths

KB, MB = 1 << 10, 1 << 20
FULL = {
    # tokenizer: (sizes for prose/mixed, sizes for code/chinese)
    "cl100k": ([256 * KB, MB, 4 * MB, 16 * MB], [256 * KB, MB, 4 * MB]),
    "o200k": ([256 * KB, MB, 4 * MB, 16 * MB], [256 * KB, MB, 4 * MB]),
    "qwen3.5": ([256 * KB, MB, 4 * MB], [256 * KB, MB]),
    "deepseek-v4": ([256 * KB, MB, 4 * MB], [256 * KB, MB]),
    "bert": ([256 * KB, MB, 4 * MB], [256 * KB, MB]),
    "mistral-v1": ([256 * KB, MB, 4 * MB], [256 * KB, MB]),
}
QUICK = {
    "cl100k": ([64 * KB, 256 * KB, MB], [256 * KB]),
    "deepseek-v4": ([256 * KB, MB], [256 * KB]),
    "mistral-v1": ([256 * KB, MB], [256 * KB]),
}
KINDS = ("prose", "code", "chinese", "mixed")


def sized_text(kind: str, n_bytes: int) -> str:
    """A text of ``kind`` whose UTF-8 encoding is at most ``n_bytes`` (and within a character of it)."""
    text = make_text(kind, n_bytes, seed=1)
    return text.encode("utf-8")[:n_bytes].decode("utf-8", "ignore")


class PeakRSS:
    """Largest rise of RSS (this process + children) while the block runs, sampled every 5 ms."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except Exception:  # a child may exit between listing and reading
                pass
        return total

    def __enter__(self) -> PeakRSS:
        self.base = self._rss()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    out: list[Any] = []

    def call() -> None:
        out.append(fn())

    t = median_time(call, repeats=repeats, warmup=0)
    return t, out[-1]


def peers(name: str, loaded: Any) -> tuple[dict[str, Callable[[], Callable[[str], np.ndarray]]], dict[str, str]]:
    """Factories of peer encoders that support this vocabulary, and the reason for each peer left out."""
    out: dict[str, Callable[[], Callable[[str], np.ndarray]]] = {}
    missing: dict[str, str] = {}
    if not fastokens_available():
        missing["fastok"] = "fastokens not installed"
    elif loaded.path is None:
        missing["fastok"] = "no vocabulary file to load into fastokens"
    elif loaded.kind == "sentencepiece" or (loaded.kind == "hf" and byte_level_lengths(loaded.obj) is None):
        missing["fastok"] = "not a byte-level BPE vocabulary"
    else:
        try:
            make_backend(loaded, backend="fastokens")
        except ValueError as exc:
            missing["fastok"] = f"fastokens refuses the vocabulary: {exc}"
    if "fastok" not in missing:
        import fastokens

        def fast_factory() -> Callable[[str], np.ndarray]:
            if loaded.kind == "tiktoken":
                enc = make_backend(loaded, backend="fastokens")[0].fast
                return lambda t: np.frombuffer(enc.encode_batch_flat([t], split_special_tokens=True)[0], np.uint32)
            enc = fastokens.Tokenizer.from_json_str(loaded.obj.to_str())
            enc.no_padding()
            enc.no_truncation()
            enc.encode("warm up: Hello, 世界 123")
            return lambda t: np.asarray(enc.encode(t).ids, dtype=np.uint32)

        out["fastok"] = fast_factory
    if name in ("cl100k", "o200k"):
        import bpe_openai

        def bpe_factory() -> Callable[[str], np.ndarray]:
            enc = bpe_openai.get_encoding(f"{name}_base")
            return lambda t: np.asarray(enc.encode_ordinary(t), dtype=np.uint32)

        out["bpe-openai"] = bpe_factory
    else:
        missing["bpe-openai"] = "bpe-openai ships cl100k, o200k and voyage3 only"
    return out, missing


def bench_one(name: str, loaded: Any, kind: str, n_bytes: int, quick: bool) -> dict[str, Any]:
    text = sized_text(kind, n_bytes)
    mb = len(text.encode("utf-8")) / 1e6
    repeats = 1 if (n_bytes >= 4 * MB or (loaded.kind != "tiktoken" and n_bytes >= MB)) else 3
    lib, _ = make_backend(loaded, backend="library")
    t_seq, ref_list = timed(lambda: lib.reference(text), repeats)
    ref = np.asarray(ref_list, dtype=np.uint32)
    row: dict[str, Any] = {"tokenizer": name, "library": loaded.kind, "text": kind, "MB": round(mb, 3)}
    row["tokens"] = len(ref)
    row["seq_s"] = t_seq
    row["seq_MBps"] = mb / t_seq
    exact: dict[str, bool] = {}

    with ParallelTokenizer(loaded, workers=2, backend="library", strategy="processes", min_parallel_chars=0) as pt2:
        pt2.encode_to_numpy(text[:100_000])  # start the pool (a one-off cost, not per call)
        t_naive, (naive_ids, cuts) = timed(lambda: naive_encode(pt2, text), repeats)
        row["naive2_s"] = t_naive
        row["naive_wrong"] = wrong_tokens(ref, naive_ids, cuts)
        row["naive_exact"] = bool(np.array_equal(naive_ids, ref))
        with PeakRSS() as mem:
            t2, ids = timed(lambda: pt2.encode_with_stats(text), repeats)
        row["lopt2_s"] = t2
        row["peak_MB"] = mem.peak / 1e6
        row["retries"] = ids[1].merge.retries if ids[1].merge else 0
        exact["lopt2"] = bool(np.array_equal(ids[0], ref))
    with ParallelTokenizer(loaded, workers=1, backend="library", strategy="inline", min_parallel_chars=0) as pt1:
        t1, ids1 = timed(lambda: pt1.encode_to_numpy(text), repeats)
        row["lopt1_s"] = t1
        exact["lopt1"] = bool(np.array_equal(ids1, ref))
    with ParallelTokenizer(loaded, workers=2, backend="library", strategy="threads", min_parallel_chars=0) as ptt:
        tt, idst = timed(lambda: ptt.encode_to_numpy(text), repeats)
        row["thr2_s"] = tt
        exact["thr2"] = bool(np.array_equal(idst, ref))
    with ParallelTokenizer(loaded, workers=2) as ptd:
        row["default_backend"] = f"{ptd.backend.name}/{ptd.strategy}"
        if ptd.strategy == "processes":
            ptd.encode_to_numpy(text[:100_000])  # pool start-up is a one-off
        start = time.perf_counter()
        idsd = ptd.encode_to_numpy(text)
        row["default_first_s"] = time.perf_counter() - start
        td, idsd2 = timed(lambda: ptd.encode_to_numpy(text), repeats)
        row["default_warm_s"] = td
        exact["default"] = bool(np.array_equal(idsd, ref) and np.array_equal(idsd2, ref))
    peer_factories, missing = peers(name, loaded)
    row["peers_left_out"] = missing
    if "fastok" in peer_factories:
        with ParallelTokenizer(loaded, workers=2, backend="fastokens", strategy="threads", min_parallel_chars=0) as ptf:
            ptf.encode_to_numpy(text[:1000])
            start = time.perf_counter()
            idsf = ptf.encode_to_numpy(text)
            row["lopt_fastok_first_s"] = time.perf_counter() - start
            exact["lopt_fastok"] = bool(np.array_equal(idsf, ref))
    best_peer = t_seq
    for peer, factory in peer_factories.items():
        enc = factory()
        start = time.perf_counter()
        try:
            pids = enc(text)
        except ValueError as exc:  # bpe-openai refuses long inputs ("Input too long to encode safely")
            row[f"{peer}_first_s"] = row[f"{peer}_warm_s"] = f"refused: {exc}"
            continue
        first = time.perf_counter() - start
        tw, pids2 = timed(lambda enc=enc: enc(text), repeats)
        row[f"{peer}_first_s"] = first
        row[f"{peer}_warm_s"] = tw
        exact[peer] = bool(np.array_equal(pids, ref) and np.array_equal(pids2, ref))
        best_peer = min(best_peer, first)
    row["speedup_lopt2"] = t_seq / t2
    row["speedup_thr2"] = t_seq / tt
    row["speedup_default_first"] = t_seq / row["default_first_s"]
    row["default_vs_best_peer_first"] = best_peer / row["default_first_s"]
    row["exact"] = exact
    return row


def small_input_overhead(names: list[str]) -> list[dict[str, Any]]:
    """Overhead of ``ParallelTokenizer.encode`` (all defaults) over the library's own call, called directly, on a
    16 KB input (below ``min_parallel_chars``: one library call, or one fastokens call where it is the default)."""
    rows = []
    for name in names:
        loaded = load_tokenizer(name)
        text = sized_text("mixed", 16 * KB)
        obj = loaded.obj
        if loaded.kind == "tiktoken":
            raw = obj.encode_ordinary
        elif loaded.kind == "hf":
            raw = lambda t, obj=obj: obj.encode(t, add_special_tokens=False).ids  # noqa: E731
        else:
            raw = obj.encode
        with ParallelTokenizer(loaded, workers=2) as pt:
            assert pt.encode(text) == raw(text)
            t_lib = median_time(lambda raw=raw, text=text: raw(text), repeats=15, min_seconds=0.02)
            t_pt = median_time(lambda pt=pt, text=text: pt.encode(text), repeats=15, min_seconds=0.02)
        rows.append({"tokenizer": name, "chars": len(text), "library_s": t_lib, "lowbit_s": t_pt,
                     "overhead_pct": 100 * (t_pt / t_lib - 1)})  # fmt: skip
    print_table(["tokenizer", "chars", "library s", "lowbit s", "overhead %"], [list(r.values()) for r in rows])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and three tokenizers (~2 min)")
    parser.add_argument("--tokenizers", nargs="*", default=None, help="subset of the tokenizers to run")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    parser.add_argument("--name", default=None, help="results file name (default tokenize / tokenize_quick)")
    args = parser.parse_args(argv)
    grid = QUICK if args.quick else FULL
    names = args.tokenizers or list(grid)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for name in names:
        loaded = load_tokenizer(name)
        big, small = grid.get(name, FULL.get(name, ([MB], [MB])))
        for kind in args.kinds:
            for size in big if kind in ("prose", "mixed") else small:
                row = bench_one(name, loaded, kind, size, args.quick)
                rows.append(row)
                print(
                    f"[{time.perf_counter() - t0:6.0f}s] {name} {kind} {row['MB']:.2f} MB: seq {row['seq_s']:.3f}s "
                    f"lopt2 x{row['speedup_lopt2']:.2f} thr2 x{row['speedup_thr2']:.2f} "
                    f"default x{row['speedup_default_first']:.2f} ({row['default_backend']}) "
                    f"naive wrong {row['naive_wrong']} exact {all(row['exact'].values())}",
                    flush=True,
                )
    small_rows = small_input_overhead(names)
    header = [
        "tokenizer", "text", "MB", "seq MB/s", "naive2 s", "wrong", "lopt1 s", "lopt2 s", "x lopt2", "thr2 s",
        "x thr2", "default first s", "default warm s", "fastok first s", "fastok warm s", "lopt+fastok first s",
        "bpe-openai s",
        "default/best peer", "peak MB", "exact",
    ]  # fmt: skip
    table = [
        [
            r["tokenizer"], r["text"], r["MB"], r["seq_MBps"], r["naive2_s"], r["naive_wrong"], r["lopt1_s"],
            r["lopt2_s"], r["speedup_lopt2"], r["thr2_s"], r["speedup_thr2"], r["default_first_s"],
            r["default_warm_s"], r.get("fastok_first_s", "-"), r.get("fastok_warm_s", "-"),
            r.get("lopt_fastok_first_s", "-"),
            r.get("bpe-openai_first_s", "-"), r["default_vs_best_peer_first"], r["peak_MB"],
            all(r["exact"].values()),
        ]
        for r in rows
    ]  # fmt: skip
    print_table(header, table)
    path = write_results(
        args.name or ("tokenize_quick" if args.quick else "tokenize"),
        {
            "quick": args.quick,
            "workers": 2,
            "columns": header,
            "rows": rows,
            "table": table,
            "small_input_overhead": small_rows,
        },
    )
    print(f"results written to {path}")
    return 0 if all(all(r["exact"].values()) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
