"""Code that runs inside worker processes (own pool or any ``concurrent.futures.Executor``).

A worker process builds its backend once and keeps it for the life of the process (``docs/methods/lopt.md`` §6,
lesson 1): in the own pool the initializer installs it; on a foreign executor (e.g. Dask) the first task carrying
a spec builds it (``BackendSpec.kind`` names the backend class, whose ``from_spec`` rebuilds it). The
per-process cache below is the only module-level state in ``lowbit.tokenize``; it lives in worker processes, is
keyed by the spec's identity token, and never changes a result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from lowbit.tokenize.backends import Backend, BackendSpec, ChunkEncoding, Piece, backend_from_spec

_BACKENDS: dict[str, Backend] = {}


def init_worker(token: str, spec: BackendSpec | None, backend: Backend | None = None) -> None:
    """Pool initializer: install the backend once in this process (inherited by fork, else built from spec)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core per worker; no rayon oversubscription
    if backend is not None:
        _BACKENDS[token] = backend
    elif spec is not None:
        _BACKENDS[token] = backend_from_spec(spec)
    else:
        raise RuntimeError("lowbit worker: neither a backend nor a spec to build one")


def encode_pieces(token: str, spec: BackendSpec | None, pieces: Sequence[Piece]) -> list[ChunkEncoding]:
    """Encode ``pieces`` with the backend registered under ``token`` (built from ``spec`` if absent)."""
    backend = _BACKENDS.get(token)
    if backend is None:
        if spec is None:
            raise RuntimeError("lowbit worker: backend not initialised and no spec sent")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        backend = _BACKENDS[token] = backend_from_spec(spec)
    return backend.encode_chunks(pieces, threads=1)


def crash_worker() -> None:
    """Kill the current worker process abruptly (used by tests of worker death)."""
    os._exit(13)
