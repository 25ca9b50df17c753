"""manifest.json codec: the canonical writer, the numpy fast reader and the generic reader.

The fast reader must never accept a document the generic (orjson) reader rejects or reads
differently, so most tests here compare the two on canonical output and on mutated bytes.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zarr_manifest import _json_canonical_reader as canonical
from zarr_manifest import _json_codec as jc
from zarr_manifest import _json_encoder as encoder
from zarr_manifest._json_codec import MAX_OFFSET, decode_entries, decode_manifest, encode_manifest
from zarr_manifest.errors import ManifestError, ManifestFormatError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LOC = "mem://m/manifest.json"


# ---- helpers --------------------------------------------------------------------------------


def reference_encode(shape, table, ids, offsets, lengths) -> bytes:
    """The canonical layout, written the slow obvious way."""
    ids = np.asarray(ids).reshape(-1)
    present = np.flatnonzero(ids >= 0)
    if present.size == 0:
        return b"{}"
    if shape:
        cols = np.unravel_index(present, shape)
        keys = [".".join(map(str, t)) for t in zip(*(c.tolist() for c in cols), strict=True)]
    else:
        keys = ["0"]
    lits = [orjson.dumps(p).decode() for p in table]
    offs = np.asarray(offsets).reshape(-1)[present].tolist()
    lens = np.asarray(lengths).reshape(-1)[present].tolist()
    lines = [
        f'"{k}":{{"path":{lits[p]},"offset":{o},"length":{n}}}'
        for k, p, o, n in zip(keys, ids[present].tolist(), offs, lens, strict=True)
    ]
    return ("{\n" + ",\n".join(lines) + "\n}").encode()


def generic(data: bytes, *, ndim: int | None, location: str | None = LOC) -> jc.DecodedManifest:
    return jc._decode_generic(data, ndim, location)


def outcome(fn, data: bytes, ndim: int | None) -> tuple[Any, ...]:
    """What a decoder makes of ``data``: its columns, or its error (type, message, key, field)."""
    try:
        d = fn(data, ndim=ndim, location=LOC)
    except ManifestError as e:
        return ("error", type(e).__name__, str(e), e.key, e.field)
    return (
        "ok",
        d.indices.shape,
        d.indices.dtype.str,
        d.indices.tolist(),
        d.path_table,
        d.path_ids.dtype.str,
        d.path_ids.tolist(),
        d.offsets.dtype.str,
        d.offsets.tolist(),
        d.lengths.dtype.str,
        d.lengths.tolist(),
    )


@contextlib.contextmanager
def small_blocks(segment: int, rows: int) -> Iterator[None]:
    """Tiny decode segments and encode blocks, so small documents cross their boundaries."""
    old = canonical._SEGMENT, encoder._ENCODE_ROWS
    canonical._SEGMENT, encoder._ENCODE_ROWS = segment, rows
    try:
        yield
    finally:
        canonical._SEGMENT, encoder._ENCODE_ROWS = old


def fast(data: bytes, *, ndim: int | None, location: str | None = LOC):
    """The fast path alone (None when it declines)."""
    return canonical.decode_canonical(data, ndim, location)


def assert_fast_agrees(data: bytes, ndim: int | None) -> bool:
    """The fast path declines, or gives what the generic path gives. Returns whether it took it."""
    want = outcome(generic, data, ndim)
    try:
        got = fast(data, ndim=ndim)
    except ManifestFormatError as e:
        assert want == ("error", type(e).__name__, str(e), e.key, e.field)
        return True
    if got is None:
        return False
    assert outcome(lambda d, **kw: got, data, ndim) == want
    return True


# ---- strategies -----------------------------------------------------------------------------

paths_st = st.one_of(
    st.text(min_size=1, max_size=12),
    st.sampled_from(
        [
            "s3://bucket/a.nc",
            "/data/x.h5",
            "a",
            'q"u\\o:t,e{}',
            "é/中/😀",
            "\x00\x1f\n\t",
            "x" * 300,
            ",",
            '","',
            '"',
            "\\",
            '\\"',
            '","offset":1,"length":2},\n"0":{"path":"',
        ]
    ),
)


@st.composite
def manifests(draw, max_ndim: int = 3, max_side: int = 5):
    ndim = draw(st.integers(0, max_ndim))
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=ndim, max_size=ndim)))
    table = draw(st.lists(paths_st, min_size=1, max_size=4, unique=True))
    size = int(np.prod(shape, dtype=np.int64))
    ids = np.array(draw(st.lists(st.integers(-1, len(table) - 1), min_size=size, max_size=size)))
    big = st.integers(0, MAX_OFFSET)
    small = st.integers(0, 10**6)
    offs = draw(st.lists(st.one_of(small, big), min_size=size, max_size=size))
    lens = [
        draw(st.one_of(st.integers(0, min(10**6, MAX_OFFSET - o)), st.integers(0, MAX_OFFSET - o)))
        for o in offs
    ]
    return (
        shape,
        table,
        ids.reshape(shape),
        np.array(offs, dtype=np.uint64).reshape(shape),
        np.array(lens, dtype=np.uint64).reshape(shape),
    )


EDITS = [
    b" ",
    b"\n",
    b"\t",
    b"\r",
    b",",
    b'"',
    b"\\",
    b"0",
    b"1",
    b"-",
    b".",
    b".5",
    b"e3",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b'"x":1,',
    b"\\u0030",
    b"\xff",
    b"\xc3\xa9",
    b"\x00",
    b"null",
    b"9" * 20,
]

# "@" stands for the digits edited
NUMBER_EDITS = [b"0@", b"-@", b"@.0", b"@e0", b"9" * 20, b"%d" % 2**63, b"%d" % MAX_OFFSET, b"-0"]
NUMBER_EDITS += [b'"@"', b"00", b"@ "]
KEY_EDITS = [b"0@", b"@.0", b"-@", b"@ ", b"x", b"\\u0030", b"", b"1"]
PATH_EDITS = [b'"\\u0061"', b'"a\\/b"', b'""', b'"a\\"', b'"a"b"', b'"\xe4"', b'"\\ud800"', b"1"]
PATH_EDITS += [b'"a\\u003ab"', b'"x","offset":1,"q":"', b'"\\"', b'"\\\\"']


@st.composite
def mutated(draw):
    """A canonical document with 1-3 random edits; ndim as the reader is told it."""
    shape, table, ids, offs, lens = draw(manifests())
    if (ids < 0).all():
        ids = np.zeros_like(ids)
    data = bytearray(encode_manifest(shape, table, ids, offs, lens))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                ["flip", "truncate", "insert", "delete", "dup", "swap", "number", "key", "path"]
            )
        )
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        lines = bytes(data).split(b"\n")
        body = [i for i, ln in enumerate(lines) if ln.startswith(b'"')]
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.sampled_from(EDITS))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 4))]
        elif kind == "dup" and body:
            i = draw(st.sampled_from(body))
            line = lines[i].rstrip(b",")
            lines.insert(i + draw(st.integers(0, 1)), line + b",")
            data = bytearray(b"\n".join(lines).replace(b",\n}", b"\n}"))
        elif kind == "swap" and body:
            i = draw(st.sampled_from(body))
            lines[i] = (
                re.sub(rb'("offset":\d+),("length":\d+)', lambda m: m[2] + b"," + m[1], lines[i])
                if draw(st.booleans())
                else lines[i].replace(b'{"path":', b'{ "path" : ')
            )
            data = bytearray(b"\n".join(lines))
        elif kind == "number" and body:
            i = draw(st.sampled_from(body))
            new = draw(st.sampled_from(NUMBER_EDITS))
            field = draw(st.sampled_from([b"offset", b"length"]))
            lines[i] = re.sub(
                rb'("' + field + rb'":)(\d+)',
                lambda m, new=new: m[1] + new.replace(b"@", m[2]),
                lines[i],
            )
            data = bytearray(b"\n".join(lines))
        elif kind == "key" and body:
            i = draw(st.sampled_from(body))
            new = draw(st.sampled_from(KEY_EDITS))
            lines[i] = re.sub(
                rb'^"([0-9]+)', lambda m, new=new: b'"' + new.replace(b"@", m[1]), lines[i]
            )
            data = bytearray(b"\n".join(lines))
        elif kind == "path" and body:
            i = draw(st.sampled_from(body))
            new = draw(st.sampled_from(PATH_EDITS))
            lines[i] = re.sub(
                rb'"path":"(?:[^"\\]|\\.)*"', lambda m, new=new: b'"path":' + new, lines[i]
            )
            data = bytearray(b"\n".join(lines))
    ndim = draw(st.sampled_from([len(shape), None, len(shape) + 1]))
    return bytes(data), ndim


# ---- the writer -----------------------------------------------------------------------------


def test_encode_exact_text():
    ids = np.array([[0, -1], [1, 0]])
    offs = np.array([[100, 0], [0, 2**63 - 2]], dtype=np.uint64)
    lens = np.array([[100, 0], [7, 1]], dtype=np.uint64)
    got = encode_manifest((2, 2), ["s3://b/f.nc", 'we"ird\\é'], ids, offs, lens)
    assert got == (
        b'{\n"0.0":{"path":"s3://b/f.nc","offset":100,"length":100},\n'
        b'"1.0":{"path":"we\\"ird\\\\\xc3\xa9","offset":0,"length":7},\n'
        b'"1.1":{"path":"s3://b/f.nc","offset":9223372036854775806,"length":1}\n}'
    )


def test_encode_empty_and_scalar():
    assert (
        encode_manifest((2, 3), ["a"], np.full((2, 3), -1), np.zeros((2, 3)), np.zeros((2, 3)))
        == b"{}"
    )
    assert encode_manifest((0,), [], np.zeros(0, int), np.zeros(0), np.zeros(0)) == b"{}"
    got = encode_manifest((), ["a"], np.array(0), np.array(5, np.uint64), np.array(0, np.uint8))
    assert got == b'{\n"0":{"path":"a","offset":5,"length":0}\n}'


def test_encode_narrow_dtypes_and_wide_keys():
    shape = (3, 12345)
    ids = np.zeros(shape, dtype=np.int8)
    offs = np.arange(np.prod(shape), dtype=np.uint32).reshape(shape)
    lens = np.full(shape, 255, dtype=np.uint8)
    table = ["p"]
    assert encode_manifest(shape, table, ids, offs, lens) == reference_encode(
        shape, table, ids, offs, lens
    )


@SETTINGS
@given(m=manifests(), rows=st.sampled_from([1 << 14, 1, 3]))
def test_encode_matches_reference(m, rows):
    with small_blocks(canonical._SEGMENT, rows):
        assert encode_manifest(*m) == reference_encode(*m)


def test_encode_many_long_paths_uses_gathered_cells():
    n = 3000
    table = [f"s3://bucket/{'d' * (i % 700)}/{i}.nc" for i in range(n)]
    ids = np.arange(n)[::-1].copy()
    offs = np.arange(n, dtype=np.uint64)
    lens = np.ones(n, dtype=np.uint64)
    old = encoder._TABLE_BYTES
    encoder._TABLE_BYTES = 1000  # force the gathered-cells branch
    try:
        got = encode_manifest((n,), table, ids, offs, lens)
    finally:
        encoder._TABLE_BYTES = old
    assert got == reference_encode((n,), table, ids, offs, lens)
    assert outcome(decode_manifest, got, 1) == outcome(generic, got, 1)


@settings(max_examples=300, deadline=None)
@given(paths=st.lists(st.one_of(paths_st, st.sampled_from(['","', ",", '\\",'])), max_size=6))
def test_path_literals_cut_where_orjson_would(paths):
    lengths, joined = encoder._path_literals(paths)
    lits = [orjson.dumps(p) for p in paths]
    assert lengths.tolist() == [len(x) for x in lits]
    assert joined.tobytes() == b"".join(lits)


def test_encode_rejects_bad_columns():
    one = np.zeros(1, dtype=np.int64)
    with pytest.raises(TypeError):
        encode_manifest((1,), [1], one, one, one)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="path_table"):
        encode_manifest((1,), ["a"], one + 1, one, one)
    with pytest.raises(ValueError, match="2\\*\\*63"):
        encode_manifest((1,), ["a"], one, one - 1, one)
    with pytest.raises(ValueError, match="2\\*\\*63"):
        encode_manifest((1,), ["a"], one, one, np.array([2**63], dtype=np.uint64))


# ---- the fast reader on canonical text -----------------------------------------------------


@SETTINGS
@given(m=manifests(), seg=st.sampled_from([1 << 20, 64, 300]))
def test_roundtrip_takes_fast_path_and_matches_generic(m, seg):
    shape, table, ids, offs, lens = m
    data = encode_manifest(*m)
    with small_blocks(seg, 1 << 14):
        for ndim in (len(shape), None):
            if data == b"{}":
                continue
            d = fast(data, ndim=ndim)
            assert d is not None
            assert outcome(lambda b, d=d, **kw: d, data, ndim) == outcome(generic, data, ndim)
    # and the columns are what was written
    d = decode_manifest(data, ndim=len(shape), location=LOC)
    flat = np.asarray(ids).reshape(-1)
    present = np.flatnonzero(flat >= 0)
    assert d.offsets.tolist() == np.asarray(offs).reshape(-1)[present].tolist()
    assert d.lengths.tolist() == np.asarray(lens).reshape(-1)[present].tolist()
    assert [d.path_table[i] for i in d.path_ids] == [table[i] for i in flat[present]]
    want_idx = (
        np.stack(np.unravel_index(present, shape), axis=1) if shape else np.zeros((present.size, 0))
    )
    assert d.indices.shape == (present.size, len(shape))
    assert np.array_equal(d.indices, want_idx)


def test_fast_path_many_distinct_paths_and_runs():
    rng = np.random.default_rng(0)
    n = 5000
    table = [f"/data/file_{i}.nc" for i in range(n)] + ["x" * 400, "y" * 300]
    ids = np.concatenate([rng.permutation(n), np.full(300, n), np.arange(700) % 4, [n + 1] * 5])
    ids[1000:1010] = n  # long literals inside a block of short ones
    offs = rng.integers(0, 10**12, ids.size).astype(np.uint64)
    lens = rng.integers(0, 10**6, ids.size).astype(np.uint64)
    data = encode_manifest((ids.size,), table, ids, offs, lens)
    for seg in (1 << 20, 4096, 200):
        with small_blocks(seg, 1 << 14):
            assert assert_fast_agrees(data, 1)
            d = decode_manifest(data, ndim=1)
            assert [d.path_table[i] for i in d.path_ids] == [table[i] for i in ids]
            # first-appearance order, like the generic path
            assert d.path_table == list(dict.fromkeys(table[i] for i in ids))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_paths=st.integers(1, 150),
    n=st.integers(1, 600),
    seed=st.integers(0, 2**32 - 1),
    seg=st.sampled_from([1 << 20, 2000, 150]),
)
def test_fast_path_many_paths_property(n_paths, n, seed, seg):
    # more than 64 run heads per segment: known-literal matching, hashing, long literals
    rng = np.random.default_rng(seed)
    pool = ["s3://b/" + "x" * int(k) + str(i) for i, k in enumerate(rng.integers(0, 300, n_paths))]
    pool += ["\\u0061", "a", "\u00e9", 'q"']  # escapes in the literals
    ids = rng.integers(0, len(pool), n)
    if rng.random() < 0.5:
        ids = np.sort(ids)
    offs = rng.integers(0, 2**40, n).astype(np.uint64)
    lens = rng.integers(0, 2**20, n).astype(np.uint64)
    data = encode_manifest((n,), pool, ids, offs, lens)
    with small_blocks(seg, 1 << 14):
        assert assert_fast_agrees(data, 1)
        d = decode_manifest(data, ndim=1)
    assert [d.path_table[i] for i in d.path_ids] == [pool[i] for i in ids]


def test_fast_path_merges_differently_spelled_equal_paths():
    data = (
        b'{\n"0":{"path":"ab","offset":1,"length":2},\n'
        b'"1":{"path":"\\u0061b","offset":3,"length":4},\n'
        b'"2":{"path":"c\\/d","offset":5,"length":6},\n'
        b'"3":{"path":"c/d","offset":7,"length":8}\n}'
    )
    d = fast(data, ndim=1)
    assert d is not None
    assert d.path_table == ["ab", "c/d"]
    assert d.path_ids.tolist() == [0, 0, 1, 1]
    assert outcome(decode_manifest, data, 1) == outcome(generic, data, 1)


def test_fast_path_declines_anything_else():
    good = (
        b'{\n"0.0":{"path":"a","offset":1,"length":2},\n"0.1":{"path":"a","offset":3,"length":4}\n}'
    )
    assert fast(good, ndim=2) is not None
    variants = [
        good + b"\n",
        good.replace(b"\n", b"\r\n"),
        good.replace(b'{"path"', b'{ "path"'),
        good.replace(b'"offset":1,"length":2', b'"length":2,"offset":1'),
        good.replace(b":1,", b":01,"),
        good.replace(b":1,", b":1.0,"),
        good.replace(b":1,", b":-0,"),
        good.replace(b'"0.1"', b'"0.01"'),
        good.replace(b'"a"', b'"\x01"', 1),  # a raw control character
        good.replace(b'"a"', b'"\xff"', 1),  # not UTF-8
        good.replace(b'"a"', b'""', 1),
        good.replace(b":3,", b":99999999999999999999,"),
        good.replace(b":3,", b":" + str(2**63).encode() + b","),
        b"{}",
        b'{\n"0.0":{"path":"a","offset":1,"length":2}\n}'.replace(b"}\n}", b"},\n}"),
    ]
    for data in variants:
        assert fast(data, ndim=2) is None, data
        assert outcome(decode_manifest, data, 2) == outcome(generic, data, 2)


def test_fast_path_offset_plus_length_limit():
    def doc(o: int, n: int) -> bytes:
        return b'{\n"0":{"path":"a","offset":%d,"length":%d}\n}' % (o, n)

    assert fast(doc(MAX_OFFSET - 5, 5), ndim=1).offsets.tolist() == [MAX_OFFSET - 5]
    assert fast(doc(MAX_OFFSET - 5, 6), ndim=1) is None
    with pytest.raises(ManifestFormatError) as e:
        decode_manifest(doc(MAX_OFFSET - 5, 6), ndim=1, location=LOC)
    assert (e.value.key, e.value.field, e.value.location) == ("0", "length", LOC)


# ---- fast and generic agree on garbled bytes ---------------------------------------------


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated(), seg=st.sampled_from([1 << 20, 96]))
def test_fast_and_generic_agree_on_mutated_bytes(case, seg):
    data, ndim = case
    with small_blocks(seg, 1 << 14):
        assert outcome(decode_manifest, data, ndim) == outcome(generic, data, ndim)
        assert_fast_agrees(data, ndim)


@SETTINGS
@given(data=st.binary(max_size=80), ndim=st.sampled_from([0, 1, 2, None]))
def test_fast_and_generic_agree_on_random_bytes(data, ndim):
    for doc in (data, b'{\n"0":{"path":"' + data + b'","offset":1,"length":2}\n}'):
        assert outcome(decode_manifest, doc, ndim) == outcome(generic, doc, ndim)


# ---- duplicates ---------------------------------------------------------------------------


def test_duplicate_keys_rejected_fast_and_generic():
    lines = [
        b'"0.0":{"path":"a","offset":1,"length":2}',
        b'"0.1":{"path":"a","offset":3,"length":4}',
        b'"0.0":{"path":"b","offset":5,"length":6}',
    ]
    canonical = b"{\n" + b",\n".join(lines) + b"\n}"
    spaced = canonical.replace(b'":{', b'": {')
    for data in (canonical, spaced):
        with pytest.raises(ManifestFormatError) as e:
            decode_manifest(data, ndim=2, location=LOC)
        assert (e.value.key, e.value.field, e.value.location) == ("0.0", None, LOC)
        assert "'0.0'" in str(e.value) and LOC in str(e.value) and "duplicate" in str(e.value)
    assert fast(spaced, ndim=2) is None
    with pytest.raises(ManifestFormatError):
        fast(canonical, ndim=2)


def test_duplicate_scalar_key():
    data = b'{\n"0":{"path":"a","offset":1,"length":2},\n"0":{"path":"a","offset":1,"length":2}\n}'
    for ndim in (0, None):
        with pytest.raises(ManifestFormatError, match="duplicate chunk key '0'"):
            decode_manifest(data, ndim=ndim, location=LOC)


def test_duplicate_field_rejected():
    data = b'{"0": {"path": "a", "offset": 1, "path": "b", "length": 2}}'
    with pytest.raises(ManifestFormatError) as e:
        decode_manifest(data, ndim=1, location=LOC)
    assert (e.value.key, e.value.field) == ("0", "path")


def test_duplicates_found_despite_escaped_colons():
    # "\u003a" is a ":" without a raw ":", so the cheap count cannot decide: the exact scan runs
    ok = (
        b'{"0": {"path": "s3\\u003a//a", "offset": 1, "length": 2}, '
        b'"1": {"path": "\\"{:", "offset": 1, "length": 2}}'
    )
    d = decode_manifest(ok, ndim=1, location=LOC)
    assert d.path_table == ["s3://a", '"{:']
    dup = ok[:-1] + b', "0": {"path": "q", "offset": 0, "length": 0}}'
    with pytest.raises(ManifestFormatError, match="duplicate chunk key '0'"):
        decode_manifest(dup, ndim=1, location=LOC)
    escaped_key = ok[:-1] + b', "\\u0030": {"path": "q", "offset": 0, "length": 0}}'
    with pytest.raises(ManifestFormatError) as e:
        decode_manifest(escaped_key, ndim=1, location=LOC)
    assert e.value.key == "0"


def test_unordered_unique_keys_are_fine():
    data = (
        b'{\n"1.0":{"path":"a","offset":1,"length":2},\n"0.1":{"path":"a","offset":3,"length":4}\n}'
    )
    d = fast(data, ndim=2)
    assert d is not None and d.indices.tolist() == [[1, 0], [0, 1]]


# ---- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "ndim", "key", "field", "words"),
    [
        (b"not json", 2, None, None, ["not valid JSON"]),
        (b"[1, 2]", 2, None, None, ["must be a JSON object", "list"]),
        (
            b'{"0.x": {"path": "a", "offset": 1, "length": 2}}',
            2,
            "0.x",
            None,
            ["invalid chunk key"],
        ),
        (
            b'{"0.0": {"path": "a", "offset": 1, "length": 2}}',
            3,
            "0.0",
            None,
            ["invalid chunk key"],
        ),
        (b'{"01": {"path": "a", "offset": 1, "length": 2}}', 1, "01", None, ["invalid chunk key"]),
        (b'{"1": {"path": "a", "offset": 1, "length": 2}}', 0, "1", None, ['"0"']),
        (
            b'{"0,1": {"path": "a", "offset": 1, "length": 2}}',
            1,
            "0,1",
            None,
            ["invalid chunk key"],
        ),
        (
            b'{"99999999999999999999": {"path": "a", "offset": 1, "length": 2}}',
            1,
            "99999999999999999999",
            None,
            ["2**63"],
        ),
        (b'{"0": [1]}', 1, "0", None, ["must be an object"]),
        (b'{"0": {"path": "a", "length": 2}}', 1, "0", "offset", ["missing"]),
        (b'{"0": {"path": "a", "offset": 1, "length": 2, "x": 0}}', 1, "0", "x", ["unknown field"]),
        (b'{"0": {"path": 5, "offset": 1, "length": 2}}', 1, "0", "path", ["string"]),
        (b'{"0": {"path": "", "offset": 1, "length": 2}}', 1, "0", "path", ["non-empty"]),
        (b'{"0": {"path": "a", "offset": -1, "length": 2}}', 1, "0", "offset", ["2**63-1"]),
        (b'{"0": {"path": "a", "offset": 1.5, "length": 2}}', 1, "0", "offset", ["integer"]),
        (b'{"0": {"path": "a", "offset": true, "length": 2}}', 1, "0", "offset", ["integer"]),
        (
            b'{"0": {"path": "a", "offset": 1, "length": 99999999999999999999}}',
            1,
            "0",
            "length",
            ["integer"],
        ),
        (
            b'{"0": {"path": "a", "offset": 1, "length": 9223372036854775808}}',
            1,
            "0",
            "length",
            ["2**63-1"],
        ),
    ],
)
def test_errors_name_location_key_and_field(data, ndim, key, field, words):
    with pytest.raises(ManifestFormatError) as e:
        decode_manifest(data, ndim=ndim, location=LOC)
    assert (e.value.location, e.value.key, e.value.field) == (LOC, key, field)
    msg = str(e.value)
    assert LOC in msg
    if key is not None:
        assert repr(key) in msg
    for w in words:
        assert w in msg


def test_decode_manifest_without_location_still_raises_format_errors():
    with pytest.raises(ManifestFormatError):
        decode_manifest(b'{"0": {"path": "a"}}', ndim=1)


def test_decode_entries_dict_form():
    d = decode_entries({"1.2": {"path": "a", "offset": 1, "length": 2}}, ndim=None)
    assert d.indices.tolist() == [[1, 2]] and d.path_table == ["a"]
    with pytest.raises(ManifestError) as e:
        decode_entries({"1.2": {"path": "a", "offset": -1, "length": 2}}, ndim=2)
    assert not isinstance(e.value, ManifestFormatError)
    assert (e.value.key, e.value.field) == ("1.2", "offset")
    with pytest.raises(ManifestFormatError) as e2:
        decode_entries({3: {"path": "a", "offset": 1, "length": 2}}, ndim=1, location=LOC)
    assert e2.value.location == LOC
    empty = decode_entries({}, ndim=3)
    assert empty.indices.shape == (0, 3) and empty.offsets.dtype == np.uint64


def test_bytes_like_input():
    data = encode_manifest((2,), ["a"], np.zeros(2, int), np.arange(2), np.arange(2))
    for obj in (bytearray(data), memoryview(data)):
        assert decode_manifest(obj, ndim=1).offsets.tolist() == [0, 1]


# ---- benchmark (run with ZARR_MANIFEST_BENCH=1 pytest -s -k bench) --------------------------


@pytest.mark.skipif(not os.environ.get("ZARR_MANIFEST_BENCH"), reason="set ZARR_MANIFEST_BENCH=1")
@pytest.mark.parametrize("layout", ["runs", "interleaved"])
def test_bench_one_million_references(layout):
    rng = np.random.default_rng(0)
    shape = (1000, 1000)
    n = 1_000_000
    ids = np.arange(n) * 4 // n if layout == "runs" else np.arange(n) % 4
    lens = rng.integers(50_000, 150_000, n).astype(np.uint64)
    offs = np.zeros(n, dtype=np.uint64)
    for k in range(4):
        m = ids == k
        offs[m] = np.cumsum(lens[m]) - lens[m] + 1024
    table = [f"s3://some-bucket/path/to/data/file_{k:04d}.nc" for k in range(4)]
    args = (shape, table, ids.reshape(shape), offs.reshape(shape), lens.reshape(shape))

    def best(fn):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    t_enc, data = best(lambda: encode_manifest(*args))
    t_dec, d = best(lambda: decode_manifest(data, ndim=2, location="bench"))
    t_gen, g = best(lambda: generic(data, ndim=2))
    t_orjson, _ = best(lambda: orjson.loads(data))
    print(
        f"\n{layout}: {len(data) / 1e6:.1f} MB  encode {t_enc:.3f} s  decode {t_dec:.3f} s  "
        f"(generic {t_gen:.3f} s, orjson.loads alone {t_orjson:.3f} s)"
    )
    assert outcome(lambda b, **kw: d, data, 2) == outcome(lambda b, **kw: g, data, 2)
