"""The on-disk form: `ManifestGroup.to_store` / `from_store` round trips and spec errors."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zarr_manifest import (
    ChunkManifest,
    InlineArray,
    ManifestArray,
    ManifestFormatError,
    ManifestGroup,
    MetadataError,
)

MAX = 2**63 - 1

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- strategies -------------------------------------------------------------------------------

# Absolute local paths are written as file:// URLs (tested on their own below), so the
# round-trip paths are URLs and relative references.
paths_st = st.one_of(
    st.sampled_from(
        [
            "s3://bucket/dir/file.nc",
            "https://example.com/a b/c.h5?x=1&y=2#frag",
            "file:///tmp/with%20space/data.nc",
            "data/relative.bin",
            '../up/quote"d \\ back\\slash',
            "日本語/データ.nc",
            "emoji 🌍.tif",
        ]
    ),
    st.text(min_size=1, max_size=10).filter(lambda p: not p.startswith("/")),
)

FILL_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "bool": st.booleans(),
    "int8": st.integers(-128, 127),
    "uint16": st.integers(0, 2**16 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "uint64": st.integers(0, 2**64 - 1),
    "float32": st.sampled_from([0.0, -1.5, "NaN", "Infinity", "-Infinity"]),
    "float64": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.just("NaN")),
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
attributes_st = st.dictionaries(st.text(max_size=8), json_values, max_size=4)

# Names that round trip: control characters and "\\" fail (see test_member_name_bugs).
names_st = st.text(
    st.characters(blacklist_categories=["Cc", "Cs"], blacklist_characters="/\\"),
    min_size=1,
    max_size=8,
).filter(lambda n: not n.startswith("__") and n not in {".", "..", "zarr.json"})


@st.composite
def manifest_arrays(draw: st.DrawFn) -> ManifestArray:
    ndim = draw(st.integers(0, 3))
    shape = draw(st.lists(st.integers(0, 7), min_size=ndim, max_size=ndim))
    chunks = draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim))
    grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunks, strict=True))
    dtype = draw(st.sampled_from(sorted(FILL_VALUES)))
    table = draw(st.lists(paths_st, min_size=1, max_size=3, unique=True))
    entries = {}
    for index in np.ndindex(grid):
        if draw(st.booleans()):
            offset = draw(st.integers(0, MAX))
            entries[".".join(map(str, index)) or "0"] = {
                "path": draw(st.sampled_from(table)),
                "offset": offset,
                "length": draw(st.integers(0, MAX - offset)),
            }
    names = draw(
        st.one_of(
            st.none(),
            st.lists(st.one_of(st.none(), st.text(max_size=5)), min_size=ndim, max_size=ndim),
        )
    )
    codecs: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if draw(st.booleans()):
        codecs.append({"name": "gzip", "configuration": {"level": 5}})
    metadata = {
        "shape": shape,
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
        "chunk_key_encoding": {
            "name": draw(st.sampled_from(["default", "v2"])),
            "configuration": {"separator": draw(st.sampled_from(["/", "."]))},
        },
        "fill_value": draw(FILL_VALUES[dtype]),
        "codecs": codecs,
        "attributes": draw(attributes_st),
        "dimension_names": names,
    }
    return ManifestArray(metadata, ChunkManifest(entries, shape=grid))


@st.composite
def inline_arrays(draw: st.DrawFn) -> InlineArray:
    dtype = draw(st.sampled_from(["int16", "float32", "float64", "uint8"]))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    data = np.arange(math.prod(shape), dtype=dtype).reshape(shape)
    if data.dtype.kind == "f" and draw(st.booleans()):
        data[(0,) * data.ndim] = np.nan
    return InlineArray.from_numpy(
        data,
        attributes=draw(attributes_st),
        dimension_names=draw(st.one_of(st.none(), st.just([f"d{i}" for i in range(len(shape))]))),
        fill_value=draw(st.sampled_from([None, 0])),
    )


def groups(depth: int = 2) -> st.SearchStrategy[ManifestGroup]:
    children = (
        st.dictionaries(names_st, st.deferred(lambda: groups(depth - 1)), max_size=2)
        if depth
        else st.just({})
    )

    @st.composite
    def build(draw: st.DrawFn) -> ManifestGroup:
        arrays = draw(
            st.dictionaries(names_st, st.one_of(manifest_arrays(), inline_arrays()), max_size=3)
        )
        sub = {k: v for k, v in draw(children).items() if k not in arrays}
        return ManifestGroup(arrays, sub, draw(attributes_st))

    return build()


# ---- round trips ------------------------------------------------------------------------------


@SETTINGS
@given(groups())
def test_store_round_trip(group: ManifestGroup) -> None:
    with tempfile.TemporaryDirectory() as d:
        group.to_store(d)
        again = ManifestGroup.from_store(d)
        assert again == group
        assert {p for p, _ in again.walk()} == {p for p, _ in group.walk()}
        # written again, the store is byte for byte the same
        with tempfile.TemporaryDirectory() as d2:
            again.to_store(d2)
            assert _files(Path(d)) == _files(Path(d2))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def sample() -> ManifestGroup:
    temperature = ManifestArray(
        {
            "shape": [4, 6],
            "data_type": "float64",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 3]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": "NaN",
            "codecs": [{"name": "bytes", "configuration": {"endian": "big"}}],
            "attributes": {"units": "K", "scale": [1.5, None]},
            "dimension_names": ["y", "x"],
        },
        ChunkManifest(
            {
                "0.0": {"path": "s3://bucket/t.nc", "offset": 100, "length": 48},
                "1.1": {"path": "data/t 2.nc", "offset": 0, "length": 48},
            },
            shape=(2, 2),
        ),
    )
    x = InlineArray.from_numpy(np.linspace(0, 1, 6), dimension_names=["x"])
    sub = ManifestGroup({"t": temperature}, attributes={"level": 1})
    return ManifestGroup({"temperature": temperature, "x": x}, {"sub": sub}, {"title": "demo"})


def test_store_layout(sample: ManifestGroup, tmp_path: Path) -> None:
    sample.to_store(tmp_path)
    files = _files(tmp_path)
    assert set(files) >= {
        "zarr.json",
        "temperature/zarr.json",
        "temperature/manifest.json",
        "x/zarr.json",
        "sub/zarr.json",
        "sub/t/zarr.json",
        "sub/t/manifest.json",
    }
    doc = orjson.loads(files["temperature/zarr.json"])
    assert doc["storage_transformers"] == [
        {"name": "chunk-manifest-json", "configuration": {"manifest": "./manifest.json"}}
    ]
    assert doc["fill_value"] == "NaN"
    assert orjson.loads(files["temperature/manifest.json"]) == sample["temperature"].manifest.dict()  # type: ignore[union-attr]
    assert (
        "storage_transformers" not in orjson.loads(files["x/zarr.json"])
        or not orjson.loads(files["x/zarr.json"])["storage_transformers"]
    )
    assert orjson.loads(files["zarr.json"]) == {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {"title": "demo"},
    }
    # the inline array is an ordinary Zarr array zarr itself reads
    x = zarr.open_array(zarr.storage.LocalStore(tmp_path), path="x", mode="r")
    assert np.array_equal(x[...], np.linspace(0, 1, 6))
    assert ManifestGroup.from_store(tmp_path) == sample
    assert ManifestGroup.from_store(tmp_path.as_uri()) == sample


def test_manifest_file_round_trip(sample: ManifestGroup, tmp_path: Path) -> None:
    m = sample["temperature"].manifest  # type: ignore[union-attr]
    m.to_zarr_json(tmp_path / "manifest.json")
    assert ChunkManifest.from_zarr_json(tmp_path / "manifest.json", shape=(2, 2)) == m


def test_scalar_array_round_trip(tmp_path: Path) -> None:
    scalar = ManifestArray(
        {
            "shape": [],
            "data_type": "int32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": []}},
            "chunk_key_encoding": {"name": "default"},
            "fill_value": -9,
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        },
        ChunkManifest({"0": {"path": "s3://b/s.nc", "offset": 7, "length": 4}}, shape=()),
    )
    ManifestGroup({"s": scalar}).to_store(tmp_path)
    assert orjson.loads((tmp_path / "s" / "manifest.json").read_bytes()) == {
        "0": {"path": "s3://b/s.nc", "offset": 7, "length": 4}
    }
    again = ManifestGroup.from_store(tmp_path)["s"]
    assert isinstance(again, ManifestArray)
    assert again == scalar
    assert again.metadata.to_dict() == scalar.metadata.to_dict()
    assert again.manifest.shape_chunk_grid == ()
    assert again.manifest.dict() == scalar.manifest.dict()


def test_absolute_local_paths_become_file_urls(tmp_path: Path) -> None:
    m = ChunkManifest({"0": {"path": "/data/run 1/a#b.nc", "offset": 0, "length": 4}}, shape=(1,))
    a = ManifestArray(
        {
            "shape": [2],
            "data_type": "int16",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
            "chunk_key_encoding": {"name": "default"},
            "fill_value": 0,
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        },
        m,
    )
    ManifestGroup({"a": a}).to_store(tmp_path)
    again = ManifestGroup.from_store(tmp_path)["a"]
    assert again.manifest["0"]["path"] == "file:///data/run%201/a%23b.nc"  # type: ignore[union-attr]
    assert a.manifest["0"]["path"] == "/data/run 1/a#b.nc"  # the model itself is unchanged


def test_overwrite(sample: ManifestGroup, tmp_path: Path) -> None:
    sample.to_store(tmp_path)
    small = ManifestGroup(attributes={"v": 2})
    with pytest.raises(FileExistsError):
        small.to_store(tmp_path)
    assert ManifestGroup.from_store(tmp_path) == sample
    small.to_store(tmp_path, overwrite=True)
    assert ManifestGroup.from_store(tmp_path) == small
    # the old version's objects stay for readers that opened it, until a clean-up
    import datetime

    from zarr_manifest import clean

    clean(tmp_path, grace=datetime.timedelta(0))
    files = {k for k in _files(tmp_path) if not k.startswith(".zarr-manifest/documents/")}
    assert files == {"zarr.json", ".zarr-manifest/snapshot.json"}


def test_memory_store_round_trip(sample: ManifestGroup) -> None:
    from obstore.store import MemoryStore

    store = MemoryStore()
    sample.to_store(store)
    assert ManifestGroup.from_store(store) == sample


# ---- format errors ----------------------------------------------------------------------------


@pytest.fixture
def written(sample: ManifestGroup, tmp_path: Path) -> Path:
    sample.to_store(tmp_path)
    return tmp_path


def _edit_transformers(root: Path, transformers: Any, array: str = "temperature") -> Path:
    path = root / array / "zarr.json"
    doc = orjson.loads(path.read_bytes())
    doc["storage_transformers"] = transformers
    path.write_bytes(orjson.dumps(doc))
    return path


def _config(**members: Any) -> list[dict[str, Any]]:
    return [
        {"name": "chunk-manifest-json", "configuration": {"manifest": "./manifest.json", **members}}
    ]


@pytest.mark.parametrize(
    ("transformers", "field"),
    [
        ([{"name": "sharding-transformer", "configuration": {}}], "storage_transformers"),
        ([*_config(), {"name": "other"}], "storage_transformers"),
        ([*_config(), *_config()], "storage_transformers"),
        ("chunk-manifest-json", "storage_transformers"),
        ([{"name": "chunk-manifest-json"}], "configuration"),
        ([{"name": "chunk-manifest-json", "configuration": []}], "configuration"),
        (_config(checksums=True), "checksums"),
        (_config(checksums={"must_understand": True}), "checksums"),
        (_config(checksums={"url": "x"}), "checksums"),
    ],
)
def test_bad_transformer(written: Path, transformers: Any, field: str) -> None:
    where = _edit_transformers(written, transformers)
    with pytest.raises(ManifestFormatError) as info:
        ManifestGroup.from_store(written)
    assert info.value.field == field
    assert info.value.location == where.as_uri()
    assert "temperature/zarr.json" in str(info.value)


def test_ignorable_configuration_member(written: Path, sample: ManifestGroup) -> None:
    _edit_transformers(written, _config(checksums={"must_understand": False, "algo": "crc32c"}))
    assert ManifestGroup.from_store(written) == sample


@pytest.mark.parametrize(
    "manifest",
    [
        "../manifest.json",
        "./../sub/t/manifest.json",
        "a/../../manifest.json",
        "/tmp/manifest.json",
        "s3://bucket/manifest.json",
        "file:///tmp/manifest.json",
        "%2e%2e/manifest.json",
        "..\\manifest.json",
        "",
        7,
    ],
)
def test_manifest_path_escaping_array_dir(written: Path, manifest: Any) -> None:
    where = _edit_transformers(
        written, [{"name": "chunk-manifest-json", "configuration": {"manifest": manifest}}]
    )
    with pytest.raises(ManifestFormatError) as info:
        ManifestGroup.from_store(written)
    assert info.value.field == "manifest"
    assert info.value.location == where.as_uri()


def test_manifest_in_subdirectory(written: Path, sample: ManifestGroup) -> None:
    (written / "temperature" / "refs").mkdir()
    (written / "temperature" / "manifest.json").rename(written / "temperature" / "refs" / "m.json")
    _edit_transformers(
        written, [{"name": "chunk-manifest-json", "configuration": {"manifest": "refs/m.json"}}]
    )
    assert ManifestGroup.from_store(written) == sample


def test_missing_manifest(written: Path) -> None:
    (written / "sub" / "t" / "manifest.json").unlink()
    with pytest.raises(ManifestFormatError, match="missing") as info:
        ManifestGroup.from_store(written)
    assert info.value.location == (written / "sub" / "t" / "manifest.json").as_uri()


@pytest.mark.parametrize(
    ("content", "key", "field"),
    [
        (b"{not json", None, None),
        (b"[]", None, None),
        (b'{"0.0":{"path":"p","offset":0,"length":1.0}}', "0.0", "length"),
        (b'{"2.0":{"path":"p","offset":0,"length":1}}', "2.0", None),
        (b'{"0":{"path":"p","offset":0,"length":1}}', "0", None),
    ],
)
def test_bad_manifest_file(
    written: Path, content: bytes, key: str | None, field: str | None
) -> None:
    path = written / "temperature" / "manifest.json"
    path.write_bytes(content)
    with pytest.raises(ManifestFormatError) as info:
        ManifestGroup.from_store(written)
    assert info.value.location == path.as_uri()
    assert (info.value.key, info.value.field) == (key, field)


@pytest.mark.parametrize(
    "doc",
    [
        b"not json",
        b"[1]",
        b'{"zarr_format": 2, "node_type": "array"}',
        b'{"zarr_format": 3, "node_type": "dataset"}',
        b'{"zarr_format": 3, "node_type": "array", "shape": "oops"}',
    ],
)
def test_bad_zarr_json(written: Path, doc: bytes) -> None:
    path = written / "x" / "zarr.json"
    path.write_bytes(doc)
    with pytest.raises(ManifestFormatError) as info:
        ManifestGroup.from_store(written)
    assert info.value.location == path.as_uri()


def test_no_root_zarr_json(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ManifestGroup.from_store(tmp_path)


@pytest.mark.parametrize("name", ["tab\there", "\x01", "zarr.json"])
def test_member_names_that_cannot_be_stored_are_refused(
    name: str, sample: ManifestGroup, tmp_path: Path
) -> None:
    with pytest.raises(MetadataError):
        ManifestGroup({name: sample["temperature"]}).to_store(tmp_path)  # type: ignore[dict-item]


def test_member_name_with_backslash_is_refused() -> None:
    # zarr reads "\\" in a path as "/", so such a member could be written but not read back
    with pytest.raises(MetadataError):
        ManifestGroup({"a\\b": InlineArray.from_numpy(np.arange(3))})
