"""ParallelTokenizer: pools, executors, verify, special tokens, bad input, worker death."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from lowbit.lab.tokenize.corpus import make_text
from lowbit.tokenize import ParallelTokenizer, VerificationError, fastokens_available
from lowbit.tokenize.backends import ChunkEncoding
from lowbit.tokenize.parallel import usable_cores

from .conftest import reference

SMALL = {"chunk_chars": 2000, "overlap_chars": 64, "min_parallel_chars": 0}


@pytest.fixture(scope="module")
def text() -> str:
    return make_text("mixed", 40_000, seed=11)


@pytest.mark.parametrize("name", ["cl100k", "deepseek-v4", "mistral-v1", "bert"])
def test_process_pool_equals_library(name, get_preset, text):
    tok = get_preset(name)
    ref = reference(tok.obj, text)
    with ParallelTokenizer(tok, workers=2, strategy="processes", backend="library", **SMALL) as pt:
        assert pt.encode(text) == ref
        assert pt.encode_to_numpy(text).dtype == np.uint32
        assert pt.encode_batch([text[:5000], "", text]) == [reference(tok.obj, text[:5000]), [], ref]
        assert len(pt.worker_pids()) == min(2, usable_cores())  # workers are capped at the usable cores
        pids = pt.worker_pids()
        pt.encode(text)
        assert pt.worker_pids() == pids  # persistent pool: the same workers serve every call


@pytest.mark.parametrize("name", ["qwen3.5", "deepseek-v4", "mistral-v3"])
def test_threads_and_inline_equal_library(name, get_preset, text):
    tok = get_preset(name)
    ref = reference(tok.obj, text)
    for strategy in ("threads", "inline"):
        with ParallelTokenizer(tok, workers=2, strategy=strategy, backend="library", **SMALL) as pt:
            assert pt.encode(text) == ref, strategy


def test_library_objects_accepted(get_preset, text):
    import sentencepiece as spm
    import tiktoken
    from tokenizers import Tokenizer

    objs = [get_preset("cl100k").obj, get_preset("bert").obj, get_preset("mistral-v1").obj]
    assert isinstance(objs[0], tiktoken.Encoding)
    assert isinstance(objs[1], Tokenizer)
    assert isinstance(objs[2], spm.SentencePieceProcessor)
    for obj in objs:
        with ParallelTokenizer(obj, workers=2, strategy="threads", **SMALL) as pt:
            assert pt.encode(text) == reference(obj, text)


def test_transformers_fast_tokenizer(get_preset, text):
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=get_preset("deepseek-v4").obj)
    ref = hf(text, add_special_tokens=False)["input_ids"]
    with ParallelTokenizer(hf, workers=2, strategy="threads", backend="library", **SMALL) as pt:
        assert pt.encode(text) == ref


@pytest.mark.skipif(not fastokens_available(), reason="fastokens extra not installed")
def test_auto_backend_picks_fastokens_and_stays_exact(get_preset, text):
    for name in ("qwen2", "deepseek-v4"):
        tok = get_preset(name)
        with ParallelTokenizer(tok, workers=2, **SMALL) as pt:
            assert pt.backend.name == f"{name}+fastokens"
            assert pt.strategy == "direct"
            assert pt.encode(text) == reference(tok.obj, text)
        with ParallelTokenizer(tok, workers=2, strategy="threads", **SMALL) as pt:
            ids, stats = pt.encode_with_stats(text)
            assert stats.backend == f"{name}+fastokens"
            if tok.kind == "hf":
                # fastokens has no word ids, so the HF cut rule cannot be checked: one call, said in the stats
                assert stats.path == "sequential" and "backend='library'" in (stats.note or "")
            else:  # a tiktoken vocabulary: tiktoken's proven cut rule
                assert stats.path == "lopt"
            assert ids.tolist() == reference(tok.obj, text)
        with ParallelTokenizer(tok, workers=2, strategy="threads", backend="library", **SMALL) as pt:
            ids, stats = pt.encode_with_stats(text)
            assert stats.path == "lopt"
            assert ids.tolist() == reference(tok.obj, text)
    for name in ("cl100k", "o200k"):  # tiktoken vocabularies: fastokens takes tiktoken's proven cut rule
        tok = get_preset(name)
        with ParallelTokenizer(tok, workers=2, strategy="threads", **SMALL) as pt:
            ids, stats = pt.encode_with_stats(text)
            assert stats.path == "lopt" and stats.backend == f"{name}+fastokens"
            assert ids.tolist() == reference(tok.obj, text)
    with ParallelTokenizer(get_preset("bert"), workers=2, **SMALL) as pt:
        assert "fastokens" not in pt.backend.name  # WordPiece with a normalizer: not byte-level


def test_thread_pool_executor(get_preset, text):
    tok = get_preset("mistral-v1")
    with ThreadPoolExecutor(2) as ex, ParallelTokenizer(tok, executor=ex, **SMALL) as pt:
        assert pt.strategy == "executor"
        assert pt.encode(text) == reference(tok.obj, text)


def test_dask_distributed_local_cluster(get_preset, text):
    distributed = pytest.importorskip("distributed")
    tok = get_preset("qwen2")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        ex = client.get_executor()
        with ParallelTokenizer(tok, executor=ex, **SMALL) as pt:
            assert pt.encode(text) == reference(tok.obj, text)
        ds = get_preset("deepseek-v4")
        with ParallelTokenizer(ds, executor=ex, **SMALL) as pt:
            assert pt.encode(text) == reference(ds.obj, text)


def test_worker_death_recovers_once(get_preset, text):
    tok = get_preset("cl100k")
    ref = reference(tok.obj, text)
    with ParallelTokenizer(tok, workers=2, strategy="processes", backend="library", **SMALL) as pt:
        assert pt.encode(text) == ref
        for pid in pt.worker_pids():
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        assert pt.encode(text) == ref  # a fresh pool replaces the broken one
        assert pt.encode(text) == ref


def _die(token, spec, pieces):
    """Stands in for the worker's encode function: the worker process exits abruptly."""
    from lowbit.tokenize.worker import crash_worker

    crash_worker()


