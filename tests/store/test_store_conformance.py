"""zarr's own store conformance suite (`zarr.testing.store.StoreTests`) run on ManifestStore.

The store is read-only, so the suite's ``set`` / ``get`` helpers write and read the
manifest store's storage directly (a local directory): keys outside virtual arrays are
ordinary objects of the hierarchy, which the store serves as they are.  Tests that write
through the store are re-expressed as "put the same content in the storage, then read it
through the store"; those that can only apply to a writable store are skipped, each with
its reason.  Where a test writes a ``zarr.json``, the re-expression writes a valid node
document, since the store parses those to route keys (a garbage zarr.json is a
`ManifestFormatError`, tested in test_manifest_store.py).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import orjson
import pytest
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype
from zarr.core.sync import _collect_aiterator
from zarr.testing.store import StoreTests
from zarr.testing.utils import assert_bytes_equal

from zarr_manifest import ManifestStore

READ_ONLY = "store was opened in read-only mode and does not support writing"

GROUP_DOC = orjson.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})


def _array_doc(shape: list[int], chunks: list[int]) -> bytes:
    """An ordinary (inline) uint8 array's zarr.json."""
    return orjson.dumps(
        {
            "zarr_format": 3,
            "node_type": "array",
            "shape": shape,
            "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0,
            "codecs": [{"name": "bytes"}],
            "attributes": {},
        }
    )


ARRAY_DOC = _array_doc([10], [1])


def _sliced(data: bytes, byte_range: Any) -> bytes:
    """What a byte request selects of ``data``, as zarr's own stores answer it."""
    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    return data[max(len(data) - byte_range.suffix, 0) :]


