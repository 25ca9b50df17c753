"""Scenario C: an array of one million chunk references (quick: 2,500).

An int32 array of (1000, 1000) in chunks of (1, 1): every chunk is one 4-byte reference
into one of 4 raw files (row blocks of 250 rows, C order), value ``7 + flat index``. All
implementations start from the same three flat numpy arrays (URLs, offsets, lengths, in C
order of the chunk grid) and are timed on:

- ``"write"``: turn the arrays into their persistent form (kerchunk JSON or parquet,
  an Icechunk commit);
- ``"open+first"``: open what was written and read chunk (0, 0) (returned, must be 7);
- ``"full read"``: read the whole array (returned, compared). With the full million this
  takes minutes for some peers, so it only runs with ``--full-read`` or ``--quick``.

VirtualiZarr's in-memory ``ChunkManifest.from_arrays`` is measured too (time and memory per
reference, via tracemalloc).

Data handed to factories: :class:`ManyRefs`; a factory returns a mapping of phase name to
callable or ``Phase``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness import IMPLEMENTATIONS, Phase, RunConfig, Scenario, expect, register_scenario

ARRAY = "data"
FIRST_VALUE = 7


@dataclass(frozen=True)
class ManyRefs:
    """The references of scenario C and the files they point into.

    Attributes
    ----------
    directory
        Directory holding the raw files ``part0.bin`` ...
    shape
        Array shape; chunks are (1, 1), so this is also the chunk grid.
    dtype
        numpy dtype string of the values (little-endian int32).
    urls
        ``file://`` URL of each chunk's file, flat in C order (numpy ``StringDType``).
    offsets, lengths
        Byte offset and length of each chunk (uint64), flat in C order.
    full_read
        Whether the (slow) full-read phase is to be run.
    workdir
        A scratch directory for outputs, emptied after the scenario.
    """

    directory: Path
    shape: tuple[int, int]
    dtype: str
    urls: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    full_read: bool
    workdir: Path | None = None

    @property
    def count(self) -> int:
        """Number of references."""
        return int(self.offsets.size)

    @property
    def url_prefix(self) -> str:
        """``file:///.../`` prefix shared by all references."""
        return self.directory.as_uri() + "/"

    def expected(self) -> np.ndarray:
        """The whole array's values."""
        n = self.shape[0] * self.shape[1]
        return (np.arange(n, dtype=self.dtype) + FIRST_VALUE).reshape(self.shape)


def params(config: RunConfig) -> dict[str, Any]:
    """Array side (quick: 50) and number of files."""
    return {"side": 50 if config.quick else 1000, "files": 4, "dtype": "<i4"}


def generate(p: dict[str, Any], directory: Path) -> None:
    """Write the values as raw little-endian int32, one block of rows per file."""
    side, nfiles = p["side"], p["files"]
    values = (np.arange(side * side, dtype=p["dtype"]) + FIRST_VALUE).reshape(side, side)
    for k, block in enumerate(np.array_split(values, nfiles, axis=0)):
        block.tofile(directory / f"part{k}.bin")


def load(p: dict[str, Any], directory: Path, config: RunConfig) -> ManyRefs:
    """Build the flat reference arrays (untimed, shared by every implementation)."""
    side, nfiles = p["side"], p["files"]
    itemsize = np.dtype(p["dtype"]).itemsize
    rows = [len(b) for b in np.array_split(np.arange(side), nfiles)]
    row_file = np.repeat(np.arange(nfiles), rows)  # file of each row
    row_first = np.concatenate([[0], np.cumsum(rows)[:-1]])[row_file]  # first row of its file
    flat = np.arange(side * side, dtype=np.uint64)
    row = flat // side
    offsets = ((row - row_first[row].astype(np.uint64)) * side + flat % side) * itemsize
    file_urls = np.array(
        [(directory / f"part{k}.bin").resolve().as_uri() for k in range(nfiles)],
        dtype=np.dtypes.StringDType(),
    )
    return ManyRefs(
        directory=directory.resolve(),
        shape=(side, side),
        dtype=p["dtype"],
        urls=file_urls[row_file[row]],
        offsets=offsets.astype(np.uint64),
        lengths=np.full(side * side, itemsize, dtype=np.uint64),
        full_read=config.quick or config.full_read,
    )


