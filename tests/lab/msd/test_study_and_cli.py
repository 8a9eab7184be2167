"""Effective-bits table, 6.6 search, accuracy study, `lowbit bits` and the report section (small sizes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lowbit.cli import main
from lowbit.lab.msd import study
from lowbit.lab.msd.distributions import DISTRIBUTIONS, activations
from lowbit.lab.msd.report_section import SECTION
from lowbit.lab.report.section import SectionContext


@pytest.fixture(scope="module")
def table():
    return study.bits_table(rows=8, k=1024, dists=("gaussian", "uniform"))


def test_table_reproduces_16_and_5_24(table):
    int8 = [r for r in table if r["scheme"] == "int8 x2"]
    assert all(r["worst"] == pytest.approx(math.log2(64516), abs=0.01) and r["paper"] == 16.0 for r in int8)
    mx8 = next(r for r in table if r["scheme"] == "mxfp8 x1 (ceil)" and r["dist"] == "gaussian")
    assert mx8["rms"] == pytest.approx(5.24, abs=0.08) and mx8["paper"] == 5.24
    assert study.mxfp8_analytic_bits() == pytest.approx(5.236, abs=5e-4)


def test_table_mxfp4_two_pass_is_6_worst_case_and_not_6_6(table):
    rows = [r for r in table if r["scheme"] == "mxfp4 x2 (ceil)"]
    assert all(r["worst"] == 6.0 and r["bound"] == 6.0 and r["paper"] == 6.6 for r in rows)
    rms = {r["dist"]: r["rms"] for r in rows}
    assert rms["uniform"] > rms["gaussian"] + 0.2
    ocp = next(r for r in table if r["scheme"] == "mxfp4 x2 (ocp)")
    assert 4.0 <= ocp["worst"] < 4.5


def test_passes_sweep_bits_grow_with_passes():
    sweep = study.passes_sweep(rows=4, k=512, max_passes=3)
    for fmt in ("int8", "mxfp4", "mxfp8"):
        rows = [r for r in sweep if r["fmt"] == fmt]
        assert [r["passes"] for r in rows] == [1, 2, 3]
        assert rows[0]["rel_l2"] > rows[1]["rel_l2"] > rows[2]["rel_l2"]
        assert all(r["worst"] >= r["bound"] - 1e-9 for r in rows)


def test_six_six_search_reports_rows_and_a_best_match():
    search = study.six_six_search(rows=4, k=512, dists=("gaussian", "uniform"))
    assert len(search["rows"]) == 2 * len(study.CANDIDATE_METRICS) * 3
    assert search["best"]["distance"] == min(r["distance"] for r in search["rows"])
    text = study.explain_six_six(study.bits_table(rows=4, k=512, dists=("gaussian", "uniform")), search)
    assert "6.6" in text and "15.98" in text


def test_per_element_model_gives_the_analytic_5_24():
    model = study.per_element_model(n=1 << 12)
    assert model["mxfp8 x1 (ceil)"] == pytest.approx(study.mxfp8_analytic_bits(), abs=0.005)
    assert model["mxfp4 x2 (ceil)"] == pytest.approx(6.672, abs=0.002)  # the nearest reading of the paper's 6.6
    with pytest.raises(ValueError, match="n must"):
        study.per_element_model(n=0)


def test_accuracy_study_rows_and_summary():
    rows = study.accuracy_study(shapes=((2, 256, 16),), dists=("gaussian", "outlier"))
    assert {r["weight"] for r in rows} == set(study.WEIGHT_KINDS)
    assert all(r["rel_l2_q"] >= 0 and math.isfinite(r["rel_l2_w"]) for r in rows)
    summary = {(s["weight"], s["method"]): s for s in study.summarize_accuracy(rows)}
    msd2 = summary[("int8-channel", "MSD int8 x2")]
    base = summary[("int8-channel", "W8A16 dequant (bf16)")]
    assert msd2["rel_l2_q_gmean"] < base["rel_l2_q_gmean"] / 10  # MSD keeps the int8 weight exact
    assert summary[("mxfp4", "W4A16 dequant (bf16)")]["rel_l2_q_gmean"] < 1e-6  # exact dequant, fp32 GEMM


def test_distributions():
    for dist in DISTRIBUTIONS:
        x = activations(dist, (2, 64), seed=1)
        assert x.dtype == torch.bfloat16 and bool(torch.isfinite(x).all())
    assert activations("outlier", (4, 256), seed=2).abs().max() > 20
    with pytest.raises(ValueError, match="dist"):
        activations("cauchy", (2, 2))


def test_cli_bits_json(capsys):
    assert main(["bits", "--rows", "4", "--k", "256", "--dist", "gaussian", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["scheme"] for r in data["bits"]} == {s.label for s in study.SCHEMES}
    assert "6.6" in data["explanation"]


def test_cli_bits_table(capsys):
    assert main(["bits", "--rows", "2", "--k", "128", "--dist", "uniform", "--no-search"]) == 0
    out = capsys.readouterr().out
    assert "int8 x2" in out and "16.00" in out and "5.24" in out


def test_cli_bits_rejects_bad_sizes(capsys):
    assert main(["bits", "--rows", "0"]) == 2
    assert "--rows" in capsys.readouterr().err


def test_report_section_quick(tmp_path: Path):
    assert SECTION.name == "msd" and SECTION.order == 30
    out = SECTION.run(SectionContext(quick=True, seed=0, out_dir=tmp_path))
    assert out.summary["int8_x2_worst_bits"] == pytest.approx(15.98, abs=0.01)
    assert out.summary["mxfp4_x2_worst_bits"] == 6.0
    assert sum("<img" in b for b in out.blocks) == 2
    json.dumps(out.summary)
