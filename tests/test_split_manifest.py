"""Split manifests: one file per region of the chunk grid, loaded region by region.

Written by `ManifestGroup.to_store` above ``split_above`` references, read whole by
`read_group`, and lazily (one region file per region touched) by `ManifestStore`.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import zarr

from zarr_manifest import ChunkManifest, ManifestStore
from zarr_manifest.array import ManifestArray
from zarr_manifest.errors import ManifestFormatError, SourceNotAllowedError
from zarr_manifest.format import split as split_mod
from zarr_manifest.format import transformer
from zarr_manifest.format.split import RegionGrid, auto_region_shape, split_manifest
from zarr_manifest.group import ManifestGroup
from zarr_manifest.store import _nodes
from zarr_manifest.store._references import Chunk

SHAPE = (40, 60)
CHUNKS = (4, 6)
GRID = (10, 10)
REGIONS = (3, 4)  # a 4 x 3 region grid; the last row and column of regions are partial
FILL = -1


def _metadata(shape: tuple[int, ...] = SHAPE, chunks: tuple[int, ...] = CHUNKS) -> dict[str, Any]:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": "int32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": FILL,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {},
    }


def _make(
    root: Path,
    *,
    missing: frozenset[tuple[int, int]] = frozenset(),
    split_above: int | None = 0,
    region_shape: tuple[int, ...] | None = REGIONS,
) -> tuple[np.ndarray, ChunkManifest]:
    """Write a store at ``root``: array "a" (40 x 60 int32 in 10 x 10 chunks) whose chunks
    lie in ``root/data/raw.bin`` in reverse grid order.  Returns the values a reader must
    return (fill where chunks are ``missing``) and the manifest."""
    values = np.arange(SHAPE[0] * SHAPE[1], dtype="<i4").reshape(SHAPE) * 7 - 1000
    want = values.copy()
    raw = bytearray(b"HEADER")
    offsets = np.zeros(GRID, np.int64)
    lengths = np.zeros(GRID, np.int64)
    paths = np.full(GRID, "", dtype=object)
    for i, j in reversed(list(np.ndindex(*GRID))):
        sel = (slice(i * 4, i * 4 + 4), slice(j * 6, j * 6 + 6))
        if (i, j) in missing:
            want[sel] = FILL
            continue
        block = values[sel].tobytes()
        offsets[i, j], lengths[i, j], paths[i, j] = len(raw), len(block), "../data/raw.bin"
        raw += block
    manifest = ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)
    group = ManifestGroup(arrays={"a": ManifestArray(_metadata(), manifest)})
    group.to_store(root, split_above=split_above, region_shape=region_shape)
    (root / "data").mkdir()
    (root / "data" / "raw.bin").write_bytes(bytes(raw))
    return want, manifest


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def _open(root: Path) -> zarr.Array:
    return zarr.open_array(ManifestStore(root), path="a", mode="r")


def _count_region_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the location of every region file the store parses."""
    seen: list[str] = []
    real = _nodes.decode_region

    def counting(data: bytes, grid: RegionGrid, region: Any, *, location: str) -> Any:
        seen.append(location.rsplit("/", 1)[-1])
        return real(data, grid, region, location=location)

    monkeypatch.setattr(_nodes, "decode_region", counting)
    return seen


# ---- layout and round trip -------------------------------------------------------------------