@contextmanager
def scratch(data: ManyRefs) -> Iterator[ManyRefs]:
    """Give the implementations a scratch directory for what they write."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-C-") as tmp:
        yield replace(data, workdir=Path(tmp))


def check(phase: str, result: Any, data: ManyRefs) -> None:
    """``open+first`` must return chunk (0, 0)'s value; ``full read`` the whole array."""
    if phase == "open+first":
        expect(int(np.asarray(result).reshape(-1)[0]) == FIRST_VALUE, f"first chunk {result!r}")
    elif phase.startswith("full read"):
        expect(np.array_equal(np.asarray(result), data.expected()), "full read differs")


def _one_shot(data: ManyRefs, fn: Any) -> Phase:
    """A write phase: at full size run once without warm-up (they take seconds each)."""
    if data.count >= 100_000:
        return Phase(fn, repeats=1, warmup=False, per=data.count)
    return Phase(fn, per=data.count)


def _full_read(fn: Any) -> Phase:
    """A full read: once, no warm-up (at full size it takes minutes for some peers), with
    the process's peak RSS during it."""
    return Phase(fn, repeats=1, warmup=False, peak_rss=True)


# --------------------------------------------------------------------------- kerchunk


def kerchunk_refs(data: ManyRefs) -> dict[str, Any]:
    """The kerchunk (version 1) reference dict of the array, zarr v2 metadata."""
    zarray = {
        "zarr_format": 2,
        "shape": list(data.shape),
        "chunks": [1, 1],
        "dtype": data.dtype,
        "compressor": None,
        "filters": None,
        "fill_value": None,
        "order": "C",
    }
    refs: dict[str, Any] = {
        ".zgroup": json.dumps({"zarr_format": 2}),
        f"{ARRAY}/.zarray": json.dumps(zarray),
        f"{ARRAY}/.zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["y", "x"]}),
    }
    side_y, side_x = data.shape
    keys = [f"{ARRAY}/{i}.{j}" for i in range(side_y) for j in range(side_x)]
    entries = zip(data.urls.tolist(), data.offsets.tolist(), data.lengths.tolist(), strict=True)
    refs.update(zip(keys, (list(e) for e in entries), strict=True))
    return {"version": 1, "refs": refs}


def _kerchunk_reader(fo: str) -> Any:
    """Open kerchunk references at ``fo`` (JSON file or parquet directory) as a zarr array."""
    import fsspec
    import zarr

    fs = fsspec.filesystem(
        "reference", fo=fo, remote_protocol="file", asynchronous=True, skip_instance_cache=True
    )
    store = zarr.storage.FsspecStore(fs, read_only=True, path="")
    return zarr.open_array(store, path=ARRAY, mode="r", zarr_format=2)


def kerchunk_json(data: ManyRefs) -> dict[str, Any]:
    """kerchunk JSON: build the refs dict, dump it with ujson (as kerchunk does); fsspec+zarr."""
    import ujson

    assert data.workdir is not None
    out = data.workdir / "refs.json"

    def write() -> Path:
        refs = kerchunk_refs(data)
        with open(out, "w") as f:
            ujson.dump(refs, f)
        return out

    phases: dict[str, Any] = {
        "write": _one_shot(data, write),
        "open+first": lambda: _kerchunk_reader(str(out))[0, 0],
    }
    if data.full_read:
        phases["full read"] = _full_read(lambda: _kerchunk_reader(str(out))[...])
    return phases


def kerchunk_parquet(data: ManyRefs) -> dict[str, Any]:
    """kerchunk parquet: refs dict then ``kerchunk.df.refs_to_dataframe``; lazy fsspec open."""
    from kerchunk.df import refs_to_dataframe

    assert data.workdir is not None
    out = data.workdir / "refs.parq"

    def write() -> Path:
        if out.exists():
            shutil.rmtree(out)
        refs_to_dataframe(kerchunk_refs(data), str(out))
        return out

    phases: dict[str, Any] = {
        "write": _one_shot(data, write),
        "open+first": lambda: _kerchunk_reader(str(out))[0, 0],
    }
    if data.full_read:
        phases["full read"] = _full_read(lambda: _kerchunk_reader(str(out))[...])
    return phases


# --------------------------------------------------------------------------- icechunk


def _icechunk_config(data: ManyRefs) -> tuple[Any, Any]:
    """Repository config with a virtual chunk container for the data directory, and the
    credentials authorising it."""
    import icechunk as ic

    config = ic.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        ic.VirtualChunkContainer(data.url_prefix, ic.local_filesystem_store(str(data.directory)))
    )
    credentials = ic.containers_credentials({data.url_prefix: ic.credentials.LocalFileSystemAccess})
    return config, credentials