def test_worker_dying_every_time_raises_clearly(get_preset, text, monkeypatch):
    tok = get_preset("cl100k")
    import lowbit.tokenize.parallel as par

    monkeypatch.setattr(par, "encode_pieces", _die)
    with ParallelTokenizer(tok, workers=2, strategy="processes", backend="library", **SMALL) as pt:
        with pytest.raises(RuntimeError, match="worker process died"):
            pt.encode(text)


def test_verify_catches_a_wrong_merge(get_preset, text, monkeypatch):
    tok = get_preset("cl100k")
    with ParallelTokenizer(tok, workers=1, strategy="inline", backend="library", verify=True, **SMALL) as pt:
        assert pt.encode(text) == reference(tok.obj, text)
        real = pt.backend.encode_chunks

        def corrupt(pieces, threads):
            out = real(pieces, threads)
            e = out[0]
            ids = e.ids.copy()
            ids[0] ^= 1
            out[0] = ChunkEncoding(ids, e.head_start, e.head_end, e.tail_index, e.tail_start, e.tail_end)
            return out

        monkeypatch.setattr(pt.backend, "encode_chunks", corrupt)
        with pytest.raises(VerificationError, match="first difference at token 0"):
            pt.encode(text)


def test_small_inputs_and_thresholds(get_preset):
    tok = get_preset("qwen2")
    with ParallelTokenizer(tok, workers=2, backend="library", strategy="processes") as pt:
        for t in ["", "a", "中", "😀", "short text", "x" * 100]:
            ids, stats = pt.encode_with_stats(t)
            assert ids.tolist() == reference(tok.obj, t)
            assert stats.path == "sequential"
        assert pt.worker_pids() == []  # no processes started for small inputs
    with ParallelTokenizer(tok, workers=2, strategy="inline", min_parallel_chars=0, chunk_chars=5000) as pt:
        for t in ["", "a", "text shorter than a chunk"]:
            assert pt.encode(t) == reference(tok.obj, t)


def test_special_tokens_added_once_after_merge(get_preset, text):
    bert = get_preset("bert")
    with ParallelTokenizer(bert, workers=2, strategy="threads", **SMALL) as pt:
        ids = pt.encode(text, add_special_tokens=True)
    assert ids == bert.obj.encode(text, add_special_tokens=True).ids
    sp = get_preset("mistral-v1")
    with ParallelTokenizer(sp, workers=1, strategy="inline", **SMALL) as pt:
        assert pt.encode(text, add_special_tokens=True) == sp.obj.encode(text, add_bos=True)
    with ParallelTokenizer(get_preset("cl100k"), workers=1, backend="library") as pt:
        with pytest.raises(ValueError, match="add_special_tokens"):
            pt.encode("x", add_special_tokens=True)


def test_tiktoken_allowed_special(get_preset):
    tok = get_preset("qwen2")
    text = ("chat <|im_start|>user\nhello<|im_end|> and <|endoftext|> " * 300)[:20_000]
    for allowed in ("all", {"<|im_start|>", "<|im_end|>", "<|endoftext|>"}):
        with ParallelTokenizer(tok, allowed_special=allowed, backend="library", strategy="inline", **SMALL) as pt:
            assert pt.encode(text) == tok.obj.encode(text, allowed_special=allowed)
    with ParallelTokenizer(tok, allowed_special={"<|im_start|>"}, backend="library", **SMALL) as pt:
        with pytest.raises(ValueError, match="allowed_special"):
            pt.encode(text)
        with pytest.raises(ValueError):
            tok.obj.encode(text, allowed_special={"<|im_start|>"})  # the library raises too
    with ParallelTokenizer(tok, **SMALL) as pt:  # default: special strings are plain text
        assert pt.encode(text) == tok.obj.encode_ordinary(text)


