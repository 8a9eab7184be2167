"""The report section ``tokenize``: LoPT exact on every preset, naive chunking counted, missing packages skipped."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from lowbit.lab.report.section import SectionContext
from lowbit.lab.tokenize import report_section
from lowbit.lab.tokenize.report_section import SECTION
from lowbit.tokenize.presets import MISTRAL_INSTALL


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make ``find_spec`` report the given packages as not installed (as in a fresh pip install)."""

    def hide(*packages: str) -> None:
        real = importlib.util.find_spec

        def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
            return None if name in packages else real(name, *args, **kwargs)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return hide


def test_report_section_quick(tmp_path):
    assert SECTION.name == "tokenize" and SECTION.order == 20
    out = SECTION.run(SectionContext(quick=True, seed=0, out_dir=Path(tmp_path)))
    assert out.summary["all_exact"] is True
    assert any("<table>" in b for b in out.blocks) and any("data:image/png" in b for b in out.blocks)
    json.dumps(out.summary)


def test_report_skips_presets_whose_package_is_missing(without, monkeypatch, tmp_path):
    without("mistral_common")
    monkeypatch.setattr(report_section, "TOKENIZERS", ("bert", "mistral-v1"))
    out = report_section.run(SectionContext(quick=True, seed=0, out_dir=Path(tmp_path)))
    page = "\n".join(out.blocks)
    assert "mistral-v1: SKIPPED" in page and "pip install --no-deps" in page
    assert out.summary["skipped"] == {"mistral-v1": MISTRAL_INSTALL}
    assert "mistral-v1" not in out.summary and out.summary["bert"]["exact"] and out.summary["all_exact"]


def test_report_with_every_package_missing_still_passes(without, monkeypatch, tmp_path):
    without("mistral_common")
    monkeypatch.setattr(report_section, "TOKENIZERS", ("mistral-v1",))
    out = report_section.run(SectionContext(quick=True, seed=0, out_dir=Path(tmp_path)))
    assert out.summary["skipped"] == {"mistral-v1": MISTRAL_INSTALL}
    assert any("No tokenizer could be measured" in b for b in out.blocks)
