import json

import pytest

from lowbit.cli import main
from lowbit.formats.catalog import FORMAT_HEADER, code_listing, format_table


def test_format_table_rows():
    rows = {r.name: r for r in format_table()}
    assert rows["mxfp4_e2m1"].bits_per_element == 4.25 and rows["mxfp8_e4m3"].bits_per_element == 8.25
    assert rows["nvfp4"].bits_per_element == 4.5 and rows["fp8_e5m2"].specials == "Inf, NaN"
    assert all(len(r.cells()) == len(FORMAT_HEADER) for r in rows.values())


def test_code_listing():
    listing = code_listing("e2m1")
    assert len(listing) == 16 and listing[7] == (7, "0.11.1", 6.0) and listing[9] == (9, "1.00.1", -0.5)
    with pytest.raises(ValueError, match="elem"):
        code_listing("e9m9")


def test_cli_table_values_and_json(tmp_path, capsys):
    assert main(["formats"]) == 0
    assert "mxfp4_e2m1" in capsys.readouterr().out
    out = tmp_path / "codes.json"
    assert main(["formats", "--values", "e4m3", "--json", str(out)]) == 0
    codes = json.loads(out.read_text())
    assert len(codes) == 256 and codes[0x7E]["value"] == 448.0
    assert main(["formats", "--block", "0"]) == 2
