"""``lowbit quantize MODEL_DIR OUT_DIR``: stream a safetensors checkpoint into an MSD-quantized one.

The output loads with ``lowbit.msd.load_quantized(OUT_DIR, model)``. Tensors are read, quantized and written
one at a time (peak memory near the largest tensor, reported at the end); the output directory appears only
when complete. SIGTERM and SIGHUP end the run like Ctrl-C: the temporary folder is removed (a run killed with
SIGKILL leaves it, and the next run for the same OUT_DIR removes it).
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``quantize`` subcommand."""
    from lowbit.msd.convert import DEFAULT_EXCLUDE

    p = subparsers.add_parser(
        "quantize",
        help="quantize a safetensors checkpoint for MSD inference (streams tensor by tensor)",
        description="Quantize the linear weights of a safetensors checkpoint directory (single file or sharded "
        "with model.safetensors.index.json) to INT8 or MXFP4 for lowbit MSD layers. The result is written to a "
        "temporary folder and renamed to OUT_DIR when complete.",
    )
    p.add_argument(
        "model_dir",
        type=Path,
        help="source folder: model.safetensors, or shards listed in model.safetensors.index.json (a Hugging Face "
        "checkpoint); it is only read",
    )
    p.add_argument(
        "out_dir",
        type=Path,
        help="output folder; must not exist (unless --overwrite) and must lie outside MODEL_DIR",
    )
    p.add_argument(
        "--weight",
        choices=("int8", "mxfp4"),
        default="int8",
        help="weight format: int8 (symmetric, one float32 scale per output channel, or per --group-size) or mxfp4 "
        "(OCP MXFP4: E2M1 with one E8M0 scale per 32 along K, 4.25 bits/weight) (default int8)",
    )
    p.add_argument(
        "--method",
        choices=("msd", "dequant"),
        default="msd",
        help="GEMM the loaded layers run, stored in each layer's config: msd (activation decomposed, integer "
        "GEMMs, weight never dequantized) or dequant (the baseline: weight dequantized every call) (default msd)",
    )
    p.add_argument(
        "--passes",
        type=int,
        default=2,
        help="activation components p per token row for MSD, 1 to 4; INT8 decomposition bound "
        "max|x_row|/(2*127*254^(p-1)) (default 2)",
    )
    p.add_argument(
        "--group-size",
        type=int,
        default=None,
        help="int8 only: one weight scale per this many weights along K (must divide K); default one scale per "
        "output channel",
    )
    p.add_argument(
        "--include",
        default=None,
        metavar="REGEX",
        help="quantize only the 2-D *.weight tensors whose name matches REGEX (re.search); default all of them",
    )
    p.add_argument(
        "--exclude",
        default=DEFAULT_EXCLUDE,
        metavar="REGEX",
        help="never quantize tensors whose name matches REGEX; they are copied unchanged (default: embeddings, "
        "%(default)s; pass '' to exclude nothing)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT_DIR if it is an empty directory or a previous lowbit output (never the model directory)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the summary is printed either way)")
    p.set_defaults(func=run)


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """Turn a termination signal into ``SystemExit(128 + signum)``, so cleanup handlers run."""
    raise SystemExit(128 + signum)


@contextmanager
def _signals_exit() -> Iterator[None]:
    """While active (main thread only), SIGTERM and SIGHUP raise ``SystemExit`` instead of killing the process,
    so the temporary output folder is removed; the previous handlers are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, _exit_on_signal) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(args: argparse.Namespace) -> int:
    """Run ``lowbit quantize``; prints a summary with the peak memory."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from lowbit.msd.config import MSDConfig
    from lowbit.msd.convert import _source_files, quantize_checkpoint

    config = MSDConfig(weight=args.weight, passes=args.passes, method=args.method, group_size=args.group_size)
    files, _ = _source_files(args.model_dir)
    total = sum((args.model_dir / f).stat().st_size for f in files)
    start_rss = _peak_rss_bytes()
    start = time.perf_counter()
    with (
        _signals_exit(),
        Progress(
            TextColumn("[bold]quantize[/bold] {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            disable=args.no_progress,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("", total=total)

        def advance(name: str, nbytes: int) -> None:
            progress.update(task, advance=nbytes, description=name[-48:])

        summary = quantize_checkpoint(
            args.model_dir,
            args.out_dir,
            config,
            include=args.include,
            exclude=args.exclude,
            overwrite=args.overwrite,
            progress=advance,
        )
    mib = 1 << 20
    if summary.skipped:
        print(
            f"lowbit quantize: warning: not copied (symbolic links are not followed for files other than the "
            f"tensors; copy them yourself if you trust their targets): {', '.join(summary.skipped)}",
            file=sys.stderr,
        )
    print(
        f"quantized {summary.quantized} weights ({config.weight}, method={config.method}), copied {summary.copied} "
        f"tensors: {summary.bytes_in / mib:.1f} MiB -> {summary.bytes_out / mib:.1f} MiB in "
        f"{time.perf_counter() - start:.1f} s -> {summary.out_dir}"
    )
    print(
        f"peak RSS {_peak_rss_bytes() / mib:.1f} MiB (at start {start_rss / mib:.1f} MiB; "
        f"largest tensor {summary.largest_tensor_bytes / mib:.1f} MiB, model {summary.bytes_in / mib:.1f} MiB)"
    )
    return 0
