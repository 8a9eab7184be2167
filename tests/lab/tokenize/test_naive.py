"""The naive cut-and-concatenate baseline (lab): its cuts, its wrong-token count, and that it runs on a
``ParallelTokenizer``'s own workers at LoPT's chunk length."""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.lab.tokenize.corpus import make_text
from lowbit.lab.tokenize.naive import naive_chunks, naive_encode, wrong_tokens
from lowbit.tokenize import ParallelTokenizer, load_tokenizer
from lowbit.tokenize.lopt import make_plan


def test_naive_encode_cuts_where_lopt_would_and_counts_the_damage():
    tok = load_tokenizer("bert")
    text = make_text("mixed", 40_000, seed=3)
    ref = np.asarray(tok.encode(text), dtype=np.uint32)
    with ParallelTokenizer(tok, workers=2, backend="library", strategy="threads") as pt:
        chunk = make_plan(len(text), pt.parallelism, pt.backend, pt.config).chunk_chars
        ids, cuts = naive_encode(pt, text)
        assert len(cuts) == -(-len(text) // chunk) - 1
        small, small_cuts = naive_encode(pt, text, chunk_chars=1000)
        assert len(small_cuts) == 39
        assert np.array_equal(pt.encode_to_numpy(text), ref)  # LoPT on the same object stays exact
    # Every chunk is its own sequential encode, so the concatenation is exact away from the cuts.
    first = len(tok.encode(text[:chunk]))
    assert cuts[0] == first and ids[:first].tolist() == tok.encode(text[:chunk])
    assert wrong_tokens(ref, ref, cuts) == 0
    assert wrong_tokens(ref, small, small_cuts) > 0  # a cut inside a word changes its tokens


def test_naive_chunks_rejects_a_bad_chunk_length():
    with pytest.raises(ValueError, match="chunk_chars"):
        naive_chunks("abc", lambda pieces: [], 0)
