import json
import math

import torch

from lowbit.lab.formats.report_section import SECTION, exactness_check
from lowbit.lab.formats.roundtrip import roundtrip_errors
from lowbit.lab.report.section import SectionContext


def test_roundtrip_matches_msd_note():
    """docs/methods/msd.md §7 [measured]: MXFP8 E4M3 ceil 5.23 bits, OCP 5.09, MXFP4 ceil 3.12 on Gaussian data."""
    x = torch.randn(64, 4096, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16).float()
    bits = {r.scheme: r.bits for r in roundtrip_errors(x)}
    assert abs(bits["mxfp8_e4m3 (ceil)"] - 5.23) < 0.03
    assert abs(bits["mxfp8_e4m3 (ocp)"] - 5.09) < 0.03
    assert abs(bits["mxfp4_e2m1 (ceil)"] - 3.12) < 0.03
    assert bits["int8 per-group 128"] > bits["int8 per-channel"] > bits["int8 per-tensor"]
    assert all(math.isfinite(b) for b in bits.values())


def test_exactness_check_is_clean():
    assert all(v["mismatches"] == 0 for v in exactness_check(1, 1000).values())


def test_report_section_quick(tmp_path):
    assert SECTION.name == "formats" and SECTION.order == 10
    out = SECTION.run(SectionContext(quick=True, seed=0, out_dir=tmp_path))
    assert out.summary["all_exact"] and out.summary["finite"]
    assert sum("<img" in b for b in out.blocks) == 2 and sum("<table>" in b for b in out.blocks) == 3
    json.dumps(out.summary)
