import json
import math

import pytest
import torch

from lowbit.cli import main
from lowbit.formats.catalog import FORMAT_HEADER, code_listing, format_table, roundtrip_errors
from lowbit.formats.report_section import SECTION, exactness_check
from lowbit.lab.report.section import SectionContext


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


def test_roundtrip_matches_msd_note():
    """msd.md §7 [measured]: MXFP8 E4M3 ceil 5.23 bits, OCP 5.09, MXFP4 ceil 3.12 on Gaussian data."""
    x = torch.randn(64, 4096, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16).float()
    bits = {r.scheme: r.bits for r in roundtrip_errors(x)}
    assert abs(bits["mxfp8_e4m3 (ceil)"] - 5.23) < 0.03
    assert abs(bits["mxfp8_e4m3 (ocp)"] - 5.09) < 0.03
    assert abs(bits["mxfp4_e2m1 (ceil)"] - 3.12) < 0.03
    assert bits["int8 per-group 128"] > bits["int8 per-channel"] > bits["int8 per-tensor"]
    assert all(math.isfinite(b) for b in bits.values())


def test_exactness_check_is_clean():
    assert all(v["mismatches"] == 0 for v in exactness_check(1, 1000).values())


def test_cli_table_values_and_json(tmp_path, capsys):
    assert main(["formats"]) == 0
    assert "mxfp4_e2m1" in capsys.readouterr().out
    out = tmp_path / "codes.json"
    assert main(["formats", "--values", "e4m3", "--json", str(out)]) == 0
    codes = json.loads(out.read_text())
    assert len(codes) == 256 and codes[0x7E]["value"] == 448.0
    assert main(["formats", "--block", "0"]) == 2


def test_report_section_quick(tmp_path):
    assert SECTION.name == "formats" and SECTION.order == 10
    out = SECTION.run(SectionContext(quick=True, seed=0, out_dir=tmp_path))
    assert out.summary["all_exact"] and out.summary["finite"]
    assert sum("<img" in b for b in out.blocks) == 2 and sum("<table>" in b for b in out.blocks) == 3
    json.dumps(out.summary)
