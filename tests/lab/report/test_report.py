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
    # every claim of a section that ran finds its figures: the verdicts follow the sections' summary keys
    verdicts = {v["key"]: v for v in summary["verdicts"]}
    for key in ("msd-int8x2", "msd-mxfp8", "msd-mxfp4x2", "msd-accuracy-int8", "msd-kv-traffic", "amla-error"):
        assert verdicts[key]["verdict"] != "not measured", verdicts[key]
    for key in ("ais-vs-uncorrected", "ais-vs-tis"):
        assert verdicts[key]["verdict"] != "not measured", verdicts[key]


def test_page_opens_with_the_verdict_table_and_lists_the_machine(tmp_path, capsys):
    """One cheap section: the verdict table comes before the contents and the first section, rows of the sections
    left out say "not measured", the contents link the machine, and the terminal gets the same verdicts."""
    out = tmp_path / "rep"
    assert main(["report", "--quick", "--section", "formats", "--out", str(out)]) == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    verdicts, contents = page.index("<h2 id='verdicts'>"), page.index("<h2 id='contents'>")
    first_section = page.index('<h2 id="formats">')
    assert verdicts < contents < first_section
    assert page.index("<table>") > verdicts  # the first table of the page is the verdict table
    assert page.index("<table>") < contents
    assert '<a href="#machine">Machine and versions</a>' in page[contents:first_section]
    assert "<h2 id='machine'>" in page
    assert "msd (not in this report)" in page  # no dead link to a section that did not run
    summary = json.loads((out / "summary.json").read_text())
    rows = {v["key"]: v for v in summary["verdicts"]}
    assert rows["msd-int8x2"]["verdict"] == "not measured"
    assert rows["msd-int8x2"]["why"] == "section 'msd' was not run (see lowbit report --section)"
    assert rows["amla-speed"]["verdict"] == "not measurable here"
    printed = capsys.readouterr().out
    assert "What lowbit found" in printed and "section 'msd' was not run" in printed
    assert printed.index("What lowbit found") < printed.index("report written to")


def test_report_help_names_every_section_and_every_option_has_help():
    parser = build_parser(["report"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    report = sub.choices["report"]
    for action in report._actions:
        assert action.help, action.option_strings
    section_help = next(a.help for a in report._actions if "--section" in a.option_strings)
    for section in discover_sections():
        assert section.name in section_help
