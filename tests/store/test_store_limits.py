"""Resource limits of `ManifestStore` against small hostile or broken stores (issue 13):
what it keeps of parsed manifests, how large a chunk it reads, how listings scale with
depth, and how it survives pickling and forking."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import obstore
import pytest
import zarr
from zarr.abc.store import RangeByteRequest
from zarr.core.buffer import default_buffer_prototype

import zarr_manifest.store._nodes as nodes_module
from zarr_manifest import (
    ChunkManifest,
    ChunkReadError,
    ChunkTooLargeError,
    ManifestArray,
    ManifestError,
    ManifestFormatError,
    ManifestGroup,
    ManifestStore,
    ShortReadError,
    SourceNotAllowedError,
)
from zarr_manifest.store._manifest_cache import DEFAULT_MANIFEST_CACHE_BYTES
from zarr_manifest.store._references import DEFAULT_MAX_CHUNK_BYTES
from zarr_manifest.testing import RangeServer

PROTO = default_buffer_prototype()
MiB = 1 << 20


def _meta(shape: list[int], chunks: list[int]) -> dict[str, Any]:
    return {
        "shape": shape,
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes"}],
    }


def _sparse_store(root: Path, arrays: int, cells: int, **to_store: Any) -> Path:
    """``arrays`` arrays of ``cells`` one-byte chunks, only chunk i stored (value i + 1):
    tiny files whose manifests take ``3 * cells`` bytes each once parsed."""
    root.mkdir()
    data = root / "data.bin"
    data.write_bytes(bytes(range(1, arrays + 1)))
    group = ManifestGroup(
        arrays={
            f"a{i}": ManifestArray(
                _meta([cells], [1]),
                ChunkManifest(
                    {str(i): {"path": str(data), "offset": i, "length": 1}}, shape=(cells,)
                ),
            )
            for i in range(arrays)
        }
    )
    store = root / "store"
    group.to_store(store, **to_store)
    return store


def _read_each(store: ManifestStore, arrays: int) -> None:
    # chunk keys as stored: the stores read here show arrays unsharded (a sparse array
    # would otherwise be shown as virtual shards, whose keys name shards)
    for i in range(arrays):
        buf = store.get_sync(f"a{i}/c/{i}", prototype=PROTO)
        assert buf is not None and buf.to_bytes() == bytes([i + 1])


# ---- issue 13 item 7: what a store keeps of parsed manifests -------------------------------


def test_parsed_manifests_stay_within_the_cache_bound(tmp_path: Path) -> None:
    arrays, cells = 8, 1 << 20  # 3 MiB per parsed manifest, 24 MiB for all of them
    root = _sparse_store(tmp_path / "s", arrays, cells, split_above=None)
    store = ManifestStore(
        root,
        allowed_prefixes=[str(tmp_path)],
        virtual_shard_bytes=None,
        manifest_cache_bytes=4 * MiB,
    )
    gc.collect()
    tracemalloc.start()
    try:
        _read_each(store, arrays)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the bound plus the newest manifest, and some slack for everything else
    assert held < 4 * MiB + 3 * MiB + 2 * MiB, held
    assert store._manifests.size <= 4 * MiB or len(store._manifests) == 1
    # evicted manifests are parsed again when read again, and read the same
    _read_each(store, arrays)


def test_split_regions_are_evicted(tmp_path: Path) -> None:
    # regions are read with 4-byte columns: 3 MiB per region of 2^18 chunks, 18 MiB in all
    arrays, cells = 6, 1 << 19
    root = _sparse_store(tmp_path / "s", arrays, cells, split_above=0, region_shape=[1 << 18])
    store = ManifestStore(
        root,
        allowed_prefixes=[str(tmp_path)],
        virtual_shard_bytes=None,
        manifest_cache_bytes=2 * MiB,
    )
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(2):
            _read_each(store, arrays)
            for i in range(arrays):  # the other region of each array
                assert store.get_sync(f"a{i}/c/{cells - 1}", prototype=PROTO) is None
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # at most the bound and the newest stay
    assert held < 2 * MiB + 3 * MiB + 2 * MiB, held
    assert store._manifests.size <= 2 * MiB or len(store._manifests) == 1


def test_manifests_are_kept_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    real = ChunkManifest.from_json_bytes.__func__  # type: ignore[attr-defined]

    def counting(cls: type, data: bytes, **kwargs: Any) -> ChunkManifest:
        parsed.append(kwargs["location"])
        return real(cls, data, **kwargs)

    monkeypatch.setattr(nodes_module.ChunkManifest, "from_json_bytes", classmethod(counting))
    arrays, cells = 4, 1 << 16
    root = _sparse_store(tmp_path / "s", arrays, cells, split_above=None)
    store = ManifestStore(root, allowed_prefixes=[str(tmp_path)], virtual_shard_bytes=None)
    assert store._manifests.limit == DEFAULT_MANIFEST_CACHE_BYTES == 1 << 30
    for _ in range(3):
        _read_each(store, arrays)
    assert len(parsed) == arrays  # each parsed once
    small = ManifestStore(
        root, allowed_prefixes=[str(tmp_path)], virtual_shard_bytes=None, manifest_cache_bytes=0
    )
    parsed.clear()
    for _ in range(3):
        _read_each(small, arrays)
    assert len(parsed) == 3 * arrays  # read in turn, each is evicted before it is read again
    np.testing.assert_array_equal(
        zarr.open_array(small, path="a2", mode="r")[:4], np.array([0, 0, 3, 0], dtype=np.uint8)
    )


def test_manifest_cache_bytes_is_checked(tmp_path: Path) -> None:
    root = _sparse_store(tmp_path / "s", 1, 4)
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="manifest_cache_bytes"):
            ManifestStore(root, manifest_cache_bytes=bad)  # type: ignore[arg-type]


# ---- issue 13 item 9: a per-chunk size cap ---------------------------------------------------


def _one_chunk_group(path: Path, offset: int, length: int, chunk: int) -> ManifestGroup:
    manifest = ChunkManifest(
        {"0": {"path": str(path), "offset": offset, "length": length}}, shape=(1,)
    )
    return ManifestGroup(arrays={"a": ManifestArray(_meta([chunk], [chunk]), manifest)})


async def test_a_chunk_over_the_cap_is_refused_naming_its_key(tmp_path: Path) -> None:
    data = tmp_path / "d.bin"
    data.write_bytes(bytes(range(256)) * 256)  # 64 KiB
    store = ManifestStore(_one_chunk_group(data, 0, 65536, 65536), max_chunk_bytes=60000)
    with pytest.raises(
        ChunkTooLargeError, match=r"'a/c/0'.*65536 bytes.*max_chunk_bytes=60000"
    ) as e:
        store.get_sync("a/c/0", prototype=PROTO)
    assert e.value.key == "a/c/0"
    with pytest.raises(ChunkTooLargeError):
        await store.get("a/c/0", PROTO)
    with pytest.raises(ChunkTooLargeError):
        await store.get_partial_values(PROTO, [("a/c/0", None)])
    with pytest.raises(ChunkTooLargeError):
        zarr.open_array(store, path="a", mode="r")[...]
    # a part of the chunk within the cap is read; its size is known without reading
    part = await store.get("a/c/0", PROTO, RangeByteRequest(0, 1000))
    assert part is not None and part.to_bytes() == data.read_bytes()[:1000]
    assert await store.getsize("a/c/0") == 65536
    # the same chunk under a larger cap reads
    ok = ManifestStore(_one_chunk_group(data, 0, 65536, 65536), max_chunk_bytes=65536)
    np.testing.assert_array_equal(
        zarr.open_array(ok, path="a", mode="r")[...], np.frombuffer(data.read_bytes(), np.uint8)
    )


def test_the_default_cap_refuses_a_chunk_over_1_gib_before_any_io(tmp_path: Path) -> None:
    data = tmp_path / "d.bin"
    data.write_bytes(b"0123456789")
    # a 2^30 + 1 byte chunk of a 10 byte file: refused for its size, not read short
    store = ManifestStore(_one_chunk_group(data, 0, (1 << 30) + 1, (1 << 30) + 1))
    with pytest.raises(ChunkTooLargeError, match="max_chunk_bytes=1073741824"):
        store.get_sync("a/c/0", prototype=PROTO)
    assert DEFAULT_MAX_CHUNK_BYTES == 1 << 30
    # at the cap, the read goes ahead (and finds the file short)
    store = ManifestStore(_one_chunk_group(data, 0, 1 << 30, 1 << 30))
    with pytest.raises(ShortReadError):
        store.get_sync("a/c/0", prototype=PROTO)


def _overlapping_group(path: Path, chunks: int, length: int) -> ManifestGroup:
    """``chunks`` chunks of ``length`` bytes that all reference the same bytes of ``path``."""
    manifest = ChunkManifest.from_arrays(
        paths=np.full(chunks, str(path), dtype=object),
        offsets=np.zeros(chunks, dtype=np.uint64),
        lengths=np.full(chunks, length, dtype=np.uint64),
    )
    return ManifestGroup(arrays={"a": ManifestArray(_meta([chunks * length], [length]), manifest)})


def test_overlapping_references_cannot_build_a_shard_over_the_cap(tmp_path: Path) -> None:
    data = tmp_path / "d.bin"
    data.write_bytes(bytes(range(256)) * 16)  # 4 KiB, referenced 4096 times: a 16 MiB shard
    group = _overlapping_group(data, 4096, 4096)
    store = ManifestStore(group, virtual_shard_bytes=64 * MiB, max_chunk_bytes=MiB)
    with pytest.raises(ChunkTooLargeError, match="virtual shard 'a/c/0'") as e:
        store.get_sync("a/c/0", prototype=PROTO)
    assert e.value.key == "a/c/0"
    with pytest.raises(ChunkTooLargeError):
        zarr.open_array(store, path="a", mode="r")[...]  # zarr asks for whole shards
    # a few chunks of a shard are read by their own byte ranges, each within the cap
    np.testing.assert_array_equal(
        zarr.open_array(store, path="a", mode="r")[4090:4100], np.arange(4090, 4100) % 256
    )
    # unsharded, each chunk is within the cap and reads
    plain = ManifestStore(group, max_chunk_bytes=MiB)
    assert zarr.open_array(plain, path="a", mode="r")[4095 * 4096 + 5] == 5


async def test_a_remote_shard_reserves_no_room_before_its_bytes_arrive(
    clean_range_server: RangeServer, serve_bytes: Callable[..., str]
) -> None:
    # 256 chunks of 256 KiB promised, from a 64 KiB file: a 64 MiB shard that cannot be read
    url = clean_range_server.url_for(serve_bytes(bytes(65536), "short.bin"))
    chunks, length = 256, 256 * 1024
    manifest = ChunkManifest.from_arrays(
        paths=np.full(chunks, url, dtype=object),
        offsets=np.arange(chunks, dtype=np.uint64) * length,
        lengths=np.full(chunks, length, dtype=np.uint64),
    )
    group = ManifestGroup(arrays={"a": ManifestArray(_meta([chunks * length], [length]), manifest)})
    store = ManifestStore(group, virtual_shard_bytes=1 << 30, max_chunk_bytes=1 << 30)
    gc.collect()
    tracemalloc.start()
    try:
        with pytest.raises(ShortReadError):
            await store.get("a/c/0", PROTO)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, peak  # not the 64 MiB the manifest promised


async def test_a_remote_chunk_over_the_cap_is_not_requested(
    clean_range_server: RangeServer, serve_bytes: Callable[..., str]
) -> None:
    path = serve_bytes(bytes(65536), "big.bin")
    url = clean_range_server.url_for(path)
    manifest = ChunkManifest({"0": {"path": url, "offset": 0, "length": 65536}}, shape=(1,))
    group = ManifestGroup(arrays={"a": ManifestArray(_meta([65536], [65536]), manifest)})
    store = ManifestStore(group, max_chunk_bytes=1000)
    with pytest.raises(ChunkTooLargeError):
        await store.get("a/c/0", PROTO)
    assert clean_range_server.request_count(path.removeprefix("/"), "GET") == 0


# ---- issue 13 item 10: listing a deep hierarchy ---------------------------------------------

GROUP_DOC = b'{"zarr_format": 3, "node_type": "group", "attributes": {}}'


class _ListingCounter:
    """Counts the entries the root storage's listings return (patched into obstore)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
        self.entries = 0
        self.limit = limit
        real_list, real_delimited = obstore.list, obstore.list_with_delimiter

        def listed(*args: Any, **kwargs: Any) -> Any:
            return _Counted(real_list(*args, **kwargs), self._count)

        def delimited(*args: Any, **kwargs: Any) -> Any:
            result = real_delimited(*args, **kwargs)
            self._count(len(result["objects"]) + len(result["common_prefixes"]))
            return result

        monkeypatch.setattr(obstore, "list", listed)
        monkeypatch.setattr(obstore, "list_with_delimiter", delimited)

    def _count(self, n: int) -> None:
        self.entries += n
        # stop a runaway walk early rather than after minutes
        assert self.entries <= self.limit, f"listings returned over {self.limit} entries"


