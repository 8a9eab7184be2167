"""The INT8 kernel tests again under each instruction-set cap this CPU allows, in subprocesses.

oneDNN honours ``ONEDNN_MAX_CPU_ISA`` and fbgemm ``FBGEMM_ENABLE_INSTRUCTIONS``, both read once per process, so
each cap needs its own interpreter. On a CPU with AMX this checks the VNNI and the no-VNNI (AVX2) paths too; on a
VNNI CPU the AVX2 path; on an AVX2-only CPU the caps change nothing and the default run covers it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lowbit.msd.isa import CpuFeatures

ROOT = Path(__file__).resolve().parents[2]
TESTS = ["tests/msd/test_kernels.py", "tests/msd/test_linear.py", "tests/msd/test_native.py"]
FEATURES = CpuFeatures.detect()

CAPS = {
    # name: (environment, the ISA class the kernels must then report, required CPU class)
    "vnni": ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, "vnni", ("amx", "vnni")),
    "avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}, "avx2", ("amx", "vnni", "avx2")),
}


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    env.pop("FBGEMM_ENABLE_INSTRUCTIONS", None)
    env.update(extra)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("cap", sorted(CAPS))
def test_kernel_tests_pass_under_the_isa_cap(cap: str) -> None:
    extra, want, allowed = CAPS[cap]
    if FEATURES.int8_class not in allowed:
        pytest.skip(f"this CPU's INT8 class is {FEATURES.int8_class!r}")
    if cap == "vnni" and not FEATURES.avx512:
        pytest.skip("AVX512_CORE_VNNI needs AVX-512")
    env = _env(extra)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from lowbit.msd.isa import profile_report; print(json.dumps(profile_report()))",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    for kernel in ("fbgemm", "onednn"):
        assert report[kernel].get("isa") == want, report
    if want == "avx2":
        assert report["fbgemm"]["qmax"] == 63 and report["onednn"]["qmax"] == 63
        assert "unusable" in report["int_mm"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
