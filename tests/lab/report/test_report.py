import argparse
import json
import subprocess
import sys

import pytest

from lowbit._discovery import command_names
from lowbit.cli import build_parser, main
from lowbit.lab.report import ReportConfig, build_report
from lowbit.lab.report.build import discover_sections


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


def test_command_names_read_from_source_match_the_registered_commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(command_names()) == set(sub.choices)
    for name, module in command_names().items():
        only = build_parser([name])
        only_sub = next(a for a in only._actions if isinstance(a, argparse._SubParsersAction))
        assert name in only_sub.choices, module


def test_tokenize_command_does_not_load_torch():
    """The CLI imports only the module of the command it runs: ``lowbit tokenize`` starts without torch."""
    code = "import sys; from lowbit.cli import build_parser; build_parser(['tokenize']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"


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
