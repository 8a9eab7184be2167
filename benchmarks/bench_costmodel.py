"""Cost-model tables and plots for the named models, and the model checked against this CPU.

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_costmodel.py [--quick]

Writes ``benchmarks/results/costmodel.json`` and ``benchmarks/results/costmodel_<model>.png``. The CPU is
calibrated in this run (GEMM throughput per path and M, bandwidth, dequant and decomposition rates); the
predicted MSD-over-dequant speedup is put next to the measured one from ``msd_linear.json`` when that file
exists, and marked "not measured yet" otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import RESULTS_DIR, print_table, write_results
from lowbit.costmodel.hardware import PRESETS
from lowbit.costmodel.models import MODELS
from lowbit.costmodel.plots import latency_figure, save_figure
from lowbit.costmodel.tables import attention_table, hardware_table, kv_bytes_table, linear_table
from lowbit.lab.costmodel.calibrate import calibrate_cpu
from lowbit.lab.costmodel.cpu_check import NOT_MEASURED, CpuComparison, compare_cpu, load_measured, predict_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    cal = calibrate_cpu(quick=args.quick)
    cpu = cal.to_hardware()
    hws = [*PRESETS.values(), cpu]
    payload: dict[str, object] = {"quick": args.quick, "calibration": cal.as_dict()}
    header, rows = hardware_table(hws)
    payload["hardware"] = {"header": header, "rows": rows}
    header, rows = kv_bytes_table()
    print_table(header, rows)
    payload["kv_bytes"] = {"header": header, "rows": rows}
    for name, model in MODELS.items():
        h, r = linear_table(hws, model)
        print(f"\n{name}: linear layers of one layer")
        print_table(h, r)
        h2, r2 = attention_table(hws, model)
        print(f"\n{name}: decode attention over INT8 KV")
        print_table(h2, r2)
        payload[name] = {"linear": {"header": h, "rows": r}, "attention": {"header": h2, "rows": r2}}
        save_figure(latency_figure(model, list(PRESETS.values())), RESULTS_DIR / f"costmodel_{name}.png")
    measured = load_measured(RESULTS_DIR / "msd_linear.json")
    if measured is None:
        path = cal.best_int8_path()
        rows = []
        for m in (1, 16, 128):
            t_dq, t_msd = predict_cpu(cal, m, 4096, 4096, path)
            rows.append([m, 4096, 4096, path, t_dq * 1e3, t_msd * 1e3, t_dq / t_msd, NOT_MEASURED])
        header = ["M", "K", "N", "int8 path", "dequant pred ms", "MSD pred ms", "speedup pred", "measured"]
        payload["cpu_check"] = {"status": NOT_MEASURED, "header": header, "rows": rows}
    else:
        comp = compare_cpu(cal, measured)
        header, rows = list(CpuComparison.HEADER), [c.cells() for c in comp]
        payload["cpu_check"] = {"status": "measured", "header": header, "rows": rows}
    print("\nCPU: predicted vs measured MSD speedup over BF16 dequant")
    print_table(header, rows)
    payload["seconds"] = time.perf_counter() - start
    print(f"wrote {write_results('costmodel', payload)} in {payload['seconds']:.0f} s")


if __name__ == "__main__":
    main()
