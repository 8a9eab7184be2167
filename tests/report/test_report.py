import json

import pytest

from lowbit.cli import build_parser, main
from lowbit.report import ReportConfig, build_report
from lowbit.report.build import discover_sections


def test_help_lists_report(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "report" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_sections_have_unique_names():
    names = [s.name for s in discover_sections()]
    assert len(names) == len(set(names))
    build_parser()  # every discovered command registers without clashing


def test_unknown_section_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown report section"):
        build_report(ReportConfig(out=tmp_path / "r", only=("no-such-section",)))
    assert not (tmp_path / "r").exists()


def test_report_replaces_old_output_atomically(tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    index, ok = build_report(ReportConfig(out=out, quick=True, only=()))  # every section, quick
    assert ok, json.loads((out / "summary.json").read_text())
    assert index.exists() and not (out / "stale.txt").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["quick"] is True
    assert "machine" in summary and summary["machine"]["versions"]["torch"]
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no temporary folders left behind
