"""The CPU calibration, the predicted-vs-measured check and the report section "costmodel" (lowbit.lab.costmodel)."""

import json

import pytest

from lowbit.lab.costmodel.calibrate import CpuCalibration, calibration_from_dict
from lowbit.lab.costmodel.cpu_check import compare_cpu, int8_path_for, load_measured, predict_cpu


def fake_calibration() -> CpuCalibration:
    return CpuCalibration(
        k=2048,
        n=2048,
        ms=(1, 16, 128),
        gemm_ops={"bf16": (1e9, 1e10, 5e10), "int8_mm": (1e9, 2e10, 8e10), "fp32": (2e9, 2e10, 1e11)},
        failed={"int8_prepacked": "RuntimeError: test"},
        bandwidth=1e10,
        dequant_rate=1e8,
        decompose_rate=1e7,
        decompose_overhead=1e-5,
        seconds=0.0,
    )


def test_calibration_interpolation_and_roundtrip():
    cal = fake_calibration()
    assert cal.gemm_rate("bf16", 1) == pytest.approx(1e9)
    assert cal.gemm_rate("bf16", 4) == pytest.approx(10**9.5)  # log-linear between M=1 and M=16
    assert cal.gemm_rate("bf16", 10_000) == pytest.approx(5e10)  # clamped
    assert calibration_from_dict(json.loads(json.dumps(cal.as_dict()))) == cal
    with pytest.raises(ValueError, match="not calibrated"):
        cal.gemm_rate("int8_prepacked", 1)
    hw = cal.to_hardware()
    assert hw.status == "measured" and hw.decoupled and hw.int8_tops == pytest.approx(0.08)


def test_cpu_comparison_reads_benchmark_rows(tmp_path):
    cal = fake_calibration()
    assert load_measured(tmp_path / "missing.json") is None  # the caller reports "not measured yet"
    path = tmp_path / "msd_linear.json"
    path.write_text(json.dumps({"rows": [
        {"M": 16, "K": 2048, "N": 2048, "times_s": {"dequant_bf16": 0.05, "msd": 0.02}, "kernel": "torch._int_mm"},
        {"M": 1, "K": 2048, "N": 2048, "times_s": {"dequant_bf16": 0.05}, "kernel": "x"},
    ]}))  # fmt: skip
    comp = compare_cpu(cal, load_measured(path))
    assert len(comp) == 1 and comp[0].int8_path == "int8_mm"
    t_dq, t_msd = predict_cpu(cal, 16, 2048, 2048, "int8_mm")
    assert comp[0].predicted_speedup == pytest.approx(t_dq / t_msd) and comp[0].measured_speedup == 2.5
    assert int8_path_for("quantized.linear prepacked", cal) == "int8_mm"  # prepacked failed: fall back
    path.write_text("{}")
    with pytest.raises(ValueError, match="rows"):
        load_measured(path)


def test_report_section_says_not_measured_yet(tmp_path, monkeypatch):
    from lowbit.lab.costmodel import report_section
    from lowbit.lab.report.section import SectionContext
    from lowbit.lab.report.stored import ResultsSource

    monkeypatch.setattr(report_section, "calibrate_cpu", lambda **_: fake_calibration())
    empty = tmp_path / "results"
    empty.mkdir()
    out = report_section.run(SectionContext(quick=True, seed=0, out_dir=tmp_path, results=ResultsSource(empty, False)))
    assert out.summary["cpu_check"] == "not measured yet"
    assert any("not measured yet" in b for b in out.blocks)
    assert out.summary["kv_ratio_int8_stream"] == 2.5
    assert (tmp_path / "costmodel_cpu_calibration.json").exists()


def test_report_section_compares_with_benchmark_calibration(tmp_path, monkeypatch):
    from lowbit.lab.costmodel import report_section
    from lowbit.lab.report.section import SectionContext
    from lowbit.lab.report.stored import ResultsSource

    measured = tmp_path / "msd_linear.json"
    row = {"M": 1, "K": 2048, "N": 2048, "times_s": {"dequant_bf16": 0.05, "msd": 0.001}, "kernel": "int_mm/stacked"}
    measured.write_text(json.dumps({"rows": [row]}))
    stored = tmp_path / "costmodel.json"
    stored.write_text(json.dumps({"calibration": fake_calibration().as_dict()}))
    monkeypatch.setattr(report_section, "calibrate_cpu", lambda **_: fake_calibration())
    ctx = SectionContext(quick=True, seed=0, out_dir=tmp_path, results=ResultsSource(tmp_path, False))
    out = report_section.run(ctx)
    assert out.summary["cpu_check_calibration"] == "benchmark"
    assert out.summary["cpu_check"][0]["meas"] == 50.0