def test_layout_and_round_trip(store_dir: Path) -> None:
    _, manifest = _make(store_dir)
    doc = orjson.loads((store_dir / "a" / "zarr.json").read_bytes())
    assert doc["storage_transformers"] == [
        {
            "name": "chunk-manifest-json",
            "configuration": {
                "manifest": "./manifest/",
                "split": {"version": 1, "region_shape": [3, 4]},
            },
        }
    ]
    assert not (store_dir / "a" / "manifest.json").exists()
    files = sorted(p.name for p in (store_dir / "a" / "manifest").iterdir())
    regions = [f"{i}.{j}" for i in range(4) for j in range(3)]
    assert files == sorted([f"{r}.json" for r in regions] + ["index.json"])
    index = orjson.loads((store_dir / "a" / "manifest" / "index.json").read_bytes())
    assert index == {"regions": regions}
    # every region file is a valid version 1 manifest of the whole grid, holding its region
    parts = []
    for r in regions:
        part = ChunkManifest.from_zarr_json(store_dir / "a" / "manifest" / f"{r}.json", GRID)
        i, j = map(int, r.split("."))
        keys = {tuple(map(int, k.split("."))) for k in part}
        assert keys == {
            (y, x)
            for y in range(3 * i, min(3 * i + 3, 10))
            for x in range(4 * j, min(4 * j + 4, 10))
        }
        parts.append(part)
    assert sum(len(p) for p in parts) == 100
    assert ManifestGroup.from_store(store_dir)["a"].manifest == manifest


def test_zarr_reads_split_store(store_dir: Path) -> None:
    want, _ = _make(store_dir)
    a = _open(store_dir)
    np.testing.assert_array_equal(a[...], want)
    np.testing.assert_array_equal(a[5:31, 7:50], want[5:31, 7:50])


def test_split_above_threshold(tmp_path: Path) -> None:
    _make(tmp_path / "at", split_above=100)  # 100 references: not above
    assert (tmp_path / "at" / "a" / "manifest.json").is_file()
    _make(tmp_path / "above", split_above=99, region_shape=None)
    assert (tmp_path / "above" / "a" / "manifest" / "index.json").is_file()
    _make(tmp_path / "never", split_above=None)
    assert not (tmp_path / "never" / "a" / "manifest").exists()
    assert ManifestGroup.from_store(tmp_path / "above") == ManifestGroup.from_store(
        tmp_path / "never"
    )


def test_region_shape_must_fit(store_dir: Path) -> None:
    with pytest.raises(ValueError, match="region_shape"):
        _make(store_dir, region_shape=(3,))
    with pytest.raises(ValueError, match="region_shape"):
        _make(store_dir, region_shape=(0, 4))


def test_auto_region_shape() -> None:
    assert auto_region_shape((1000, 1000), 32_768) == (125, 250)
    assert auto_region_shape((100_000, 1, 1), 1000) == (782, 1, 1)
    assert auto_region_shape((10, 10), 1000) == (10, 10)
    assert auto_region_shape((), 1000) == ()
    for grid in [(7, 3, 1000), (1, 1), (33, 65)]:
        region = auto_region_shape(grid, 50)
        assert np.prod(region) <= 50 and all(
            0 < r <= max(g, 1) for r, g in zip(region, grid, strict=True)
        )


def test_scalar_array_split(store_dir: Path) -> None:
    manifest = ChunkManifest({"0": {"path": "../data/x.bin", "offset": 2, "length": 4}}, shape=())
    meta = _metadata(shape=(), chunks=())
    ManifestGroup(arrays={"a": ManifestArray(meta, manifest)}).to_store(store_dir, split_above=0)
    (store_dir / "data").mkdir()
    (store_dir / "data" / "x.bin").write_bytes(b"..\x2a\x00\x00\x00")
    assert orjson.loads((store_dir / "a" / "manifest" / "index.json").read_bytes()) == {
        "regions": ["0"]
    }
    assert ManifestGroup.from_store(store_dir)["a"].manifest == manifest
    assert int(_open(store_dir)[()]) == 42


# ---- lazy loading ----------------------------------------------------------------------------


