"""The pieces parallelize() is built from, against independent references: the byte-level Encoding-state
splicer against ``json``, the segment merge against ``lopt.lossless_encode``, and padding against ``encode_batch``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.lab.tokenize.corpus import make_text
from lowbit.tokenize.lopt import LoptConfig, lossless_encode, make_plan
from lowbit.tokenize.wrap.hf_encoding import encoding_fields, encoding_from_state, pad_batch, raw_mode
from lowbit.tokenize.wrap.segments import lossless_segments
from lowbit.tokenize.wrap.state_json import StateArrays, element_bounds, format_numbers, parse_numbers

from .conftest import ALL_PRESETS

numbers = st.lists(st.one_of(st.integers(0, 10**12), st.none()), max_size=60)
strings = st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=12), max_size=40)


@settings(max_examples=200, deadline=None)
@given(numbers)
def test_numbers_round_trip_through_json(values):
    content = json.dumps(values, separators=(",", ":")).encode()[1:-1]
    parsed = parse_numbers(content)
    assert parsed.tolist() == [-1 if v is None else v for v in values]
    starts, ends = element_bounds(content, "number")
    assert [json.loads(content[a:b]) for a, b in zip(starts, ends, strict=True)] == values
    assert json.loads(b"[" + format_numbers(parsed) + b"]") == values


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 10**7)), max_size=50))
def test_pairs_round_trip_through_json(pairs):
    content = json.dumps(pairs, separators=(",", ":")).encode()[1:-1]
    starts, ends = element_bounds(content, "pair")
    assert [tuple(json.loads(content[a:b])) for a, b in zip(starts, ends, strict=True)] == pairs
    flat = np.array([v for p in pairs for v in p], dtype=np.int64)
    assert json.loads(b"[" + format_numbers(flat, pairs=True) + b"]") == [list(p) for p in pairs]


@settings(max_examples=300, deadline=None)
@given(strings)
def test_string_bounds_against_json(tokens):
    tokens = [*tokens, '","', "\\", '\\"', "]", '],"words":[']  # quotes, backslashes and fake keys
    content = json.dumps(tokens, ensure_ascii=False, separators=(",", ":")).encode()[1:-1]
    starts, ends = element_bounds(content, "string")
    assert [json.loads(content[a:b]) for a, b in zip(starts, ends, strict=True)] == tokens


def test_state_arrays_of_a_real_encoding(get_preset):
    tok = get_preset("bert").obj
    enc = tok.encode('he said "\\x" ] ,"words":[ 😀 [CLS]', add_special_tokens=True)
    arrays = StateArrays.parse(enc.__getstate__()).content
    fields = encoding_fields(enc)
    for name, kind in [("ids", "number"), ("words", "number"), ("offsets", "pair"), ("tokens", "string")]:
        starts, ends = element_bounds(arrays[name], kind)
        got = [json.loads(arrays[name][a:b]) for a, b in zip(starts, ends, strict=True)]
        assert got == fields[name], name
    assert encoding_fields(encoding_from_state(enc.__getstate__())) == fields


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_segments_give_lossless_encodes_ids(name, get_backend):
    from lowbit.tokenize.presets import missing_package

    if missing_package(name) is not None:
        pytest.skip(str(missing_package(name)))
    backend = get_backend(name)
    for text in [make_text("mixed", 4000, seed=2), "x = " + "_" * 2000 + " y " * 300]:
        plan = make_plan(len(text), 2, backend, LoptConfig(chunk_chars=120, overlap_chars=24, max_retries=1))
        ref, ref_stats = lossless_encode(text, backend, lambda p: backend.encode_chunks(p, 2), plan)
        segs, stats = lossless_segments(text, backend, lambda p: [(c, None) for c in backend.encode_chunks(p, 2)], plan)
        merged = [int(t) for s in segs for t in s.encoding.ids[s.lo : s.hi]]
        assert merged == ref.tolist() and stats == ref_stats, name


def test_pad_batch_equals_encode_batch(get_preset):
    tok = get_preset("bert").obj
    texts = ["one", "two three four five", "six seven", ""]
    for padding in [
        {"direction": "right", "pad_to_multiple_of": None, "length": None},
        {"direction": "left", "pad_to_multiple_of": 8, "length": None},
        {"direction": "left", "pad_to_multiple_of": None, "length": 12},
    ]:
        tok.enable_padding(pad_id=0, pad_token="[PAD]", pad_type_id=0, **padding)
        ref = tok.encode_batch(texts)
        with raw_mode(tok):
            mine = [tok.encode(t) for t in texts]
        mine = [tok.post_process(e, None, True) for e in mine]
        pad_batch(mine, tok.padding)
        assert [encoding_fields(e) for e in mine] == [encoding_fields(e) for e in ref], padding
    tok.no_padding()


def test_format_numbers_at_four_digit_group_edges():
    values = [0, 9, 999, 9999, 10_000, 10_001, 99_990_000, 99_999_999, 10**8, 10**12 + 7, 10**16 + 5, -1]
    content = format_numbers(np.array(values))
    assert json.loads(b"[" + content + b"]") == [None if v < 0 else v for v in values]
    assert parse_numbers(content).tolist() == values


@pytest.mark.parametrize("content", [b"1,,2", b"1,x,3", b"1,2 3", b"12345678901234567890"])
def test_parse_numbers_rejects_malformed_content(content):
    from lowbit.tokenize.wrap.state_json import StateFormatError

    with pytest.raises(StateFormatError):
        parse_numbers(content)


def test_string_bounds_with_runs_of_backslashes():
    tokens = ["\\" * k + tail for k in range(9) for tail in ('"', "", '"x"', '\\"')] * 30  # > 64 candidate quotes
    content = json.dumps(tokens, ensure_ascii=False, separators=(",", ":")).encode()[1:-1]
    starts, ends = element_bounds(content, "string")
    assert [json.loads(content[a:b]) for a, b in zip(starts, ends, strict=True)] == tokens
