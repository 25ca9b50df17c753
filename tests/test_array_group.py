"""`ManifestArray`, `InlineArray` and `ManifestGroup`: validation, combining, API."""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import pytest

from zarr_manifest import (
    ChunkManifest,
    CombineError,
    InlineArray,
    ManifestArray,
    ManifestGroup,
    MetadataError,
)


def meta(
    shape: tuple[int, ...] = (4, 6),
    chunks: tuple[int, ...] = (2, 3),
    dtype: str = "float32",
    fill_value: Any = 0,
    codecs: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Zarr v3 array zarr.json document (without storage transformers)."""
    return {
        "shape": list(shape),
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill_value,
        "codecs": codecs or [{"name": "bytes", "configuration": {"endian": "little"}}],
        **extra,
    }


def full_manifest(
    grid: tuple[int, ...], path: str = "s3://b/f.nc", start: int = 0, length: int = 100
) -> ChunkManifest:
    """Every chunk present, back to back in one file."""
    n = math.prod(grid)
    offsets = start + np.arange(n).reshape(grid) * length
    return ChunkManifest.from_arrays(paths=path, offsets=offsets, lengths=np.full(grid, length))


def marray(
    shape=(4, 6), chunks=(2, 3), path="s3://b/f.nc", start=0, length=100, **kw: Any
) -> ManifestArray:
    grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunks, strict=True))
    return ManifestArray(meta(shape, chunks, **kw), full_manifest(grid, path, start, length))


# ---- ManifestArray ----------------------------------------------------------------------------


def test_manifest_array_properties() -> None:
    a = ManifestArray(
        meta((5, 6), (2, 3), "int16", -1, attributes={"units": "K"}, dimension_names=["y", "x"]),
        full_manifest((3, 2)),
    )
    assert a.shape == (5, 6)
    assert a.ndim == 2
    assert a.chunks == (2, 3)
    assert a.dtype == np.dtype("int16")
    assert a.fill_value == -1
    assert a.attributes == {"units": "K"}
    assert a.dimension_names == ("y", "x")
    assert len(a.codecs) == 1
    assert a.manifest.shape_chunk_grid == (3, 2)
    assert not a.metadata.storage_transformers
    assert "(3, 2)" in repr(a)


def test_manifest_array_scalar() -> None:
    m = ChunkManifest({"0": {"path": "f", "offset": 8, "length": 8}}, shape=())
    a = ManifestArray(meta((), (), "float64"), m)
    assert a.shape == ()
    assert a.manifest.dict() == m.dict()


@pytest.mark.parametrize(
    ("grid", "shape", "chunks"),
    [((2, 3), (4, 6), (2, 3)), ((2,), (4, 6), (2, 3)), ((1, 1), (3,), (3,)), ((1,), (), ())],
)
def test_grid_mismatch(
    grid: tuple[int, ...], shape: tuple[int, ...], chunks: tuple[int, ...]
) -> None:
    with pytest.raises(MetadataError, match="chunk grid"):
        ManifestArray(meta(shape, chunks), full_manifest(grid))


@pytest.mark.parametrize(
    "bad",
    [
        {"data_type": "no_such_type"},
        {"shape": "big"},
        {"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}}},
        {"codecs": [{"name": "no-such-codec"}]},
        {
            "storage_transformers": [
                {"name": "chunk-manifest-json", "configuration": {"manifest": "./manifest.json"}}
            ]
        },
    ],
)
def test_bad_metadata(bad: dict[str, Any]) -> None:
    with pytest.raises(MetadataError):
        ManifestArray({**meta(), **bad}, full_manifest((2, 2)))


def test_bad_manifest_type() -> None:
    with pytest.raises(MetadataError):
        ManifestArray(meta(), {"0.0": {"path": "p", "offset": 0, "length": 1}})  # type: ignore[arg-type]
    with pytest.raises(MetadataError):
        ManifestArray(42, full_manifest((2, 2)))  # type: ignore[arg-type]


def test_manifest_array_equality_and_pickle() -> None:
    a = marray(dtype="float64", fill_value="NaN", attributes={"x": [1, 2]})
    b = marray(dtype="float64", fill_value="NaN", attributes={"x": [1, 2]})
    assert math.isnan(a.fill_value)
    assert a == b  # NaN fill values compare equal
    assert pickle.loads(pickle.dumps(a)) == a
    assert a != marray(dtype="float64", fill_value=0.0, attributes={"x": [1, 2]})
    assert a != marray(dtype="float64", fill_value="NaN", attributes={"x": [1, 3]})
    assert a != marray(dtype="float64", fill_value="NaN", attributes={"x": [1, 2]}, start=1)
    assert a != "not an array"
    with pytest.raises(TypeError):
        hash(a)


def test_replace_and_rename() -> None:
    a = marray(attributes={"a": 1})
    b = a.replace(attributes={"b": 2}, dimension_names=["t", "x"])
    assert b.attributes == {"b": 2}
    assert b.dimension_names == ("t", "x")
    assert a.attributes == {"a": 1}
    assert b.manifest == a.manifest
    with pytest.raises(MetadataError):
        a.replace(shape=[40, 6])  # the manifest's grid no longer fits
    r = a.rename_paths(lambda p: p.replace("s3://b/", "/local/"))
    assert r.manifest.path_table == ("/local/f.nc",)
    assert r.metadata == a.metadata


# ---- combining --------------------------------------------------------------------------------


def test_concat() -> None:
    a = marray((4, 6), (2, 3), path="a")
    b = marray((3, 6), (2, 3), path="b", start=5000)
    out = ManifestArray.concat([a, b], axis=0)
    assert out.shape == (7, 6)
    assert out.chunks == (2, 3)
    assert out.manifest == ChunkManifest.concat([a.manifest, b.manifest])
    assert out.manifest["2.1"] == {"path": "b", "offset": 5100, "length": 100}
    assert out.metadata.fill_value == a.metadata.fill_value
    c = ManifestArray.concat([marray((4, 6), (2, 3)), marray((4, 3), (2, 3))], axis=-1)
    assert c.shape == (4, 9)


def test_stack() -> None:
    a = marray((4, 6), (2, 3), path="a", dimension_names=["y", "x"])
    b = marray((4, 6), (2, 3), path="b", dimension_names=["y", "x"])
    out = ManifestArray.stack([a, b, a], axis=1, dimension_name="t")
    assert out.shape == (4, 3, 6)
    assert out.chunks == (2, 1, 3)
    assert out.dimension_names == ("y", "t", "x")
    assert out.manifest["1.1.1"] == b.manifest["1.1"]
    assert out.manifest == ChunkManifest.stack([a.manifest, b.manifest, a.manifest], axis=1)


@pytest.mark.parametrize(
    ("other", "what"),
    [
        (marray(dtype="int32"), "dtype"),
        (marray(codecs=[{"name": "bytes", "configuration": {"endian": "big"}}]), "codecs"),
        (marray(fill_value=1.5), "fill value"),
        (marray(chunks=(2, 2)), "chunk"),
        (marray(dimension_names=["a", "b"]), "dimension names"),
    ],
)
@pytest.mark.parametrize("combine", [ManifestArray.concat, ManifestArray.stack])
def test_combine_names_difference(other: ManifestArray, what: str, combine: Any) -> None:
    with pytest.raises(CombineError, match=what) as info:
        combine([marray(), other])
    assert "array 1" in str(info.value)


def test_concat_shape_errors() -> None:
    with pytest.raises(CombineError, match=r"shape \(4, 3\).*off axis 0"):
        ManifestArray.concat([marray((4, 6)), marray((4, 3))], axis=0)
    # only the last input may end in a partial chunk and keep a regular grid
    out = ManifestArray.concat([marray((4, 6)), marray((3, 6))])
    assert out.shape == (7, 6)
    assert out.chunks == (2, 3)
    with pytest.raises(CombineError, match=r"shape"):
        ManifestArray.stack([marray((4, 6)), marray((2, 6))])
    with pytest.raises(CombineError, match="axis"):
        ManifestArray.concat([marray(), marray()], axis=2)
    with pytest.raises(CombineError, match="axis"):
        ManifestArray.stack([marray(), marray()], axis=3)
    with pytest.raises(CombineError, match="at least one"):
        ManifestArray.concat([])
    with pytest.raises(CombineError, match="not a ManifestArray"):
        ManifestArray.concat([marray(), InlineArray.from_numpy(np.zeros((4, 6), "float32"))])


GZIP = [
    {"name": "bytes", "configuration": {"endian": "little"}},
    {"name": "gzip", "configuration": {"level": 1}},
]


@pytest.mark.parametrize(
    ("arrays", "axis", "match"),
    [
        # a padded edge chunk inside the result: compressed bytes cannot be trimmed
        ([marray((3, 6), codecs=GZIP), marray((4, 6), codecs=GZIP)], 0, "input 0.*gzip"),
        # uncompressed, but not the outermost axis: the kept part is not one byte range
        ([marray((4, 5), length=24), marray((4, 6), length=24)], 1, "input 0.*outermost"),
        # uncompressed and outermost, but the references are not full chunks (24 bytes)
        ([marray((4, 6)), marray((3, 6)), marray((4, 6))], 0, "input 1.*24 bytes"),
    ],
)
def test_concat_partial_chunk_errors(arrays: list[ManifestArray], axis: int, match: str) -> None:
    with pytest.raises(CombineError, match=match):
        ManifestArray.concat(arrays, axis=axis)


def test_concat_partial_chunk_trimmed() -> None:
    # float32 chunks of 2x3 are 24 bytes; the 3-row input's padded last chunk is cut to 12
    a = marray((3, 6), path="a", length=24)
    b = marray((4, 6), path="b", length=24)
    out = ManifestArray.concat([a, b], axis=0)
    assert out.shape == (7, 6)
    assert out.manifest.shape_chunk_grid == (4, 2)
    assert out.manifest["1.0"] == {"path": "a", "offset": 48, "length": 12}
    assert out.manifest["2.1"] == {"path": "b", "offset": 24, "length": 24}
    assert out.metadata.to_dict()["chunk_grid"]["name"] == "rectilinear"


# ---- InlineArray ------------------------------------------------------------------------------


def test_inline_from_numpy() -> None:
    data = np.arange(12, dtype="int16").reshape(3, 4)
    i = InlineArray.from_numpy(
        data, dimension_names=["y", "x"], attributes={"units": "m"}, fill_value=-1
    )
    assert i.shape == (3, 4)
    assert i.ndim == 2
    assert i.dtype == np.dtype("int16")
    assert i.dimension_names == ("y", "x")
    assert i.attributes == {"units": "m"}
    assert i.metadata.fill_value == -1
    assert np.array_equal(i.data, data)
    data[0, 0] = 99  # the inline array keeps its own copy
    assert i.data[0, 0] == 0
    with pytest.raises(ValueError, match="read-only"):
        i.data[0, 0] = 5
    assert pickle.loads(pickle.dumps(i)) == i


def test_inline_equality_with_nan() -> None:
    a = InlineArray.from_numpy(np.array([1.0, np.nan]), fill_value=np.nan)
    assert a == InlineArray.from_numpy(np.array([1.0, np.nan]), fill_value=np.nan)
    assert a != InlineArray.from_numpy(np.array([1.0, 2.0]), fill_value=np.nan)
    assert a != InlineArray.from_numpy(np.array([1.0, np.nan]), fill_value=0.0)


def test_inline_casts_and_checks() -> None:
    i = InlineArray(meta((2, 3), (2, 3), "float64"), [[1, 2, 3], [4, 5, 6]])
    assert i.dtype == np.dtype("float64")
    with pytest.raises(MetadataError, match="shape"):
        InlineArray(meta((2, 3), (2, 3)), np.zeros((3, 2)))
    with pytest.raises(MetadataError):
        InlineArray(meta((2,), (2,), "int32"), np.array(["a", "b"]))


@pytest.mark.parametrize("data", [np.float64(2.5), np.zeros((0, 3), "int8")])
def test_inline_from_numpy_scalar_and_empty(data: np.ndarray) -> None:
    i = InlineArray.from_numpy(np.asarray(data))
    assert i.shape == np.shape(data)
    assert np.array_equal(i.data, data)


# ---- ManifestGroup ----------------------------------------------------------------------------


@pytest.fixture
def tree() -> ManifestGroup:
    inline = InlineArray.from_numpy(np.arange(3))
    leaf = ManifestGroup({"w": marray(path="w")}, attributes={"depth": 2})
    child = ManifestGroup({"v": marray(path="v")}, {"leaf": leaf}, {"depth": 1})
    return ManifestGroup({"u": marray(path="u"), "i": inline}, {"child": child}, {"title": "t"})


def test_group_navigation(tree: ManifestGroup) -> None:
    assert len(tree) == 3
    assert list(tree) == ["u", "i", "child"]
    assert tree["child/leaf/w"].manifest.path_table == ("w",)  # type: ignore[union-attr]
    assert tree["/child/v/"] == tree.groups["child"].arrays["v"]
    assert isinstance(tree["child/leaf"], ManifestGroup)
    assert "child/leaf/w" in tree
    assert "child/leaf/x" not in tree
    assert "u/x" not in tree
    assert 3 not in tree
    for missing in ("nope", "u/x", "child/nope"):
        with pytest.raises(KeyError):
            tree[missing]
    assert [p for p, _ in tree.walk()] == [
        "u",
        "i",
        "child",
        "child/v",
        "child/leaf",
        "child/leaf/w",
    ]
    assert tree.attributes == {"title": "t"}


def test_group_copies_are_independent(tree: ManifestGroup) -> None:
    tree.attributes["title"] = "changed"
    tree.arrays.pop("u")
    tree.groups.clear()
    assert tree.attributes == {"title": "t"}
    assert "u" in tree and "child" in tree


def test_group_equality_replace_rename(tree: ManifestGroup) -> None:
    assert tree == pickle.loads(pickle.dumps(tree))
    other = tree.replace(attributes={"title": "other"})
    assert other != tree
    assert other.arrays == tree.arrays
    renamed = tree.rename_paths(lambda p: f"s3://bucket/{p}.nc")
    assert renamed["child/leaf/w"].manifest.path_table == ("s3://bucket/w.nc",)  # type: ignore[union-attr]
    assert renamed["i"] == tree["i"]
    assert renamed != tree
    with pytest.raises(TypeError):
        hash(tree)


@pytest.mark.parametrize("name", ["", "a/b", "/a", "__zarr", ".", ".."])
def test_bad_member_names(name: str) -> None:
    with pytest.raises(MetadataError, match="invalid member name"):
        ManifestGroup({name: marray()})
    with pytest.raises(MetadataError, match="invalid member name"):
        ManifestGroup(groups={name: ManifestGroup()})


def test_bad_members() -> None:
    with pytest.raises(MetadataError, match="both an array and a group"):
        ManifestGroup({"x": marray()}, {"x": ManifestGroup()})
    with pytest.raises(MetadataError, match="not an array"):
        ManifestGroup({"x": full_manifest((2, 2))})  # type: ignore[dict-item]
    with pytest.raises(MetadataError, match="not a ManifestGroup"):
        ManifestGroup(groups={"x": marray()})  # type: ignore[dict-item]
    with pytest.raises(MetadataError):
        ManifestGroup({3: marray()})  # type: ignore[dict-item]
