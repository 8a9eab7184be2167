"""LoPT at file scale: ``lowbit tokenize`` on a 100 MB file, peak memory and exactness.

Run (takes the shared benchmark lock; about a minute per tokenizer):

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize_memory.py
    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_tokenize_memory.py --mb 20 --tokenizers cl100k

For each tokenizer a text of ``--mb`` MB (the bundled generator's "mixed" kind: prose, code, Chinese, emoji)
is written to a temporary file and ``lowbit tokenize FILE --out ids.npy`` runs in a child process with 2
workers on the library backend (the LoPT path; the fastokens default would be one direct call). Reported:
the child's peak resident memory (``getrusage(RUSAGE_CHILDREN).ru_maxrss``: the largest child, i.e. the CLI
process that holds the text; workers hold one chunk each) as a multiple of the file size, wall time and MB/s
of the whole command (read, encode, write), and whether the written ids equal the library's own sequential
encode, computed afterwards in this process. The rule checked: memory stays a small multiple of the text
(its str, its bytes, the ids), never chunks x text.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import print_table, write_results
from lowbit.lab.tokenize.corpus import make_text
from lowbit.tokenize import load_tokenizer

LOWBIT = [sys.executable, "-m", "lowbit"]


def run_one(name: str, mb: int, workers: int) -> dict[str, object]:
    """Tokenize one ``mb``-MB file with the CLI in a child process and check it against the library."""
    text = make_text("mixed", mb * 1_000_000, seed=3)
    with tempfile.TemporaryDirectory(prefix="lowbit-bench-") as tmp:
        path, out = Path(tmp) / "big.txt", Path(tmp) / "ids.npy"
        path.write_text(text, encoding="utf-8")
        file_mb = path.stat().st_size / 1e6
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        cmd = [*LOWBIT, "tokenize", str(path), "--tokenizer", name, "--backend", "library"]
        cmd += ["--workers", str(workers), "--out", str(out), "--no-progress"]
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        ids = np.load(out)
    tok = load_tokenizer(name)
    start = time.perf_counter()
    ref = tok.encode(text)  # the library's own sequential call (LoadedTokenizer.encode)
    seq = time.perf_counter() - start
    exact = len(ref) == len(ids) and bool(np.array_equal(np.asarray(ref, dtype=np.uint32), ids))
    return {
        "tokenizer": name,
        "file_MB": round(file_mb, 1),
        "chars_M": round(len(text) / 1e6, 1),
        "tokens_M": round(len(ids) / 1e6, 2),
        "peak_MB": round(peak_kb / 1024, 0),
        "peak_over_file": round(peak_kb / 1024 / file_mb, 2),
        "peak_grew": peak_kb > before,
        "cli_s": round(wall, 2),
        "cli_MB_s": round(file_mb / wall, 1),
        "seq_encode_s": round(seq, 2),
        "exact": exact,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=100, help="file size in MB (default 100)")
    parser.add_argument("--tokenizers", nargs="*", default=["cl100k", "mistral-v1"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--name", default="tokenize_memory")
    args = parser.parse_args()
    rows = []
    for name in args.tokenizers:
        # RUSAGE_CHILDREN keeps the largest child so far: run each tokenizer in its own interpreter.
        if len(args.tokenizers) > 1:
            cmd = [sys.executable, __file__, "--mb", str(args.mb), "--workers", str(args.workers)]
            cmd += ["--tokenizers", name, "--name", f"{args.name}_{name}"]
            subprocess.run(cmd, check=True)
            rows.extend(_load_rows(f"{args.name}_{name}"))
            continue
        rows.append(run_one(name, args.mb, args.workers))
    print(f"lowbit tokenize on a {args.mb} MB file, {args.workers} workers")
    print_table(list(rows[0]), [list(r.values()) for r in rows])
    write_results(args.name, {"mb": args.mb, "workers": args.workers, "rows": rows})


def _load_rows(name: str) -> list[dict[str, object]]:
    import json

    from benchmarks._harness import RESULTS_DIR

    path = RESULTS_DIR / f"{name}.json"
    rows = json.loads(path.read_text())["rows"]
    path.unlink()
    return rows


if __name__ == "__main__":
    main()