class _Counted:
    """An obstore list stream whose entries are counted as they are taken."""

    def __init__(self, stream: Any, count: Callable[[int], None]) -> None:
        self._stream = stream
        self._count = count

    def collect(self) -> list[Any]:
        items = self._stream.collect()
        self._count(len(items))
        return items

    def __iter__(self) -> Any:
        for batch in self._stream:
            self._count(len(batch))
            yield batch


def test_walking_a_deep_hierarchy_lists_each_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    depth = 300
    root = tmp_path / "deep"
    node = root
    for _ in range(depth + 1):
        node.mkdir()
        (node / "zarr.json").write_bytes(GROUP_DOC)
        node = node / "g"
    counter = _ListingCounter(monkeypatch, limit=10 * depth)
    group = zarr.open_group(ManifestStore(root), mode="r")
    members = dict(group.members(max_depth=None))
    assert len(members) == depth
    assert "/".join(["g"] * depth) in members
    # each group's directory is listed once: its zarr.json and its child, two entries
    assert counter.entries <= 3 * (depth + 1), counter.entries


def _mixed_group(data: Path) -> ManifestGroup:
    """Groups, virtual arrays (one nested, one at the root), an inline array."""
    from zarr_manifest import InlineArray

    entry = {"path": str(data), "offset": 0, "length": 4}
    a = ManifestArray(_meta([8], [4]), ChunkManifest({"0": entry, "1": entry}, shape=(2,)))
    b = ManifestArray(_meta([4], [4]), ChunkManifest({"0": entry}, shape=(1,)))
    inner = ManifestGroup(arrays={"b": b}, groups={"h": ManifestGroup(arrays={"b2": b})})
    return ManifestGroup(
        arrays={"a": a, "coord": InlineArray.from_numpy(np.arange(4, dtype=np.uint8))},
        groups={"g": inner},
    )


