"""ManifestStore on local files: HDF5 data read through zarr and xarray, and the Store API.

The arrays are written by h5py, their manifests built from h5py's own chunk index
(``dsid.chunk_iter``, ``get_offset`` for contiguous datasets), and their HDF5 filters mapped
by hand to zarr v3 codecs.  HDF5's deflate filter writes zlib streams, so it maps to
``numcodecs.zlib``: zarr's ``gzip`` codec expects a gzip container and cannot decode them
(`test_hdf5_deflate_is_not_gzip`).  Every read is compared with what h5py reads.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import orjson
import pytest
import xarray as xr
import zarr
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype

import zarr_manifest as zm
import zarr_manifest.store._references as references_module
import zarr_manifest.store.manifest_store as ms_module
from zarr_manifest import (
    ChunkManifest,
    ChunkReadError,
    InlineArray,
    ManifestArray,
    ManifestFormatError,
    ManifestGroup,
    ManifestStore,
    ShortReadError,
    SourceNotAllowedError,
)

PROTO = default_buffer_prototype()
READ_ONLY = "store was opened in read-only mode and does not support writing"
FUSED = "zarr.core.codec_pipeline.FusedCodecPipeline"

ENCODINGS = {
    "default-slash": {"name": "default", "configuration": {"separator": "/"}},
    "default-dot": {"name": "default", "configuration": {"separator": "."}},
    "v2-dot": {"name": "v2", "configuration": {"separator": "."}},
    "v2-slash": {"name": "v2", "configuration": {"separator": "/"}},
}

# numpy dtypes; one-byte types have no byte order to vary.
DTYPES = [
    "i1",
    "u1",
    "?",
    *[
        f"{order}{code}"
        for code in ("i2", "i4", "i8", "u2", "u4", "u8", "f4", "f8")
        for order in "<>"
    ],
]
COMPRESSIONS = ["none", "zlib", "shuffle-zlib"]


# ---- building manifests from HDF5 -------------------------------------------------------


def _values(dtype: np.dtype, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Deterministic values that use the dtype's range yet compress (HDF5's deflate filter
    is optional: on incompressible chunks it is skipped, which a manifest cannot express)."""
    n = int(np.prod(shape, dtype=np.int64))
    base = (np.arange(n, dtype=np.int64) * 37 + seed) % 97
    if dtype.kind == "b":
        out = base % 3 == 0
    elif dtype.kind == "f":
        out = (base - 48) * 0.25
    elif dtype.kind == "i":
        low = np.array(np.iinfo(dtype).min, dtype=dtype)
        out = np.where(base % 5 == 0, low + base.astype(dtype), (base - 48).astype(dtype))
    else:
        top = np.array(np.iinfo(dtype).max, dtype=dtype)
        out = np.where(base % 5 == 0, top - base.astype(dtype), base.astype(dtype))
    return np.asarray(out).astype(dtype).reshape(shape)


def _codecs(ds: h5py.Dataset) -> list[dict[str, Any]]:
    """The zarr v3 codecs that decode ``ds``'s chunks as HDF5 stored them."""
    dtype = ds.dtype
    endian = "big" if dtype.byteorder == ">" else "little"
    codecs: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": endian}}]
    if ds.shuffle:
        codecs.append(
            {"name": "numcodecs.shuffle", "configuration": {"elementsize": dtype.itemsize}}
        )
    if ds.compression == "gzip":
        codecs.append({"name": "numcodecs.zlib", "configuration": {"level": ds.compression_opts}})
    else:
        assert ds.compression is None, ds.compression
    return codecs