def test_open_and_one_chunk_parse_one_region(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    want, _ = _make(store_dir)
    seen = _count_region_loads(monkeypatch)
    a = _open(store_dir)
    assert seen == []
    np.testing.assert_array_equal(a[20:24, 42:48], want[20:24, 42:48])  # chunk (5, 7)
    assert seen == ["1.1.json"]
    np.testing.assert_array_equal(a[12:16, 30:36], want[12:16, 30:36])  # chunk (3, 5), same
    assert seen == ["1.1.json"]
    np.testing.assert_array_equal(a[36:40, 54:60], want[36:40, 54:60])  # chunk (9, 9)
    assert seen == ["1.1.json", "3.2.json"]


def test_concurrent_first_reads_load_each_region_once(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    want, _ = _make(store_dir)
    seen = _count_region_loads(monkeypatch)
    store = ManifestStore(store_dir)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def read(t: int) -> None:
        try:
            barrier.wait(timeout=10)
            for i, j in [(0, 0), (9, 9), (4, 5), (t, t)]:
                buf = store.get_sync(f"a/c/{i}/{j}")
                assert buf is not None
                block = np.frombuffer(buf.to_bytes(), "<i4").reshape(CHUNKS)
                np.testing.assert_array_equal(block, want[i * 4 : i * 4 + 4, j * 6 : j * 6 + 6])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=read, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    # regions of (0,0), (9,9), (4,5) and the diagonal (t,t), t < 8: each parsed once
    expected = {"0.0", "3.2", "1.1"} | {f"{t // 3}.{t // 4}" for t in range(8)}
    assert sorted(seen) == sorted(f"{r}.json" for r in expected)


def test_listing_loads_every_region(store_dir: Path) -> None:
    _make(store_dir, missing=frozenset({(0, 0), (9, 9)}))
    store = ManifestStore(store_dir)

    async def listing() -> list[str]:
        return [k async for k in store.list_prefix("a/")]

    keys = asyncio.run(listing())
    chunks = {k for k in keys if k.startswith("a/c/")}
    assert chunks == {
        f"a/c/{i}/{j}" for i in range(10) for j in range(10) if (i, j) not in {(0, 0), (9, 9)}
    }
    assert "a/zarr.json" in keys and not any("manifest" in k for k in keys)
    served = len(asyncio.run(store.get("a/zarr.json")).to_bytes())  # type: ignore[union-attr]
    assert asyncio.run(store.getsize_prefix("a")) == 98 * 96 + served


def test_readahead_plans_within_the_region(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make(store_dir)
    seen = _count_region_loads(monkeypatch)
    store = ManifestStore(store_dir)
    chunk = store._route("a/c/4/5")
    assert isinstance(chunk, Chunk)
    blocks = chunk.node.blocks_from(chunk, 1 << 20, 0, 1)
    # region 1.1 covers chunks (3..5, 4..7): one block holding its 12 chunks' bytes
    (_, start, end), *_ = blocks
    assert start <= chunk.offset and chunk.offset + chunk.length <= end
    assert end - start <= 12 * 96 + 2 * 6 * 96  # rows of the region are 6 chunks apart
    assert seen == ["1.1.json"]


# ---- missing chunks and regions --------------------------------------------------------------


def test_missing_regions_read_as_fill(store_dir: Path) -> None:
    # region 0.0 holds chunks (0..2, 0..3): all missing; plus one missing chunk in region 3.2
    missing = frozenset({(i, j) for i in range(3) for j in range(4)} | {(9, 8)})
    want, manifest = _make(store_dir, missing=missing)
    files = {p.name for p in (store_dir / "a" / "manifest").iterdir()}
    assert "0.0.json" not in files and "3.2.json" in files
    index = orjson.loads((store_dir / "a" / "manifest" / "index.json").read_bytes())
    assert "0.0" not in index["regions"] and len(index["regions"]) == 11
    np.testing.assert_array_equal(_open(store_dir)[...], want)
    assert ManifestGroup.from_store(store_dir)["a"].manifest == manifest
    # A file for a region that the index does not list is not read: still the fill value.
    stray = {"0.0": {"path": "../data/raw.bin", "offset": 6, "length": 96}}
    (store_dir / "a" / "manifest" / "0.0.json").write_bytes(orjson.dumps(stray))
    assert (_open(store_dir)[0:4, 0:6] == FILL).all()
    assert ManifestGroup.from_store(store_dir)["a"].manifest == manifest


def test_empty_split_manifest(store_dir: Path) -> None:
    manifest = ChunkManifest.empty(GRID)
    group = ManifestGroup(arrays={"a": ManifestArray(_metadata(), manifest)})
    group.to_store(store_dir, split_above=-1, region_shape=REGIONS)
    assert sorted(p.name for p in (store_dir / "a" / "manifest").iterdir()) == ["index.json"]
    assert (_open(store_dir)[...] == FILL).all()
    assert ManifestGroup.from_store(store_dir)["a"].manifest == manifest


# ---- what readers reject ---------------------------------------------------------------------


def test_version_1_reader_rejects_split(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that knows only version 1 fails clearly: 'split' must be understood."""
    _make(store_dir)
    monkeypatch.setattr(transformer, "_KNOWN_CONFIGURATION", {"manifest"})
    doc = orjson.loads((store_dir / "a" / "zarr.json").read_bytes())
    with pytest.raises(ManifestFormatError, match="configuration member 'split'"):
        transformer.parse_array_document(doc, location="a/zarr.json")
    with pytest.raises(ManifestFormatError, match="'split'"):
        _open(store_dir)


def _edit_config(root: Path, **members: Any) -> None:
    path = root / "a" / "zarr.json"
    doc = orjson.loads(path.read_bytes())
    config = doc["storage_transformers"][0]["configuration"]
    for name, value in members.items():
        if value is ...:
            del config[name]
        else:
            config[name] = value
    path.write_bytes(orjson.dumps(doc))


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ({"split": {"version": 2, "region_shape": [3, 4]}}, "version 2"),
        ({"split": {"version": "1", "region_shape": [3, 4]}}, "version '1'"),
        ({"split": {"region_shape": [3, 4]}}, "version None"),
        ({"split": {"version": 1, "region_shape": [3]}}, "2 positive integers"),
        ({"split": {"version": 1, "region_shape": [3, 0]}}, "2 positive integers"),
        ({"split": {"version": 1, "region_shape": [3, 4.0]}}, "2 positive integers"),
        ({"split": {"version": 1, "region_shape": [3, True]}}, "2 positive integers"),
        ({"split": {"version": 1, "region_shape": "3,4"}}, "2 positive integers"),
        ({"split": {"version": 1, "region_shape": [3, 4], "by": "x"}}, "'by' of 'split'"),
        ({"split": [1, [3, 4]]}, "must be an object"),
        ({"manifest": "./manifest"}, "ending in '/'"),
        ({"manifest": "./"}, "ending in '/'"),
        ({"manifest": "../b/manifest/"}, "inside the array directory"),
        ({"manifest": "./manifest/", "split": ...}, "names a directory"),
    ],
)
def test_bad_split_configuration(store_dir: Path, members: dict[str, Any], match: str) -> None:
    _make(store_dir)
    _edit_config(store_dir, **members)
    with pytest.raises(ManifestFormatError, match=match):
        ManifestGroup.from_store(store_dir)
    with pytest.raises(ManifestFormatError, match=match):
        _open(store_dir)[...]


def test_ignorable_member_inside_split(store_dir: Path) -> None:
    want, _ = _make(store_dir)
    extra = {"must_understand": False, "hint": "x"}
    _edit_config(store_dir, split={"version": 1, "region_shape": [3, 4], "x-hint": extra})
    np.testing.assert_array_equal(_open(store_dir)[...], want)


def _region(root: Path, name: str) -> Path:
    return root / "a" / "manifest" / name


@pytest.mark.parametrize(
    ("breaks", "match", "file"),
    [
        # a key of region 0.0 moved into region 1.1's file
        (
            lambda r: _region(r, "1.1.json").write_bytes(
                _region(r, "1.1.json").read_bytes().replace(b'"3.4"', b'"0.0"', 1)
            ),
            r"'0\.0' is outside region 1\.1",
            "1.1.json",
        ),
        # a key outside the grid, in the last (partial) region
        (
            lambda r: _region(r, "3.2.json").write_bytes(
                _region(r, "3.2.json").read_bytes().replace(b'"9.9"', b'"9.10"', 1)
            ),
            "outside",
            "3.2.json",
        ),
        (lambda r: _region(r, "1.1.json").unlink(), "missing", "1.1.json"),
        (lambda r: _region(r, "index.json").unlink(), "missing", "index.json"),
        (lambda r: _region(r, "1.1.json").write_bytes(b'{"3.4": {"path": '), "JSON", "1.1.json"),
        (
            lambda r: _region(r, "index.json").write_bytes(b'{"regions": ["1.1", "01.1"]}'),
            "not a region key",
            "index.json",
        ),
        (
            lambda r: _region(r, "index.json").write_bytes(b'{"regions": ["4.0"]}'),
            "not a region key",
            "index.json",
        ),
        (
            lambda r: _region(r, "index.json").write_bytes(b'{"regions": ["1.1", "1.1"]}'),
            "twice",
            "index.json",
        ),
        (lambda r: _region(r, "index.json").write_bytes(b'["1.1"]'), "regions", "index.json"),
        (
            lambda r: _region(r, "1.1.json").write_bytes(
                b'{"3.4": {"path": "/etc/passwd", "offset": 0, "length": 4}}'
            ),
            "passwd",
            "1.1.json",
        ),
    ],
)
def test_invalid_region_files(store_dir: Path, breaks: Any, match: str, file: str) -> None:
    _make(store_dir)
    breaks(store_dir)
    if match != "passwd":  # read_group checks references no more than for manifest.json
        with pytest.raises(ManifestFormatError, match=match) as info:
            ManifestGroup.from_store(store_dir)
        assert info.value.location is not None and info.value.location.endswith(file)
    a = _open(store_dir)
    with pytest.raises(ManifestFormatError, match=match) as info:
        a[12:16, 24:30]  # chunk (3, 4), region 1.1
        a[36:40, 54:60]  # chunk (9, 9), region 3.2
    assert info.value.location is not None and info.value.location.endswith(file)


def test_broken_region_does_not_hide_the_others(store_dir: Path) -> None:
    """Regions load independently: a bad region fails its own chunks, every time."""
    want, _ = _make(store_dir)
    _region(store_dir, "1.1.json").write_bytes(b"not json")
    a = _open(store_dir)
    np.testing.assert_array_equal(a[0:4, 0:6], want[0:4, 0:6])
    for _ in range(2):
        with pytest.raises(ManifestFormatError, match=r"1\.1\.json"):
            a[12:16, 24:30]


def test_default_deny_applies_per_region(store_dir: Path, tmp_path: Path) -> None:
    want, _ = _make(store_dir)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(bytes(96))
    _region(store_dir, "0.0.json").write_bytes(
        orjson.dumps({"0.0": {"path": "../../outside.bin", "offset": 0, "length": 96}})
    )
    a = _open(store_dir)
    np.testing.assert_array_equal(a[36:40, 54:60], want[36:40, 54:60])
    with pytest.raises(SourceNotAllowedError):
        a[0:4, 0:6]
    allowed = ManifestStore(store_dir, allowed_prefixes=[tmp_path.as_uri() + "/"])
    assert (zarr.open_array(allowed, path="a", mode="r")[0:4, 0:6] == 0).all()


def test_split_manifest_of_many_paths_round_trips(store_dir: Path) -> None:
    """Each region's path table maps into one node-wide table: ids agree across regions."""
    paths = np.array([f"../data/f{(i * 7) % 13}.bin" for i in range(100)], dtype=object)
    manifest = ChunkManifest.from_arrays(
        paths=paths.reshape(GRID),
        offsets=np.arange(100).reshape(GRID) * 96,
        lengths=np.full(GRID, 96),
    )
    files = split_manifest(manifest, (4, 4))
    assert set(files) == {f"{i}.{j}.json" for i in range(3) for j in range(3)} | {"index.json"}
    group = ManifestGroup(arrays={"a": ManifestArray(_metadata(), manifest)})
    group.to_store(store_dir, split_above=0, region_shape=(4, 4))
    assert ManifestGroup.from_store(store_dir)["a"].manifest == manifest
    store = ManifestStore(store_dir)
    node = store._node("a")
    assert node is not None
    for i, j in [(9, 9), (0, 0), (5, 2)]:
        chunk = store._route(f"a/c/{i}/{j}")
        assert isinstance(chunk, Chunk)
        assert node._path_list[chunk.pid] == paths[i * 10 + j]
        assert chunk.offset == (i * 10 + j) * 96
    assert node.manifest == manifest


def test_to_store_default_threshold_is_the_format_default() -> None:
    default = inspect.signature(ManifestGroup.to_store).parameters["split_above"].default
    assert default == split_mod.DEFAULT_SPLIT_ABOVE


@pytest.mark.timeout(60)
def test_remote_readahead_stays_in_the_region(
    clean_range_server: Any,
    serve_bytes: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over HTTP, a chunk read fetches its region's block only, parsing only that region."""
    values = np.arange(SHAPE[0] * SHAPE[1], dtype="<i4").reshape(SHAPE)
    blocks = [values[i * 4 : i * 4 + 4, j * 6 : j * 6 + 6].tobytes() for i, j in np.ndindex(*GRID)]
    rel = serve_bytes(b"".join(blocks), "raw.bin")
    manifest = ChunkManifest.from_arrays(
        paths=clean_range_server.url_for(rel),
        offsets=np.arange(100).reshape(GRID) * 96,
        lengths=np.full(GRID, 96),
    )
    group = ManifestGroup(arrays={"a": ManifestArray(_metadata(), manifest)})
    group.to_store(tmp_path / "store", split_above=0, region_shape=REGIONS)
    seen = _count_region_loads(monkeypatch)
    store = ManifestStore(tmp_path / "store", allowed_prefixes=[clean_range_server.url + "/"])
    a = zarr.open_array(store, path="a", mode="r")
    np.testing.assert_array_equal(a[0:4, 0:6], values[0:4, 0:6])
    assert seen == ["0.0.json"]
    # one block: region 0.0's chunks (rows 0-2, columns 0-3) and the gaps between them
    ranges = clean_range_server.ranges(rel)
    assert len(ranges) == 1 and ranges[0][1] - ranges[0][0] == (2 * 10 + 4) * 96
    np.testing.assert_array_equal(a[...], values)
    assert len(seen) == 12
    assert clean_range_server.request_count(rel, "GET") <= 12


def test_huge_region_is_refused_before_allocation(store_dir: Path) -> None:
    """A zarr.json can declare a region of 10^12 chunks: refused, not allocated."""
    want, _ = _make(store_dir)
    path = store_dir / "a" / "zarr.json"
    doc = orjson.loads(path.read_bytes())
    doc["shape"] = [4 * 10**6, 6 * 10**6]
    path.write_bytes(orjson.dumps(doc))
    _edit_config(store_dir, split={"version": 1, "region_shape": [10**6, 10**6]})
    manifest_dir = store_dir / "a" / "manifest"
    (manifest_dir / "index.json").write_bytes(b'{"regions": ["0.0"]}')
    entry = {"path": "../data/raw.bin", "offset": 6, "length": 96}
    (manifest_dir / "0.0.json").write_bytes(orjson.dumps({"0.0": entry}))
    with pytest.raises(ManifestFormatError, match="1000000000000 grid cells"):
        _open(store_dir)[0:4, 0:6]
    with pytest.raises(ManifestFormatError, match="grid cells"):
        ManifestGroup.from_store(store_dir)
    # With small regions the same 10^12-chunk grid reads chunk by chunk (at offset 6 lies
    # chunk (9, 9) of the original data); only a whole-manifest view is refused.
    _edit_config(store_dir, split={"version": 1, "region_shape": [1000, 1000]})
    np.testing.assert_array_equal(_open(store_dir)[0:4, 0:6], want[36:40, 54:60])
    with pytest.raises(ManifestFormatError, match="cells"):
        ManifestGroup.from_store(store_dir)
