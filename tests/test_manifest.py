"""`ChunkManifest`: exact round trips (dict, columns, JSON, file), combining, API, bad input."""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zarr_manifest import ChunkManifest, ManifestError, ManifestFormatError

MAX = 2**63 - 1

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Paths a manifest must carry unchanged: URLs, relative refs, unicode, quotes, spaces, escapes.
NOTABLE_PATHS = [
    "s3://bucket/dir/file.nc",
    "https://example.com/a b/c.h5?x=1&y=2#frag",
    "file:///tmp/with%20space/data.nc",
    "data/relative.bin",
    'quote"d \\ back\\slash',
    "it's",
    "日本語/データ.nc",
    "emoji 🌍.tif",
    "tab\there\nnewline",
    "a\x00nul",
]
paths_st = st.one_of(st.sampled_from(NOTABLE_PATHS), st.text(min_size=1, max_size=12))


@st.composite
def grid_shapes(draw: st.DrawFn, ndim: int | None = None) -> tuple[int, ...]:
    if ndim is None:
        ndim = draw(st.integers(0, 4))
    top = {0: 0, 1: 8, 2: 5, 3: 4, 4: 3}[ndim]
    return tuple(draw(st.lists(st.integers(0, top), min_size=ndim, max_size=ndim)))


@st.composite
def entries_st(draw: st.DrawFn, shape: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """A manifest dict for ``shape``: random chunks missing, offsets/lengths up to 2**63-1."""
    table = draw(st.lists(paths_st, min_size=1, max_size=4, unique=True))
    small = draw(st.booleans())
    out: dict[str, dict[str, Any]] = {}
    for index in np.ndindex(shape):
        if not draw(st.booleans()):
            continue
        if small:
            offset = draw(st.integers(0, 2**20))
            length = draw(st.integers(0, 2**16))
        else:
            offset = draw(st.integers(0, MAX))
            length = draw(st.integers(0, MAX - offset))
        key = ".".join(map(str, index)) if index else "0"
        out[key] = {"path": draw(st.sampled_from(table)), "offset": offset, "length": length}
    return out


@st.composite
def manifests_st(draw: st.DrawFn, shape: tuple[int, ...] | None = None) -> ChunkManifest:
    if shape is None:
        shape = draw(grid_shapes())
    return ChunkManifest(draw(entries_st(shape)), shape=shape)


def entry(path: str = "f.nc", offset: int = 0, length: int = 10) -> dict[str, Any]:
    return {"path": path, "offset": offset, "length": length}


# ---- round trips ------------------------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_dict_round_trip(data: st.DataObject) -> None:
    shape = data.draw(grid_shapes())
    entries = data.draw(entries_st(shape))
    m = ChunkManifest(entries, shape=shape)
    assert m.shape_chunk_grid == shape
    assert m.ndim_chunk_grid == len(shape)
    assert len(m) == len(entries)
    # same content, and keys come back in C order of the grid whatever order they went in
    assert m.dict() == entries
    order = [".".join(map(str, i)) if i else "0" for i in np.ndindex(shape)]
    assert list(m.keys()) == [k for k in order if k in entries]
    assert ChunkManifest(m.dict(), shape) == m
    assert ChunkManifest(dict(reversed(list(entries.items()))), shape) == m


@SETTINGS
@given(manifests_st())
def test_columns_round_trip(m: ChunkManifest) -> None:
    again = ChunkManifest.from_arrays(paths=m.paths, offsets=m.offsets, lengths=m.lengths)
    assert again == m
    assert again.dict() == m.dict()
    assert m.paths.shape == m.offsets.shape == m.lengths.shape == m.shape_chunk_grid
    assert m.offsets.dtype == m.lengths.dtype == np.uint64
    # missing chunks read as "" / 0 in the columns
    assert np.array_equal(m.present, m.paths != "")
    assert not m.offsets[~m.present].any()
    assert not m.lengths[~m.present].any()


@SETTINGS
@given(manifests_st())
def test_json_round_trip(m: ChunkManifest) -> None:
    shape = m.shape_chunk_grid
    raw = m.to_json_bytes()
    assert orjson.loads(raw) == m.dict()
    again = ChunkManifest.from_json_bytes(raw, shape=shape)
    assert again == m
    assert again.to_json_bytes() == raw
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "manifest.json"
        m.to_zarr_json(path)
        assert path.read_bytes() == raw
        assert ChunkManifest.from_zarr_json(path, shape=shape) == m
        assert ChunkManifest.from_zarr_json(str(path), shape=shape).dict() == m.dict()


def test_json_layout_and_scalar_key() -> None:
    m = ChunkManifest({"0": entry("a", 1, 2)}, shape=())
    assert m.to_json_bytes() == b'{\n"0":{"path":"a","offset":1,"length":2}\n}'
    assert ChunkManifest.from_json_bytes(m.to_json_bytes(), shape=()) == m
    assert ChunkManifest.empty((2, 3)).to_json_bytes() == b"{}"
    assert ChunkManifest.from_json_bytes(b"{}", shape=(2, 3)) == ChunkManifest.empty((2, 3))
    # without a shape, the grid is one past the largest index
    assert ChunkManifest.from_json_bytes(b'{"1.2":{"path":"p","offset":0,"length":1}}') == (
        ChunkManifest({"1.2": entry("p", 0, 1)}, shape=(2, 3))
    )


@pytest.mark.parametrize("present", [True, False])
def test_scalar_round_trips_by_content(present: bool) -> None:
    entries = {"0": entry("s3://b/scalar.nc", MAX - 7, 7)} if present else {}
    m = ChunkManifest(entries, shape=())
    assert m.shape_chunk_grid == ()
    assert m.ndim_chunk_grid == 0
    assert len(m) == int(present)
    assert m.dict() == entries
    assert list(m.keys()) == list(entries)
    assert m.get("0") == entries.get("0")
    assert m.get(()) == entries.get("0")
    raw = m.to_json_bytes()
    assert orjson.loads(raw) == entries
    again = ChunkManifest.from_json_bytes(raw, shape=())
    assert again.shape_chunk_grid == ()
    assert again.dict() == entries
    assert ChunkManifest(m.dict(), shape=()).dict() == entries
    assert pickle.loads(pickle.dumps(m)).dict() == entries
    assert m.offsets.shape == m.lengths.shape == m.present.shape == ()


@pytest.mark.parametrize("present", [True, False])
def test_scalar_equality_and_columns(present: bool) -> None:
    entries = {"0": entry("a", 1, 2)} if present else {}
    m = ChunkManifest(entries, shape=())
    assert isinstance(m.paths, np.ndarray)
    assert m.paths.shape == ()
    assert m == ChunkManifest(dict(entries), shape=())
    assert ChunkManifest.from_arrays(paths=m.paths, offsets=m.offsets, lengths=m.lengths) == m


def test_extreme_values_round_trip() -> None:
    entries = {
        "0": entry("a", MAX, 0),
        "1": entry("b", 0, MAX),
        "2": entry("a", 2**62, 2**62 - 1),
    }
    m = ChunkManifest(entries, shape=(4,))
    assert m.dict() == entries
    assert m["0"]["offset"] == MAX
    assert type(m["0"]["offset"]) is int
    assert ChunkManifest.from_json_bytes(m.to_json_bytes(), shape=(4,)) == m
    assert ChunkManifest.from_arrays(paths=m.paths, offsets=m.offsets, lengths=m.lengths) == m


# ---- combining --------------------------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_concat_equals_numpy_concatenate(data: st.DataObject) -> None:
    ndim = data.draw(st.integers(1, 3))
    axis = data.draw(st.integers(-ndim, ndim - 1))
    base = data.draw(grid_shapes(ndim))
    parts = []
    for _ in range(data.draw(st.integers(1, 4))):
        shape = list(base)
        shape[axis] = data.draw(st.integers(0, 3))
        parts.append(data.draw(manifests_st(tuple(shape))))
    out = ChunkManifest.concat(parts, axis=axis)
    for column in ("paths", "offsets", "lengths", "present"):
        expected = np.concatenate([getattr(p, column) for p in parts], axis=axis)
        assert np.array_equal(getattr(out, column), expected), column
    assert len(out) == sum(len(p) for p in parts)
    assert set(out.path_table) == set().union(*(p.path_table for p in parts))


@SETTINGS
@given(st.data())
def test_stack_equals_numpy_stack(data: st.DataObject) -> None:
    shape = data.draw(grid_shapes(data.draw(st.integers(0, 3))))
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    parts = [data.draw(manifests_st(shape)) for _ in range(data.draw(st.integers(1, 3)))]
    out = ChunkManifest.stack(parts, axis=axis)
    for column in ("paths", "offsets", "lengths", "present"):
        expected = np.stack([getattr(p, column) for p in parts], axis=axis)
        assert np.array_equal(getattr(out, column), expected), column


def test_concat_split_round_trip() -> None:
    m = ChunkManifest.from_arrays(
        paths=np.array([["a", "b", ""], ["c", "a", "b"]]),
        offsets=np.arange(6).reshape(2, 3) * 100,
        lengths=np.full((2, 3), 7),
    )
    left = ChunkManifest.from_arrays(
        paths=m.paths[:, :1], offsets=m.offsets[:, :1], lengths=m.lengths[:, :1]
    )
    right = ChunkManifest.from_arrays(
        paths=m.paths[:, 1:], offsets=m.offsets[:, 1:], lengths=m.lengths[:, 1:]
    )
    assert ChunkManifest.concat([left, right], axis=1) == m
    assert ChunkManifest.concat([left, right], axis=-1) == m


def test_combine_errors() -> None:
    a = ChunkManifest.empty((2, 3))
    b = ChunkManifest.empty((2, 4))
    with pytest.raises(ManifestError, match="off axis 0"):
        ChunkManifest.concat([a, b], axis=0)
    assert ChunkManifest.concat([a, b], axis=1).shape_chunk_grid == (2, 7)
    with pytest.raises(ManifestError, match=r"\(2, 4\)"):
        ChunkManifest.stack([a, b])
    with pytest.raises(ManifestError, match="at least one"):
        ChunkManifest.concat([])
    with pytest.raises(ManifestError, match="axis 2"):
        ChunkManifest.concat([a, a], axis=2)
    with pytest.raises(ManifestError, match="axis"):
        ChunkManifest.concat([ChunkManifest.empty(()), ChunkManifest.empty(())])
    with pytest.raises(ManifestError, match="ChunkManifest"):
        ChunkManifest.concat([a, {"0.0": entry()}])  # type: ignore[list-item]


# ---- API --------------------------------------------------------------------------------------


@pytest.fixture
def m2() -> ChunkManifest:
    return ChunkManifest(
        {
            "1.1": entry("s3://b/y.nc", 30, 5),
            "0.0": entry("s3://b/x.nc", 0, 10),
            "0.2": entry("s3://b/x.nc", 10, 20),
        },
        shape=(2, 3),
    )


def test_mapping_api(m2: ChunkManifest) -> None:
    assert len(m2) == 3
    assert m2.shape_chunk_grid == (2, 3)
    assert m2.ndim_chunk_grid == 2
    assert m2["0.2"] == entry("s3://b/x.nc", 10, 20)
    assert m2[(1, 1)] == entry("s3://b/y.nc", 30, 5)
    assert m2[(np.int64(0), np.int64(0))] == m2["0.0"]
    assert list(m2.keys()) == ["0.0", "0.2", "1.1"]
    assert list(m2) == ["0.0", "0.2", "1.1"]
    assert [v["offset"] for v in m2.values()] == [0, 10, 30]
    assert list(m2.items())[1] == ("0.2", entry("s3://b/x.nc", 10, 20))
    assert sorted(m2.path_table) == ["s3://b/x.nc", "s3://b/y.nc"]
    x = m2.path_table.index("s3://b/x.nc")
    assert m2.path_ids.tolist() == [[x, -1, x], [-1, 1 - x, -1]]
    assert m2.present.tolist() == [[True, False, True], [False, True, False]]
    assert "1.1" in m2 and (0, 0) in m2
    for missing in ("0.1", (1, 0), "2.0", "0.3", "0", "0.0.0", (0,), (0, 0, 0), 5, "-1.0", "+0.0"):
        assert m2.get(missing) is None
        assert m2.get(missing, "dflt") == "dflt"
        assert missing not in m2
        with pytest.raises(KeyError):
            m2[missing]  # type: ignore[index]


def test_lookup_rejects_non_canonical_keys(m2: ChunkManifest) -> None:
    assert "00.0" not in m2
    assert m2.get("0.00") is None


def test_nbytes_is_compact() -> None:
    # 100x100 references into 4 files with offsets past 2**32: ids int8, offsets uint64,
    # lengths uint16 -> 11 bytes per reference plus the path table.
    n = 100
    paths = np.repeat(np.array([f"s3://bucket/file{i}.nc" for i in range(4)]), n * n // 4)
    lengths = np.full(n * n, 40_000)
    offsets = 2**33 + np.arange(n * n) * 40_000
    m = ChunkManifest.from_arrays(
        paths=paths.reshape(n, n), offsets=offsets.reshape(n, n), lengths=lengths.reshape(n, n)
    )
    assert len(m) == n * n
    assert len(m.path_table) == 4
    assert n * n * 11 <= m.nbytes <= n * n * 11 + 4 * 100
    assert ChunkManifest.empty((10,)).nbytes < 100


def test_arrays_are_read_only(m2: ChunkManifest) -> None:
    with pytest.raises(ValueError, match="read-only"):
        m2.path_ids[0, 0] = 1
    for column in (m2.offsets, m2.lengths, m2.present, m2.paths):
        with contextlib.suppress(ValueError):
            column[0, 0] = column[1, 1]
    # whatever a caller does to the columns it was given, the manifest does not change
    assert m2["0.0"] == entry("s3://b/x.nc", 0, 10)
    src = np.array([1, 2, 3], dtype=np.uint64)
    m = ChunkManifest.from_arrays(paths="p", offsets=src, lengths=src)
    src[0] = 99
    assert m["0"]["offset"] == 1


def test_pickle(m2: ChunkManifest) -> None:
    again = pickle.loads(pickle.dumps(m2))
    assert again == m2
    assert again.dict() == m2.dict()
    assert not again.path_ids.flags.writeable


def test_equality() -> None:
    a = ChunkManifest.from_arrays(
        paths=np.array(["x", "y", ""]), offsets=[1, 2, 99], lengths=[3, 4, 99]
    )
    # same references, path table in another order, garbage in the missing slot ignored
    b = ChunkManifest({"1": entry("y", 2, 4), "0": entry("x", 1, 3)}, shape=(3,))
    assert a == b
    assert a.path_table != b.path_table or a.path_table == ("x", "y")
    assert a != ChunkManifest({"0": entry("x", 1, 3), "1": entry("y", 2, 5)}, shape=(3,))
    assert a != ChunkManifest({"0": entry("x", 1, 3), "1": entry("z", 2, 4)}, shape=(3,))
    assert a != ChunkManifest({"0": entry("x", 1, 3)}, shape=(3,))
    assert a != ChunkManifest({"0": entry("x", 1, 3), "1": entry("y", 2, 4)}, shape=(2,))
    assert a != ChunkManifest({"0.0": entry("x", 1, 3), "0.1": entry("y", 2, 4)}, shape=(1, 3))
    assert a != a.dict()
    with pytest.raises(TypeError):
        hash(a)


def test_from_arrays_single_path_and_missing() -> None:
    m = ChunkManifest.from_arrays(paths="s3://b/f", offsets=[[0, 10]], lengths=[[10, 10]])
    assert m.dict() == {"0.0": entry("s3://b/f", 0, 10), "0.1": entry("s3://b/f", 10, 10)}
    m = ChunkManifest.from_arrays(
        paths=np.array(["a", "", "a"], dtype=object), offsets=[0, 5, 7], lengths=[1, 5, 1]
    )
    assert list(m.keys()) == ["0", "2"]
    assert m.get("1") is None
    scalar = ChunkManifest.from_arrays(
        paths=np.array("z"), offsets=np.array(4), lengths=np.array(2)
    )
    assert scalar.shape_chunk_grid == ()
    assert scalar.dict() == {"0": entry("z", 4, 2)}
    assert (
        ChunkManifest.from_arrays(paths=np.array([], dtype=str), offsets=[], lengths=[]).dict()
        == {}
    )


def test_rename_paths(m2: ChunkManifest) -> None:
    one = m2.rename_paths("file:///new.nc")
    assert one.path_table == ("file:///new.nc",)
    assert list(one.keys()) == list(m2.keys())
    assert all(v["path"] == "file:///new.nc" for v in one.values())
    assert [v["offset"] for v in one.values()] == [0, 10, 30]
    swapped = m2.rename_paths(lambda p: p.replace("s3://b/", "gs://c/"))
    assert swapped.dict() == {
        k: {**v, "path": v["path"].replace("s3://b/", "gs://c/")} for k, v in m2.items()
    }
    merged = m2.rename_paths(lambda p: "same")
    assert merged.path_table == ("same",)
    assert len(merged) == 3
    assert ChunkManifest.empty((2,)).rename_paths("x") == ChunkManifest.empty((2,))
    with pytest.raises(ManifestError):
        m2.rename_paths("")
    with pytest.raises(ManifestError) as info:
        m2.rename_paths(lambda p: "" if "y" in p else p)
    assert info.value.field == "path"
    with pytest.raises(ManifestError):
        m2.rename_paths(3)  # type: ignore[arg-type]


# ---- bad input --------------------------------------------------------------------------------

BAD_KEYS = [
    ("-1", (2,)),
    ("01", (2,)),
    ("+1", (2,)),
    ("1_0", (20,)),
    (" 1", (2,)),
    ("1 ", (2,)),
    ("1.", (2,)),
    ("", (2,)),
    ("٣", (5,)),  # a non-ASCII digit
    ("0.0", (2,)),  # wrong ndim
    ("0", (2, 2)),  # wrong ndim
    ("1", ()),  # a 0-d grid has only "0"
    ("0.0", ()),
    ("a", (2,)),
]


@pytest.mark.parametrize(("key", "shape"), BAD_KEYS)
def test_bad_key(key: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(ManifestError) as info:
        ChunkManifest({key: entry()}, shape=shape)
    assert info.value.key == key
    assert not isinstance(info.value, ManifestFormatError)
    with pytest.raises(ManifestFormatError) as finfo:
        ChunkManifest.from_json_bytes(orjson.dumps({key: entry()}), shape=shape, location="m.json")
    assert finfo.value.key == key
    assert finfo.value.location == "m.json"
    assert "m.json" in str(finfo.value)


@pytest.mark.parametrize(
    ("entries", "shape"),
    [
        ({"2": entry()}, (2,)),
        ({"0.3": entry()}, (2, 3)),
        ({"1.0.0.0": entry()}, (1, 1, 1, 1)),
    ],
)
def test_key_outside_grid(entries: dict[str, Any], shape: tuple[int, ...]) -> None:
    key = next(iter(entries))
    with pytest.raises(ManifestError, match="outside the chunk grid") as info:
        ChunkManifest(entries, shape=shape)
    assert info.value.key == key
    with pytest.raises(ManifestFormatError) as finfo:
        ChunkManifest.from_json_bytes(orjson.dumps(entries), shape=shape, location="x/m.json")
    assert finfo.value.key == key
    assert finfo.value.location == "x/m.json"


def test_keys_of_mixed_ndim_without_shape() -> None:
    with pytest.raises(ManifestError) as info:
        ChunkManifest({"0": entry(), "0.1": entry()})
    assert info.value.key == "0.1"


BAD_ENTRIES = [
    ({"offset": 0, "length": 1}, "path"),
    ({"path": "p", "length": 1}, "offset"),
    ({"path": "p", "offset": 0}, "length"),
    ({"path": "p", "offset": 0, "length": 1, "checksum": "x"}, "checksum"),
    ({"path": 3, "offset": 0, "length": 1}, "path"),
    ({"path": None, "offset": 0, "length": 1}, "path"),
    ({"path": "", "offset": 0, "length": 1}, "path"),
    ({"path": "p", "offset": "0", "length": 1}, "offset"),
    ({"path": "p", "offset": 1.0, "length": 1}, "offset"),
    ({"path": "p", "offset": True, "length": 1}, "offset"),
    ({"path": "p", "offset": 0, "length": 2.5}, "length"),
    ({"path": "p", "offset": 0, "length": False}, "length"),
    ({"path": "p", "offset": None, "length": 1}, "offset"),
    ({"path": "p", "offset": -1, "length": 1}, "offset"),
    ({"path": "p", "offset": 0, "length": -5}, "length"),
    ({"path": "p", "offset": 2**63, "length": 0}, "offset"),
    ({"path": "p", "offset": 2**64, "length": 0}, "offset"),
    ({"path": "p", "offset": 0, "length": 2**70}, "length"),
    ({"path": "p", "offset": MAX, "length": 1}, "length"),
    ({"path": "p", "offset": 2**62, "length": 2**62}, "length"),
    (["p", 0, 1], None),
    ("p", None),
    (None, None),
    (7, None),
]


@pytest.mark.parametrize(("bad", "field"), BAD_ENTRIES)
def test_bad_entry(bad: Any, field: str | None) -> None:
    # the bad entry comes after a good one, so a check of only the first would miss it
    entries = {"0": entry(), "1": bad}
    with pytest.raises(ManifestError) as info:
        ChunkManifest(entries, shape=(2,))
    assert (info.value.key, info.value.field) == ("1", field)
    assert "'1'" in str(info.value)
    # the same entries as a file (json writes the big integers orjson refuses to)
    raw = json.dumps(entries).encode()
    with pytest.raises(ManifestFormatError) as finfo:
        ChunkManifest.from_json_bytes(raw, shape=(2,), location="s3://b/a/manifest.json")
    assert (finfo.value.key, finfo.value.field) == ("1", field)
    assert finfo.value.location == "s3://b/a/manifest.json"


def test_huge_integers_in_json() -> None:
    # integers JSON can spell but int64 cannot hold
    for text in (b"18446744073709551616", b"9223372036854775808", b"1e3", b"1.0"):
        raw = b'{"0":{"path":"p","offset":' + text + b',"length":1}}'
        with pytest.raises(ManifestFormatError) as info:
            ChunkManifest.from_json_bytes(raw, shape=(1,), location="m")
        assert info.value.location == "m"
        assert info.value.key == "0"


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"0": }', b"not json", b'{"0":{"path":"p","offset":0,"length":1}', b"\xff"],
)
def test_malformed_json(raw: bytes) -> None:
    with pytest.raises(ManifestFormatError, match="not valid JSON") as info:
        ChunkManifest.from_json_bytes(raw, shape=(1,), location="here.json")
    assert info.value.location == "here.json"


@pytest.mark.parametrize("raw", [b"[]", b'["0"]', b"1", b'"{}"', b"null", b"true"])
def test_non_object_json(raw: bytes) -> None:
    with pytest.raises(ManifestFormatError, match="JSON object") as info:
        ChunkManifest.from_json_bytes(raw, location="here.json")
    assert info.value.location == "here.json"


def test_from_zarr_json_names_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_bytes(b'{"0.0":{"path":"p","offset":0}}')
    with pytest.raises(ManifestFormatError) as info:
        ChunkManifest.from_zarr_json(path, shape=(1, 1))
    assert info.value.location == str(path)
    assert str(path) in str(info.value)
    assert (info.value.key, info.value.field) == ("0.0", "length")
    path.write_bytes(b'{"0.0":{"path":"p","offset":0,"length":1}}')
    with pytest.raises(ManifestFormatError) as info:
        ChunkManifest.from_zarr_json(path, shape=(1,))
    assert info.value.location == str(path)


def test_duplicate_keys_in_json() -> None:
    raw = b'{"0":{"path":"p","offset":0,"length":1},"0":{"path":"q","offset":0,"length":1}}'
    # orjson keeps the last of duplicate keys; either way the result must not be silent garbage
    try:
        m = ChunkManifest.from_json_bytes(raw, shape=(1,), location="dup")
    except ManifestFormatError as e:
        assert e.location == "dup"
    else:
        assert len(m) == 1


def test_bad_containers() -> None:
    with pytest.raises(ManifestError):
        ChunkManifest([("0", entry())], shape=(1,))  # type: ignore[arg-type]
    with pytest.raises(ManifestError):
        ChunkManifest({0: entry()}, shape=(1,))  # type: ignore[dict-item]
    with pytest.raises(ManifestError):
        ChunkManifest({"0": entry()}, shape=(-1,))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"paths": ["a", "b"], "offsets": [0, -1], "lengths": [1, 1]}, "offset"),
        ({"paths": ["a", "b"], "offsets": [0, 1], "lengths": [-3, 1]}, "length"),
        ({"paths": ["a", "b"], "offsets": [0.0, 1.0], "lengths": [1, 1]}, "offset"),
        ({"paths": ["a", "b"], "offsets": [True, False], "lengths": [1, 1]}, "offset"),
        ({"paths": ["a", "b"], "offsets": [0, 1], "lengths": ["1", "1"]}, "length"),
        ({"paths": ["a", "b"], "offsets": [0, 2**63], "lengths": [1, 1]}, "offset"),
        (
            {"paths": ["a", "b"], "offsets": np.array([0, 2**63], np.uint64), "lengths": [1, 1]},
            "offset",
        ),
        ({"paths": ["a", "b"], "offsets": [0, MAX], "lengths": [1, 1]}, "length"),
        ({"paths": [1, 2], "offsets": [0, 1], "lengths": [1, 1]}, "path"),
        (
            {"paths": np.array(["a", None], dtype=object), "offsets": [0, 1], "lengths": [1, 1]},
            "path",
        ),
        ({"paths": "", "offsets": [0, 1], "lengths": [1, 1]}, None),
        ({"paths": ["a", "b", "c"], "offsets": [0, 1], "lengths": [1, 1]}, None),
        ({"paths": ["a", "b"], "offsets": [0, 1], "lengths": [1, 1, 1]}, None),
    ],
)
def test_from_arrays_bad_input(kwargs: dict[str, Any], field: str | None) -> None:
    with pytest.raises(ManifestError) as info:
        ChunkManifest.from_arrays(**kwargs)
    assert info.value.field == field


