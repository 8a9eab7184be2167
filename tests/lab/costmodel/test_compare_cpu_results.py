"""``lowbit cost-check`` and the costmodel section read the stored results folder and flag other machines."""

from __future__ import annotations

import json

import pytest

from lowbit.cli import main
from lowbit.lab.report.machine import cpu_model
from lowbit.lab.report.section import SectionContext
from lowbit.lab.report.stored import ResultsSource

from .test_calibration import fake_calibration

ROW = {"M": 1, "K": 2048, "N": 2048, "times_s": {"dequant_bf16": 0.05, "msd": 0.001}, "kernel": "int_mm/stacked"}


@pytest.fixture
def fake_cal(monkeypatch):
    import lowbit.lab.costmodel.calibrate as calibrate
    from lowbit.lab.costmodel import report_section

    monkeypatch.setattr(calibrate, "calibrate_cpu", lambda **_: fake_calibration())
    monkeypatch.setattr(report_section, "calibrate_cpu", lambda **_: fake_calibration())


def _write(folder, cpu, *, calibration_cpu=None):
    folder.mkdir(exist_ok=True)
    (folder / "msd_linear.json").write_text(json.dumps({"machine": {"cpu": cpu}, "written": "then", "rows": [ROW]}))
    if calibration_cpu is not None:
        cost = {"machine": {"cpu": calibration_cpu}, "calibration": fake_calibration().as_dict()}
        (folder / "costmodel.json").write_text(json.dumps(cost))
    return folder


def test_compare_cpu_from_another_machine_says_not_comparable(tmp_path, capsys, fake_cal, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the current folder plays no part
    folder = _write(tmp_path / "res", "Some Other CPU")
    js = tmp_path / "out.json"
    assert main(["cost-check", "--hardware", "h200", "--ms", "1", "--seqs", "4096", "--results",
                 str(folder), "--json", str(js)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "NOT COMPARABLE" in text and "another machine (CPU Some Other CPU), not comparable" in text
    check = json.loads(js.read_text())["cpu_check"]
    assert check["comparable"] is False and check["measured_on"] == "Some Other CPU" and len(check["rows"]) == 1


def test_compare_cpu_same_cpu_model_and_explicit_file(tmp_path, capsys, fake_cal):
    folder = _write(tmp_path / "res", cpu_model())
    js = tmp_path / "out.json"
    assert main(["cost-check", "--hardware", "h200", "--ms", "1", "--seqs", "4096", "--msd-linear",
                 str(folder / "msd_linear.json"), "--json", str(js)]) == 0  # fmt: skip
    assert "same CPU model" in capsys.readouterr().out
    assert json.loads(js.read_text())["cpu_check"]["comparable"] is True


def test_compare_cpu_defaults_to_the_packaged_results(tmp_path, capsys, fake_cal, monkeypatch):
    monkeypatch.chdir(tmp_path)
    js = tmp_path / "out.json"
    assert main(["cost-check", "--hardware", "h200", "--ms", "1", "--seqs", "4096", "--json", str(js)]) == 0
    assert "packaged with lowbit" in capsys.readouterr().out
    assert json.loads(js.read_text())["cpu_check"]["rows"]


def test_compare_cpu_missing_results(tmp_path, capsys, fake_cal):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["cost-check", "--hardware", "h200", "--ms", "1", "--seqs", "4096", "--results",
                 str(empty)]) == 0  # fmt: skip
    assert "not measured yet" in capsys.readouterr().out
    assert main(["cost-check", "--results", str(tmp_path / "nowhere")]) == 2


def test_cost_check_tables_use_the_calibrated_cpu_by_default(tmp_path, capsys, fake_cal):
    folder = _write(tmp_path / "res", cpu_model())
    js = tmp_path / "out.json"
    assert main(["cost-check", "--ms", "1", "--seqs", "4096", "--results", str(folder), "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    assert [row[0] for row in data["hardware"]["rows"]] == [fake_calibration().to_hardware().name]
    assert data["cpu_check"]["comparable"] is True and data["calibration"]["k"] == 2048


def test_section_uses_the_stored_calibration_of_the_measuring_machine(tmp_path, fake_cal):
    from lowbit.lab.costmodel import report_section

    folder = _write(tmp_path / "res", "Stored CPU", calibration_cpu="Stored CPU")
    ctx = SectionContext(quick=True, seed=0, out_dir=tmp_path, results=ResultsSource(folder, False))
    out = report_section.run(ctx)
    assert out.summary["cpu_check_calibration"] == "benchmark" and out.summary["cpu_check_comparable"] is True
    assert any("both come from the stored machine (CPU Stored CPU)" in b for b in out.blocks)


def test_section_flags_live_calibration_against_another_machine(tmp_path, fake_cal):
    from lowbit.lab.costmodel import report_section

    # the stored calibration is of another CPU than the timings: it is not used, the live one is, with the caveat
    folder = _write(tmp_path / "res", "Stored CPU", calibration_cpu="Third CPU")
    ctx = SectionContext(quick=True, seed=0, out_dir=tmp_path, results=ResultsSource(folder, False))
    out = report_section.run(ctx)
    assert out.summary["cpu_check_calibration"] == "report" and out.summary["cpu_check_comparable"] is False
    page = "\n".join(out.blocks)
    assert "another machine (CPU Stored CPU), not comparable" in page and "NOT COMPARABLE" in page
