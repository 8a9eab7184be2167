"""``lowbit tokenize FILE... [--tokenizer NAME|PATH] [--workers N] [--out ids.npy|ids.jsonl] [--verify] [--stats]``.

Reads UTF-8 files (``-`` or no FILE: stdin), encodes each with :class:`ParallelTokenizer` (identical to the
library's sequential encode; method: ``docs/methods/lopt.md``) and writes the ids atomically (temporary name, then
rename). Invalid UTF-8 is an error naming the byte offset unless ``--errors replace``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from lowbit._atomic import atomic_write
from lowbit.tokenize.lopt import MIN_CHUNK_CHARS
from lowbit.tokenize.parallel import EncodeStats, ParallelTokenizer, VerificationError, usable_cores
from lowbit.tokenize.presets import PRESETS

PROGRESS_MIN_CHARS = 1 << 20


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``tokenize`` subcommand."""
    p = sub.add_parser(
        "tokenize",
        help="lossless parallel tokenization (LoPT) of files or stdin",
        description=(
            "Token ids identical to the tokenizer's own sequential encode, computed in parallel. Ids go to stdout "
            "(one line of space-separated ids per input) unless --out is given."
        ),
    )
    p.add_argument("files", nargs="*", type=str, help="UTF-8 text files; '-' or none reads stdin")
    p.add_argument(
        "--tokenizer",
        default="qwen2",
        help=f"preset ({', '.join(sorted(PRESETS))}) or a vocabulary path (tokenizer.json[.gz], *.tiktoken[.gz] "
        "with --pattern, SentencePiece *.model); default: qwen2 (Qwen2/2.5, needs the vocab extra)",
    )
    p.add_argument("--pattern", default=None, help="pre-tokenizer regex, needed for a .tiktoken path (default: none)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="most processes or threads to use; capped at the usable cores (default: the usable cores)",
    )
    p.add_argument(
        "--backend",
        choices=["auto", "library", "fastokens"],
        default="auto",
        help="auto (default): fastokens when it is installed and supports the vocabulary (byte-level BPE), else "
        "the tokenizer's own library; library: never fastokens; fastokens: fail if it cannot be used",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write ids to .npy (one input) or .jsonl (one line each); default: stdout",
    )
    p.add_argument("--verify", action="store_true", help="re-encode sequentially and fail on any difference")
    p.add_argument("--stats", action="store_true", help="print tokens, MB/s and speedup over sequential encode")
    p.add_argument(
        "--errors",
        choices=["strict", "replace"],
        default="strict",
        help="invalid UTF-8: strict (default) fails naming the byte offset; replace substitutes U+FFFD",
    )
    p.add_argument(
        "--chunk-chars",
        type=int,
        default=None,
        metavar="N",
        help=f"characters per piece, at least {MIN_CHUNK_CHARS} (default: text length / (4 x workers), clamped to "
        "16K-1M characters; 64K at most for SentencePiece)",
    )
    p.add_argument(
        "--overlap-chars",
        type=int,
        default=None,
        metavar="N",
        help="characters shared by neighbouring pieces, where their tokens are matched (default: 64, 128 for "
        "SentencePiece, at least 2 x the longest special token + 48)",
    )
    p.add_argument(
        "--max-retries",
        type=int,
        default=None,
        metavar="N",
        help="times a cut without a match is retried with a larger overlap before its two pieces are encoded as "
        "one (default: 3)",
    )
    p.add_argument(
        "--min-parallel-chars",
        type=int,
        default=32_768,
        metavar="N",
        help="inputs shorter than this are one sequential library call (default: 32768)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help=f"never show a progress bar (default: shown on stderr for inputs of {PROGRESS_MIN_CHARS} characters "
        "or more)",
    )
    p.set_defaults(func=run)


def read_text(name: str, errors: str) -> str:
    """Read a file (``-``: stdin) as UTF-8; invalid bytes raise ``ValueError`` naming the byte offset."""
    raw = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{name}: invalid UTF-8 at byte offset {exc.start} (byte 0x{raw[exc.start]:02x}); "
            "pass --errors replace to substitute U+FFFD"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Encode every input; exit code 0 on success (errors are raised as ``ValueError`` for the CLI to print)."""
    names = list(args.files) or ["-"]
    if args.out is not None and args.out.suffix not in (".npy", ".jsonl"):
        raise ValueError(f"--out: expected a .npy or .jsonl path, got {str(args.out)!r}")
    if args.out is not None and args.out.suffix == ".npy" and len(names) > 1:
        raise ValueError("--out: .npy holds one input's ids; use .jsonl for several files")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers: expected a positive int, got {args.workers}")
    tokenizer: object = args.tokenizer
    if args.pattern is not None:
        from lowbit.tokenize.presets import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer, pattern=args.pattern)
    results: list[tuple[str, np.ndarray]] = []
    with ParallelTokenizer(
        tokenizer,
        workers=args.workers or usable_cores(),
        backend=args.backend,
        chunk_chars=args.chunk_chars,
        overlap_chars=args.overlap_chars,
        max_retries=args.max_retries,
        min_parallel_chars=args.min_parallel_chars,
    ) as pt:
        for name in names:
            text = read_text(name, args.errors)
            start = time.perf_counter()
            ids, stats = _encode(pt, text, show=not args.no_progress and len(text) >= PROGRESS_MIN_CHARS)
            elapsed = time.perf_counter() - start
            results.append((name, ids))
            if args.stats or args.verify:
                # One sequential library encode serves both (and is not counted in the parallel time).
                start = time.perf_counter()
                ref = np.asarray(pt.backend.reference(text), dtype=np.uint32)
                seq = time.perf_counter() - start
                if args.verify and not np.array_equal(ref, ids):
                    raise VerificationError(f"{name}: parallel ids differ from the sequential encode")
                if args.stats:
                    _print_stats(pt, name, text, ids, stats, elapsed, seq)
                if args.verify:
                    print(f"{name}: verified identical to the sequential encode ({len(ids)} tokens)", file=sys.stderr)
    if args.out is None:
        for _, ids in results:
            sys.stdout.write(" ".join(map(str, ids.tolist())) + "\n")
    else:
        write_ids(args.out, results)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _encode(pt: ParallelTokenizer, text: str, show: bool) -> tuple[np.ndarray, EncodeStats]:
    if not show:
        return pt.encode_with_stats(text)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("tokenizing"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("tokenize", total=len(text))
        return pt.encode_with_stats(text, on_progress=lambda done, total: progress.update(task, completed=done))


def _print_stats(
    pt: ParallelTokenizer, name: str, text: str, ids: np.ndarray, stats: EncodeStats, elapsed: float, seq: float
) -> None:
    mb = len(text.encode("utf-8", "surrogatepass")) / 1e6
    merge = stats.merge
    extra = f", retries {merge.retries}, merges {merge.merges}" if merge else ""
    print(
        f"{name}: {len(text)} chars, {len(ids)} tokens, {elapsed:.3f} s ({mb / max(elapsed, 1e-9):.1f} MB/s) via "
        f"{stats.backend} [{stats.path}/{stats.strategy}{extra}]; sequential {pt.backend.name.split('+')[0]} "
        f"library encode {seq:.3f} s ({mb / max(seq, 1e-9):.1f} MB/s); speedup {seq / max(elapsed, 1e-9):.2f}x",
        file=sys.stderr,
    )


def write_ids(path: Path, results: Sequence[tuple[str, np.ndarray]]) -> None:
    """Write ``.npy`` (one uint32 array) or ``.jsonl`` (``{"file": ..., "ids": [...]}`` per line) atomically."""
    with atomic_write(path, "wb") as f:  # mode 0o666 & ~umask (mkstemp alone left ids.npy 0600)
        if path.suffix == ".npy":
            np.save(f, np.asarray(results[0][1], dtype=np.uint32))
        else:
            for name, ids in results:
                _write_jsonl_line(f, name, ids)


def _write_jsonl_line(f: IO[bytes], name: str, ids: np.ndarray) -> None:
    f.write(b'{"file": ' + json.dumps(name).encode() + b', "ids": [')
    step = 1 << 20
    for i in range(0, len(ids), step):
        if i:
            f.write(b", ")
        f.write(", ".join(map(str, ids[i : i + step].tolist())).encode())
    f.write(b"]}\n")
