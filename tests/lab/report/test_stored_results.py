"""Stored results: packaged copies in sync with benchmarks/results, ``--results DIR``, machine caveats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lowbit.cli import main
from lowbit.lab.report import ReportConfig, Section, SectionContext, SectionOutput, build_report
from lowbit.lab.report import build as build_module
from lowbit.lab.report.stored import (
    PACKAGED_DIR,
    ResultsSource,
    machine_caveat,
    packaged_results,
    packaged_texts,
    provenance,
    results_source,
    sync_packaged,
)

BENCH_RESULTS = Path(__file__).resolve().parents[3] / "benchmarks" / "results"


def test_packaged_copies_equal_benchmarks_results():
    """The JSON shipped in the wheel is exactly what benchmarks/results gives (never drifts)."""
    expected = packaged_texts(BENCH_RESULTS)
    assert {"msd_linear.json", "attention.json", "costmodel.json", "rl.json"} <= set(expected)
    shipped = {p.name: p.read_text(encoding="utf-8") for p in PACKAGED_DIR.glob("*.json")}
    fix = "run `.venv/bin/python benchmarks/sync_stored_results.py` and commit lowbit/lab/report/stored_results"
    assert set(shipped) == set(expected), fix
    for name, text in expected.items():
        assert shipped[name] == text, f"{name} is out of date: {fix}"


def test_packaged_copies_are_small_and_keep_the_schema():
    total = sum(p.stat().st_size for p in PACKAGED_DIR.glob("*.json"))
    assert total < 512 * 1024
    rl = json.loads((PACKAGED_DIR / "rl.json").read_text())
    run = rl["experiments"][0]["runs"][0]
    assert set(run["steps"]) == {"step", "reward", "alpha", "ess_ratio"} and "acc_fp32" in run["evals"]
    full = json.loads((BENCH_RESULTS / "rl.json").read_text())
    assert rl["experiments"][0]["table"] == full["experiments"][0]["table"]  # the table is not rounded
    assert rl["machine"] == full["machine"] and rl["written"] == full["written"]
    cost = json.loads((PACKAGED_DIR / "costmodel.json").read_text())
    assert set(cost) == {"benchmark", "machine", "written", "quick", "calibration"}


def test_sync_writes_and_removes_stale(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (dst / "old.json").write_text("{}")
    (src / "attention.json").write_text(json.dumps({"machine": {"cpu": "X"}, "kv": [[1, 2.0]]}))
    (src / "rl_correction_cost.json").write_text(json.dumps({"rows": []}))  # no experiments: not read, not packaged
    (src / "formats.json").write_text("{}")  # not read by the report
    written = sync_packaged(src, dst)
    assert [p.name for p in written] == ["attention.json"]
    assert sorted(p.name for p in dst.iterdir()) == ["attention.json"]


def test_results_source_default_and_errors(tmp_path):
    assert results_source(None) == packaged_results() and packaged_results().packaged
    named = results_source(tmp_path)
    assert named.path == tmp_path.resolve() and not named.packaged and str(tmp_path.resolve()) in named.describe()
    with pytest.raises(ValueError, match="--results"):
        results_source(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ValueError, match="JSON object"):
        named.load("bad.json")
    assert named.load("absent.json") is None


def test_machine_caveat_says_not_comparable_across_machines():
    other = {"machine": {"cpu": "Stored CPU 9000", "usable_cores": 2, "cpu_flags": ["avx2"]}, "written": "2026-01-01"}
    ok, text = machine_caveat(other, "This CPU 1")
    assert not ok and "another machine (CPU Stored CPU 9000), not comparable" in text and "This CPU 1" in text
    ok, text = machine_caveat(other, "Stored CPU 9000")
    assert ok and "same CPU model" in text
    ok, text = machine_caveat({}, "This CPU 1")
    assert not ok and "not comparable" in text
    line = provenance(other, "msd_linear.json", packaged_results())
    assert "Stored CPU 9000" in line and "2026-01-01" in line and "packaged with lowbit" in line


def _probe_report(monkeypatch, tmp_path):
    seen: list[ResultsSource] = []

    def probe(ctx: SectionContext) -> SectionOutput:
        seen.append(ctx.results)
        out = SectionOutput()
        out.text(ctx.results.describe())
        return out

    monkeypatch.setattr(build_module, "discover_sections", lambda: [Section("probe", "Probe", 0, probe)])
    return seen


def test_report_results_option_reaches_the_sections(tmp_path, monkeypatch):
    seen = _probe_report(monkeypatch, tmp_path)
    folder = tmp_path / "my-results"
    folder.mkdir()
    _, ok = build_report(ReportConfig(out=tmp_path / "r1", quick=True, results=folder))
    assert ok and seen[-1] == ResultsSource(folder.resolve(), packaged=False)
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert summary["results"] == {"path": str(folder.resolve()), "packaged": False}
    assert str(folder.resolve()) in (tmp_path / "r1" / "index.html").read_text()
    _, ok = build_report(ReportConfig(out=tmp_path / "r2", quick=True))  # default: the packaged copies
    assert ok and seen[-1] == packaged_results()
    assert main(["report", "--quick", "--out", str(tmp_path / "r3"), "--results", str(folder)]) == 0
    assert seen[-1].path == folder.resolve()


def test_report_results_option_missing_folder_is_a_clear_error(tmp_path, monkeypatch, capsys):
    _probe_report(monkeypatch, tmp_path)
    code = main(["report", "--out", str(tmp_path / "r"), "--results", str(tmp_path / "nowhere")])
    assert code == 2 and "--results" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_sections_read_the_results_folder_not_the_package_path():
    """No report section reads benchmarks/results next to the installed package."""
    root = Path(build_module.__file__).resolve().parents[2]  # lowbit/
    for path in root.rglob("report_section*.py"):
        text = path.read_text(encoding="utf-8")
        assert "parents[2]" not in text and '"benchmarks"' not in text, path


def test_rl_section_shows_saved_runs_from_the_results_folder(tmp_path):
    from lowbit.lab.rl.report_section import _saved_runs, _show

    assert next(p.name for p in _saved_runs(packaged_results())) == "rl.json"
    assert _saved_runs(ResultsSource(tmp_path, packaged=False)) == []
    out = SectionOutput()
    packaged = json.loads((PACKAGED_DIR / "rl_extra.json").read_text())
    _show(out, packaged["experiments"][0], "extra", figure=True)  # packaged copy without curves: table only
    assert len(out.blocks) == 1 and "<table>" in out.blocks[0]
