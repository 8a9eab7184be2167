"""``lowbit report``: run every registered report section and write ``index.html`` + ``summary.json``.

A capability adds a section by defining ``lowbit/lab/<capability>/report_section.py`` (or ``report_section_*.py``)
with a module-level ``SECTION = Section(...)``; see :mod:`lowbit.lab.report.section`. The page opens with one
verdict per paper claim, built from the sections' summaries by :mod:`lowbit.lab.report.verdicts`.
"""

from lowbit.lab.report.build import ReportConfig, build_report
from lowbit.lab.report.section import Section, SectionContext, SectionOutput

__all__ = ["ReportConfig", "Section", "SectionContext", "SectionOutput", "build_report"]
