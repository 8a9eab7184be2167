"""Deterministic benchmark and report texts: English prose, source code, Chinese, and a multi-language mix.

Prose and code are read at run time from the Python standard library of the running interpreter (PSF licence;
nothing is copied into the repository). Chinese and the other languages are generated, with a seeded RNG, from
the short sentences in ``data/multilang.json`` (written for lowbit, CC0). Every generator returns exactly
``n_chars`` characters.
"""

from __future__ import annotations

import json
import random
import sysconfig
from importlib import resources
from pathlib import Path

KINDS = ("prose", "code", "chinese", "mixed")


def sentences() -> dict[str, list[str]]:
    """The bundled sentences per language code (``zh``, ``ja``, ``ru``, ``ar``, ``de``, ``emoji``, ``en``)."""
    raw = resources.files("lowbit.lab.tokenize").joinpath("data/multilang.json").read_text(encoding="utf-8")
    data = json.loads(raw)
    return {k: v for k, v in data.items() if isinstance(v, list)}


def _repeat_to(text: str, n_chars: int) -> str:
    if not text:
        raise ValueError("corpus source is empty")
    reps = -(-n_chars // len(text))
    return (text * reps)[:n_chars]


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.glob("*.py") if p.is_file())


def code(n_chars: int) -> str:
    """Python source of the standard library, file after file (repeated if needed)."""
    out: list[str] = []
    total = 0
    for path in _stdlib_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        out.append(text)
        total += len(text)
        if total >= n_chars:
            break
    return _repeat_to("".join(out), n_chars)


def prose(n_chars: int) -> str:
    """English prose: the pydoc topic texts of the standard library, then module docstrings."""
    import ast

    parts: list[str] = []
    total = 0
    try:
        from pydoc_data.topics import topics

        for key in sorted(topics):
            parts.append(topics[key])
            total += len(topics[key])
    except ImportError:  # pragma: no cover - stripped interpreters
        pass
    for path in _stdlib_files():
        if total >= n_chars:
            break
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8", errors="replace"))) or ""
        except SyntaxError:
            continue
        parts.append(doc + "\n\n")
        total += len(doc) + 2
    return _repeat_to("".join(parts), n_chars)


def _sentence_text(langs: list[str], n_chars: int, seed: int) -> str:
    pool = sentences()
    rng = random.Random(seed)
    out: list[str] = []
    total = 0
    while total < n_chars:
        lang = rng.choice(langs)
        s = rng.choice(pool[lang])
        sep = "\n\n" if rng.random() < 0.15 else ("" if lang in ("zh", "ja") else " ")
        out.append(s + sep)
        total += len(s) + len(sep)
    return "".join(out)[:n_chars]


def chinese(n_chars: int, seed: int = 0) -> str:
    """Chinese paragraphs generated from the bundled sentences."""
    return _sentence_text(["zh"], n_chars, seed)


def mixed(n_chars: int, seed: int = 0) -> str:
    """Alternating blocks of English prose, code, Chinese, and other languages with emoji."""
    rng = random.Random(seed)
    sources = {
        "prose": prose(min(n_chars, 400_000)),
        "code": code(min(n_chars, 400_000)),
        "chinese": chinese(min(n_chars, 200_000), seed),
        "other": _sentence_text(["ja", "ru", "ar", "de", "emoji", "en"], min(n_chars, 200_000), seed + 1),
    }
    out: list[str] = []
    total = 0
    while total < n_chars:
        kind = rng.choice(list(sources))
        src = sources[kind]
        size = rng.randint(200, 4000)
        start = rng.randrange(0, max(1, len(src) - size))
        block = src[start : start + size] + "\n"
        out.append(block)
        total += len(block)
    return "".join(out)[:n_chars]


def make_text(kind: str, n_chars: int, seed: int = 0) -> str:
    """A text of ``kind`` (one of ``KINDS``) with exactly ``n_chars`` characters."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if not isinstance(n_chars, int) or n_chars < 0:
        raise ValueError(f"n_chars: expected an int >= 0, got {n_chars!r}")
    if n_chars == 0:
        return ""
    if kind == "prose":
        return prose(n_chars)
    if kind == "code":
        return code(n_chars)
    if kind == "chinese":
        return chinese(n_chars, seed)
    return mixed(n_chars, seed)