def _reference_names(store: ManifestStore, prefix: str) -> list[str]:
    """What list_dir showed before it listed one directory: the first parts of the keys
    of the whole listing under ``prefix`` (only chunk keys of arrays holding it)."""
    from zarr_manifest.store._listing import keys_under

    start = f"{prefix}/" if prefix else ""
    names: list[str] = []
    for key in keys_under(store._router, store._objects, start, inside_only=True):
        name = key[len(start) :].split("/", 1)[0]
        if name not in names:
            names.append(name)
    return names


@pytest.mark.parametrize("where", ["disk", "memory"])
async def test_list_dir_shows_what_the_whole_listing_shows(tmp_path: Path, where: str) -> None:
    data = tmp_path / "raw.bin"
    data.write_bytes(b"abcdefgh")
    group = _mixed_group(data)
    if where == "memory":
        store = ManifestStore(group)
    else:
        root = tmp_path / "store"
        group.to_store(root)
        # things zarr is not shown: files beside nodes, non-node directories, an empty one
        (root / "README").write_bytes(b"hi")
        (root / "data").mkdir()
        (root / "data" / "x.bin").write_bytes(b"x")
        (root / "g" / "junk" / "deeper").mkdir(parents=True)
        (root / "g" / "junk" / "deeper" / "y").write_bytes(b"y")
        (root / "g" / "empty").mkdir()
        (root / "g" / "h" / "b2" / "stray.txt").write_bytes(b"s")
        store = ManifestStore(root, allowed_prefixes=[str(tmp_path)])
    keys = [k async for k in store.list()]
    prefixes = {"", "nope", "a/c", "g/junk", "g/junk/deeper", "data", "g/empty", "a//c", ".."}
    for key in keys:
        parts = key.split("/")
        prefixes.update("/".join(parts[:i]) for i in range(1, len(parts)))
    for prefix in sorted(prefixes):
        got = [n async for n in store.list_dir(prefix)]
        assert got == _reference_names(store, prefix), prefix
    assert [n async for n in store.list_dir("g")] == ["b", "h", "zarr.json"]
    assert [n async for n in store.list_dir("a")] == ["zarr.json", "c"]


