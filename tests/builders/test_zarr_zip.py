"""Zipped Zarr stores: chunks as byte ranges of the zip, checked against zarr's ZipStore."""

from __future__ import annotations

import shutil
import struct
import subprocess
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

import zarr_manifest as zm
from zarr_manifest import BuildError, InlineArray, ManifestArray, ManifestGroup, UnsupportedError
from zarr_manifest.builders import detect_format

pytestmark = [
    pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning"),
    pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning"),
    # ZipStore appends a member again when zarr rewrites a key (zipfile warns)
    pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning"),
]


def _write(store: zarr.abc.store.Store, zarr_format: int) -> None:
    """A small hierarchy with zarr's defaults: compressed chunks, a missing chunk, a sub-group."""
    root = zarr.open_group(store, mode="w", zarr_format=zarr_format)
    data = np.random.default_rng(0).normal(size=(20, 13)).astype("f4")
    data[:6, :5] = 0  # zarr does not write an all-fill chunk: a missing chunk
    temp = root.create_array("temp", shape=(20, 13), chunks=(6, 5), dtype="f4", fill_value=0)
    temp[:] = data
    sub = root.create_group("sub")
    count = sub.create_array("count", shape=(9,), chunks=(4,), dtype=">i8", fill_value=-1)
    count[:5] = np.arange(5) * 10**12
    root.attrs["title"] = "zipped"  # rewrites the root metadata: a second member of that name


def _zipstore(path: Path, zarr_format: int) -> Path:
    store = zarr.storage.ZipStore(path, mode="w")
    _write(store, zarr_format)
    store.close()
    return path


def _arrays(group: ManifestGroup) -> dict[str, ManifestArray | InlineArray]:
    return {p: n for p, n in group.walk() if isinstance(n, ManifestArray | InlineArray)}


def _assert_reads_like(built: ManifestGroup, reference: zarr.Group, open_built) -> None:
    virtual = open_built(built)
    assert virtual.attrs.asdict() == reference.attrs.asdict()
    expected = {p: a for p, a in reference.members(max_depth=None) if isinstance(a, zarr.Array)}
    assert sorted(_arrays(built)) == sorted(expected)
    for path, array in expected.items():
        got = virtual[path][...]
        want = array[...]
        assert got.dtype == want.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got, want, err_msg=path)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zipstore_chunks_are_byte_ranges_of_the_zip(tmp_path, open_built, zarr_format):
    path = _zipstore(tmp_path / "data.zarr.zip", zarr_format)
    assert detect_format(path) == "zip"
    built = zm.open_virtual(path, load=())
    _assert_reads_like(
        built, zarr.open_group(zarr.storage.ZipStore(path, mode="r"), mode="r"), open_built
    )
    url = path.resolve().as_uri()
    arrays = _arrays(built)
    assert all(isinstance(a, ManifestArray) for a in arrays.values())
    # every chunk is a range of the zip itself, the member's bytes exactly
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    raw = path.read_bytes()
    n = 0
    for array in arrays.values():
        assert isinstance(array, ManifestArray)
        assert tuple(array.manifest.path_table) == (url,)
        for _, entry in array.manifest.items():
            chunk = raw[entry["offset"] : entry["offset"] + entry["length"]]
            assert chunk in members.values()
            n += 1
    assert n == 4 * 3 - 1 + 2  # temp: one chunk missing; count: chunk 2 never written


def _zip_directory(tmp_path: Path, archiver: str) -> Path:
    """``tmp_path/store.zarr`` zipped as users do: Info-ZIP's ``zip -r`` (DEFLATE where it
    helps; extra fields in the local headers that the central directory lacks), ``zip -r0``
    (nothing compressed), or Python's ``shutil.make_archive`` (DEFLATE throughout)."""
    archive = tmp_path / f"{archiver.replace(' ', '_')}.zip"
    if archiver == "shutil":
        made = shutil.make_archive(str(archive.with_suffix("")), "zip", tmp_path, "store.zarr")
        return Path(made)
    if shutil.which("zip") is None:
        pytest.skip("Info-ZIP's zip is not installed")
    flag = archiver.split()[1]
    subprocess.run(["zip", "-q", flag, archive.name, "store.zarr"], cwd=tmp_path, check=True)
    return archive