def test_bad_input(get_preset):
    tok = get_preset("bert")
    with pytest.raises(ValueError, match="workers"):
        ParallelTokenizer(tok, workers=0)
    with pytest.raises(ValueError, match="chunk_chars"):
        ParallelTokenizer(tok, chunk_chars=0)
    with pytest.raises(ValueError, match="overlap_chars"):
        ParallelTokenizer(tok, overlap_chars=-1)
    with pytest.raises(ValueError, match="max_retries"):
        ParallelTokenizer(tok, max_retries=-1)
    with pytest.raises(ValueError, match="min_parallel_chars"):
        ParallelTokenizer(tok, min_parallel_chars=-5)
    with pytest.raises(ValueError, match="strategy"):
        ParallelTokenizer(tok, strategy="gpu")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="executor"):
        ParallelTokenizer(tok, executor=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tokenizer"):
        ParallelTokenizer(3.5)
    with pytest.raises(ValueError, match="presets"):
        ParallelTokenizer("nope")
    with pytest.raises(ValueError, match="allowed_special"):
        ParallelTokenizer(tok, allowed_special="all")
    with ParallelTokenizer(tok, workers=1) as pt:
        with pytest.raises(TypeError, match="text"):
            pt.encode(b"bytes")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="texts"):
            pt.encode_batch("not a list")
        with pytest.raises(ValueError, match=r"lone surrogate .* at character 3"):
            pt.encode("abc\ud800def")
    with pytest.raises(ValueError, match="closed"):
        pt.encode("x")


def test_lone_surrogates_follow_tiktoken(get_preset):
    tok = get_preset("cl100k")
    text = ("ab\ud83dcd " * 5000)[:20_000]
    with ParallelTokenizer(tok, workers=1, strategy="inline", backend="library", **SMALL) as pt:
        assert pt.encode(text) == tok.obj.encode_ordinary(text)


def test_million_char_single_pretoken(get_preset):
    tok = get_preset("o200k")
    text = "start " + "_" * 10**6 + " end"
    ref = reference(tok.obj, text)
    with ParallelTokenizer(tok, workers=2, strategy="threads", backend="library", min_parallel_chars=0) as pt:
        ids, stats = pt.encode_with_stats(text)
    assert ids.tolist() == ref
    assert stats.merge is not None and stats.merge.merges > 0


SHORT_TEXTS = ["", "a", "中文分词", "😀 emoji 👩‍👩‍👧", "   \n\n\t  spaces", "<|endoftext|> special", "x" * 3000]


@pytest.mark.parametrize("name", ["qwen2", "o200k", "deepseek-v4", "bert", "mistral-v1", "tekken"])
@pytest.mark.parametrize("strategy", ["auto", "processes", "inline"])
def test_encode_batch_mixes_native_batch_and_lopt(name, strategy, get_preset, text):
    """Short texts share the library's batch call, long ones go through LoPT; every text equals its encode."""
    tok = get_preset(name)
    texts = [*SHORT_TEXTS, text, *SHORT_TEXTS[::-1]]
    backend = "auto" if strategy == "auto" else "library"
    with ParallelTokenizer(tok, workers=2, strategy=strategy, backend=backend, min_parallel_chars=10_000) as pt:
        got = pt.encode_batch(texts)
        arrays = pt.encode_batch_to_numpy(texts)
    assert got == [reference(tok.obj, t) for t in texts]
    assert all(a.dtype == np.uint32 for a in arrays)
    assert [a.tolist() for a in arrays] == got


def test_encode_batch_special_tokens_verify_and_disallowed(get_preset, text):
    bert = get_preset("bert")
    texts = ["short one", text, ""]
    with ParallelTokenizer(bert, workers=2, verify=True, min_parallel_chars=10_000) as pt:
        assert pt.encode_batch(texts, add_special_tokens=True) == [
            bert.obj.encode(t, add_special_tokens=True).ids for t in texts
        ]
    qwen = get_preset("qwen2")
    with ParallelTokenizer(qwen, workers=2, allowed_special={"<|im_start|>"}, backend="library") as pt:
        with pytest.raises(ValueError, match="allowed_special"):
            pt.encode_batch(["fine", "has <|endoftext|> in it"])
    pt.close()
    with pytest.raises(ValueError, match="closed"):
        pt.encode_batch(["a"])


def test_spawn_start_method_equals_library(get_preset, text):
    """Workers started with spawn rebuild the tokenizer from its spec once and give the same ids."""
    tok = get_preset("cl100k")
    with ParallelTokenizer(
        tok, workers=2, strategy="processes", backend="library", start_method="spawn", **SMALL
    ) as pt:
        assert pt.encode(text) == reference(tok.obj, text)
        assert len(pt.worker_pids()) == min(2, usable_cores())  # workers are capped at the usable cores


def test_progress_callback_is_monotone_and_complete(get_preset, text):
    tok = get_preset("mistral-v1")
    for strategy in ("processes", "threads", "inline"):
        seen: list[tuple[int, int]] = []
        with ParallelTokenizer(tok, workers=2, strategy=strategy, **SMALL) as pt:
            ids = pt.encode(text, on_progress=lambda done, total, seen=seen: seen.append((done, total)))
        assert ids == reference(tok.obj, text)
        assert len(seen) > 1, strategy
        assert all(total == len(text) for _, total in seen)
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        assert seen[-1][0] == len(text), strategy