class TestManifestStoreConformance(StoreTests[ManifestStore, cpu.Buffer]):
    store_cls = ManifestStore
    buffer_cls = cpu.Buffer

    # ---- the suite's hooks --------------------------------------------------------------

    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        root = tmp_path / "store"
        root.mkdir()
        return {"root": str(root)}

    async def set(self, store: ManifestStore, key: str, value: Buffer) -> None:
        path = Path(store._args["root"]) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(value.to_bytes())

    async def get(self, store: ManifestStore, key: str) -> Buffer:
        return self.buffer_cls.from_bytes((Path(store._args["root"]) / key).read_bytes())

    async def put_all(self, store: ManifestStore, items: dict[str, bytes]) -> None:
        for key, value in items.items():
            await self.set(store, key, self.buffer_cls.from_bytes(value))

    # ---- abstract tests -----------------------------------------------------------------

    def test_store_repr(self, store: ManifestStore) -> None:
        root = Path(store._args["root"]).resolve().as_uri()
        assert repr(store) == f"ManifestStore({root + '/'!r})"

    def test_store_supports_writes(self, store: ManifestStore) -> None:
        assert not store.supports_writes
        assert not store.supports_deletes

    def test_store_supports_listing(self, store: ManifestStore) -> None:
        assert store.supports_listing

    # ---- read-only: re-expressed ----------------------------------------------------------

    def test_store_read_only(self, store: ManifestStore) -> None:
        # the suite asserts a fresh store is writable; this one never is
        assert store.read_only
        with pytest.raises(AttributeError):
            store.read_only = False  # type: ignore[misc]

    @pytest.mark.parametrize("read_only", [True, False])
    async def test_store_open_read_only(self, open_kwargs: dict[str, Any], read_only: bool) -> None:
        open_kwargs["read_only"] = read_only
        if not read_only:
            with pytest.raises(ValueError, match="read-only"):
                await self.store_cls.open(**open_kwargs)
            return
        store = await self.store_cls.open(**open_kwargs)
        assert store._is_open
        assert store.read_only

    async def test_with_read_only_store(self, open_kwargs: dict[str, Any]) -> None:
        store = await self.store_cls.open(**{**open_kwargs, "read_only": True})
        with pytest.raises(ValueError, match=READ_ONLY):
            await store.set("foo", self.buffer_cls.from_bytes(b"bar"))
        # There is no writable copy to make: asking for one is refused.
        with pytest.raises(ValueError, match="read-only"):
            store.with_read_only(read_only=False)
        reader = store.with_read_only(read_only=True)
        assert reader.read_only
        assert not reader._is_open
        assert reader == store
        with pytest.raises(ValueError, match=READ_ONLY):
            await reader.set("foo", self.buffer_cls.from_bytes(b"bar"))
        with pytest.raises(ValueError, match=READ_ONLY):
            await reader.delete("foo")

    async def test_serializable_store(self, store: ManifestStore) -> None:
        new_store = pickle.loads(pickle.dumps(store))
        assert new_store == store
        assert new_store.read_only == store.read_only
        data_buf = self.buffer_cls.from_bytes(b"\x01\x02\x03\x04")
        await self.set(store, "foo", data_buf)
        observed = await new_store.get("foo", prototype=default_buffer_prototype())
        assert_bytes_equal(observed, data_buf)

    @pytest.mark.parametrize("key", ["zarr.json", "c/0", "foo/c/0.0", "foo/0/0"])
    @pytest.mark.parametrize("data", [b"\x01\x02\x03\x04", b""])
    async def test_set(self, store: ManifestStore, key: str, data: bytes) -> None:
        with pytest.raises(ValueError, match=READ_ONLY):
            await store.set(key, self.buffer_cls.from_bytes(data))
        assert not (Path(store._args["root"]) / key).exists()

    async def test_set_not_open(self, store_not_open: ManifestStore) -> None:
        assert not store_not_open._is_open
        with pytest.raises(ValueError, match=READ_ONLY):
            await store_not_open.set("c/0", self.buffer_cls.from_bytes(b"\x01"))

    async def test_set_many(self, store: ManifestStore) -> None:
        keys = ["zarr.json", "c/0", "foo/c/0.0", "foo/0/0"]
        with pytest.raises(ValueError, match=READ_ONLY):
            await store._set_many((k, self.buffer_cls.from_bytes(k.encode())) for k in keys)
        assert await store.is_empty("")

    async def test_set_if_not_exists(self, store: ManifestStore) -> None:
        data_buf = self.buffer_cls.from_bytes(b"0000")
        await self.set(store, "k", data_buf)
        with pytest.raises(ValueError, match=READ_ONLY):
            await store.set_if_not_exists("k", self.buffer_cls.from_bytes(b"1111"))
        with pytest.raises(ValueError, match=READ_ONLY):
            await store.set_if_not_exists("k2", self.buffer_cls.from_bytes(b"1111"))
        assert await store.get("k", default_buffer_prototype()) == data_buf
        assert await store.get("k2", default_buffer_prototype()) is None

    async def test_clear(self, store: ManifestStore) -> None:
        await self.set(store, "key", self.buffer_cls.from_bytes(b"something"))
        with pytest.raises(ValueError, match=READ_ONLY):
            await store.clear()
        assert not await store.is_empty("")

    def test_set_sync(self, store: ManifestStore) -> None:
        with pytest.raises(ValueError, match=READ_ONLY):
            store.set_sync("sync_set", self.buffer_cls.from_bytes(b"\x01"))
        with pytest.raises(ValueError, match=READ_ONLY):
            store.delete_sync("sync_set")

    async def test_delete(self, store: ManifestStore) -> None:
        await self.put_all(store, {"foo/zarr.json": GROUP_DOC})
        with pytest.raises(ValueError, match=READ_ONLY):
            await store.delete("foo/zarr.json")
        with pytest.raises(ValueError, match=READ_ONLY):
            store.delete_sync("foo/zarr.json")
        assert await store.exists("foo/zarr.json")

    async def test_delete_dir(self, store: ManifestStore) -> None:
        await self.put_all(store, {"zarr.json": GROUP_DOC, "foo/zarr.json": ARRAY_DOC})
        await self.put_all(store, {"foo/c/0": b"chunk"})
        with pytest.raises(ValueError, match=READ_ONLY):
            await store.delete_dir("foo")
        assert await store.exists("foo/c/0")

    async def test_delete_nonexistent_key_does_not_raise(self, store: ManifestStore) -> None:
        # Refused before the key is looked at: a read-only store deletes nothing.
        with pytest.raises(ValueError, match=READ_ONLY):
            await store.delete("nonexistent_key")

    @pytest.mark.parametrize("direction", ["set_async_get_sync", "set_sync_get_async"])
    async def test_sync_async_set_get_parity(self, store: ManifestStore, direction: str) -> None:
        pytest.skip(
            "writes through the store's sync and async APIs: ManifestStore is read-only "
            "(its sync/async read parity is test_get_sync_byte_range_parity)"
        )

    # ---- writes through the store re-expressed as writes to its storage ---------------------

    @pytest.mark.parametrize(
        "byte_range",
        [
            None,
            RangeByteRequest(1, 4),
            OffsetByteRequest(1),
            SuffixByteRequest(1),
            RangeByteRequest(10, 20),
            RangeByteRequest(2, 2),
        ],
        ids=["none", "range", "offset", "suffix", "range-past-eof", "empty-range"],
    )
    async def test_get_sync_byte_range_parity(self, store: ManifestStore, byte_range: Any) -> None:
        data_buf = self.buffer_cls.from_bytes(b"\x01\x02\x03\x04")
        await self.set(store, "parity_byte_range", data_buf)
        sync_result = store.get_sync("parity_byte_range", byte_range=byte_range)
        async_result = await store.get(
            "parity_byte_range", prototype=default_buffer_prototype(), byte_range=byte_range
        )
        assert sync_result is not None and async_result is not None
        assert_bytes_equal(sync_result, async_result)
        assert async_result.to_bytes() == _sliced(data_buf.to_bytes(), byte_range)

    @pytest.mark.parametrize(
        "key_ranges",
        [
            [],
            [("zarr.json", RangeByteRequest(0, 2))],
            [("c/0", RangeByteRequest(0, 2)), ("zarr.json", None)],
            [
                ("c/0/0", RangeByteRequest(0, 2)),
                ("c/0/1", SuffixByteRequest(2)),
                ("c/0/2", OffsetByteRequest(2)),
            ],
        ],
    )
    async def test_get_partial_values(
        self, store: ManifestStore, key_ranges: list[tuple[str, Any]]
    ) -> None:
        # As the suite, except that a zarr.json holds a group document, not its own key.
        contents = {k: GROUP_DOC if k == "zarr.json" else k.encode() for k, _ in key_ranges}
        await self.put_all(store, contents)
        observed = await store.get_partial_values(
            prototype=default_buffer_prototype(), key_ranges=(kr for kr in key_ranges)
        )
        assert len(observed) == len(key_ranges)
        for obs, (key, byte_range) in zip(observed, key_ranges, strict=True):
            assert obs is not None
            assert obs.to_bytes() == _sliced(contents[key], byte_range)

    async def test_exists(self, store: ManifestStore) -> None:
        assert not await store.exists("foo")
        await self.put_all(store, {"foo/zarr.json": GROUP_DOC})
        assert await store.exists("foo/zarr.json")
        assert not await store.exists("foo")  # a directory is not a key

    async def test_getsize_prefix(self, store: ManifestStore) -> None:
        data = b"\x01\x02\x03\x04"
        keys = ["c/0/0", "c/0/1", "c/1/0", "c/1/1"]
        await self.put_all(store, {k: data for k in [*keys, "cc/0"]})
        assert await store.getsize_prefix("c") == len(data) * len(keys)
        assert await store.getsize_prefix("c/0") == 2 * len(data)
        assert await store.getsize_prefix("") == len(data) * 5

    async def test_list(self, store: ManifestStore) -> None:
        assert await _collect_aiterator(store.list()) == ()
        # As the suite (whose foo/zarr.json is empty): foo is an ordinary array with chunks.
        contents = {"foo/zarr.json": ARRAY_DOC, **{f"foo/c/{i}": b"" for i in range(10)}}
        await self.put_all(store, contents)
        assert sorted(await _collect_aiterator(store.list())) == sorted(contents)

    async def test_list_prefix(self, store: ManifestStore) -> None:
        prefixes = ("", "a/", "a/b/", "a/b/c/")
        contents = {p + "zarr.json": GROUP_DOC for p in prefixes}
        await self.put_all(store, contents)
        for prefix in prefixes:
            observed = sorted(await _collect_aiterator(store.list_prefix(prefix)))
            assert observed == sorted(k for k in contents if k.startswith(prefix))

    async def test_list_empty_path(self, store: ManifestStore) -> None:
        contents = {
            "foo/bar/zarr.json": ARRAY_DOC,
            "foo/bar/c/1": b"",
            "foo/baz/c/0": b"",
        }
        await self.put_all(store, contents)
        assert sorted(await _collect_aiterator(store.list())) == sorted(contents)
        assert sorted(await _collect_aiterator(store.list_prefix(""))) == sorted(contents)
        observed = sorted(await _collect_aiterator(store.list_prefix("foo/bar/")))
        assert observed == ["foo/bar/c/1", "foo/bar/zarr.json"]

    async def test_list_dir(self, store: ManifestStore) -> None:
        # As the suite, with valid documents: foo an ordinary array, and the directories
        # the suite puts in it ordinary objects of that array's directory.
        roots_and_contents = [
            ("foo", {"foo/zarr.json": ARRAY_DOC, "foo/c/1": b"\x01"}),
            (
                "foo/bar",
                {
                    "foo/bar/foobar_first_child": b"1",
                    "foo/bar/foobar_second_child/zarr.json": GROUP_DOC,
                },
            ),
        ]
        assert await _collect_aiterator(store.list_dir("")) == ()
        for root, contents in roots_and_contents:
            assert await _collect_aiterator(store.list_dir(root)) == ()
            await self.put_all(store, contents)
            expected = sorted({k.removeprefix(f"{root}/").split("/")[0] for k in contents})
            assert sorted(await _collect_aiterator(store.list_dir(root))) == expected
            assert sorted(await _collect_aiterator(store.list_dir(f"{root}/"))) == expected