def test_from_arrays_overflow_names_chunk() -> None:
    with pytest.raises(ManifestError) as info:
        ChunkManifest.from_arrays(
            paths=np.array([["a", "a"], ["a", "a"]]),
            offsets=[[0, 0], [0, MAX - 1]],
            lengths=[[1, 1], [1, 2]],
        )
    assert (info.value.key, info.value.field) == ("1.1", "length")
    # a missing chunk's values are ignored, however large
    m = ChunkManifest.from_arrays(paths=np.array(["a", ""]), offsets=[0, MAX], lengths=[1, MAX])
    assert m.dict() == {"0": entry("a", 0, 1)}
    assert math.prod(m.shape_chunk_grid) == 2


# ---- from_arrays: the path table of large grids --------------------------------------------


def _paths_layout(layout: str, n: int) -> list[str]:
    """Paths of ``n`` chunks as parsers and combines produce them (``""``: missing)."""
    files = [f"s3://bucket/run/output_{i:04d}.nc" for i in range(4)]
    if layout == "runs":  # each file's chunks side by side
        return [files[i * 4 // n] for i in range(n)]
    if layout == "interleaved":  # chunk i in file i % 4
        return [files[i % 4] for i in range(n)]
    if layout == "interleaved with missing and unicode":
        cycle = ["", "日本語/データ.nc", *files[:2], "emoji 🌍.tif"]
        return [cycle[i % len(cycle)] for i in range(n)]
    if layout == "random":
        rng = np.random.default_rng(0)
        return [files[k] for k in rng.integers(0, 4, n)]
    if layout == "all distinct":
        return [f"s3://bucket/chunk/{i}" for i in range(n)]
    if layout == "40 files interleaved":
        return [f"file_{i % 40}" for i in range(n)]
    if layout == "sample misses some files":
        # 4 files interleaved, with 30 more at positions a strided sample does not see
        out = [files[i % 4] for i in range(n)]
        for k in range(30):
            out[1 + 2 * k] = f"rare_{k}"
        return out
    raise AssertionError(layout)


@pytest.mark.parametrize(
    "layout",
    [
        "runs",
        "interleaved",
        "interleaved with missing and unicode",
        "random",
        "all distinct",
        "40 files interleaved",
        "sample misses some files",
    ],
)
@pytest.mark.parametrize("dtype", ["StringDType", "<U", "object"])
def test_from_arrays_path_table_of_large_grids(layout: str, dtype: str) -> None:
    n = 20_000
    paths = _paths_layout(layout, n)
    np_dtype: Any = np.dtypes.StringDType() if dtype == "StringDType" else dtype
    array = np.array(paths, dtype=np_dtype).reshape(100, 200)
    offsets = np.arange(n, dtype=np.uint64).reshape(100, 200)
    m = ChunkManifest.from_arrays(paths=array, offsets=offsets, lengths=offsets + 1)
    # the table in order of first appearance, and every chunk's path and presence
    expected_table = list(dict.fromkeys(p for p in paths if p))
    assert list(m.path_table) == expected_table
    assert m.paths.reshape(-1).tolist() == paths
    present = np.array([bool(p) for p in paths]).reshape(100, 200)
    assert np.array_equal(m.present, present)
    assert np.array_equal(m.offsets, np.where(present, offsets, 0))


def test_from_arrays_refuses_missing_values_of_string_dtype() -> None:
    # a StringDType with an NA value is not a path, nor the documented "" of a missing chunk
    na_strings = np.dtypes.StringDType(na_object=None)
    for paths in (["a", None] * 5000, ["a"] * 5000 + [None] * 5000, [None, "a"]):
        with pytest.raises(ManifestError) as info:
            ChunkManifest.from_arrays(
                paths=np.array(paths, dtype=na_strings),
                offsets=np.zeros(len(paths), np.uint64),
                lengths=np.ones(len(paths), np.uint64),
            )
        assert info.value.field == "path"