# ---- issue 13 item 14: a pickled store reopens the same store elsewhere ----------------------


def _store_of(directory: Path, value: int) -> None:
    """A store at ``directory/store`` whose one chunk, in ``directory/data/d.bin``, reads
    ``value`` (its reference relative, its data directory allowed by a relative prefix)."""
    (directory / "data").mkdir(parents=True)
    (directory / "data" / "d.bin").write_bytes(bytes([value]) * 4)
    manifest = ChunkManifest(
        {"0": {"path": str(directory / "data" / "d.bin"), "offset": 0, "length": 4}}, shape=(1,)
    )
    ManifestGroup(arrays={"a": ManifestArray(_meta([4], [4]), manifest)}).to_store(
        directory / "store"
    )


def test_a_pickled_store_with_relative_paths_reopens_the_same_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    _store_of(tmp_path / "one", 1)
    _store_of(tmp_path / "two", 2)
    monkeypatch.chdir(tmp_path / "one")
    store = ManifestStore("store", allowed_prefixes=["data/"])
    group = ManifestGroup(
        arrays={
            "a": ManifestArray(
                _meta([4], [4]),
                ChunkManifest({"0": {"path": "data/d.bin", "offset": 0, "length": 4}}, shape=(1,)),
            )
        }
    )
    in_memory = ManifestStore(group)
    for s in (store, in_memory):
        assert zarr.open_array(s, path="a", mode="r")[0] == 1
    pickled = [pickle.dumps(s) for s in (store, in_memory)]
    # a worker whose working directory holds another store of the same relative layout
    monkeypatch.chdir(tmp_path / "two")
    for data in pickled:
        copy = pickle.loads(data)
        assert zarr.open_array(copy, path="a", mode="r")[0] == 1
    assert pickle.loads(pickled[0]) == store


