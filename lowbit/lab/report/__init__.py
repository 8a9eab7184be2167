"""``lowbit report``: run every registered report section and write ``index.html`` + ``summary.json``.

A capability adds a section by defining ``lowbit/<capability>/report_section.py`` with a module-level
``SECTION = Section(...)``; see :mod:`lowbit.lab.report.section`.
"""

from lowbit.lab.report.build import ReportConfig, build_report
from lowbit.lab.report.section import Section, SectionContext, SectionOutput

__all__ = ["ReportConfig", "Section", "SectionContext", "SectionOutput", "build_report"]
