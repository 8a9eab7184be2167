"""Verdict rows from synthetic section summaries: each verdict kind, and "not measured" with its reason."""

import math

import pytest

from lowbit.lab.report.verdicts import (
    CLAIMS,
    EXPLAINED,
    NOT_MEASURABLE,
    NOT_MEASURED,
    NOT_REPRODUCED,
    PAPERS,
    REPRODUCED,
    VERDICTS,
    verdict_rows,
    welch_p,
)


def _acc(weight, method, cases, gmean_w, lower, not_worse):
    return {
        "weight": weight,
        "method": method,
        "cases": cases,
        "rel_l2_w_gmean": gmean_w,
        "lower_than_dequant_vs_q": f"{lower}/{cases}",
        "not_worse_than_dequant_vs_w": f"{not_worse}/{cases}",
    }


MSD = {
    "int8_x2_worst_bits": 15.977,
    "mxfp8_x1_rms_bits_gaussian": 5.23,
    "mxfp4_x2_worst_bits": 6.0,
    "mxfp4_x2_rms_bits": {"gaussian": 6.15, "uniform": 6.58},
    "six_six_per_element_model": {"mxfp8 x1 (ceil)": 5.238, "mxfp4 x2 (ceil)": 6.67},
    "accuracy": [
        _acc("int8-channel", "W8A16 dequant (bf16)", 15, 0.0083, 0, 15),
        _acc("int8-channel", "MSD int8 x2", 15, 0.0081, 15, 15),
        _acc("int8-group128", "W8A16 dequant (bf16)", 15, 0.0067, 0, 15),
        _acc("int8-group128", "MSD int8 x2", 15, 0.0065, 15, 14),
        _acc("mxfp4", "W4A16 dequant (bf16)", 15, 0.1171, 0, 15),
        _acc("mxfp4", "MSD mxfp4 x2", 15, 0.1183, 0, 1),
    ],
}
ATTENTION = {
    "bit_identity_mismatches": {"-1": 0, "5": 0},
    "amla_header": ["seq_k", "AMLA exact vs FA-mul", "FA-mul bf16-P vs f64", "AMLA-bf16 comp vs f64"],
    "amla": [[4096, 3.9e-7, 6.5e-4, 7.3e-4]],
}
ARMS = {
    "fp8-none": {"acc_fp32": 0.514, "acc_fp32_sd": 0.034},
    "fp8-tis": {"acc_fp32": 0.517, "acc_fp32_sd": 0.038},
    "fp8-ais": {"acc_fp32": 0.548, "acc_fp32_sd": 0.054},
}
TOKENIZE = {
    "skipped": {"mistral-v1": "pip install mistral-common"},
    "all_exact": True,
    "cl100k": {"exact": True, "speedup_2_workers": 0.96},
    "bert": {"exact": True, "speedup_2_workers": 1.01},
}


def _ok(summary):
    return {"status": "ok", "error": None, "summary": summary}


def _sections(**over):
    sections = {
        "msd": _ok(MSD),
        "attention": _ok(ATTENTION),
        "costmodel": _ok({"kv_ratio_int8_stream": 2.5}),
        "rl": _ok({"live": {"seeds": 2, "arms": ARMS}, "saved:rl.json": [{"seeds": 6, "arms": ARMS}]}),
        "tokenize": _ok(TOKENIZE),
    }
    sections.update(over)
    return sections


def _by_key(rows):
    return {r.key: r for r in rows}


def test_every_verdict_kind_from_a_synthetic_summary():
    rows = _by_key(verdict_rows(_sections()))
    assert rows["msd-int8x2"].verdict == REPRODUCED
    assert rows["msd-int8x2"].measured.startswith("15.98 bits")
    assert rows["msd-mxfp8"].verdict == REPRODUCED
    assert rows["msd-mxfp4x2"].verdict == EXPLAINED
    assert "6.67" in rows["msd-mxfp4x2"].why and "[reconstruction]" in rows["msd-mxfp4x2"].why
    assert rows["msd-accuracy-int8"].verdict == REPRODUCED
    assert "30/30" in rows["msd-accuracy-int8"].measured
    assert rows["msd-accuracy-mxfp4"].verdict == NOT_REPRODUCED  # +1.0% > the 0.5% tolerance
    assert rows["msd-kv-traffic"].verdict == REPRODUCED
    assert rows["amla-error"].verdict == REPRODUCED
    assert rows["amla-speed"].verdict == NOT_MEASURABLE
    assert rows["ais-vs-uncorrected"].verdict == NOT_REPRODUCED  # +3.4 points, p = 0.23 with 6 seeds (rounded inputs)
    assert "p = 0.23, 6 seeds" in rows["ais-vs-uncorrected"].measured
    assert "stored main run rl.json" in rows["ais-vs-uncorrected"].why
    assert rows["ais-vs-tis"].verdict == NOT_REPRODUCED
    assert rows["lopt-identical"].verdict == REPRODUCED
    assert rows["lopt-identical"].measured == "identical ids for 2/2 tokenizers"
    assert "mistral-v1" in rows["lopt-identical"].why
    assert rows["lopt-speed"].verdict == NOT_MEASURABLE
    assert all(r.linked for r in rows.values())
    assert {r.verdict for r in rows.values()} <= set(VERDICTS)


