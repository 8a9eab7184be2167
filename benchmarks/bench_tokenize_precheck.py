"""The LoPT window pre-check on its own: ``Backend.may_cut`` on one 3456-character window and
``lopt.hopeless_boundaries`` on a whole 256K-character text (7 boundaries), per backend and input.

Run (takes the shared benchmark lock); ``--root`` times another checkout of lowbit (a git worktree of an older
commit), so two versions can be timed alternately in one session:

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize_precheck.py
    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize_precheck.py --root /tmp/wt-old

Each figure is the median of ``perf_counter`` times of warm calls (2000 for a window, 300 for a text). The window
is the widest one a 256K-character text's boundary reaches (128 characters of overlap, 3 retries: 27 x 128);
the inputs are ``bench_tokenize_pathological``'s (digits, one repeated letter, Chinese without spaces) and prose.
Printed only (docs/tokenize.md, "The window pre-check", quotes it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def median_us(fn: Callable[[], Any], calls: int) -> float:
    """Median microseconds of ``calls`` timed calls after one untimed call."""
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1e6 * times[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent), help="lowbit checkout to time")
    parser.add_argument("--tokenizers", nargs="*", default=["o200k", "cl100k", "mistral-v1"])
    args = parser.parse_args(argv)
    root = str(Path(args.root).resolve())
    sys.path[:0] = [root, root + "/benchmarks"]
    from bench_tokenize_pathological import inputs  # type: ignore[import-not-found]

    import lowbit
    from lowbit.lab.tokenize.corpus import make_text
    from lowbit.tokenize import ParallelTokenizer, load_tokenizer
    from lowbit.tokenize.lopt import hopeless_boundaries, make_plan, split_points

    if not str(Path(lowbit.__file__).resolve()).startswith(root):
        parser.error(f"--root: imported lowbit from {lowbit.__file__}, not from {root}")
    texts = inputs(262144)
    prose = make_text("prose", 300_000, seed=1)
    windows = {"digits": texts["digits"][5000:8456], "letter": "a" * 3456, "prose": prose[7000:10456]}
    for name in args.tokenizers:
        with ParallelTokenizer(load_tokenizer(name), workers=2, backend="library", min_parallel_chars=0) as pt:
            b = pt.backend
            out = [
                f"may_cut {kind} {median_us(lambda w=w, b=b: b.may_cut(w), 2000):.1f}us" for kind, w in windows.items()
            ]
            for kind in ("digits", "letter", "cjk-no-spaces"):
                text = texts[kind]
                plan = make_plan(len(text), pt.parallelism, b, pt.config)
                bounds = split_points(len(text), plan.chunk_chars, plan.overlap_chars)
                t = median_us(lambda t=text, bd=bounds, p=plan, b=b: hopeless_boundaries(t, bd, b, p), 300)
                out.append(f"hopeless {kind} {t:.0f}us")
        print(f"{Path(root).name:8s} {name:10s} " + "; ".join(out) + f" load={os.getloadavg()[0]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
