"""Tables of the cost model: hardware, per-layer linear latency vs M, KV bytes, decode attention vs length.

Each function returns ``(header, rows)`` with plain Python values, for the CLI, the report and the
benchmark JSON alike. Latencies are in microseconds, traffic in MB (10^6 bytes).
"""

from __future__ import annotations

from collections.abc import Sequence

from lowbit.costmodel.hardware import Hardware
from lowbit.costmodel.kvcache import BYTES_PER_KV_SCHEMES, decode_attention_cost, kv_bytes_per_element
from lowbit.costmodel.linear import (
    DEFAULT_PARAMS,
    SCHEME_LABEL,
    CostParams,
    linear_cost,
    low_precision_peak,
)
from lowbit.costmodel.models import ModelShape

Table = tuple[list[str], list[list[object]]]

DEFAULT_MS = (1, 4, 16, 64, 256, 1024, 4096)
DEFAULT_SEQS = (1024, 4096, 16384, 32768, 131072)


def hardware_table(hws: Sequence[Hardware]) -> Table:
    """The presets with their figures, status and source."""
    header = [
        "hardware",
        "BF16 TFLOPS",
        "INT8 TOPS",
        "MXFP4 TFLOPS",
        "HBM TB/s",
        "vector T/s",
        "decoupled",
        "status",
        "source / notes",
    ]
    rows = [
        [
            h.name,
            h.bf16_tflops,
            h.int8_tops,
            h.mxfp4_tflops or "none",
            h.hbm_tbps,
            h.vector_tops,
            "yes" if h.decoupled else "no (fused)",
            h.status,
            f"{h.source}. {h.notes}".strip(),
        ]
        for h in hws
    ]
    return header, rows


def layer_linear_totals(
    hw: Hardware, model: ModelShape, m: int, *, weight: str, scheme: str, params: CostParams = DEFAULT_PARAMS
) -> tuple[float, float]:
    """``(seconds, bytes)`` of all linear layers of one transformer layer of ``model`` for ``m`` tokens."""
    seconds = nbytes = 0.0
    for lin, m_eff, count in model.linears_at(m):
        cost = linear_cost(hw, m_eff, lin.k, lin.n, weight=weight, scheme=scheme, params=params)
        seconds += count * cost.latency
        nbytes += count * cost.bytes
    return seconds, nbytes


def linear_table(
    hws: Sequence[Hardware],
    model: ModelShape,
    *,
    weights: Sequence[str] = ("int8", "mxfp4"),
    ms: Sequence[int] = DEFAULT_MS,
    params: CostParams = DEFAULT_PARAMS,
) -> Table:
    """Per-layer linear latency and traffic, dequant vs MSD, for each hardware, weight format and M."""
    header = ["hardware", "scheme", "M", "dequant µs", "MSD µs", "MSD speedup", "dequant MB", "MSD MB", "traffic ratio"]
    rows: list[list[object]] = []
    for hw in hws:
        for weight in weights:
            for m in ms:
                t_dq, b_dq = layer_linear_totals(hw, model, m, weight=weight, scheme="dequant", params=params)
                if low_precision_peak(hw, weight) is None:
                    rows.append(
                        [
                            hw.name,
                            SCHEME_LABEL[weight],
                            m,
                            t_dq * 1e6,
                            "n/a (no native MXFP4)",
                            "-",
                            b_dq / 1e6,
                            "-",
                            "-",
                        ]
                    )
                    continue
                t_ms, b_ms = layer_linear_totals(hw, model, m, weight=weight, scheme="msd", params=params)
                rows.append(
                    [
                        hw.name,
                        SCHEME_LABEL[weight],
                        m,
                        t_dq * 1e6,
                        t_ms * 1e6,
                        t_dq / t_ms,
                        b_dq / 1e6,
                        b_ms / 1e6,
                        b_dq / b_ms,
                    ]
                )
    return header, rows


def kv_bytes_table(passes: int = 2) -> Table:
    """Bytes moved per KV element in decode and the ratio against decoupled dequant (the "2.5x")."""
    header = ["KV format", "scheme", "bytes / KV element", "decoupled dequant ÷ this"]
    rows: list[list[object]] = []
    for fmt in ("int8", "mxfp4"):
        base = kv_bytes_per_element(fmt, "dequant (decoupled)", passes=passes)
        for scheme in BYTES_PER_KV_SCHEMES:
            b = kv_bytes_per_element(fmt, scheme, passes=passes)
            rows.append([fmt, scheme, b, base / b])
    return header, rows


def attention_table(
    hws: Sequence[Hardware],
    model: ModelShape,
    *,
    seqs: Sequence[int] = DEFAULT_SEQS,
    batch: int = 1,
    kv_format: str = "int8",
    params: CostParams = DEFAULT_PARAMS,
) -> Table:
    """One layer's decode attention over an INT8 (or MXFP4) cache vs sequence length: dequant vs MSD.

    MSD is shown with the passes streaming the cache (``p·b`` bytes, the paper's 2.5x setting) and stacked.
    """
    header = [
        "hardware",
        "seq",
        "dequant µs",
        "MSD stream µs",
        "MSD stacked µs",
        "speedup stream",
        "speedup stacked",
        "dequant MB",
        "MSD stream MB",
    ]
    stream = CostParams(**{**params.__dict__, "stack_passes": False})
    stacked = CostParams(**{**params.__dict__, "stack_passes": True})
    rows: list[list[object]] = []
    for hw in hws:
        for s in seqs:
            dq = decode_attention_cost(hw, model.attention, s, batch=batch, kv_format=kv_format, params=params)
            if low_precision_peak(hw, kv_format) is None:
                rows.append([hw.name, s, dq.latency * 1e6, "n/a", "n/a", "-", "-", dq.bytes / 1e6, "-"])
                continue
            ms1 = decode_attention_cost(
                hw, model.attention, s, batch=batch, kv_format=kv_format, scheme="msd", params=stream
            )
            ms2 = decode_attention_cost(
                hw, model.attention, s, batch=batch, kv_format=kv_format, scheme="msd", params=stacked
            )
            rows.append(
                [
                    hw.name,
                    s,
                    dq.latency * 1e6,
                    ms1.latency * 1e6,
                    ms2.latency * 1e6,
                    dq.latency / ms1.latency,
                    dq.latency / ms2.latency,
                    dq.bytes / 1e6,
                    ms1.bytes / 1e6,
                ]
            )
    return header, rows
