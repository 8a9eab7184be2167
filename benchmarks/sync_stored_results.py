"""Copy the results ``lowbit report`` shows into the package (``lowbit/lab/report/stored_results/``, small JSON).

Run after a benchmark rewrote ``benchmarks/results``; ``tests/lab/report/test_stored_results.py`` fails until the
packaged copies match. See :mod:`lowbit.lab.report.stored`.

    .venv/bin/python benchmarks/sync_stored_results.py
"""

from __future__ import annotations

from pathlib import Path

from lowbit.lab.report.stored import main

if __name__ == "__main__":
    raise SystemExit(main([str(Path(__file__).resolve().parent / "results")]))
