"""The library never imports the lab, reads no benchmark results, and nothing in the repository points outside it."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lowbit"
LIBRARY = [p for p in PACKAGE.rglob("*.py") if "lab" not in p.relative_to(PACKAGE).parts[:1]]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_the_library_never_imports_the_lab() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n == "lowbit.lab" or n.startswith("lowbit.lab."))
        for p in LIBRARY
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_report_sections_live_in_the_lab() -> None:
    stray = [str(p.relative_to(ROOT)) for p in LIBRARY if p.stem.startswith("report_section")]
    assert not stray


def test_no_library_module_reads_benchmarks() -> None:
    stray = []
    for p in LIBRARY:
        text = p.read_text(encoding="utf-8")
        if "benchmarks/results" in text or "parents[2]" in text or '"benchmarks"' in text:
            stray.append(str(p.relative_to(ROOT)))
    assert not stray


def test_nothing_in_the_repository_points_outside_it() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    needle = "../" + "shared"
    stray = [
        f
        for f in files
        if (ROOT / f).is_file()
        and not f.endswith((".gz", ".png", ".npy"))
        and needle in (ROOT / f).read_text(encoding="utf-8", errors="replace")
    ]
    assert not stray