@pytest.mark.parametrize(
    ("archiver", "loaded"),
    [
        ("shutil", {"temp", "sub/count", "plain"}),
        # zstd chunks gain nothing from DEFLATE: zip stores them; "plain" it compresses
        ("zip -r", {"plain"}),
        ("zip -r0", set()),
    ],
)
def test_a_zipped_directory_store(tmp_path, open_built, archiver, loaded):
    """The store is the zip's one directory; compressed members are never referenced: their
    arrays are loaded with a warning, the others referenced."""
    directory = tmp_path / "store.zarr"
    _write(zarr.storage.LocalStore(directory), 3)
    plain = zarr.open_group(directory, mode="a").create_array(
        "plain", shape=(50,), chunks=(25,), dtype="i4", compressors=None
    )
    plain[:] = np.arange(50)
    archive = _zip_directory(tmp_path, archiver)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = zm.open_virtual(archive, load=())
    inline = {p for p, a in _arrays(built).items() if isinstance(a, InlineArray)}
    assert inline == loaded
    messages = [str(w.message) for w in caught if "compressed zip members" in str(w.message)]
    assert sorted(m.split("array ")[1].split(" ")[0] for m in messages) == sorted(
        repr(p) for p in loaded
    )
    zipped = zarr.open_group(zarr.storage.ZipStore(archive, mode="r"), path="store.zarr", mode="r")
    _assert_reads_like(built, zipped, open_built)


def test_zip64_local_headers_place_the_data(tmp_path, open_built):
    """zipfile's ZIP64 members carry a longer extra field in the local header than in the
    central directory: the data starts where the local header says."""
    source = _zipstore(tmp_path / "plain.zip", 3)
    path = tmp_path / "zip64.zip"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            with dst.open(zipfile.ZipInfo(info.filename), "w", force_zip64=True) as out:
                out.write(src.read(info))
    built = zm.open_virtual(path, load=())
    _assert_reads_like(
        built, zarr.open_group(zarr.storage.ZipStore(path, mode="r"), mode="r"), open_built
    )


def _central_record(data: bytes, name: bytes) -> int:
    """Where the central directory record of member ``name`` starts."""
    at = data.index(b"PK\x01\x02")
    while True:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + name_len] == name:
            return at
        at = data.index(b"PK\x01\x02", at + 4)


def test_a_local_header_that_disagrees_is_refused(tmp_path):
    path = _zipstore(tmp_path / "data.zip", 3)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("temp/c/1/1")
    name_at = info.header_offset + 30
    data[name_at + len("temp/c/1/") : name_at + len("temp/c/1/1")] = b"2"
    broken = tmp_path / "broken.zip"
    broken.write_bytes(bytes(data))
    with pytest.raises(BuildError, match=r"temp/c/1/1.*local header names b'temp/c/1/2'"):
        zm.open_virtual(broken, load=())


def test_an_encrypted_member_is_refused(tmp_path):
    path = _zipstore(tmp_path / "data.zip", 3)
    data = bytearray(path.read_bytes())
    at = _central_record(bytes(data), b"temp/c/0/1")
    data[at + 8] |= 0x01  # general purpose flag bit 0: encrypted
    encrypted = tmp_path / "encrypted.zip"
    encrypted.write_bytes(bytes(data))
    with pytest.raises(UnsupportedError, match=r"'temp/c/0/1' is encrypted"):
        zm.open_virtual(encrypted, load=())


def test_a_zip_without_zarr_metadata_is_refused(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "not a zarr store")
    with pytest.raises(BuildError, match="no Zarr metadata"):
        zm.open_virtual(path)


