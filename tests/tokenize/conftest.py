"""Shared fixtures: presets are loaded once per test session; references call the libraries directly."""

from __future__ import annotations

from typing import Any

import pytest

from lowbit.tokenize import LoadedTokenizer, load_tokenizer

ALL_PRESETS = [
    "qwen2",
    "qwen3.5",
    "deepseek-v4",
    "cl100k",
    "o200k",
    "voyage3",
    "bert",
    "mistral-v1",
    "mistral-v3",
    "tekken",
]


@pytest.fixture(scope="session")
def presets() -> dict[str, LoadedTokenizer]:
    return {}


@pytest.fixture(scope="session")
def get_preset(presets: dict[str, LoadedTokenizer]) -> Any:
    def get(name: str) -> LoadedTokenizer:
        if name not in presets:
            presets[name] = load_tokenizer(name)
        return presets[name]

    return get


def reference(obj: Any, text: str, allowed_special: Any = None) -> list[int]:
    """The library's own sequential encode, called directly on the library object."""
    mod = type(obj).__module__
    if mod.startswith("tiktoken"):
        if allowed_special is None:
            return obj.encode_ordinary(text)
        return obj.encode(text, allowed_special=allowed_special)
    if mod.startswith("tokenizers"):
        return obj.encode(text, add_special_tokens=False).ids
    return obj.encode(text)


@pytest.fixture(scope="session")
def get_backend(get_preset: Any) -> Any:
    from lowbit.tokenize.backends import make_backend

    cache: dict[tuple[str, str], Any] = {}

    def get(name: str, backend: str = "library") -> Any:
        key = (name, backend)
        if key not in cache:
            cache[key] = make_backend(get_preset(name), backend=backend)[0]
        return cache[key]

    return get
