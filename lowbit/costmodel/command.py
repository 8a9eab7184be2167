"""``lowbit cost``: the latency/HBM-traffic model's tables (and plots) for a named model shape and hardware.

A user tool: it evaluates the closed-form model (:mod:`lowbit.costmodel.linear`, :mod:`lowbit.costmodel.kvcache`)
on hardware presets or the user's TOML files and measures nothing. Calibrating this CPU and checking the model
against stored benchmark timings is a study: ``lowbit cost-check`` (:mod:`lowbit.lab.costmodel.command`), which
reuses :func:`add_model_options`, :func:`resolve_hardware` and :func:`print_tables` from here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from lowbit.cli_tables import int_list, print_rich_table
from lowbit.costmodel.hardware import PRESETS, Hardware, get_hardware
from lowbit.costmodel.models import MODELS, ModelShape, get_model
from lowbit.costmodel.tables import (
    DEFAULT_MS,
    DEFAULT_SEQS,
    attention_table,
    hardware_table,
    kv_bytes_table,
    linear_table,
)

DEFAULT_HARDWARE = "ascend-910b,ascend-950pr,h100-sxm,h200"
CPU = "cpu"


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The options ``lowbit cost`` shares with ``lowbit cost-check``: model shape, sizes, plot and JSON output."""
    p.add_argument(
        "--model",
        default="llama-3-8b",
        choices=sorted(MODELS),
        help="named model shape whose linear layers and decode attention are costed (default llama-3-8b)",
    )
    p.add_argument(
        "--ms",
        type=int_list,
        default=list(DEFAULT_MS),
        metavar="M,...",
        help=f"token counts M of the linear-layer table, comma-separated (default {','.join(map(str, DEFAULT_MS))})",
    )
    p.add_argument(
        "--seqs",
        type=int_list,
        default=list(DEFAULT_SEQS),
        metavar="LEN,...",
        help="KV cache lengths of the decode-attention table, comma-separated "
        f"(default {','.join(map(str, DEFAULT_SEQS))})",
    )
    p.add_argument(
        "--plot", type=Path, default=None, metavar="PNG", help="also write latency-vs-M and latency-vs-length plots"
    )
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write every table as JSON here")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lowbit cost``."""
    p = subparsers.add_parser(
        "cost",
        help="latency / HBM-traffic model of dequant vs MSD (linear layers, decode attention)",
        description="Closed-form latency and HBM traffic of W8A16/W4A16 linear layers and of decode attention over "
        "a quantized KV cache, dequant vs MSD (docs/methods/msd.md §10; an [inferred] reconstruction). Model "
        "output, not measurements; `lowbit cost-check` calibrates this CPU and checks the model against timings.",
    )
    p.add_argument(
        "--hardware",
        default=DEFAULT_HARDWARE,
        metavar="NAME,...",
        help=f"comma-separated presets ({', '.join(sorted(PRESETS))}) or paths of .toml files with a [hardware] "
        f"table (default {DEFAULT_HARDWARE})",
    )
    add_model_options(p)
    p.set_defaults(func=run)


def resolve_hardware(spec: str, *, cpu: Callable[[], Hardware] | None = None) -> list[Hardware]:
    """Hardware list from the ``--hardware`` text: presets and ``.toml`` files, ``cpu`` only when ``cpu`` is given.

    ``cpu`` returns the calibrated CPU (``lowbit cost-check`` passes one); without it, naming ``cpu`` raises
    ``ValueError`` pointing to ``lowbit cost-check``, as does an empty list.
    """
    hws = []
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        if name == CPU:
            if cpu is None:
                raise ValueError("'cpu' must be calibrated first: run `lowbit cost-check --hardware cpu,...`")
            hws.append(cpu())
        else:
            hws.append(get_hardware(name))
    if not hws:
        raise ValueError("--hardware names no device")
    return hws


def print_tables(model: ModelShape, hws: Sequence[Hardware], *, ms: Sequence[int], seqs: Sequence[int]) -> dict:
    """Print the hardware, linear-layer, KV-bytes and decode-attention tables; return them as
    ``{"model": name, key: {"header", "rows"}}``."""
    out: dict[str, object] = {"model": model.name}
    tables = {
        "hardware": ("Hardware presets", hardware_table(hws)),
        "linear": (
            f"{model.name}: one layer's linear layers, dequant vs MSD [inferred model]",
            linear_table(hws, model, ms=ms),
        ),
        "kv_bytes": ("Bytes per KV element in decode (msd.md §10)", kv_bytes_table()),
        "attention": (
            f"{model.name}: decode attention per layer over an INT8 KV cache ({model.attention.name})",
            attention_table(hws, model, seqs=seqs),
        ),
    }
    for key, (title, (header, rows)) in tables.items():
        print_rich_table(title, header, rows, digits=4)
        out[key] = {"header": header, "rows": rows}
    return out


def write_outputs(out: dict, args: argparse.Namespace, model: ModelShape, hws: Sequence[Hardware]) -> None:
    """The ``--plot`` figure and the ``--json`` file, when asked for."""
    if args.plot is not None:
        from lowbit.costmodel.plots import latency_figure, save_figure

        save_figure(latency_figure(model, hws, ms=args.ms, seqs=args.seqs), args.plot)
        print(f"plot written to {args.plot}")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2, default=str))


def run(args: argparse.Namespace) -> int:
    """Print the tables; optionally plot and write JSON."""
    model = get_model(args.model)
    hws = resolve_hardware(args.hardware)
    out = print_tables(model, hws, ms=args.ms, seqs=args.seqs)
    write_outputs(out, args, model, hws)
    return 0