def test_format_zip_and_group(tmp_path, open_built):
    path = _zipstore(tmp_path / "data.bin", 2)
    shutil.copy(path, tmp_path / "copy.zip")
    built = zm.open_virtual(tmp_path / "copy.zip", format="zipped-zarr", group="sub", load=())
    reference = zarr.open_group(zarr.storage.ZipStore(path, mode="r"), path="sub", mode="r")
    _assert_reads_like(built, reference, open_built)


def test_a_remote_zip_over_http(tmp_path, open_built, clean_range_server, serve_bytes):
    """The central directory and local headers read by ranges from a server; the chunks
    referenced under the zip's URL."""
    path = _zipstore(tmp_path / "data.zarr.zip", 3)
    url = clean_range_server.url_for(serve_bytes(path.read_bytes(), "data.zarr.zip"))
    built = zm.open_virtual(url, load=(), fingerprints=False)
    local = zm.open_virtual(path, load=(), fingerprints=False)
    assert built.rename_paths(path.resolve().as_uri()) == local
    _assert_reads_like(
        built, zarr.open_group(zarr.storage.ZipStore(path, mode="r"), mode="r"), open_built
    )


def test_a_large_compressed_array_is_refused_not_loaded(tmp_path, monkeypatch):
    """Loading on the builder's own initiative is capped (a zip bomb cannot fill memory):
    above the cap the error names the array and both ways out; ``load=`` still loads it."""
    from zarr_manifest.builders import zarr as zarr_builder

    directory = tmp_path / "store.zarr"
    group = zarr.open_group(directory, mode="w")
    group.create_array("plain", shape=(500,), chunks=(100,), dtype="i4", compressors=None)[:] = (
        np.arange(500)
    )
    archive = _zip_directory(tmp_path, "shutil")  # DEFLATE: no chunk can be referenced
    monkeypatch.setattr(zarr_builder, "MAX_AUTO_LOAD_BYTES", 1999)  # the values take 2000
    with pytest.raises(UnsupportedError) as refused:
        zm.open_virtual(archive, load=())
    message = str(refused.value)
    assert "'plain'" in message and "compressed zip members" in message
    assert "load=['plain']" in message and "drop=['plain']" in message
    monkeypatch.setattr(zarr_builder, "MAX_AUTO_LOAD_BYTES", 10_000)
    with pytest.warns(UserWarning, match="compressed zip members"):
        below = zm.open_virtual(archive, load=())
    np.testing.assert_array_equal(below["plain"].data, np.arange(500))
    monkeypatch.setattr(zarr_builder, "MAX_AUTO_LOAD_BYTES", 1999)
    asked = zm.open_virtual(archive, load=["plain"])
    np.testing.assert_array_equal(asked["plain"].data, np.arange(500))
    assert "plain" not in zm.open_virtual(archive, load=(), drop=["plain"]).arrays


def test_members_that_inflate_beyond_the_cap_are_not_decompressed(tmp_path, monkeypatch):
    """The zip's declared sizes are checked before any member is inflated: a small array
    beside a member that inflates to much more than the cap is refused up front."""
    from zarr_manifest.builders import zarr as zarr_builder

    directory = tmp_path / "store.zarr"
    group = zarr.open_group(directory, mode="w")
    group.create_array("small", shape=(10,), chunks=(10,), dtype="u1", compressors=None)[:] = 7
    (directory / "small" / "padding.bin").write_bytes(bytes(1 << 20))  # 1 MiB of zeros
    archive = _zip_directory(tmp_path, "shutil")
    assert archive.stat().st_size < 10_000  # the megabyte deflates to a few kilobytes
    monkeypatch.setattr(zarr_builder, "MAX_AUTO_LOAD_BYTES", 100_000)
    read: list[str] = []
    original = zipfile.ZipFile.read

    def recording_read(self, name, pwd=None):
        read.append(getattr(name, "filename", name))
        return original(self, name, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "read", recording_read)
    with pytest.raises(UnsupportedError, match="objects decompress to more than"):
        zm.open_virtual(archive, load=())
    assert not any("padding.bin" in name for name in read)