def _manifest(ds: h5py.Dataset, path: str) -> ChunkManifest:
    """The chunk manifest of an HDF5 dataset, from HDF5's own index of its chunks."""
    if ds.chunks is None:  # contiguous (and 0-d): one chunk, the whole dataset
        offset = ds.id.get_offset()
        assert offset is not None, f"{ds.name} has no storage allocated"
        grid = (1,) * ds.ndim
        return ChunkManifest.from_arrays(
            paths=np.full(grid, path, dtype=object),
            offsets=np.full(grid, offset, dtype=np.uint64),
            lengths=np.full(grid, ds.id.get_storage_size(), dtype=np.uint64),
        )
    grid = tuple(-(-s // c) for s, c in zip(ds.shape, ds.chunks, strict=True))
    paths = np.full(grid, "", dtype=object)
    offsets = np.zeros(grid, dtype=np.uint64)
    lengths = np.zeros(grid, dtype=np.uint64)

    def visit(info: Any) -> None:
        assert info.filter_mask == 0, f"{ds.name}: HDF5 skipped a filter on a chunk"
        index = tuple(o // c for o, c in zip(info.chunk_offset, ds.chunks, strict=True))
        paths[index] = path
        offsets[index] = info.byte_offset
        lengths[index] = info.size

    ds.id.chunk_iter(visit)
    return ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)


def _array(ds: h5py.Dataset, path: str, name: str, encoding: dict[str, Any]) -> ManifestArray:
    dtype = ds.dtype
    fill = ds.fillvalue
    metadata = {
        "shape": list(ds.shape),
        "data_type": dtype.newbyteorder("=").name,  # "int16", "float32", "bool" ...
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": list(ds.chunks or ds.shape)},
        },
        "chunk_key_encoding": encoding,
        "fill_value": bool(fill) if dtype.kind == "b" else fill.item(),
        "codecs": _codecs(ds),
        "dimension_names": [f"{name}_{i}" for i in range(ds.ndim)],
        "attributes": {"hdf5_name": ds.name},
    }
    return ManifestArray(metadata, _manifest(ds, path))


@dataclass
class H5World:
    """One HDF5 file, the values h5py reads from it, and manifest stores over it."""

    h5_path: Path
    expected: dict[str, np.ndarray]  # array path in the hierarchy -> values
    tmp: Path
    _groups: dict[str, ManifestGroup]
    _dirs: dict[str, Path]

    def group(self, encoding: str = "default-slash") -> ManifestGroup:
        """The hierarchy in memory, referencing the file by its absolute local path."""
        if encoding not in self._groups:
            self._groups[encoding] = _build_group(self.h5_path, ENCODINGS[encoding])
        return self._groups[encoding]

    def store_dir(self, encoding: str = "default-slash") -> Path:
        """The hierarchy written with ``to_store``; the file copied into the store's
        ``data/`` and referenced relatively (``../data/x.h5``, ``../../../data/x.h5``)."""
        if encoding not in self._dirs:
            root = self.tmp / f"store-{encoding}"
            _relative(self.group(encoding), "data/" + self.h5_path.name).to_store(root)
            (root / "data").mkdir()
            shutil.copyfile(self.h5_path, root / "data" / self.h5_path.name)
            self._dirs[encoding] = root
        return self._dirs[encoding]

    def store(self, kind: str, encoding: str = "default-slash", **kwargs: Any) -> ManifestStore:
        if kind == "memory":
            return ManifestStore(self.group(encoding), **kwargs)
        return ManifestStore(self.store_dir(encoding), **kwargs)


def _relative(group: ManifestGroup, target: str, depth: int = 1) -> ManifestGroup:
    """``group`` with every reference made relative to its array's directory."""
    up = "../" * depth
    return ManifestGroup(
        arrays={
            name: a.rename_paths(up + target) if isinstance(a, ManifestArray) else a
            for name, a in group.arrays.items()
        },
        groups={name: _relative(g, target, depth + 1) for name, g in group.groups.items()},
        attributes=group.attributes,
    )


def _dtype_name(np_dtype: str, compression: str) -> str:
    order = {"<": "le_", ">": "be_"}.get(np_dtype[0], "")
    code = {"?": "bool"}.get(np_dtype, np_dtype.lstrip("<>"))
    return f"{code}_{order}{compression}".replace("-", "_")


# The chunkings: (name, shape, chunks or None for contiguous, dtype)
CHUNKINGS = [
    ("grid3d", (4, 5, 6), (2, 3, 4), "<f8"),
    ("rows", (9, 7), (1, 7), ">i4"),
    ("uneven1d", (100,), (7,), "<u2"),
    ("whole", (6, 5), (6, 5), "<i2"),
    ("tall", (31, 3), (8, 2), ">f4"),
    ("contiguous", (5, 4), None, ">i8"),
]
SCALARS = [("scalar_f8", "<f8", 3.5), ("scalar_i2_be", ">i2", -1234), ("scalar_bool", "?", True)]


def _write_h5(path: Path) -> dict[str, np.ndarray]:
    expected: dict[str, np.ndarray] = {}
    with h5py.File(path, "w") as f:
        for i, np_dtype in enumerate(DTYPES):
            for j, compression in enumerate(COMPRESSIONS):
                name = _dtype_name(np_dtype, compression)
                data = _values(np.dtype(np_dtype), (23, 17), seed=3 * i + j)
                kwargs: dict[str, Any] = {"chunks": (5, 4)}  # uneven edges both ways
                if compression != "none":
                    kwargs.update(compression="gzip", compression_opts=1 + (i + j) % 9)
                    kwargs["shuffle"] = compression == "shuffle-zlib"
                f.create_dataset(name, data=data, **kwargs)
                expected[name] = data
        nested = f.create_group("nested/deeper")
        for k, (name, shape, chunks, np_dtype) in enumerate(CHUNKINGS):
            data = _values(np.dtype(np_dtype), shape, seed=100 + k)
            kwargs = {"chunks": chunks}
            if chunks is not None:
                kwargs.update(compression="gzip", compression_opts=4, shuffle=k % 2 == 0)
            nested.create_dataset(name, data=data, **kwargs)
            expected[f"nested/deeper/{name}"] = data
        for name, np_dtype, value in SCALARS:
            f.create_dataset(name, data=np.array(value, dtype=np_dtype))
            expected[name] = np.array(value, dtype=np_dtype)
        # Never-written chunks are not allocated: missing from the manifest, fill value.
        sparse = f.create_dataset(
            "sparse", shape=(20, 12), chunks=(5, 4), dtype="<i2", fillvalue=-7
        )
        sparse[0:5, 0:4] = 1
        sparse[12:18, 5:9] = 2  # touches four chunks, partly
        expected["sparse"] = sparse[...]
        f.create_dataset("empty_float", shape=(6,), chunks=(3,), dtype=">f4", fillvalue=np.nan)
        expected["empty_float"] = np.full(6, np.nan, dtype=">f4")
    return expected


def _build_group(h5_path: Path, encoding: dict[str, Any]) -> ManifestGroup:
    path = str(h5_path)
    with h5py.File(h5_path, "r") as f:
        root = {
            name: _array(f[name], path, name, encoding)
            for name in f
            if isinstance(f[name], h5py.Dataset)
        }
        deeper = {
            name: _array(f["nested/deeper"][name], path, name, encoding)
            for name in f["nested/deeper"]
        }
    inline = InlineArray.from_numpy(
        np.arange(4, dtype="<i4"), dimension_names=["coord_0"], attributes={"kind": "inline"}
    )
    return ManifestGroup(
        arrays={**root, "coord": inline},
        groups={
            "nested": ManifestGroup(
                groups={"deeper": ManifestGroup(arrays=deeper, attributes={"level": 2})},
                attributes={"level": 1},
            )
        },
        attributes={"title": "h5py-written arrays"},
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> H5World:
    tmp = tmp_path_factory.mktemp("h5world")
    h5_path = tmp / "src" / "x.h5"
    h5_path.parent.mkdir()
    expected = _write_h5(h5_path)
    expected["coord"] = np.arange(4, dtype="<i4")
    return H5World(h5_path, expected, tmp, {}, {})


def _assert_same(got: Any, want: np.ndarray, what: str) -> None:
    got = np.asarray(got)
    assert got.shape == want.shape, what
    assert got.dtype.newbyteorder("=") == want.dtype.newbyteorder("="), (what, got.dtype)
    np.testing.assert_array_equal(got, want, err_msg=what)


# ---- reading HDF5 data through zarr --------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_every_dtype_and_compression_reads_as_h5py(world: H5World, kind: str) -> None:
    group = zarr.open_group(world.store(kind), mode="r")
    assert group.attrs["title"] == "h5py-written arrays"
    names = {path for path, node in group.members(max_depth=None) if isinstance(node, zarr.Array)}
    assert names == set(world.expected)
    for path, want in world.expected.items():
        _assert_same(group[path][...], want, path)


# A subset covering codecs, byte orders, chunkings, missing chunks and 0-d arrays.
SUBSET = [
    "f8_be_shuffle_zlib",
    "i2_le_zlib",
    "bool_none",
    "u8_be_none",
    "nested/deeper/grid3d",
    "nested/deeper/uneven1d",
    "nested/deeper/contiguous",
    "sparse",
    "empty_float",
    "scalar_i2_be",
    "scalar_bool",
    "coord",
]


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("pipeline", ["default", "fused"])
@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_pipelines_and_key_encodings(
    world: H5World, kind: str, pipeline: str, encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = world.store(kind, encoding)
    sync_reads = 0
    get_sync = ManifestStore.get_sync

    def counting_get_sync(self: ManifestStore, key: str, **kwargs: Any) -> Any:
        nonlocal sync_reads
        sync_reads += 1
        return get_sync(self, key, **kwargs)

    monkeypatch.setattr(ManifestStore, "get_sync", counting_get_sync)
    config = {"codec_pipeline.path": FUSED} if pipeline == "fused" else {}
    with zarr.config.set(config):
        for path in SUBSET:
            array = zarr.open_array(store, path=path, mode="r")
            _assert_same(array[...], world.expected[path], f"{path} ({encoding}, {pipeline})")
            if array.ndim:  # a selection that cuts chunks, edge chunks included
                sel = tuple(slice(s // 3, s) for s in array.shape)
                _assert_same(array[sel], world.expected[path][sel], f"{path}[{sel}]")
    # local sources: the fused pipeline reads through get_sync, the default one does not
    assert (sync_reads > 0) == (pipeline == "fused")


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_key_encoding_is_the_arrays(world: H5World, kind: str) -> None:
    keys = {
        name: sorted(asyncio.run(_collect(world.store(kind, name).list_prefix("sparse/"))))
        for name in ENCODINGS
    }
    # sparse: 4x3 chunk grid; chunks (0,0), (2,1), (2,2), (3,1), (3,2) were written
    chunks = ["0/0", "2/1", "2/2", "3/1", "3/2"]
    assert keys["default-slash"] == sorted(["sparse/zarr.json", *(f"sparse/c/{c}" for c in chunks)])
    assert keys["default-dot"] == sorted(
        ["sparse/zarr.json", *(f"sparse/c.{c.replace('/', '.')}" for c in chunks)]
    )
    assert keys["v2-dot"] == sorted(
        ["sparse/zarr.json", *(f"sparse/{c.replace('/', '.')}" for c in chunks)]
    )
    assert keys["v2-slash"] == sorted(["sparse/zarr.json", *(f"sparse/{c}" for c in chunks)])


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_zarr_open_and_open_array(world: H5World, kind: str) -> None:
    node = zarr.open(world.store(kind))
    assert isinstance(node, zarr.Group)
    _assert_same(node["nested/deeper/tall"][...], world.expected["nested/deeper/tall"], "tall")
    array = zarr.open_array(world.store(kind), path="nested/deeper/rows", mode="r")
    assert array.metadata.dimension_names == ("rows_0", "rows_1")
    assert array.attrs["hdf5_name"] == "/nested/deeper/rows"
    _assert_same(array[2:5, ::2], world.expected["nested/deeper/rows"][2:5, ::2], "rows")
    scalar = zarr.open(world.store(kind), path="scalar_f8", mode="r")
    assert isinstance(scalar, zarr.Array) and scalar.shape == ()
    assert scalar[()] == 3.5


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_xarray_open_zarr(world: H5World, kind: str) -> None:
    ds = xr.open_zarr(world.store(kind), consolidated=False, mask_and_scale=False)
    root = {k: v for k, v in world.expected.items() if "/" not in k}
    assert set(ds.variables) == set(root)
    for name, want in root.items():
        assert ds[name].dims == tuple(f"{name}_{i}" for i in range(want.ndim)), name
        _assert_same(ds[name].values, want, name)
    deeper = xr.open_zarr(
        world.store(kind), group="nested/deeper", consolidated=False, mask_and_scale=False
    )
    assert deeper.attrs == {"level": 2}
    for name, _, _, _ in CHUNKINGS:
        _assert_same(deeper[name].values, world.expected[f"nested/deeper/{name}"], name)


def test_hdf5_deflate_is_not_gzip(world: H5World) -> None:
    """Why deflate maps to numcodecs.zlib: zarr's "gzip" reads gzip containers only."""
    with h5py.File(world.h5_path, "r") as f:
        ds = f["i4_le_zlib"]
        array = _array(ds, str(world.h5_path), "x", ENCODINGS["default-slash"])
    doc = array.metadata.to_dict()
    doc["codecs"] = [
        c if c["name"] != "numcodecs.zlib" else {"name": "gzip", "configuration": {"level": 1}}
        for c in doc["codecs"]
    ]
    wrong = ManifestGroup(arrays={"x": ManifestArray(doc, array.manifest)})
    with pytest.raises(OSError, match="gzip"):  # gzip.BadGzipFile: never wrong values
        zarr.open_array(ManifestStore(wrong), path="x", mode="r")[...]


def test_manifests_are_parsed_lazily(world: H5World, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str | None] = []
    original = ChunkManifest.from_json_bytes.__func__  # type: ignore[attr-defined]

    def counting(cls: type, data: bytes, **kwargs: Any) -> ChunkManifest:
        parsed.append(kwargs.get("location"))
        return original(cls, data, **kwargs)

    monkeypatch.setattr(ChunkManifest, "from_json_bytes", classmethod(counting))
    store = world.store("disk")
    group = zarr.open_group(store, mode="r")
    array = group["nested/deeper/grid3d"]
    assert array.shape == (4, 5, 6)
    assert sorted(group.group_keys()) == ["nested"]
    assert len(list(group.array_keys())) == len(DTYPES) * len(COMPRESSIONS) + 6
    assert asyncio.run(store.exists("i4_le_zlib/zarr.json"))
    xr.open_zarr(store, consolidated=False, group="nested/deeper")
    assert parsed == []  # metadata and listing the members parse no manifest
    np.testing.assert_array_equal(array[0, 0, 0], world.expected["nested/deeper/grid3d"][0, 0, 0])
    assert len(parsed) == 1 and parsed[0].endswith("/nested/deeper/grid3d/manifest.json")
    array[...]
    group["sparse"][...]
    assert len(parsed) == 2  # once per array, however many chunks are read


# ---- a small hand-made store for the Store API -------------------------------------------

RAW = bytes(range(256)) * 4  # 1 KiB whose bytes say where they are


def _int_meta(shape: list[int], chunks: list[int], **extra: Any) -> dict[str, Any]:
    return {
        "shape": shape,
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 255,
        "codecs": [{"name": "bytes"}],
        **extra,
    }


def _small_group(data_ref: Callable[[int], str]) -> ManifestGroup:
    """Array "a": 3 chunks of 8 bytes, chunk 2 missing; "g/b": 2x2 chunks of 2x2 bytes;
    "coord": inline.  ``data_ref(depth)`` is how an array at that depth names data/raw.bin."""
    a = ChunkManifest(
        {
            "0": {"path": data_ref(1), "offset": 100, "length": 8},
            "1": {"path": data_ref(1), "offset": 300, "length": 8},
        },
        shape=(3,),
    )
    b = ChunkManifest(
        {
            f"{i}.{j}": {"path": data_ref(2), "offset": 16 * (2 * i + j), "length": 4}
            for i in range(2)
            for j in range(2)
        },
        shape=(2, 2),
    )
    return ManifestGroup(
        arrays={
            "a": ManifestArray(_int_meta([20], [8]), a),
            "coord": InlineArray.from_numpy(np.arange(3, dtype="<i4")),
        },
        groups={"g": ManifestGroup(arrays={"b": ManifestArray(_int_meta([4, 4], [2, 2]), b)})},
        attributes={"small": True},
    )


@pytest.fixture
def small_dir(tmp_path: Path) -> Path:
    root = tmp_path / "small"
    _small_group(lambda depth: "../" * depth + "data/raw.bin").to_store(root)
    (root / "data").mkdir()
    (root / "data" / "raw.bin").write_bytes(RAW)
    return root


@pytest.fixture(params=["disk", "memory"])
def small(request: pytest.FixtureRequest, small_dir: Path) -> ManifestStore:
    if request.param == "disk":
        return ManifestStore(small_dir)
    raw = str(small_dir / "data" / "raw.bin")
    return ManifestStore(_small_group(lambda depth: raw))


async def _collect(it: Any) -> list[str]:
    return [k async for k in it]


def _bytes(buf: Any) -> bytes | None:
    return None if buf is None else buf.to_bytes()


async def test_small_store_reads_through_zarr(small: ManifestStore) -> None:
    group = zarr.open_group(small, mode="r")
    a = group["a"][...]
    np.testing.assert_array_equal(a[:8], np.frombuffer(RAW[100:108], np.uint8))
    np.testing.assert_array_equal(a[8:16], np.frombuffer(RAW[300:308], np.uint8))
    np.testing.assert_array_equal(a[16:], [255] * 4)  # missing chunk: fill value
    b = group["g/b"][...]
    assert b.tolist() == [[0, 1, 16, 17], [2, 3, 18, 19], [32, 33, 48, 49], [34, 35, 50, 51]]
    np.testing.assert_array_equal(group["coord"][...], [0, 1, 2])


@pytest.mark.parametrize(
    ("byte_range", "want"),
    [
        (None, RAW[100:108]),
        (RangeByteRequest(1, 5), RAW[101:105]),
        (RangeByteRequest(3, 3), b""),
        (OffsetByteRequest(3), RAW[103:108]),
        (OffsetByteRequest(8), b""),
        (SuffixByteRequest(2), RAW[106:108]),
        (SuffixByteRequest(100), RAW[100:108]),
    ],
)
async def test_get_byte_ranges_inside_a_chunk(
    small: ManifestStore, byte_range: Any, want: bytes
) -> None:
    assert _bytes(await small.get("a/c/0", PROTO, byte_range)) == want
    assert _bytes(small.get_sync("a/c/0", prototype=PROTO, byte_range=byte_range)) == want
    [got] = await small.get_partial_values(PROTO, [("a/c/0", byte_range)])
    assert _bytes(got) == want


@pytest.mark.parametrize(
    "byte_range", [RangeByteRequest(4, 9), RangeByteRequest(9, 12), OffsetByteRequest(9)]
)
async def test_byte_range_outside_a_chunk_is_an_error(
    small: ManifestStore, byte_range: Any
) -> None:
    with pytest.raises(ChunkReadError, match="a/c/0") as info:
        await small.get("a/c/0", PROTO, byte_range)
    assert info.value.key == "a/c/0"
    with pytest.raises(ChunkReadError, match="outside chunk"):
        small.get_sync("a/c/0", prototype=PROTO, byte_range=byte_range)
    with pytest.raises(TypeError, match="Unexpected byte_range"):
        await small.get("a/c/0", PROTO, (0, 2))  # type: ignore[arg-type]


async def test_get_partial_values_mixes_keys(small: ManifestStore) -> None:
    got = await small.get_partial_values(
        PROTO,
        [
            ("g/b/c/1/1", None),
            ("a/c/1", RangeByteRequest(2, 4)),
            ("a/c/2", None),  # missing chunk
            ("a/manifest.json", None),  # hidden
            ("nope", None),
            ("g/b/c/0/0", SuffixByteRequest(1)),
            ("zarr.json", RangeByteRequest(0, 1)),
        ],
    )
    assert [_bytes(g) for g in got] == [RAW[48:52], RAW[302:304], None, None, None, RAW[3:4], b"{"]


async def test_exists(small: ManifestStore) -> None:
    assert await small.exists("zarr.json")
    assert await small.exists("a/zarr.json")
    assert await small.exists("a/c/0")
    assert await small.exists("coord/c/0")  # an inline chunk, served from the store
    assert not await small.exists("a/c/2")  # missing in the manifest
    assert not await small.exists("a/c/3")  # outside the chunk grid
    assert not await small.exists("a/c/01")  # not the exact encoding of (1,): no alias
    assert not await small.exists("a/c/1/0")
    assert not await small.exists("a/c.1")
    assert not await small.exists("a/manifest.json")
    assert not await small.exists("a")
    assert not await small.exists("g/b/c/2/0")
    for odd in ("", "/", "a/", "a//c/0", "a/c/0/", "./zarr.json", "zarr.json/", "zarr.json/x"):
        assert not await small.exists(odd), odd
        assert await small.get(odd, PROTO) is None, odd
        assert small.get_sync(odd) is None, odd
        with pytest.raises(FileNotFoundError):
            await small.getsize(odd)
    assert await small.get("a/c/01", PROTO) is None
    assert await small.get("a/manifest.json", PROTO) is None
    assert small.get_sync("a/manifest.json") is None


async def test_listing(small: ManifestStore, small_dir: Path) -> None:
    everything = sorted(await _collect(small.list()))
    assert everything == [
        "a/c/0",
        "a/c/1",
        "a/zarr.json",
        "coord/c/0",
        "coord/zarr.json",
        "g/b/c/0/0",
        "g/b/c/0/1",
        "g/b/c/1/0",
        "g/b/c/1/1",
        "g/b/zarr.json",
        "g/zarr.json",
        "zarr.json",
    ]  # no manifest.json, and not the data/ directory, which is no node
    assert sorted(await _collect(small.list_prefix("g/b/c/1"))) == ["g/b/c/1/0", "g/b/c/1/1"]
    assert sorted(await _collect(small.list_prefix("a/"))) == ["a/c/0", "a/c/1", "a/zarr.json"]
    assert sorted(await _collect(small.list_dir(""))) == ["a", "coord", "g", "zarr.json"]
    assert sorted(await _collect(small.list_dir("g/b"))) == ["c", "zarr.json"]
    assert sorted(await _collect(small.list_dir("g/b/c/"))) == ["0", "1"]
    assert await _collect(small.list_dir("data")) == []
    assert not await small.is_empty("")
    assert not await small.is_empty("g/b/c/0")
    assert await small.is_empty("g/b/c/2")
    assert await small.is_empty("a/c/0")  # a key, not a directory
    assert await small.is_empty("data")
    if small._location is not None:  # the data file is still served, as any object
        assert _bytes(await small.get("data/raw.bin", PROTO, RangeByteRequest(0, 3))) == RAW[:3]


async def test_sizes_come_from_the_manifest(
    small: ManifestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_io(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("getsize must not read chunk bytes")

    monkeypatch.setattr(references_module, "read_range_sync", no_io)
    monkeypatch.setattr(ms_module, "read_ranges_async", no_io)
    monkeypatch.setattr(ms_module.RangeBatcher, "read", no_io)
    assert await small.getsize("a/c/1") == 8
    assert await small.getsize("g/b/c/1/0") == 4
    with pytest.raises(FileNotFoundError):
        await small.getsize("a/c/2")
    with pytest.raises(FileNotFoundError):
        await small.getsize("a/manifest.json")
    a_json = len(_bytes(await small.get("a/zarr.json", PROTO)) or b"")
    assert await small.getsize("a/zarr.json") == a_json
    assert await small.getsize_prefix("a") == a_json + 16
    b_json = await small.getsize("g/b/zarr.json")
    g_json = await small.getsize("g/zarr.json")
    assert await small.getsize_prefix("g") == g_json + b_json + 16
    assert await small.getsize_prefix("g/b/c/0") == 8
    keys = await _collect(small.list())
    total = 0
    for key in keys:
        total += await small.getsize(key)
    assert await small.getsize_prefix("") == total


async def test_get_and_get_sync_agree(small: ManifestStore) -> None:
    for key in [*await _collect(small.list()), "a/c/2", "nope", "a/manifest.json"]:
        assert _bytes(small.get_sync(key)) == _bytes(await small.get(key, PROTO)), key


def test_equality_pickle_and_with_read_only(small_dir: Path, tmp_path: Path) -> None:
    store = ManifestStore(small_dir)
    assert store == ManifestStore(small_dir)
    assert store == ManifestStore(str(small_dir) + "/")
    assert store != ManifestStore(small_dir, allowed_prefixes=[str(tmp_path)])
    assert store != ManifestStore(tmp_path)
    group = _small_group(lambda depth: str(small_dir / "data" / "raw.bin"))
    memory = ManifestStore(group)
    assert memory == ManifestStore(_small_group(lambda depth: str(small_dir / "data" / "raw.bin")))
    assert memory != store
    assert memory != ManifestStore(group.replace(attributes={"other": 1}))
    for s in (store, memory):
        zarr.open_group(s, mode="r")["g/b"][...]  # opened and used before pickling
        copy = pickle.loads(pickle.dumps(s))
        assert copy == s
        assert copy.read_only
        np.testing.assert_array_equal(
            zarr.open_array(copy, path="g/b", mode="r")[...],
            zarr.open_array(s, path="g/b", mode="r")[...],
        )
        reader = s.with_read_only(True)
        assert reader == s and reader.read_only
        assert zarr.open_array(reader, path="a", mode="r")[0] == RAW[100]
        with pytest.raises(ValueError, match="read-only"):
            s.with_read_only(False)
    with pytest.raises(ValueError, match="read-only"):
        ManifestStore(small_dir, read_only=False)


async def test_context_manager_and_close(small_dir: Path) -> None:
    with ManifestStore(small_dir) as store:
        assert _bytes(await store.get("a/c/1", PROTO)) == RAW[300:308]
        assert store._is_open
    assert not store._is_open
    # closing drops caches only: the store reopens on the next read
    assert _bytes(await store.get("a/c/1", PROTO)) == RAW[300:308]
    assert store._is_open
    store.close()
    assert _bytes(store.get_sync("g/b/c/0/1")) == RAW[16:20]


async def test_writes_are_refused(small: ManifestStore) -> None:
    buf = PROTO.buffer.from_bytes(b"x")
    for attempt in (
        small.set("a/c/0", buf),
        small.set("new", buf),
        small.set_if_not_exists("new", buf),
        small.delete("a/c/0"),
        small.delete_dir("a"),
        small.clear(),
        small._set_many([("x", buf)]),
    ):
        with pytest.raises(ValueError, match=READ_ONLY):
            await attempt
    with pytest.raises(ValueError, match=READ_ONLY):
        small.set_sync("a/c/0", buf)
    with pytest.raises(ValueError, match=READ_ONLY):
        small.delete_sync("a/c/0")
    array = zarr.open_array(small, path="a", mode="r")
    with pytest.raises(ValueError, match=READ_ONLY):
        array[0] = 1
    assert _bytes(await small.get("a/c/0", PROTO)) == RAW[100:108]
    with pytest.raises(ValueError, match="read-only"):
        zarr.open_group(small, mode="a")


def test_sync_io_only_for_local_sources(small_dir: Path) -> None:
    assert ManifestStore(small_dir)._supports_sync_io
    assert ManifestStore(_small_group(lambda d: str(small_dir / "data/raw.bin")))._supports_sync_io
    remote = ManifestStore(small_dir, allowed_prefixes=["http://127.0.0.1:9/data/"])
    assert not remote._supports_sync_io


# ---- default-deny, and sources that do not hold what the manifest says ---------------------


def _store_with_refs(root: Path, refs: dict[str, str]) -> Path:
    """A store at ``root`` whose array "a" has one 4-byte chunk per reference."""
    manifest = ChunkManifest(
        {key: {"path": ref, "offset": 0, "length": 4} for key, ref in refs.items()},
        shape=(len(refs),),
    )
    ManifestGroup(arrays={"a": ManifestArray(_int_meta([4 * len(refs)], [4]), manifest)}).to_store(
        root
    )
    return root


@pytest.mark.parametrize(
    ("ref", "url"),
    [
        ("file:///etc/passwd", "file:///etc/passwd"),
        ("../../outside.bin", "{tmp}/outside.bin"),
        ("%2e%2e/%2e%2e/outside.bin", "{tmp}/outside.bin"),
        ("http://127.0.0.1:9/x.bin", "http://127.0.0.1:9/x.bin"),
        ("s3://some-bucket/x.bin", "s3://some-bucket/x.bin"),
    ],
)
async def test_references_outside_the_root_are_refused(tmp_path: Path, ref: str, url: str) -> None:
    (tmp_path / "outside.bin").write_bytes(b"SECRET!!")
    root = _store_with_refs(tmp_path / "store", {"0": ref})
    url = url.format(tmp=tmp_path.resolve().as_uri())
    store = ManifestStore(root)
    for read in (
        lambda: store.get("a/c/0", PROTO),
        lambda: asyncio.to_thread(store.get_sync, "a/c/0"),
        lambda: store.get_partial_values(PROTO, [("a/c/0", None)]),
        lambda: asyncio.to_thread(zarr.open_array(store, path="a", mode="r").__getitem__, 0),
    ):
        with pytest.raises(SourceNotAllowedError) as info:
            await read()
        assert info.value.key == "a/c/0"
        assert info.value.path == url
        assert "'a/c/0'" in str(info.value) and url in str(info.value)


async def test_allowed_prefixes_permit(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "o.bin").write_bytes(b"\x01\x02\x03\x04")
    (tmp_path / "outsider.bin").write_bytes(b"\x09\x09\x09\x09")
    root = _store_with_refs(
        tmp_path / "store", {"0": "../../outside/o.bin", "1": "../../outsider.bin"}
    )
    store = ManifestStore(root, allowed_prefixes=[str(tmp_path / "outside")])
    assert _bytes(await store.get("a/c/0", PROTO)) == b"\x01\x02\x03\x04"
    # segment-wise: "outside" does not allow "outsider.bin"
    with pytest.raises(SourceNotAllowedError, match=r"outsider\.bin"):
        await store.get("a/c/1", PROTO)
    uri = ManifestStore(root, allowed_prefixes=[(tmp_path / "outside").as_uri() + "/"])
    assert zarr.open_array(uri, path="a", mode="r")[:4].tolist() == [1, 2, 3, 4]


async def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(b"SECRET!!")
    root = _store_with_refs(tmp_path / "store", {"0": "../data/link.bin"})
    (root / "data").mkdir()
    os.symlink(tmp_path / "secret.bin", root / "data" / "link.bin")
    with pytest.raises(SourceNotAllowedError, match=r"secret\.bin"):
        await ManifestStore(root).get("a/c/0", PROTO)


async def test_short_source_is_an_error_never_data(tmp_path: Path) -> None:
    root = tmp_path / "store"
    manifest = ChunkManifest(
        {
            "0": {"path": "../data/short.bin", "offset": 0, "length": 4},
            "1": {"path": "../data/short.bin", "offset": 4, "length": 4},  # 2 of 4 bytes
            "2": {"path": "../data/short.bin", "offset": 100, "length": 4},  # past the end
        },
        shape=(3,),
    )
    ManifestGroup(arrays={"a": ManifestArray(_int_meta([12], [4]), manifest)}).to_store(root)
    (root / "data").mkdir()
    (root / "data" / "short.bin").write_bytes(b"\x01\x02\x03\x04\x05\x06")
    store = ManifestStore(root)
    assert _bytes(await store.get("a/c/0", PROTO)) == b"\x01\x02\x03\x04"
    for key in ("a/c/1", "a/c/2"):
        with pytest.raises(ShortReadError, match=key) as info:
            await store.get(key, PROTO)
        assert info.value.key == key
        with pytest.raises(ShortReadError):
            store.get_sync(key)
        with pytest.raises(ShortReadError):
            await store.get_partial_values(PROTO, [("a/c/0", None), (key, None)])
    for pipeline in ({}, {"codec_pipeline.path": FUSED}):
        with zarr.config.set(pipeline), pytest.raises(ShortReadError):
            zarr.open_array(store, path="a", mode="r")[...]


def _write_raw_store(
    root: Path, manifest_json: bytes, zarr_json: dict[str, Any] | None = None
) -> None:
    ManifestGroup(
        arrays={"a": ManifestArray(_int_meta([8], [4]), ChunkManifest({}, shape=(2,)))}
    ).to_store(root)
    (root / "a" / "manifest.json").write_bytes(manifest_json)
    if zarr_json is not None:
        (root / "a" / "zarr.json").write_bytes(orjson.dumps(zarr_json))
    (root / "data").mkdir()
    (root / "data" / "ok.bin").write_bytes(b"\x01\x02\x03\x04")


@pytest.mark.parametrize(
    ("bad_path", "match"),
    [
        ("/etc/passwd", "absolute local path"),
        ("ftp://host/x.bin", "unsupported URL scheme"),
        ("//host/x.bin", "absolute local path"),
    ],
)
async def test_invalid_references_fail_before_any_data(
    tmp_path: Path, bad_path: str, match: str
) -> None:
    entries = {
        "0": {"path": "../data/ok.bin", "offset": 0, "length": 4},
        "1": {"path": bad_path, "offset": 0, "length": 4},
    }
    _write_raw_store(tmp_path / "store", orjson.dumps(entries))
    store = ManifestStore(tmp_path / "store")
    # chunk 0 is fine, but its array's manifest is not: no data from it (spec section 12)
    with pytest.raises(ManifestFormatError, match=match) as info:
        await store.get("a/c/0", PROTO)
    assert info.value.location is not None and info.value.location.endswith("a/manifest.json")
    with pytest.raises(ManifestFormatError):
        zarr.open_array(ManifestStore(tmp_path / "store"), path="a", mode="r")[...]


async def test_broken_documents_are_format_errors(tmp_path: Path) -> None:
    _write_raw_store(tmp_path / "s1", b"{not json")
    with pytest.raises(ManifestFormatError, match=r"manifest\.json"):
        await ManifestStore(tmp_path / "s1").get("a/c/0", PROTO)
    _write_raw_store(tmp_path / "s2", b"{}")
    (tmp_path / "s2" / "a" / "manifest.json").unlink()
    with pytest.raises(ManifestFormatError, match="missing"):
        await ManifestStore(tmp_path / "s2").get("a/c/0", PROTO)
    _write_raw_store(tmp_path / "s3", b"{}")
    (tmp_path / "s3" / "zarr.json").write_bytes(b"zarr.json")
    with pytest.raises(ManifestFormatError, match=r"zarr\.json"):
        await ManifestStore(tmp_path / "s3").get("a/c/0", PROTO)
    doc = orjson.loads((tmp_path / "s1" / "a" / "zarr.json").read_bytes())
    doc["storage_transformers"] = [{"name": "other-transformer", "configuration": {}}]
    _write_raw_store(tmp_path / "s4", b"{}", zarr_json=doc)
    with pytest.raises(ManifestFormatError, match="other-transformer"):
        await ManifestStore(tmp_path / "s4").get("a/zarr.json", PROTO)


async def test_served_metadata(tmp_path: Path, small_dir: Path) -> None:
    store = ManifestStore(small_dir)
    doc = orjson.loads(_bytes(await store.get("a/zarr.json", PROTO)) or b"")
    on_disk = orjson.loads((small_dir / "a" / "zarr.json").read_bytes())
    assert on_disk["storage_transformers"][0]["name"] == "chunk-manifest-json"
    assert "storage_transformers" not in doc
    assert on_disk["chunk-manifest-json"] == {"must_understand": True}
    hidden = ("storage_transformers", "chunk-manifest-json")
    assert doc == {k: v for k, v in on_disk.items() if k not in hidden}
    # consolidated metadata would show zarr the documents with their transformers
    root_doc = orjson.loads((small_dir / "zarr.json").read_bytes())
    root_doc["consolidated_metadata"] = {
        "kind": "inline",
        "must_understand": False,
        "metadata": {"a": on_disk},
    }
    (small_dir / "zarr.json").write_bytes(orjson.dumps(root_doc))
    served = orjson.loads(_bytes(await ManifestStore(small_dir).get("zarr.json", PROTO)) or b"")
    assert "consolidated_metadata" not in served
    assert served["attributes"] == {"small": True}
    group = zarr.open_group(ManifestStore(small_dir), mode="r")
    assert group["a"][0] == RAW[100]


@pytest.mark.parametrize("pipeline", ["default", "fused"])
def test_64_threads_read_local_sources(world: H5World, pipeline: str) -> None:
    store = world.store("memory")
    names = sorted(world.expected)
    rng = np.random.default_rng(7)
    jobs = [names[i] for i in rng.integers(0, len(names), size=64)]

    def read(path: str) -> np.ndarray:
        return zarr.open_array(store, path=path, mode="r")[...]

    config = {"codec_pipeline.path": FUSED} if pipeline == "fused" else {}
    with zarr.config.set(config), ThreadPoolExecutor(64) as pool:
        results = [f.result(timeout=60) for f in [pool.submit(read, p) for p in jobs]]
    for path, got in zip(jobs, results, strict=True):
        _assert_same(got, world.expected[path], path)


async def test_large_local_chunk(tmp_path: Path) -> None:
    big = np.random.default_rng(3).integers(0, 255, size=3 * 1024 * 1024, dtype=np.uint8)
    (tmp_path / "big.bin").write_bytes(b"xx" + big.tobytes())
    manifest = ChunkManifest(
        {"0": {"path": str(tmp_path / "big.bin"), "offset": 2, "length": big.size}}, shape=(1,)
    )
    group = ManifestGroup(arrays={"a": ManifestArray(_int_meta([big.size], [big.size]), manifest)})
    store = ManifestStore(group)
    # larger than what is read on the event loop itself: read in a worker thread
    assert big.size > references_module.LOCAL_INLINE_MAX_BYTES
    assert _bytes(await store.get("a/c/0", PROTO)) == big.tobytes()
    got = await asyncio.to_thread(zarr.open_array(store, path="a", mode="r").__getitem__, ...)
    np.testing.assert_array_equal(got, big)


@pytest.mark.parametrize("name", ["#refs#", "a b%20c?d"])
def test_node_names_with_url_characters_read_back(tmp_path: Path, name: str) -> None:
    # MATLAB v7.3 files keep cell contents in a '#refs#' group (PyTables' test_ref_array2.mat):
    # the store's node URL must encode the name, or its inline chunk copies cannot be found
    src = tmp_path / "data.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset(f"{name}/small", data=np.arange(4.0))
        f.create_dataset(f"{name}/big", data=np.arange(600, dtype="i4").reshape(20, 30))
    group = zm.open_virtual(src, load=[f"{name}/small"])
    group.to_store(tmp_path / "store")
    root = zarr.open_group(
        ManifestStore(tmp_path / "store", allowed_prefixes=[str(tmp_path)]), mode="r"
    )
    with h5py.File(src) as f:
        for leaf in ("small", "big"):
            np.testing.assert_array_equal(root[f"{name}/{leaf}"][...], f[f"{name}/{leaf}"][()])
