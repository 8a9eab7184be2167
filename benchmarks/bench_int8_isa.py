"""INT8 kernels on every instruction set: which kernel runs, its error against float64, and its speed.

oneDNN (``onednn``, ``int_mm``) and fbgemm each read their ISA cap from the environment once per process, so the
script re-runs itself in a subprocess per cap the CPU allows:

==========  ==========================================================  =====================================
cap         environment                                                 stands for
==========  ==========================================================  =====================================
default     (none)                                                      this CPU (AMX where present)
vnni        ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI``                     AVX-512 VNNI CPUs without AMX
avx2        ``ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2``  CPUs without VNNI (Zen 2/3, pre-CLX);
            plus ``MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2``  the float baselines capped alike
==========  ==========================================================  =====================================

Per cap and kernel it records the verified profile (:mod:`lowbit.msd.isa`), the max abs error of the raw GEMM
against an exact float64 product on adversarial and random tiles, both as lowbit feeds the kernel now and as it
was fed before (8-bit ``u8 = q + 128`` everywhere), and for ``MSDLinear`` (2 passes) at 1 x 4096 x 4096 and
512 x 4096 x 4096: the relative L2 error against the float64 product with the same quantized weight, and the
median time beside float32 and bfloat16 ``nn.Linear`` measured in the same process (with AMX-BF16, bf16 runs
about 3x float32, which changes which baseline a user would pick).

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_int8_isa.py [--quick]

Writes ``benchmarks/results/int8_isa.json`` (``int8_isa_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import median_time, print_table, write_results

from lowbit.msd import MSDConfig, MSDLinear, matmul_reference
from lowbit.msd.isa import CpuFeatures, Int8Profile, int8_profile, profile_report
from lowbit.msd.kernels import encode_activations, gemm_with_profile, pack_int8_weight

CAPS = {
    "default": {},
    "vnni": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"},
    # the float baselines are capped too (MKL, ATen), as they would run on a CPU without AVX-512
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
    },
}
LEGACY = {"fbgemm": (127, 128), "onednn": (127, 128), "int_mm": (127, 0)}  # how every CPU was fed before


def _tiles(qmax: int, gen: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for m, k, n in ((1, 4096, 256), (17, 1000, 24), (128, 4096, 256), (512, 4096, 512)):
        a = torch.randint(-qmax, qmax + 1, (m, k), dtype=torch.int8, generator=gen)
        b = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=gen)
        a[0] = qmax
        b[0], b[1] = 127, -127
        out.append((a, b))
    return out


def _gemm_error(kernel: str, qmax: int, zero_point: int) -> float:
    """Max abs error of the kernel's output against float32(exact float64 product) over the tiles."""
    probe = Int8Profile(kernel, qmax, zero_point, "", False, "")
    worst = 0.0
    for a, b in _tiles(qmax, torch.Generator().manual_seed(1)):
        want = (a.double() @ b.double().T).float().double()
        got = gemm_with_profile(
            encode_activations(a.float(), probe), pack_int8_weight(b, torch.ones(b.shape[0]), kernel), probe
        )
        worst = max(worst, float((got.double() - want).abs().max()))
    return worst


def _linear_rows(kernel: str, quick: bool) -> list[dict[str, Any]]:
    rows = []
    torch.manual_seed(0)
    lin = nn.Linear(4096, 4096, bias=False)
    with torch.no_grad():
        lin.weight.normal_(0, 0.02)
    layer = MSDLinear.from_linear(lin, MSDConfig(kernel=kernel))
    wq = layer.weight_quantized()
    fp32 = nn.Linear(4096, 4096, bias=False)
    with torch.no_grad():
        fp32.weight.copy_(layer.dequantized_weight(torch.float32))
    bf16 = nn.Linear(4096, 4096, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        bf16.weight.copy_(fp32.weight.to(torch.bfloat16))
    for m in (1, 512):
        x = torch.randn(m, 4096)
        exact = matmul_reference(x, wq)
        y = layer(x)
        rel = float((y.double() - exact).norm() / exact.norm())
        xb = x.to(torch.bfloat16)
        repeats = 3 if quick else 9
        with torch.no_grad():
            t_msd = median_time(lambda x=x: layer(x), repeats=repeats, min_seconds=0.02)
            t_fp32 = median_time(lambda x=x: fp32(x), repeats=repeats, min_seconds=0.02)
            t_bf16 = median_time(lambda xb=xb: bf16(xb), repeats=repeats, min_seconds=0.02)
        rel_bf16 = float((bf16(xb).double() - exact).norm() / exact.norm())
        rows.append({
            "M": m, "K": 4096, "N": 4096, "kernel": layer.kernel_for(m), "msd_rel_err": rel, "bf16_rel_err": rel_bf16,
            "time_s": {"msd": t_msd, "fp32": t_fp32, "bf16": t_bf16},
            "speedup_msd_vs_fp32": t_fp32 / t_msd, "speedup_msd_vs_bf16": t_bf16 / t_msd,
        })  # fmt: skip
    return rows


def measure(quick: bool) -> dict[str, Any]:
    """Everything for the ISA cap of this process."""
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    out: dict[str, Any] = {"profiles": profile_report(), "kernels": {}}
    for kernel in ("fbgemm", "onednn", "int_mm"):
        profile = int8_profile(kernel)
        entry: dict[str, Any] = {"legacy_feed_gemm_max_abs_err": _gemm_error(kernel, *LEGACY[kernel])}
        if isinstance(profile, Int8Profile):
            entry["gemm_max_abs_err"] = _gemm_error(kernel, profile.qmax, profile.zero_point)
            entry["profile"] = profile.to_dict()
            entry["linear"] = _linear_rows(kernel, quick)
        else:
            entry["unusable"] = profile
        out["kernels"][kernel] = entry
    auto = MSDLinear(4096, 4096, config=MSDConfig())
    out["auto"] = {"decode": auto.kernel_for(1), "prefill": auto.kernel_for(512)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    if args.child:
        print(json.dumps(measure(args.quick)))
        return
    features = CpuFeatures.detect()
    allowed = {"amx": ("default", "vnni", "avx2"), "vnni": ("default", "avx2"), "avx2": ("default",)}
    results: dict[str, Any] = {}
    rows = []
    for cap in allowed[features.int8_class]:
        capped = {"ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY"}
        env = {k: v for k, v in os.environ.items() if k not in capped}
        env.update(CAPS[cap])
        cmd = [sys.executable, __file__, "--child"] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, check=True)
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        results[cap] = data
        for kernel, entry in data["kernels"].items():
            for lin in entry.get("linear", []):
                rows.append([
                    cap, kernel, entry["profile"]["isa"], entry["profile"]["qmax"], entry["profile"]["zero_point"],
                    entry["legacy_feed_gemm_max_abs_err"], entry["gemm_max_abs_err"], lin["M"], lin["msd_rel_err"],
                    lin["speedup_msd_vs_fp32"], lin["speedup_msd_vs_bf16"],
                ])  # fmt: skip
            if "unusable" in entry:
                rows.append(
                    [cap, kernel, "-", "-", "-", entry["legacy_feed_gemm_max_abs_err"], "unusable", "-", "-", "-", "-"]
                )
    header = ["cap", "kernel", "isa", "qmax", "zp", "old_gemm_err", "gemm_err", "M", "msd_rel_err", "x_fp32", "x_bf16"]
    print_table(header, rows)
    path = write_results("int8_isa_quick" if args.quick else "int8_isa", {"cpu": features.to_dict(), "caps": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