def icechunk_peer(bulk: bool) -> Any:
    """Icechunk virtual references, committed to a local-filesystem repository.

    ``bulk`` uses ``IcechunkStore.set_virtual_refs_arr`` (flat numpy arrays); otherwise
    ``set_virtual_refs`` with one ``VirtualChunkSpec`` per chunk.
    """

    def factory(data: ManyRefs) -> dict[str, Any]:
        import icechunk as ic
        import zarr

        assert data.workdir is not None
        repo_dir = data.workdir / ("icechunk-arr" if bulk else "icechunk-specs")
        config, credentials = _icechunk_config(data)
        side_x = data.shape[1]

        def write() -> Path:
            if repo_dir.exists():
                shutil.rmtree(repo_dir)
            repo = ic.Repository.create(
                ic.local_filesystem_storage(str(repo_dir)),
                config=config,
                authorize_virtual_chunk_access=credentials,
            )
            session = repo.writable_session("main")
            group = zarr.open_group(session.store, mode="w")
            group.create_array(
                ARRAY,
                shape=data.shape,
                chunks=(1, 1),
                dtype=data.dtype,
                compressors=None,
                filters=None,
                fill_value=0,
            )
            if bulk:
                failed = session.store.set_virtual_refs_arr(
                    ARRAY, data.shape, data.urls.tolist(), data.offsets, data.lengths
                )
            else:
                entries = zip(
                    data.urls.tolist(), data.offsets.tolist(), data.lengths.tolist(), strict=True
                )
                specs = [
                    ic.VirtualChunkSpec(
                        index=[n // side_x, n % side_x], location=u, offset=o, length=ln
                    )
                    for n, (u, o, ln) in enumerate(entries)
                ]
                failed = session.store.set_virtual_refs(ARRAY, specs)
            if failed:
                raise RuntimeError(f"icechunk refused {len(failed)} references, e.g. {failed[0]}")
            session.commit("virtual references")
            return repo_dir

        def open_array() -> Any:
            repo = ic.Repository.open(
                ic.local_filesystem_storage(str(repo_dir)),
                config=config,
                authorize_virtual_chunk_access=credentials,
            )
            return zarr.open_array(repo.readonly_session("main").store, path=ARRAY, mode="r")

        phases: dict[str, Any] = {
            "write": _one_shot(data, write),
            "open+first": lambda: open_array()[0, 0],
        }
        if data.full_read:
            phases["full read"] = _full_read(lambda: open_array()[...])
        return phases

    return factory


# --------------------------------------------------------------------------- virtualizarr


def virtualizarr_manifest(data: ManyRefs) -> dict[str, Any]:
    """VirtualiZarr ``ChunkManifest.from_arrays`` (with and without path validation)."""
    from virtualizarr.manifests import ChunkManifest

    urls = data.urls.reshape(data.shape)
    offsets = data.offsets.reshape(data.shape)
    lengths = data.lengths.reshape(data.shape)

    def build(validate: bool) -> Any:
        return ChunkManifest.from_arrays(
            paths=urls, offsets=offsets, lengths=lengths, validate_paths=validate
        )

    # the phases are not comparable with "write", so they get their own names
    return {
        "from_arrays": Phase(lambda: build(True), memory=True, per=data.count),
        "from_arrays (no path validation)": Phase(lambda: build(False), per=data.count),
    }


SCENARIO = register_scenario(
    Scenario(
        key="C",
        title="one million (quick: 2,500) chunk references, int32 (1,1) chunks in 4 raw files",
        baseline="kerchunk JSON",
        params=params,
        generate=generate,
        load=load,
        context=scratch,
        check=check,
    )
)

IMPLEMENTATIONS["C"]["kerchunk JSON"] = kerchunk_json
IMPLEMENTATIONS["C"]["kerchunk parquet"] = kerchunk_parquet
IMPLEMENTATIONS["C"]["icechunk (set_virtual_refs)"] = icechunk_peer(bulk=False)
IMPLEMENTATIONS["C"]["icechunk (set_virtual_refs_arr)"] = icechunk_peer(bulk=True)
IMPLEMENTATIONS["C"]["virtualizarr ChunkManifest"] = virtualizarr_manifest