def test_thresholds_decide_the_verdict():
    msd = dict(MSD, int8_x2_worst_bits=14.0, mxfp4_x2_rms_bits={"gaussian": 6.62})
    rows = _by_key(verdict_rows(_sections(msd=_ok(msd))))
    assert rows["msd-int8x2"].verdict == NOT_REPRODUCED
    assert rows["msd-mxfp4x2"].verdict == REPRODUCED
    msd = dict(MSD, six_six_per_element_model={"mxfp4 x2 (ceil)": 6.2})
    assert _by_key(verdict_rows(_sections(msd=_ok(msd))))["msd-mxfp4x2"].verdict == NOT_REPRODUCED
    arms = {
        "fp8-none": {"acc_fp32": 0.40, "acc_fp32_sd": 0.01},
        "fp8-tis": {"acc_fp32": 0.41, "acc_fp32_sd": 0.01},
        "fp8-ais": {"acc_fp32": 0.55, "acc_fp32_sd": 0.01},
    }
    rows = _by_key(verdict_rows(_sections(rl=_ok({"live": {"seeds": 4, "arms": arms}}))))
    assert rows["ais-vs-uncorrected"].verdict == REPRODUCED
    assert "live run" in rows["ais-vs-uncorrected"].why
    tok = {"workers": 32, "a": {"exact": True, "speedup_2_workers": 4.5}}
    rows = _by_key(verdict_rows(_sections(tokenize=_ok(tok))))
    assert rows["lopt-speed"].verdict == REPRODUCED
    tok = {"a": {"exact": False, "speedup_2_workers": 1.0}}
    assert _by_key(verdict_rows(_sections(tokenize=_ok(tok))))["lopt-identical"].verdict == NOT_REPRODUCED


def test_a_missing_section_gives_not_measured_with_the_reason():
    sections = _sections()
    del sections["msd"]
    sections["rl"] = {"status": "failed", "error": "Traceback ...\nRuntimeError: boom", "summary": None}
    sections["tokenize"] = _ok({"skipped": {"bert": "pip install x"}, "all_exact": True})
    sections["costmodel"] = _ok({"calibration_seconds": 1.0})
    rows = _by_key(verdict_rows(sections))
    for key in ("msd-int8x2", "msd-mxfp8", "msd-mxfp4x2", "msd-accuracy-int8", "msd-accuracy-mxfp4"):
        assert rows[key].verdict == NOT_MEASURED
        assert rows[key].measured == "-"
        assert rows[key].why == "section 'msd' was not run (see lowbit report --section)"
        assert not rows[key].linked
    assert rows["ais-vs-uncorrected"].verdict == NOT_MEASURED
    assert rows["ais-vs-uncorrected"].why == "section 'rl' failed: RuntimeError: boom"
    assert rows["ais-speed"].verdict == NOT_MEASURABLE  # judged without figures
    assert rows["lopt-identical"].verdict == NOT_MEASURED
    assert "no tokenizer measured (skipped: bert)" in rows["lopt-identical"].why
    assert rows["msd-kv-traffic"].verdict == NOT_MEASURED
    assert "kv_ratio_int8_stream" in rows["msd-kv-traffic"].why
    assert rows["amla-error"].verdict == REPRODUCED


def test_claims_table_is_consistent():
    keys = [c.key for c in CLAIMS]
    assert len(keys) == len(set(keys))
    assert {c.paper for c in CLAIMS} == set(PAPERS)
    assert all("arXiv:" in title for title in PAPERS.values())
    for c in CLAIMS:
        assert c.rule and c.claim and c.paper_figure and c.section


def test_welch_p_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for args in ((0.548, 0.054, 6, 0.514, 0.034, 6), (1.0, 0.5, 3, 0.2, 0.1, 9), (0.1, 0.02, 20, 0.1, 0.03, 4)):
        m1, s1, n1, m2, s2, n2 = args
        want = stats.ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False).pvalue
        assert math.isclose(welch_p(*args), want, rel_tol=1e-9, abs_tol=1e-12)
