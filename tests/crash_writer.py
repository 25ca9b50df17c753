"""A writer process for the crash tests: writes version V of a dataset over a store.

Run as ``python crash_writer.py SOURCES DEST VERSION REFERENCES [S3 CONFIG JSON]`` (a VERSION
of ``-1 - v`` appends `tail(v)` to a store of version v instead); it prints
"ready" once the dataset is built (and, with ``CRASH_WRITER_GO`` set, waits for that file to
exist before writing).  The
dataset: ``data``, REFERENCES int32 chunks of one value each referenced in the source file
``SOURCES/src<V>.bin``; ``step``, a small inline array; attributes ``{"version": V}``.  The
values of version V are `expected(V, REFERENCES)`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from zarr_manifest import ChunkManifest, InlineArray, ManifestArray, ManifestGroup


def expected(version: int, references: int) -> dict[str, np.ndarray]:
    """The values of version ``version``."""
    return {
        "data": np.arange(references, dtype="<i4") + version * 10_000_000,
        "step": np.arange(16, dtype="f8") + version * 100,
    }


def write_sources(folder: Path, references: int) -> None:
    """The source files of versions 0 and 1."""
    for version in (0, 1):
        (folder / f"src{version}.bin").write_bytes(expected(version, references)["data"].tobytes())


def dataset(folder: Path, version: int, references: int) -> ManifestGroup:
    """Version ``version`` as a `ManifestGroup`."""
    source = (folder / f"src{version}.bin").as_uri()
    manifest = ChunkManifest.from_arrays(
        paths=source,
        offsets=np.arange(references, dtype=np.uint64) * 4,
        lengths=np.full(references, 4, dtype=np.uint64),
    )
    data = ManifestArray(
        {
            "shape": [references],
            "data_type": "int32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": -1,
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
            "dimension_names": ["i"],
        },
        manifest,
    )
    step = InlineArray.from_numpy(expected(version, references)["step"], dimension_names=["s"])
    return ManifestGroup({"data": data, "step": step}, attributes={"version": version})


def tail(folder: Path, version: int, references: int) -> ManifestGroup:
    """What an append adds to version ``version``: ``data`` continued by the first
    ``references`` values of the other version's source (``step`` and attributes as they are).
    """
    other = 1 - version
    manifest = ChunkManifest.from_arrays(
        paths=(folder / f"src{other}.bin").as_uri(),
        offsets=np.arange(references, dtype=np.uint64) * 4,
        lengths=np.full(references, 4, dtype=np.uint64),
    )
    whole = dataset(folder, version, references)
    data = whole["data"]
    assert isinstance(data, ManifestArray)
    step = whole["step"]
    assert isinstance(step, InlineArray)
    return whole.replace(arrays={"data": ManifestArray(data.metadata, manifest), "step": step})


def destination(dest: str, s3: str | None) -> object:
    if s3 is None:
        return dest
    from obstore.store import S3Store

    config = json.loads(s3)
    return S3Store(config.pop("bucket"), prefix=dest, **config)


def main(argv: list[str]) -> None:
    folder, dest, version, references = Path(argv[0]), argv[1], int(argv[2]), int(argv[3])
    s3 = argv[4] if len(argv) > 4 else None
    append = version < 0  # -1 - v: append `tail(v)` to a store of version v
    if append:
        group = tail(folder, -1 - version, references)
    else:
        group = dataset(folder, version, references)
    print("ready", flush=True)
    go = os.environ.get("CRASH_WRITER_GO")
    while go and not os.path.exists(go):
        time.sleep(0.001)  # start together with another writer
    if append:
        from zarr_manifest import append as append_to

        append_to(destination(dest, s3), group, dim="i")
    else:
        group.to_store(destination(dest, s3), overwrite=True)  # type: ignore[arg-type]
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
