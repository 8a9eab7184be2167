"""``ParallelTokenizer``: lossless parallel tokenization of long texts (LoPT).

Method: ``docs/methods/lopt.md`` (LoPT: Lossless Parallel Tokenization Acceleration for Long Context Inference
of Large Language Model, Shao et al., arXiv:2511.04952). The contract: ``encode(text)`` equals the wrapped
library's own sequential call (``Tokenizer.encode(text, add_special_tokens=False).ids``,
``Encoding.encode_ordinary(text)`` or ``encode(text, allowed_special=...)``, ``SentencePieceProcessor.encode(text)``)
token for token. Everything that differs between libraries is a rule of the backend
(:mod:`lowbit.tokenize.backends`); this module never asks which library it wraps.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from typing import Any, Literal

import numpy as np

from lowbit.tokenize.backends import ChunkEncoding, Piece, make_backend
from lowbit.tokenize.lopt import (
    MIN_CHUNK_CHARS,
    UNASKED,
    LoptConfig,
    MergeStats,
    Plan,
    make_plan,
    merged_ids,
    one_call_stats,
)
from lowbit.tokenize.worker import encode_pieces, init_worker

_frombuffer, _UINT32 = np.frombuffer, np.uint32  # module globals: read without an attribute lookup per call
Strategy = Literal["auto", "direct", "processes", "threads", "inline", "executor"]
ProgressFn = Callable[[int, int], None]


class VerificationError(RuntimeError):
    """``verify=True`` found a difference between the parallel and the sequential ids."""


@dataclass(frozen=True)
class EncodeStats:
    """How one text was encoded: ``path`` is "sequential" (below the threshold, or no cut can be proven exact),
    "direct" or "lopt". ``note`` says why a text long enough for LoPT was encoded in one sequential call
    (the backend's :meth:`~lowbit.tokenize.backends.Backend.exact_cut_blocker`), else None."""

    path: str
    strategy: str
    backend: str
    chars: int
    tokens: int
    plan: Plan | None
    merge: MergeStats | None
    note: str | None = None


def usable_cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


class ParallelTokenizer:
    """Lossless parallel tokenizer over a persistent worker pool (a context manager).

    ``tokenizer``: a preset name or vocabulary path (see :func:`lowbit.tokenize.load_tokenizer`), a
    ``LoadedTokenizer``, ``tokenizers.Tokenizer``, ``transformers.PreTrainedTokenizerFast``,
    ``tiktoken.Encoding`` or ``sentencepiece.SentencePieceProcessor``.

    ``backend``: ``"auto"`` uses fastokens when it is installed and supports the vocabulary (byte-level BPE from a
    preset, path or ``tokenizers.Tokenizer``), else the library; ``"library"`` never uses fastokens.
    ``strategy``: ``"auto"`` makes one direct fastokens call (fastokens is itself multi-threaded and was the
    fastest path measured on 2 cores; ``"threads"`` runs LoPT on top of its batch call), LoPT over the native
    multi-threaded batch call for HF tokenizers and SentencePiece, and LoPT over a persistent process pool for
    tiktoken, one tokenizer load per worker (``start_method`` defaults to fork on
    POSIX, where workers inherit the loaded tokenizer; with spawn, call from under ``if __name__ == "__main__":``).
    ``"threads"`` uses the library's own batch call; ``"inline"`` encodes the chunks one after another in the
    caller; ``executor=`` runs chunks on any ``concurrent.futures.Executor`` (e.g. a Dask ``distributed``
    client's ``get_executor()``).

    ``workers`` is an upper bound, never a count of processes to start: the own pool and the native threads run
    at most ``parallelism = min(workers, usable cores)`` at once (:func:`usable_cores`, the CPU affinity set;
    more would only time-slice the same cores, e.g. ``workers=1000`` used to fork 1000 processes for a 2 MB
    text: 23 s instead of 0.7 s on 2 cores), and the pool starts at most one process per piece of the text,
    growing (a fresh pool) when a later text has more pieces. With ``executor=`` the caller's workers may live
    on other machines, so ``parallelism = workers`` there. ``pool_size`` tells how many processes were started.

    ``chunk_chars`` (default: chosen per text, see :func:`lowbit.tokenize.lopt.make_plan`) must be at least
    :data:`~lowbit.tokenize.lopt.MIN_CHUNK_CHARS` (256): every piece costs a task and ``overlap_chars`` of
    re-encoding, so smaller chunks make the work grow far beyond the text's (``chunk_chars=1`` took over a minute
    for 100K characters, 100K tasks; 256 takes 0.6 s).

    >>> with ParallelTokenizer("cl100k", workers=2) as pt:
    ...     pt.encode("Hello world, tokenization!")
    [9906, 1917, 11, 4037, 2065, 0]
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        workers: int | None = None,
        strategy: Strategy = "auto",
        executor: Executor | None = None,
        backend: str = "auto",
        allowed_special: Any = None,
        chunk_chars: int | None = None,
        overlap_chars: int | None = None,
        max_retries: int | None = None,
        min_parallel_chars: int = 32_768,
        verify: bool = False,
        start_method: str | None = None,
    ) -> None:
        if workers is None:
            workers = usable_cores()
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers: expected a positive int, got {workers!r}")
        if isinstance(chunk_chars, int) and not isinstance(chunk_chars, bool) and 1 <= chunk_chars < MIN_CHUNK_CHARS:
            raise ValueError(
                f"chunk_chars: expected None or at least {MIN_CHUNK_CHARS}, got {chunk_chars}; every chunk costs a "
                "task and overlap_chars of re-encoding, so tinier chunks multiply the work"
            )
        if strategy not in ("auto", "direct", "processes", "threads", "inline", "executor"):
            raise ValueError(f"strategy: expected auto/direct/processes/threads/inline/executor, got {strategy!r}")
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(f"executor: expected a concurrent.futures.Executor, got {type(executor).__name__}")
        if strategy == "executor" and executor is None:
            raise ValueError("executor: strategy='executor' needs executor=...")
        if not isinstance(verify, bool):
            raise TypeError(f"verify: expected bool, got {type(verify).__name__}")
        if executor is not None and backend == "auto":
            backend = "library"  # fastokens objects cannot travel to other processes
        self.config = LoptConfig(chunk_chars, overlap_chars, max_retries, min_parallel_chars)
        self.backend, self.loaded = make_backend(tokenizer, allowed_special=allowed_special, backend=backend)
        self.workers = workers
        self._verify_flag = verify
        self._executor = executor
        if executor is not None:
            strategy = "executor"
        # A caller's executor may span machines; our own processes and threads share this one's cores.
        self.parallelism: int = workers if strategy == "executor" else min(workers, usable_cores())
        self.strategy: str = self.backend.default_strategy(self.parallelism) if strategy == "auto" else strategy
        if self.strategy == "processes" and self.backend.in_process_only:
            raise ValueError(
                f"strategy: the {self.backend.name} backend runs in-process; use 'threads' or backend='library'"
            )
        self._pool: ProcessPoolExecutor | None = None
        self._pool_size = 0
        self._token = uuid.uuid4().hex
        self._spec = self.backend.spec() if self.strategy == "executor" else None
        self._closed = False
        if start_method is None:
            start_method = "fork" if "fork" in get_all_start_methods() else "spawn"
        if start_method not in get_all_start_methods():
            raise ValueError(f"start_method: expected one of {get_all_start_methods()}, got {start_method!r}")
        self._start_method = start_method
        #: Why no cut of this tokenizer's input can be proven exact (texts then take one sequential call), or None.
        self._blocker: str | None = self.backend.exact_cut_blocker()
        #: Texts shorter than this take one backend call (:meth:`_one_call`), precomputed for the per-call path.
        self._one_call_below: int = (
            sys.maxsize
            if self.strategy == "direct" or self._blocker is not None
            else max(self.config.min_parallel_chars, 1)
        )
        self._encode_list = self.backend.encode_list
        self._encode_ids = self.backend.ids_call()
        # The backend's native flat call, made inline by encode_to_numpy (one Python frame, like a user's own call).
        flat = self.backend.flat_call()
        self._flat, self._flat_option = (None, False) if flat is None else flat
        self._fast_below = self._one_call_below  # the per-call test: -1 while verify is on or once closed
        self.verify = verify

    @property
    def verify(self) -> bool:
        """Re-encode every text sequentially and raise :class:`VerificationError` on any difference."""
        return self._verify_flag

    @verify.setter
    def verify(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"verify: expected bool, got {type(value).__name__}")
        self._verify_flag = value
        self._fast_below = -1 if value or self._closed else self._one_call_below

    # ---------------------------------------------------------------------------------------------------------
    # encoding
    # ---------------------------------------------------------------------------------------------------------

    def encode(
        self, text: str, *, add_special_tokens: bool = False, on_progress: ProgressFn | None = None
    ) -> list[int]:
        """Token ids of ``text``, identical to the library's sequential encode.

        ``add_special_tokens`` adds BOS/EOS or the template's tokens once, after merging.
        ``on_progress(done_chars, total_chars)`` is called as chunks finish.

        >>> ParallelTokenizer("qwen2", workers=1).encode("Hello world, tokenization!")
        [9707, 1879, 11, 3950, 2022, 0]
        """
        if type(text) is str and not add_special_tokens and self._fast_below >= 0:
            # One call: the backend's own list-returning call (no numpy round trip, no scan of the text; a lone
            # surrogate is caught from the library's own UTF-8 conversion), so it costs what the library costs.
            if len(text) < self._fast_below:
                ids = self._encode_list(text)
            else:
                dense = self.backend.prefers_one_call(text)  # asked once: the LoPT path below reuses the answer
                if dense is None:
                    return self._encode(text, False, on_progress, True, None)[0]  # type: ignore[return-value]
                ids = self._encode_list(text)
            if on_progress:
                on_progress(len(text), len(text))
            return ids
        return self._encode(text, add_special_tokens, on_progress, True)[0]  # type: ignore[return-value]

    def encode_to_numpy(
        self, text: str, *, add_special_tokens: bool = False, on_progress: ProgressFn | None = None
    ) -> np.ndarray:
        """Like :meth:`encode`, as a ``uint32`` numpy array (no per-token Python objects)."""
        # One test for threshold, verify and closed (``_fast_below``). Below it, the backend's native flat call
        # (``Backend.flat_call``, fastokens' ``encode_batch_flat``) is made right here, its options positional: this
        # method is then the only Python frame, as in a user's own call; other backends' call is bound once
        # (``ids_call``).
        if type(text) is str and len(text) < self._fast_below and not add_special_tokens:
            flat = self._flat
            if flat is None:
                ids = self._encode_ids(text)
            else:
                try:
                    ids = _frombuffer(flat([text], False, self._flat_option)[0], _UINT32)
                except UnicodeEncodeError:  # a lone surrogate: the backend's call repairs (tiktoken) or names it
                    ids = self._encode_ids(text)
            if on_progress is not None:
                on_progress(len(text), len(text))
            return ids
        return self._encode(text, add_special_tokens, on_progress, False)[0]  # type: ignore[return-value]

    def encode_batch(self, texts: Sequence[str], *, add_special_tokens: bool = False) -> list[list[int]]:
        """:meth:`encode` of every text, in order."""
        return [a.tolist() for a in self.encode_batch_to_numpy(texts, add_special_tokens=add_special_tokens)]

    def encode_batch_to_numpy(self, texts: Sequence[str], *, add_special_tokens: bool = False) -> list[np.ndarray]:
        """:meth:`encode_to_numpy` of every text, in order.

        Texts below ``min_parallel_chars`` (all texts on the ``"direct"`` strategy) go together through the
        library's own multi-threaded batch call (``encode_batch`` / ``encode_ordinary_batch`` / SentencePiece
        ``num_threads``), which gives each text the ids of its sequential encode; longer texts go through LoPT
        one after another, each using all workers.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError("texts: expected a sequence of str (use encode() for one text)")
        if self._closed:
            raise ValueError("ParallelTokenizer is closed")
        checked = [self._check_text(t) for t in texts]
        out: list[np.ndarray | None] = [None] * len(checked)
        short = [
            i
            for i, t in enumerate(checked)
            if self.strategy == "direct" or len(t) < max(self.config.min_parallel_chars, 1)
        ]
        if short:
            for i in short:
                self.backend.check_disallowed(checked[i])
            threads = self.parallelism if self.strategy != "inline" else 1
            group = 4096  # bounds the memory of one native batch call
            for g in range(0, len(short), group):
                idx = short[g : g + group]
                encs = self.backend.encode_chunks([Piece(checked[i], 0, 0) for i in idx], threads=threads)
                for i, enc in zip(idx, encs, strict=True):
                    ids = enc.ids
                    if self.verify:
                        self._verify(checked[i], ids)
                    out[i] = self._add_special(ids) if add_special_tokens else ids
        for i, t in enumerate(checked):
            if out[i] is None:
                out[i], _ = self.encode_with_stats(t, add_special_tokens=add_special_tokens)
        return [a for a in out if a is not None]

    def encode_with_stats(
        self, text: str, *, add_special_tokens: bool = False, on_progress: ProgressFn | None = None
    ) -> tuple[np.ndarray, EncodeStats]:
        """:meth:`encode_to_numpy` plus an :class:`EncodeStats` describing how the text was split and merged."""
        ids, stats = self._encode(text, add_special_tokens, on_progress, False)
        return ids, stats  # type: ignore[return-value]

    def encode_chunks(self, pieces: Sequence[Piece]) -> list[ChunkEncoding]:
        """Encode independent pieces on this tokenizer's workers and strategy, in order, without merging.

        Each result holds the piece's own sequential ids and its edge spans (:class:`ChunkEncoding`); the LoPT
        merge is built on this call, and so is the lab's naive cut-and-concatenate baseline.
        """
        if self._closed:
            raise ValueError("ParallelTokenizer is closed")
        return self._runner(sum(len(p.text) for p in pieces), None)(pieces)

    # ---------------------------------------------------------------------------------------------------------
    # lifecycle
    # ---------------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the worker pool down (a caller-supplied executor is left running)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._pool_size = 0
        self._closed = True
        self._fast_below = -1

    def __enter__(self) -> ParallelTokenizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    @property
    def pool_size(self) -> int:
        """Worker processes of the own pool: ``min(parallelism, most pieces submitted at once so far)``; 0 before
        the first parallel call, after :meth:`close` and for strategies without a pool."""
        return self._pool_size if self._pool is not None else 0

    def worker_pids(self) -> list[int]:
        """Process ids of the own pool's workers (empty before the first parallel call)."""
        if self._pool is None:
            return []
        return sorted(self._pool._processes)  # no public accessor; used for diagnostics and tests

    # ---------------------------------------------------------------------------------------------------------
    # private
    # ---------------------------------------------------------------------------------------------------------

    def _encode(
        self,
        text: str,
        add_special_tokens: bool,
        on_progress: ProgressFn | None,
        as_list: bool,
        dense_note: Any = UNASKED,
    ) -> tuple[list[int] | np.ndarray, EncodeStats]:
        """The ids (a list when ``as_list``, else ``uint32``) and stats of :meth:`encode_with_stats`.

        Wherever the text ends as one library call (below the threshold, a blocked cut rule, token-dense text,
        no boundary with a place to cut), the ids come from the backend's own call in the form asked for, with no
        list -> array -> list round trip. ``dense_note``: the backend's ``prefers_one_call(text)`` when the caller
        has asked it already (the sample is then not encoded twice)."""
        if self._closed:
            raise ValueError("ParallelTokenizer is closed")
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        n = len(text)
        ids: list[int] | np.ndarray
        if self._one_call(n):
            # One call: the library's own error for a lone surrogate is caught and named (no scan of the text).
            ids = self._encode_list(text) if as_list else self._encode_ids(text)
            path = "direct" if self.strategy == "direct" else "sequential"
            note = self._blocker if n >= max(self.config.min_parallel_chars, 1) and path == "sequential" else None
            stats = EncodeStats(path, "inline", self.backend.name, n, len(ids), None, None, note)
            if on_progress:
                on_progress(n, n)
        else:
            text = self._check_text(text)
            self.backend.check_disallowed(text)  # the pieces skip it: once, on the whole text
            plan = make_plan(n, self.parallelism, self.backend, self.config)
            merge, hopeless = one_call_stats(text, self.backend, plan, dense_note)
            if merge is not None:  # the library's own call on the whole text (merge.note says why)
                ids = self._encode_list(text) if as_list else self._encode_ids(text)
                if on_progress:
                    on_progress(n, n)
            else:
                run = self._runner(n, on_progress)
                ids, merge = merged_ids(text, self.backend, run, plan, self.config.min_match_tokens, hopeless)
            path = "lopt" if merge.note is None else "sequential"  # every boundary merged: one sequential call
            stats = EncodeStats(path, self.strategy, self.backend.name, n, len(ids), plan, merge, merge.note)
        if self.verify:
            self._verify(text, ids)
        if add_special_tokens:
            ids = self._add_special(ids)
        if as_list and isinstance(ids, np.ndarray):
            ids = ids.tolist()
        return ids, stats

    def _one_call(self, n: int) -> bool:
        """Whether a text of ``n`` characters is one backend call: the direct strategy, below
        ``min_parallel_chars``, or a tokenizer whose cuts cannot be proven exact."""
        return n < self._one_call_below

    def _check_text(self, text: Any) -> str:
        """A ``str``, checked (and for tiktoken repaired) by the backend's rule for lone surrogates."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        return self.backend.check_text(text)

    def _runner(self, n: int, on_progress: ProgressFn | None) -> Callable[[Sequence[Piece]], list[ChunkEncoding]]:
        done = [0]

        def report(pieces: Sequence[Piece]) -> None:
            if on_progress is not None:
                done[0] = min(n, done[0] + sum(len(p.text) - p.right_window for p in pieces))
                on_progress(done[0], n)

        if self.strategy in ("threads", "inline"):
            threads = self.parallelism if self.strategy == "threads" else 1

            def run_local(pieces: Sequence[Piece]) -> list[ChunkEncoding]:
                if self.strategy == "inline":
                    out = []
                    for p in pieces:
                        out.extend(self.backend.encode_chunks([p], threads=1))
                        report([p])
                    return out
                group = max(1, 2 * self.parallelism)
                out = []
                for g in range(0, len(pieces), group):
                    out.extend(self.backend.encode_chunks(pieces[g : g + group], threads=threads))
                    report(pieces[g : g + group])
                return out

            return run_local

        def run_remote(pieces: Sequence[Piece]) -> list[ChunkEncoding]:
            for attempt in range(2):
                try:
                    return self._submit_all(pieces, report)
                except BrokenProcessPool as exc:
                    if self.strategy != "processes":
                        raise RuntimeError("a worker of the executor died while encoding") from exc
                    self._pool, self._pool_size = None, 0  # the broken pool is unusable; start a fresh one once
                    if attempt == 1:
                        raise RuntimeError(
                            "lowbit tokenize: a worker process died twice while encoding (out of memory or killed?)"
                        ) from exc
            raise AssertionError("unreachable")

        return run_remote

    def _submit_all(self, pieces: Sequence[Piece], report: Callable[[Sequence[Piece]], None]) -> list[ChunkEncoding]:
        """Encode ``pieces`` in order on the pool, with at most ``2 * parallelism`` pieces in flight.

        The bound keeps memory near a few chunks: the pieces are sliced from the text only when submitted
        (:class:`lowbit.tokenize.lopt.PieceList`) and released once their result is back.
        """
        ex = self._executor if self._executor is not None else self._ensure_pool(len(pieces))
        spec = self._spec if self._executor is not None else None
        ahead = max(2, 2 * self.parallelism)
        pending: deque[tuple[Piece, Future[list[ChunkEncoding]]]] = deque()
        out: list[ChunkEncoding] = []

        def collect() -> None:
            p, f = pending.popleft()
            out.extend(f.result())
            report([p])

        try:
            for p in pieces:
                pending.append((p, ex.submit(encode_pieces, self._token, spec, [p])))
                if len(pending) >= ahead:
                    collect()
            while pending:
                collect()
        except BaseException:
            for _, f in pending:
                f.cancel()
            raise
        return out

    def _ensure_pool(self, pieces: int) -> ProcessPoolExecutor:
        """The own pool, with ``min(parallelism, pieces)`` processes at least (a fork pool starts them all at once).

        A pool smaller than that (started for a text with fewer pieces) is replaced by a larger one; it never
        shrinks, so a persistent pool keeps serving every later text.
        """
        want = max(1, min(self.parallelism, pieces))
        if self._pool is not None and self._pool_size < want:
            self._pool.shutdown(wait=True)
            self._pool, self._pool_size = None, 0
        if self._pool is None:
            self._pool_size = want
            self._pool = ProcessPoolExecutor(
                max_workers=want,
                mp_context=get_context(self._start_method),
                initializer=init_worker,
                # fork inherits the parent's backend (no reload); spawn/forkserver rebuild it from its spec once.
                initargs=(self._token, None, self.backend)
                if self._start_method == "fork"
                else (self._token, self.backend.spec(), None),
            )
        return self._pool

    def _verify(self, text: str, ids: list[int] | np.ndarray) -> None:
        ref = np.asarray(self.backend.reference(text), dtype=np.uint32)
        ids = np.asarray(ids, dtype=np.uint32)
        if len(ref) != len(ids) or not np.array_equal(ref, ids):
            diff = np.nonzero(ref[: min(len(ref), len(ids))] != ids[: min(len(ref), len(ids))])[0]
            first = int(diff[0]) if len(diff) else min(len(ref), len(ids))
            raise VerificationError(
                f"parallel ids differ from the sequential encode: {len(ids)} vs {len(ref)} tokens, "
                f"first difference at token {first}"
            )

    def _add_special(self, ids: list[int] | np.ndarray) -> np.ndarray:
        prefix, suffix = self.backend.special_affixes()
        return np.concatenate([np.asarray(prefix, np.uint32), ids, np.asarray(suffix, np.uint32)])
