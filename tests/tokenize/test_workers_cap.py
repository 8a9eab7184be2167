"""ParallelTokenizer starts no more processes than there are cores or pieces; chunk_chars has a sane minimum.

The ids are always compared with the library's own sequential encode (``conftest.reference``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

import lowbit.tokenize.parallel as par
from lowbit.lab.tokenize.corpus import make_text
from lowbit.tokenize import ParallelTokenizer
from lowbit.tokenize.lopt import MIN_CHUNK_CHARS, LoptConfig, make_plan
from lowbit.tokenize.parallel import usable_cores

from .conftest import reference

CHUNK = {"chunk_chars": 2000, "overlap_chars": 64, "min_parallel_chars": 0}


@pytest.fixture(scope="module")
def text() -> str:
    return make_text("mixed", 20_000, seed=5)


def pieces_of(pt: ParallelTokenizer, text: str) -> int:
    _, stats = pt.encode_with_stats(text)
    assert stats.merge is not None
    return stats.merge.pieces


def test_workers_far_above_the_cores_start_at_most_the_cores(get_preset, text, monkeypatch):
    monkeypatch.setattr(par, "usable_cores", lambda: 3)  # independent of this machine's core count
    tok = get_preset("cl100k")
    with ParallelTokenizer(tok, workers=1000, strategy="processes", backend="library", **CHUNK) as pt:
        assert pt.workers == 1000 and pt.parallelism == 3
        assert pt.encode(text) == reference(tok.obj, text)
        assert pt.pool_size == 3 and len(pt.worker_pids()) == 3
        assert pieces_of(pt, text) >= 10  # many more pieces than processes  # many more pieces than processes
        assert pt.pool_size == 3
    assert pt.pool_size == 0


def test_default_cap_is_the_usable_cores(get_preset, text):
    tok = get_preset("cl100k")
    with ParallelTokenizer(tok, workers=1000, strategy="processes", backend="library", **CHUNK) as pt:
        assert pt.parallelism == usable_cores()
        assert pt.encode(text) == reference(tok.obj, text)
        assert 1 <= pt.pool_size <= usable_cores() and len(pt.worker_pids()) == pt.pool_size


def test_pool_never_exceeds_the_pieces_and_grows_when_needed(get_preset, text, monkeypatch):
    monkeypatch.setattr(par, "usable_cores", lambda: 4)
    tok = get_preset("cl100k")
    with ParallelTokenizer(tok, workers=8, strategy="processes", backend="library", **CHUNK) as pt:
        short = text[:1500]  # one piece
        assert pieces_of(pt, short) == 1
        assert pt.pool_size == 1 and len(pt.worker_pids()) == 1
        assert pt.encode(text) == reference(tok.obj, text)  # ten pieces: the pool grows to the cap
        assert pt.pool_size == 4 and len(pt.worker_pids()) == 4
        pids = pt.worker_pids()
        assert pt.encode(short) == reference(tok.obj, short)
        assert pt.worker_pids() == pids  # never shrinks: the same workers keep serving


def test_plan_uses_the_capped_parallelism(get_preset, monkeypatch):
    monkeypatch.setattr(par, "usable_cores", lambda: 2)
    tok = get_preset("cl100k")
    with ParallelTokenizer(tok, workers=1000, strategy="processes", backend="library") as pt:
        want = make_plan(2_000_000, 2, pt.backend, LoptConfig())
        assert make_plan(2_000_000, pt.parallelism, pt.backend, pt.config) == want


def test_threads_are_capped_too(get_preset, text, monkeypatch):
    monkeypatch.setattr(par, "usable_cores", lambda: 2)
    tok = get_preset("cl100k")
    seen: list[int] = []
    with ParallelTokenizer(tok, workers=64, strategy="threads", backend="library", **CHUNK) as pt:
        real = pt.backend.encode_chunks

        def spy(pieces, threads):
            seen.append(threads)
            return real(pieces, threads)

        monkeypatch.setattr(pt.backend, "encode_chunks", spy)
        assert pt.encode(text) == reference(tok.obj, text)
    assert seen and max(seen) == 2


def test_an_executor_keeps_the_requested_workers(get_preset, text, monkeypatch):
    monkeypatch.setattr(par, "usable_cores", lambda: 1)
    tok = get_preset("cl100k")
    with ThreadPoolExecutor(4) as ex, ParallelTokenizer(tok, executor=ex, workers=4, **CHUNK) as pt:
        assert pt.parallelism == 4  # a caller's executor may span machines
        assert pt.encode(text) == reference(tok.obj, text)
        assert pt.pool_size == 0


@pytest.mark.parametrize("chunk", [1, 17, MIN_CHUNK_CHARS - 1])
def test_chunk_chars_below_the_minimum_raises(get_preset, chunk):
    with pytest.raises(ValueError, match=rf"chunk_chars: expected None or at least {MIN_CHUNK_CHARS}"):
        ParallelTokenizer(get_preset("cl100k"), chunk_chars=chunk)


def test_chunk_chars_at_the_minimum_is_exact(get_preset, text):
    tok = get_preset("cl100k")
    with ParallelTokenizer(
        tok, workers=2, strategy="inline", backend="library", chunk_chars=MIN_CHUNK_CHARS, min_parallel_chars=0
    ) as pt:
        ids, stats = pt.encode_with_stats(text)
        assert ids.tolist() == reference(tok.obj, text)
        assert stats.plan is not None and stats.plan.chunk_chars == MIN_CHUNK_CHARS


def test_the_merge_itself_still_takes_tiny_chunks(get_preset, get_backend):
    """LoptConfig is the algorithm's knob: the merge tests rely on chunks of a few characters."""
    from lowbit.tokenize.lopt import lossless_encode

    tok, backend = get_preset("cl100k"), get_backend("cl100k")
    text = make_text("mixed", 600, seed=2)
    plan = make_plan(len(text), 2, backend, LoptConfig(chunk_chars=8, overlap_chars=6))
    ids, _ = lossless_encode(text, backend, lambda pieces: backend.encode_chunks(pieces, 1), plan)
    assert ids.tolist() == reference(tok.obj, text)
