"""The ``lowbit`` entry point: the command list with one-line descriptions, help on every option, and the shared
rich table printer (sized to the terminal, unfolded when piped)."""

import argparse
import re

import pytest

from lowbit.cli import build_parser, main
from lowbit.cli_tables import print_rich_table, rich_table


def _subparsers(parser):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_top_level_help_lists_every_command_with_a_description(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    sub = _subparsers(build_parser())
    descriptions = {a.dest: a.help for a in sub._choices_actions}
    assert set(descriptions) == set(sub.choices)
    for name, description in descriptions.items():
        assert description, name
        assert name in text
    assert "lowbit COMMAND --help" in text


def test_every_option_of_every_command_has_help():
    sub = _subparsers(build_parser())
    missing = [
        f"lowbit {name} {'/'.join(a.option_strings) or a.dest}"
        for name, parser in sub.choices.items()
        for a in parser._actions
        if not a.help or a.help == argparse.SUPPRESS
    ]
    assert not missing


ROWS = [["int8 x2 " + "long text " * 12, 15.977, "12.3 ms ±4%"], ["mxfp4 x2", 6.1, "-"]]


def test_piped_tables_keep_each_row_on_one_line(capsys):
    print_rich_table("effective bits", ["scheme", "bits", "time"], ROWS)
    lines = capsys.readouterr().out.splitlines()
    assert any("long text " * 12 in line and "16" in line for line in lines)  # unfolded, 3 digits
    assert max(len(line) for line in lines) > 120


def test_terminal_tables_fit_the_terminal(monkeypatch, capsys):
    from rich.console import Console

    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    monkeypatch.setenv("COLUMNS", "60")
    print_rich_table("effective bits", ["scheme", "bits", "time"], ROWS)
    lines = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out).splitlines()  # without the style codes
    assert len(lines) > 8 and max(len(line) for line in lines) <= 60  # folded into the 60 columns


def test_numbers_right_text_left():
    table = rich_table("t", ["scheme", "bits", "time"], ROWS)
    assert [c.justify for c in table.columns] == ["left", "right", "right"]