# ---- issue 13 item 13: a store used before a fork, in the forked child -----------------------


def _read_in_child(store: ManifestStore, queue: Any) -> None:
    try:
        queue.put(bytes(zarr.open_array(store, path="a", mode="r")[...]))
    except Exception as exc:  # reported to the parent, which checks its type
        queue.put(exc)


def _in_forked_child(store: ManifestStore) -> Any:
    """What reading array "a" in a child forked now gives (bytes or the error raised)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(store, queue))
    child.start()
    child.join(30)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("the forked child hung")
    return queue.get(timeout=5)


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_store_used_before_fork_reads_local_data_in_the_child(
    tmp_path: Path, clean_range_server: RangeServer, serve_bytes: Callable[..., str]
) -> None:
    _store_of(tmp_path / "one", 7)
    local = ManifestStore(tmp_path / "one" / "store", allowed_prefixes=[str(tmp_path)])
    url = clean_range_server.url_for(serve_bytes(bytes([5]) * 4, "fork.bin"))
    manifest = ChunkManifest({"0": {"path": url, "offset": 0, "length": 4}}, shape=(1,))
    # (no readahead: the child must fetch, not find the parent's cached block)
    remote = ManifestStore(
        ManifestGroup(arrays={"a": ManifestArray(_meta([4], [4]), manifest)}), readahead_bytes=0
    )
    # the parent uses both (which starts obstore's runtime, async and network)
    assert bytes(zarr.open_array(local, path="a", mode="r")[...]) == bytes([7]) * 4
    assert bytes(zarr.open_array(remote, path="a", mode="r")[...]) == bytes([5]) * 4
    # local data reads in the child; remote data, which obstore cannot fetch there, is
    # refused with an error saying why, instead of a hang
    assert _in_forked_child(local) == bytes([7]) * 4
    got = _in_forked_child(remote)
    assert isinstance(got, ChunkReadError), got
    assert "forked" in str(got) and "spawn" in str(got) and "'a/c/0'" in str(got)


# ---- issue 13 item 15: inputs numpy cannot hold raise documented errors ----------------------


def test_a_70_dimension_array_is_a_documented_error(tmp_path: Path) -> None:
    import json

    ndim = 70
    root = tmp_path / "s"
    (root / "a").mkdir(parents=True)
    (root / "zarr.json").write_bytes(GROUP_DOC)
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        **_meta([1] * ndim, [1] * ndim),
        "storage_transformers": [
            {"name": "chunk-manifest-json", "configuration": {"manifest": "manifest.json"}}
        ],
    }
    (root / "a" / "zarr.json").write_text(json.dumps(meta))
    key = ".".join(["0"] * ndim)
    entry = {"path": "x.bin", "offset": 0, "length": 1}
    (root / "a" / "manifest.json").write_text(json.dumps({key: entry}))
    (root / "a" / "x.bin").write_bytes(b"\x07")
    store = ManifestStore(root)
    with pytest.raises(ManifestFormatError, match=r"a/zarr.json.*70 dimensions") as e:
        store.get_sync("a/c/" + "/".join(["0"] * ndim), prototype=PROTO)
    assert e.value.location is not None and e.value.location.endswith("a/zarr.json")
    with pytest.raises(ManifestFormatError):
        zarr.open_array(store, path="a", mode="r")
    # the same manifest built in memory
    with pytest.raises(ManifestError, match="70 dimensions"):
        ChunkManifest({key: {**entry, "path": str(root / "a" / "x.bin")}})
    with pytest.raises(ManifestError, match="70 dimensions"):
        ChunkManifest({}, shape=(1,) * ndim)


# ---- issue 13 item 6: a FIFO in the store is refused without blocking ------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["manifest.json", "zarr.json"])
def test_a_fifo_in_the_store_is_refused_without_blocking(tmp_path: Path, name: str) -> None:
    import os

    _store_of(tmp_path, 3)
    fifo = tmp_path / "store" / "a" / name
    fifo.unlink()
    os.mkfifo(fifo)
    store = ManifestStore(tmp_path / "store", allowed_prefixes=[str(tmp_path)])
    with pytest.raises(SourceNotAllowedError, match="not a regular file") as e:
        store.get_sync("a/c/0", prototype=PROTO)
    assert e.value.key == f"a/{name}"
