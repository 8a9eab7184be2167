"""HTML tables (text left, numbers right, links) and the live-timing cell."""

import pytest

from lowbit._timing import Timing
from lowbit.lab.report.section import Link, SectionOutput, html_table, is_numeric, timing_cell


def test_text_columns_left_numbers_right():
    page = html_table(
        ["scheme", "bits", "time", "cases", "note"],
        [["int8 x2", 15.98, "12.3 ms ±4%", "15/15", "-"], ["mxfp4 x2", 6, "1.2 s ±30% (noisy)", "1/15", "ok"]],
    )
    head, body = page.split("<tbody>")
    assert "<th>scheme</th>" in head and "<th>note</th>" in head
    for h in ("bits", "time", "cases"):
        assert f"<th class='num'>{h}</th>" in head
    assert "<td>int8 x2</td>" in body and "<td class='num'>15.98</td>" in body
    assert "<td class='num'>12.3 ms ±4%</td>" in body and "<td class='num'>15/15</td>" in body
    assert "<td>-</td>" in body and "<td>ok</td>" in body


def test_mixed_column_keeps_a_left_header_and_bools_are_text():
    page = html_table(["value", "flag"], [[1, True], ["e5m2", False]])
    assert "<th>value</th>" in page and "<th>flag</th>" in page
    assert "<td class='num'>1</td>" in page and "<td>e5m2</td>" in page and "<td>True</td>" in page
    assert not is_numeric(True) and is_numeric(-2.5) and is_numeric("-1e-05") and not is_numeric("fp8-none")


def test_link_cells_and_escaping():
    page = html_table(["section"], [[Link("msd <x>", "#msd")], ["<b>"]])
    assert '<td><a href="#msd">msd &lt;x&gt;</a></td>' in page
    assert "<td>&lt;b&gt;</td>" in page


def test_timing_cell_spread_and_noisy_mark():
    quiet = Timing((0.0100, 0.0102, 0.0098))
    noisy = Timing((0.010, 0.020, 0.011))
    assert timing_cell(quiet) == "10 ms ±2%"
    assert timing_cell(noisy) == "11 ms ±45% (noisy)"
    assert SectionOutput.timing(noisy.as_dict(), "s") == "0.011 s ±45% (noisy)"
    assert timing_cell({"median_s": 3e-9, "spread": 0.0}) == "3 ns ±0%"
    assert timing_cell(Timing((5.0,))) == "5 s ±0%"
    with pytest.raises(ValueError, match="unit"):
        timing_cell(quiet, "min")
