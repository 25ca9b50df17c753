"""Writers killed with SIGKILL, and writers racing: real processes, on a local directory and
on moto's S3.  Afterwards the store reads entirely the old version or entirely the new one,
checked against the source files.

The store holds ``ZM_CRASH_REFERENCES`` references: default 200,000, with which each test
takes 13-45 s on 2 cores shared with other jobs (most of it starting Python for each
writer); set it to 1000000 for the 1M-reference case.  Kill points are spread evenly over
the time a whole write takes, from before the first object to after the commit.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import crash_writer as cw
from zarr_manifest import ManifestArray, ManifestGroup, ManifestStore, clean
from zarr_manifest.testing import S3Server

REFERENCES = int(os.environ.get("ZM_CRASH_REFERENCES", "200000"))
KILLS = 6
APPEND_KILLS = 5
WRITER = Path(__file__).with_name("crash_writer.py")


def start_writer(
    folder: Path, dest: str, version: int, s3: dict[str, Any] | None, go: Path | None = None
) -> subprocess.Popen[str]:
    argv = [sys.executable, str(WRITER), str(folder), dest, str(version), str(REFERENCES)]
    if s3 is not None:
        argv.append(json.dumps(s3))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), *sys.path])
    if go is not None:
        env["CRASH_WRITER_GO"] = str(go)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def version_read_by(store: ManifestStore) -> int:
    """Which version an open store shows, checking a sample of its values."""
    z = zarr.open_group(store, mode="r")
    version = int(z.attrs["version"])
    want = cw.expected(version, REFERENCES)
    sample = np.random.default_rng(version).choice(REFERENCES, 40, replace=False)
    np.testing.assert_array_equal(z["data"].oindex[sample], want["data"][sample])
    np.testing.assert_array_equal(z["step"][...], want["step"])
    return version


def version_of(root: Any, folder: Path) -> int:
    """Which version the store holds, checking that every value is that version's.

    Every reference is read from the source it names (the bytes the store would return),
    and a sample of chunks is read through zarr and `ManifestStore`.
    """
    group = ManifestGroup.from_store(root)
    version = int(group.attributes["version"])
    want = cw.expected(version, REFERENCES)
    data = group["data"]
    assert isinstance(data, ManifestArray)
    manifest = data.manifest
    assert manifest.path_table == ((folder / f"src{version}.bin").as_uri(),)
    source = np.frombuffer((folder / f"src{version}.bin").read_bytes(), dtype="<i4")
    assert (manifest.lengths == 4).all()
    np.testing.assert_array_equal(source[manifest.offsets.astype(np.int64) // 4], want["data"])
    np.testing.assert_array_equal(group["step"].data, want["step"])  # type: ignore[union-attr]
    assert version_read_by(ManifestStore(root, allowed_prefixes=[str(folder)])) == version
    return version


def kill_at_many_points(folder: Path, dest: str, root: Any, s3: dict[str, Any] | None) -> None:
    cw.dataset(folder, 0, REFERENCES).to_store(root)
    # how long a whole write takes once the writer is ready
    proc = start_writer(folder, dest, 1, s3)
    started = time.monotonic()
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    duration = time.monotonic() - started
    current = version_of(root, folder)
    assert current == 1
    outcomes = []
    for k in range(KILLS):
        reader = ManifestStore(root, allowed_prefixes=[str(folder)])
        zarr.open_group(reader, mode="r")["data"]  # opened before the writer starts
        proc = start_writer(folder, dest, 1 - current, s3)
        time.sleep(duration * k / (KILLS - 1) * 1.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        # the reader opened before keeps reading the version it opened, throughout
        assert version_read_by(reader) == current
        found = version_of(root, folder)
        assert found in (current, 1 - current)
        outcomes.append(found != current)
        current = found
        # a killed writer leaves its lock: the next writer is told, and can clear it
        clean(root, break_lock=True, grace=datetime.timedelta(days=1))
    print(f"kills at {KILLS} points over {duration:.2f} s: published {outcomes}")


def appended_or_not(root: Any, folder: Path) -> bool:
    """Whether the store holds version 0 with its tail appended (else version 0 as it was),
    checking every reference against the sources and a sample through `ManifestStore`."""
    group = ManifestGroup.from_store(root)
    assert group.attributes["version"] == 0
    data = group["data"]
    assert isinstance(data, ManifestArray)
    appended = data.shape == (2 * REFERENCES,)
    if not appended:
        assert data.shape == (REFERENCES,)
    sources = [np.frombuffer((folder / f"src{v}.bin").read_bytes(), dtype="<i4") for v in (0, 1)]
    m = data.manifest
    values = np.empty(m.offsets.shape, dtype="<i4")
    for pid, url in enumerate(m.path_table):
        mask = m.path_ids == pid
        source = sources[[(folder / f"src{v}.bin").as_uri() for v in (0, 1)].index(url)]
        values[mask] = source[m.offsets[mask].astype(np.int64) // 4]
    want = cw.expected(0, REFERENCES)["data"]
    if appended:
        want = np.concatenate([want, cw.expected(1, REFERENCES)["data"]])
    np.testing.assert_array_equal(values, want)
    z = zarr.open_group(ManifestStore(root, allowed_prefixes=[str(folder)]), mode="r")
    sample = np.random.default_rng(0).choice(want.size, 40, replace=False)
    np.testing.assert_array_equal(z["data"].oindex[sample], want[sample])
    np.testing.assert_array_equal(z["step"][...], cw.expected(0, REFERENCES)["step"])
    return appended


def kill_appends(folder: Path, dest: str, root: Any, s3: dict[str, Any] | None) -> None:
    cw.dataset(folder, 0, REFERENCES).to_store(root)
    proc = start_writer(folder, dest, -1, s3)
    started = time.monotonic()
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    duration = time.monotonic() - started
    assert appended_or_not(root, folder)
    outcomes = []
    for k in range(APPEND_KILLS):
        cw.dataset(folder, 0, REFERENCES).to_store(root, overwrite=True)
        proc = start_writer(folder, dest, -1, s3)
        time.sleep(duration * k / (APPEND_KILLS - 1) * 1.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        outcomes.append(appended_or_not(root, folder))
        clean(root, break_lock=True, grace=datetime.timedelta(days=1))
    print(f"append killed at {APPEND_KILLS} points over {duration:.2f} s: published {outcomes}")


def test_sigkill_during_append_local(tmp_path: Path) -> None:
    cw.write_sources(tmp_path, REFERENCES)
    dest = tmp_path / "store"
    kill_appends(tmp_path, str(dest), str(dest), None)


def test_sigkill_during_append_s3(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    cw.write_sources(tmp_path, REFERENCES)
    config = dict(s3_server.obstore_config())
    config["bucket"] = s3_bucket
    kill_appends(tmp_path, "store", s3_server.s3_store(s3_bucket, prefix="store"), config)


def test_sigkill_during_overwrite_local(tmp_path: Path) -> None:
    cw.write_sources(tmp_path, REFERENCES)
    dest = tmp_path / "store"
    kill_at_many_points(tmp_path, str(dest), str(dest), None)


def test_sigkill_during_overwrite_s3(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    cw.write_sources(tmp_path, REFERENCES)
    config = dict(s3_server.obstore_config())
    config["bucket"] = s3_bucket
    root = s3_server.s3_store(s3_bucket, prefix="store")
    kill_at_many_points(tmp_path, "store", root, config)


def test_two_writers_race_one_wins(tmp_path: Path) -> None:
    cw.write_sources(tmp_path, REFERENCES)
    dest = tmp_path / "store"
    cw.dataset(tmp_path, 0, REFERENCES).to_store(dest)
    before = {p: p.read_bytes() for p in tmp_path.glob("*.bin")}
    go = tmp_path / "go"
    writers = {v: start_writer(tmp_path, str(dest), v, None, go) for v in (0, 1)}
    go.touch()
    results = {
        v: (p.wait(timeout=120), p.stderr.read() if p.stderr else "") for v, p in writers.items()
    }
    won = [v for v, (code, _) in results.items() if code == 0]
    lost = [v for v, (code, _) in results.items() if code != 0]
    for v in lost:
        assert "ConcurrentWriteError" in results[v][1], results[v][1]
    assert won, results
    # whoever won (both, if one finished before the other began), the store is one version
    assert version_of(str(dest), tmp_path) in won
    assert {p: p.read_bytes() for p in tmp_path.glob("*.bin")} == before
    if lost:
        assert not (dest / ".zarr-manifest" / "writer.lock").exists()
