"""Untrusted manifest stores: default-deny, bounded parsing, only documented errors.

The attacker of spec section 8.2 writes every byte of a manifest store (every zarr.json,
every manifest.json, symlinks an archive unpacks); the victim opens it with
``ManifestStore(root)`` and reads.  Each read is tried three ways -- ``await store.get``,
``store.get_sync`` and ``zarr.open_group(store, mode="r")["a"][...]`` -- on fresh stores.

Byte values keep the outcome checkable: the victim's secret holds only bytes >= 200, the
store's own data bytes < 64 and the decoys (files at the literal place a lookalike
reference names, inside the root) bytes 64-127.  Any result holding a byte >= 200 would be
a leak.  Refusals must be `SourceNotAllowedError` (naming the store key and the refused
target) or `ManifestFormatError` (naming the manifest file and the reference as written).

Heavy inputs (10^6-key manifests, absurd grid sizes) run in subprocesses so their memory is
measured apart from pytest's and a runaway allocation meets an address-space limit instead of
the machine; the 10^7-key run needs ``ZARR_MANIFEST_HEAVY=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from obstore.store import S3Store
from zarr.core.buffer import default_buffer_prototype

from zarr_manifest import ChunkManifest, ManifestStore
from zarr_manifest.errors import (
    ChunkReadError,
    ChunkTooLargeError,
    ManifestError,
    ManifestFormatError,
    ShortReadError,
    SourceNotAllowedError,
    ZarrManifestError,
)
from zarr_manifest.format.paths import local_path_to_url
from zarr_manifest.store._references import DEFAULT_MAX_CHUNK_BYTES
from zarr_manifest.store.fetch import close_local_files
from zarr_manifest.store.sources import SourceRegistry
from zarr_manifest.testing import RangeServer, S3Server

PROTO = default_buffer_prototype()
SECRET = bytes(range(200, 232))  # the victim's file: every byte >= 200
OK_DATA = bytes(range(32))  # the store's own data file
DECOY = bytes(range(64, 96))  # a file inside the root at a lookalike reference's literal name
CHUNK = 4  # array "a": uint8, shape (8,), chunks of 4 -> store keys a/c/0, a/c/1
REFUSED = (SourceNotAllowedError, ManifestFormatError)


# ---- building stores --------------------------------------------------------------------


def array_doc(*, virtual: bool = True, shape: int = 8, chunk: int = CHUNK) -> dict[str, Any]:
    """A uint8 array's zarr.json, with the chunk-manifest transformer when ``virtual``."""
    doc: dict[str, Any] = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [shape],
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [chunk]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes"}],
        "attributes": {},
    }
    if virtual:
        doc["storage_transformers"] = [
            {"name": "chunk-manifest-json", "configuration": {"manifest": "./manifest.json"}}
        ]
    return doc


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())


def make_store(
    root: Path, manifest: dict[str, Any] | bytes, *, doc: dict[str, Any] | bytes | None = None
) -> Path:
    """A manifest store at ``root``: group, ``data/ok.bin`` and virtual array ``a``."""
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "zarr.json", {"zarr_format": 3, "node_type": "group", "attributes": {}})
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "ok.bin").write_bytes(OK_DATA)
    write_json(root / "a" / "zarr.json", array_doc() if doc is None else doc)
    write_json(root / "a" / "manifest.json", manifest)
    return root


def entry(path: str, offset: int = 0, length: int = CHUNK) -> dict[str, Any]:
    return {"path": path, "offset": offset, "length": length}


def two_chunks(first: str, offset: int = 0, length: int = CHUNK) -> dict[str, Any]:
    """Chunk 0 at the attacker's reference, chunk 1 from the store's own data."""
    return {"0": entry(first, offset, length), "1": entry("../data/ok.bin", CHUNK)}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the store root holding the victim's secret."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.bin").write_bytes(SECRET)
    return d


# ---- reading, three ways ----------------------------------------------------------------

Outcome = bytes | None | BaseException


def _catch(fn: Callable[[], Outcome]) -> Outcome:
    try:
        return fn()
    except Exception as exc:  # every outcome is judged by the caller
        return exc


def read_all_ways(root: Any, key: str = "a/c/0", **kwargs: Any) -> dict[str, Outcome]:
    """The outcome of reading ``key`` by `get`, `get_sync` and of reading array ``a`` by zarr."""

    def get_async() -> bytes | None:
        buf = asyncio.run(ManifestStore(root, **kwargs).get(key, PROTO))
        return None if buf is None else buf.to_bytes()

    def get_sync() -> bytes | None:
        buf = ManifestStore(root, **kwargs).get_sync(key, prototype=PROTO)
        return None if buf is None else buf.to_bytes()

    def via_zarr() -> bytes:
        group = zarr.open_group(ManifestStore(root, **kwargs), mode="r")
        return np.asarray(group["a"][...]).tobytes()

    return {"get": _catch(get_async), "get_sync": _catch(get_sync), "zarr": _catch(via_zarr)}


def assert_no_secret(value: object) -> None:
    """No secret byte in a result, and no hint of its bytes in an error message."""
    if isinstance(value, bytes | bytearray):
        assert max(value, default=0) < 200, f"secret bytes returned: {bytes(value)!r}"
    elif isinstance(value, BaseException):
        text = str(value)
        assert SECRET[:4].hex() not in text and repr(SECRET[:4])[2:-1] not in text, text


def assert_refused(
    outcomes: dict[str, Outcome],
    *,
    reference: str | None,
    key: str = "a/c/0",
    target: str | None = None,
    only: type[BaseException] | None = None,
) -> None:
    """Every outcome is a refusal naming what is at fault, and nothing leaked.

    `SourceNotAllowedError` must name the store key and the target (``target``, when given,
    is a substring of its ``path`` and message); `ManifestFormatError` must name the
    reference as written (``reference``) and the file it was found in.
    """
    for how, got in outcomes.items():
        assert isinstance(got, REFUSED), f"{how}: not refused: {got!r}"
        if only is not None:
            assert isinstance(got, only), f"{how}: {type(got).__name__}: {got}"
        assert_no_secret(got)
        text = str(got)
        if isinstance(got, SourceNotAllowedError):
            assert got.key == key and repr(key) in text, f"{how}: key not named: {text}"
            assert got.path and got.path in text, f"{how}: target not named: {text}"
            if target is not None:
                assert target in got.path, f"{how}: {got.path!r} is not {target!r}"
        else:
            assert got.location and got.location in text, f"{how}: file not named: {text}"
            if reference is not None:
                assert repr(reference) in text, f"{how}: reference not named: {text}"


def assert_all_bytes(outcomes: dict[str, Outcome], chunk: bytes, rest: bytes) -> None:
    """Key a/c/0 read ``chunk``; the whole array read ``chunk + rest``."""
    assert outcomes["get"] == chunk, outcomes["get"]
    assert outcomes["get_sync"] == chunk, outcomes["get_sync"]
    assert outcomes["zarr"] == chunk + rest, outcomes["zarr"]
    for got in outcomes.values():
        assert_no_secret(got)


# ---- ../ escapes, absolute paths, file:// URLs, encodings ---------------------------------

# (id, reference template, expected error).  {out} is the outside directory's absolute path,
# {up} as many "../" as lead from a/ to above the filesystem root.
ESCAPES = [
    ("dotdot", "../../outside/secret.bin", SourceNotAllowedError),
    ("dotdot-after-segments", "../data/../../outside/secret.bin", SourceNotAllowedError),
    ("dotdot-nested", "x/y/../../../../outside/secret.bin", SourceNotAllowedError),
    ("dotdot-dot-segments", "./.././../outside/./secret.bin", SourceNotAllowedError),
    ("dotdot-past-fs-root", "{up}{out_rel}/secret.bin", SourceNotAllowedError),
    ("dotdot-trailing", "../../outside/secret.bin/.", SourceNotAllowedError),
    ("pct-dots", "%2e%2e/%2e%2e/outside/secret.bin", SourceNotAllowedError),
    ("pct-dots-and-slash", "%2E%2e%2f%2E%2e%2Foutside%2fsecret.bin", SourceNotAllowedError),
    ("pct-mixed", ".%2e/%2e./outside/secret.bin", SourceNotAllowedError),
    ("pct-slash-only", "..%2F..%2Foutside%2Fsecret.bin", SourceNotAllowedError),
    ("file-url", "file://{out}/secret.bin", SourceNotAllowedError),
    ("file-url-localhost", "file://localhost{out}/secret.bin", SourceNotAllowedError),
    ("file-url-upper", "FILE://LOCALHOST{out}/secret.bin", SourceNotAllowedError),
    ("file-url-dotdot", "file://{out}/../outside/secret.bin", SourceNotAllowedError),
    ("file-url-pct", "file://{out_pct}/secret%2Ebin", SourceNotAllowedError),
    ("absolute-path", "{out}/secret.bin", ManifestFormatError),
    ("absolute-path-dotdot", "/../{out}/secret.bin", ManifestFormatError),
    ("network-path", "//localhost{out}/secret.bin", ManifestFormatError),
    ("backslash-absolute", "\\{out}\\secret.bin", ManifestFormatError),
    ("file-url-other-host", "file://evil.example{out}/secret.bin", ManifestFormatError),
    ("file-url-no-authority", "file:{out}/secret.bin", ManifestFormatError),
    ("file-url-userinfo", "file://user@localhost{out}/secret.bin", ManifestFormatError),
    ("windows-drive", "C:\\outside\\secret.bin", ManifestFormatError),
    ("windows-drive-slash", "c:/outside/secret.bin", ManifestFormatError),
    ("nul-encoded", "../data/ok.bin%00.png", ManifestFormatError),
    ("nul-raw", "../data/ok.bin\x00../../outside/secret.bin", ManifestFormatError),
    ("nul-in-url", "file://{out}/secret.bin%00", ManifestFormatError),
    ("fragment", "../data/ok.bin#../../outside/secret.bin", ManifestFormatError),
    ("query-on-file", "../data/ok.bin?x=../../outside/secret.bin", ManifestFormatError),
    ("unknown-scheme", "ftp://127.0.0.1/secret.bin", ManifestFormatError),
    ("data-url", "data:application/octet-stream;base64,AAAA", ManifestFormatError),
    ("empty", "", ManifestFormatError),
]


@pytest.mark.parametrize(
    ("reference", "error"), [c[1:] for c in ESCAPES], ids=[c[0] for c in ESCAPES]
)
def test_escape_is_refused(
    tmp_path: Path, outside: Path, reference: str, error: type[ZarrManifestError]
) -> None:
    out = str(outside)
    up = "../" * (len(Path(tmp_path / "store" / "a").parts) + 2)
    ref = reference.format(
        out=out, up=up, out_rel=out.lstrip("/"), out_pct=out.replace("/", "/%2E/")
    )
    root = make_store(tmp_path / "store", two_chunks(ref))
    outcomes = read_all_ways(root)
    if error is SourceNotAllowedError:
        assert_refused(
            outcomes, reference=ref, only=error, target=local_path_to_url(outside / "secret.bin")
        )
    else:
        # an empty path has nothing to quote; the error names its field
        assert_refused(outcomes, reference=ref or None, only=error)
    # The refusal is about the reference, not the array: the other chunk's key is refused
    # too when it shares the manifest (format errors), or reads (access errors).
    other = read_all_ways(root, "a/c/1")
    if error is SourceNotAllowedError:
        assert other["get"] == OK_DATA[CHUNK : 2 * CHUNK]
    else:
        assert isinstance(other["get"], ManifestFormatError)


def test_escape_readable_once_allowed(tmp_path: Path, outside: Path) -> None:
    """Default-deny is a default: the same store reads once the user allows the directory."""
    root = make_store(tmp_path / "store", two_chunks("%2e%2e/%2e%2e/outside/secret.bin"))
    assert_refused(read_all_ways(root), reference=None, only=SourceNotAllowedError)
    allowed = read_all_ways(root, allowed_prefixes=[str(outside)])
    assert allowed["get"] == SECRET[:CHUNK]
    assert allowed["zarr"] == SECRET[:CHUNK] + OK_DATA[CHUNK : 2 * CHUNK]


# Lookalikes that are *not* parent steps: decoded once they are ordinary names, so they
# name a file inside the array directory -- the decoy placed there -- and nothing outside.
# (id, reference, the file it names, relative to the array directory a/)
LOOKALIKES = [
    (
        "double-encoded",
        "%252e%252e/%252e%252e/outside/secret.bin",
        "%2e%2e/%2e%2e/outside/secret.bin",
    ),
    (
        "double-encoded-slash",
        "..%252f..%252foutside%252fsecret.bin",
        "..%2f..%2foutside%2fsecret.bin",
    ),
    ("backslashes", "..\\..\\outside\\secret.bin", "..\\..\\outside\\secret.bin"),
    ("pct-backslashes", "..%5C..%5Coutside%5Csecret.bin", "..\\..\\outside\\secret.bin"),
    (
        "one-dot-leader",
        "\u2024\u2024/\u2024\u2024/outside/secret.bin",
        "\u2024\u2024/\u2024\u2024/outside/secret.bin",
    ),
    ("two-dot-leader", "\u2025/\u2025/outside/secret.bin", "\u2025/\u2025/outside/secret.bin"),
    (
        "fullwidth-dots",
        "%EF%BC%8E%EF%BC%8E/%EF%BC%8E%EF%BC%8E/outside/secret.bin",
        "\uff0e\uff0e/\uff0e\uff0e/outside/secret.bin",
    ),
    (
        "fullwidth-solidus",
        "..\uff0f..\uff0foutside\uff0fsecret.bin",
        "..\uff0f..\uff0foutside\uff0fsecret.bin",
    ),
    ("three-dots", ".../.../outside/secret.bin", ".../.../outside/secret.bin"),
    ("four-dots-double-slash", "....//....//outside/secret.bin", "..../..../outside/secret.bin"),
    ("dots-space", "..%20/..%20/outside/secret.bin", ".. /.. /outside/secret.bin"),
]


@pytest.mark.parametrize(
    ("reference", "literal"), [c[1:] for c in LOOKALIKES], ids=[c[0] for c in LOOKALIKES]
)
def test_lookalike_names_a_file_inside(
    tmp_path: Path, outside: Path, reference: str, literal: str
) -> None:
    root = make_store(tmp_path / "store", two_chunks(reference))
    missing = read_all_ways(root)
    for how, got in missing.items():
        # nothing at the literal name yet: a read error, never the secret or fill values
        assert isinstance(got, ChunkReadError), f"{how}: {got!r}"
        assert_no_secret(got)
    decoy = root / "a" / literal
    decoy.parent.mkdir(parents=True, exist_ok=True)
    decoy.write_bytes(DECOY)
    assert_all_bytes(read_all_ways(root), DECOY[:CHUNK], OK_DATA[CHUNK : 2 * CHUNK])


def test_format_refusal_names_the_reference_and_the_file(tmp_path: Path) -> None:
    root = make_store(tmp_path / "store", {"0": entry("../data/ok.bin"), "1": entry("/etc/passwd")})
    with pytest.raises(ManifestFormatError) as info:
        ManifestStore(root).get_sync("a/c/0", prototype=PROTO)
    assert "'/etc/passwd'" in str(info.value) and "manifest.json" in str(info.value)


def test_refusal_format_error_carries_the_manifest_key(tmp_path: Path) -> None:
    root = make_store(tmp_path / "store", {"0": entry("../data/ok.bin"), "1": entry("/etc/passwd")})
    with pytest.raises(ManifestFormatError) as info:
        ManifestStore(root).get_sync("a/c/1", prototype=PROTO)
    assert info.value.key == "1" and "'1'" in str(info.value)


# ---- symlinks ---------------------------------------------------------------------------


def test_symlinked_file_pointing_out(tmp_path: Path, outside: Path) -> None:
    root = make_store(tmp_path / "store", two_chunks("../data/link.bin"))
    (root / "data" / "link.bin").symlink_to(outside / "secret.bin")
    assert_refused(
        read_all_ways(root), reference=None, only=SourceNotAllowedError, target="link.bin"
    )


def test_symlink_chain_pointing_out(tmp_path: Path, outside: Path) -> None:
    root = make_store(tmp_path / "store", two_chunks("../data/l1.bin"))
    (root / "data" / "l2.bin").symlink_to(outside / "secret.bin")
    (root / "data" / "l1.bin").symlink_to("l2.bin")
    assert_refused(read_all_ways(root), reference=None, only=SourceNotAllowedError)


def test_symlinked_directory_pointing_out(tmp_path: Path, outside: Path) -> None:
    root = make_store(tmp_path / "store", two_chunks("../linked/secret.bin"))
    (root / "linked").symlink_to(outside, target_is_directory=True)
    outcomes = read_all_ways(root)
    assert_refused(outcomes, reference=None, only=SourceNotAllowedError, target="secret.bin")


def test_symlink_then_dotdot_is_lexical(tmp_path: Path, outside: Path) -> None:
    """Dot segments go before symlinks are resolved (spec 7.3): ``deep/..`` is the root."""
    (outside / "deep").mkdir()
    root = make_store(tmp_path / "store", two_chunks("../link/../decoy.bin"))
    (root / "link").symlink_to(outside / "deep", target_is_directory=True)
    (outside / "decoy.bin").write_bytes(SECRET)  # what a physical ".." would reach
    (root / "decoy.bin").write_bytes(DECOY)
    assert_all_bytes(read_all_ways(root), DECOY[:CHUNK], OK_DATA[CHUNK : 2 * CHUNK])


@pytest.mark.parametrize("which", ["manifest", "array-zarr-json", "array-dir"])
def test_symlinked_metadata_pointing_out(tmp_path: Path, outside: Path, which: str) -> None:
    """Everything read is checked (spec 8.1.4), also the store's own metadata files: an
    outside JSON file's content (here a fake credentials file) must not even be parsed."""
    evil = {"SECRETKEY-abc": entry("../data/ok.bin")}
    root = make_store(tmp_path / "store", two_chunks("../data/ok.bin"))
    if which == "manifest":
        write_json(outside / "creds.json", evil)
        (root / "a" / "manifest.json").unlink()
        (root / "a" / "manifest.json").symlink_to(outside / "creds.json")
        key = "a/manifest.json"
    elif which == "array-zarr-json":
        write_json(outside / "creds.json", {**array_doc(), "SECRETKEY-abc": 1})
        (root / "a" / "zarr.json").unlink()
        (root / "a" / "zarr.json").symlink_to(outside / "creds.json")
        key = "a/zarr.json"
    else:
        write_json(outside / "arr" / "zarr.json", array_doc())
        write_json(outside / "arr" / "manifest.json", {"0": entry("../secret.bin")})
        for f in (root / "a").iterdir():
            f.unlink()
        (root / "a").rmdir()
        (root / "a").symlink_to(outside / "arr", target_is_directory=True)
        key = "a/zarr.json"
    outcomes = read_all_ways(root)
    for how, got in outcomes.items():
        if how != "zarr" and which != "manifest":
            # a/c/0 lies in no array: the store sees no node at "a", so nothing is there
            assert got is None or isinstance(got, SourceNotAllowedError), f"{how}: {got!r}"
            continue
        assert isinstance(got, SourceNotAllowedError), f"{how}: {got!r}"
        assert got.key == key and repr(key) in str(got), str(got)
        assert "SECRETKEY" not in str(got)
        assert_no_secret(got)


def test_symlinked_root_zarr_json_pointing_out(tmp_path: Path, outside: Path) -> None:
    root = make_store(tmp_path / "store", two_chunks("../data/ok.bin"))
    write_json(outside / "g.json", {"zarr_format": 3, "node_type": "group", "attributes": {}})
    (root / "zarr.json").unlink()
    (root / "zarr.json").symlink_to(outside / "g.json")
    with pytest.raises(SourceNotAllowedError, match=r"zarr\.json"):
        zarr.open_group(ManifestStore(root), mode="r")


def test_inline_chunk_symlink_pointing_out(tmp_path: Path, outside: Path) -> None:
    root = make_store(tmp_path / "store", {})
    write_json(root / "b" / "zarr.json", array_doc(virtual=False))
    (root / "b" / "c").mkdir()
    (root / "b" / "c" / "0").symlink_to(outside / "secret.bin")
    (root / "b" / "c" / "1").write_bytes(OK_DATA[:CHUNK])
    store = ManifestStore(root)
    with pytest.raises(SourceNotAllowedError) as info:
        store.get_sync("b/c/0", prototype=PROTO)
    assert info.value.key == "b/c/0"
    with pytest.raises(SourceNotAllowedError):
        asyncio.run(ManifestStore(root).get("b/c/0", PROTO))
    with pytest.raises(SourceNotAllowedError):
        zarr.open_group(ManifestStore(root), mode="r")["b"][...]
    assert ManifestStore(root).get_sync("b/c/1", prototype=PROTO).to_bytes() == OK_DATA[:CHUNK]


def test_symlink_inside_root_and_into_allowed_prefix(tmp_path: Path, outside: Path) -> None:
    root = make_store(tmp_path / "store", two_chunks("../data/inner.bin"))
    (root / "data" / "inner.bin").symlink_to(root / "data" / "ok.bin")
    assert_all_bytes(read_all_ways(root), OK_DATA[:CHUNK], OK_DATA[CHUNK : 2 * CHUNK])
    (root / "data" / "inner.bin").unlink()
    (outside / "shared").mkdir()
    (outside / "shared" / "x.bin").write_bytes(DECOY)
    (root / "data" / "inner.bin").symlink_to(outside / "shared" / "x.bin")
    assert_refused(read_all_ways(root), reference=None, only=SourceNotAllowedError)
    allowed = read_all_ways(root, allowed_prefixes=[str(outside / "shared")])
    assert_all_bytes(allowed, DECOY[:CHUNK], OK_DATA[CHUNK : 2 * CHUNK])


def test_data_file_swapped_for_symlink_after_first_read(tmp_path: Path, outside: Path) -> None:
    root = make_store(tmp_path / "store", two_chunks("../data/ok.bin"))
    store = ManifestStore(root)
    assert store.get_sync("a/c/0", prototype=PROTO).to_bytes() == OK_DATA[:CHUNK]
    (root / "data" / "ok.bin").rename(root / "data" / "old.bin")
    (root / "data" / "ok.bin").symlink_to(outside / "secret.bin")
    close_local_files()  # what LRU eviction or the periodic revalidation does
    got = _catch(lambda: store.get_sync("a/c/1", prototype=PROTO).to_bytes())
    assert isinstance(got, SourceNotAllowedError | ChunkReadError), got
    assert_no_secret(got)


# ---- unregistered hosts: HTTP on loopback, metadata endpoints, userinfo ------------------


def test_unregistered_http_host_is_never_contacted(
    tmp_path: Path, clean_range_server: RangeServer, serve_bytes: Callable[..., str]
) -> None:
    rel = serve_bytes(SECRET, "secret.bin")
    port = clean_range_server.port
    url = clean_range_server.url_for(rel)
    variants = [
        url,
        f"http://localhost:{port}/{rel}",
        f"HTTP://127.0.0.1:{port}/{rel}",
        f"http://127.0.0.1:{port}/{rel}?x-amz-signature=1",
        f"http://2130706433:{port}/{rel}",
        f"http://[::1]:{port}/{rel}",
        f"http://127.0.0.1:{port}/%2e%2e/{rel}",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "https://metadata.google.internal/computeMetadata/v1/",
        "s3://some-bucket/secret.bin",
        "gs://some-bucket/secret.bin",
        "az://container/secret.bin",
        "memory://some-store/secret.bin",
    ]
    for i, ref in enumerate(variants):
        root = make_store(tmp_path / f"store{i}", two_chunks(ref))
        started = time.monotonic()
        assert_refused(read_all_ways(root), reference=None, only=SourceNotAllowedError)
        # refused before any I/O: no connection attempt to a link-local address
        assert time.monotonic() - started < 5.0, ref
    assert clean_range_server.request_count() == 0, clean_range_server.counts_by_path()


@pytest.mark.parametrize(
    "reference",
    [
        "http://user:pass@127.0.0.1:{port}/{rel}",
        "http://user@127.0.0.1:{port}/{rel}",
        "http://127.0.0.1:{port}@169.254.169.254/latest/",
        "https://@169.254.169.254/latest/",
        "s3://key:secret@bucket/x.bin",
        "http://127.0.0.1:{port}/{rel}#frag",
        "http://127.0.0.1:{port}/data\\..\\{rel}",
        "http://127.0.0.1:{port}/data%5C..%5C{rel}",
        "http:///{rel}",
        "http:{rel}",
    ],
)
def test_malformed_network_reference_is_a_format_error(
    tmp_path: Path,
    clean_range_server: RangeServer,
    serve_bytes: Callable[..., str],
    reference: str,
) -> None:
    rel = serve_bytes(SECRET, "secret.bin")
    ref = reference.format(port=clean_range_server.port, rel=rel)
    root = make_store(tmp_path / "store", two_chunks(ref))
    # even when the host is allowed, a malformed reference is not read
    allowed = [clean_range_server.url, "s3://bucket/"]
    assert_refused(read_all_ways(root), reference=ref, only=ManifestFormatError)
    outcomes = read_all_ways(root, allowed_prefixes=allowed)
    assert_refused(outcomes, reference=ref, only=ManifestFormatError)
    assert clean_range_server.request_count() == 0


def test_http_allowed_prefix_grants_exactly_that_prefix(
    tmp_path: Path, clean_range_server: RangeServer, serve_bytes: Callable[..., str]
) -> None:
    ok_rel = serve_bytes(OK_DATA, "data/ok.bin")
    secret_rel = serve_bytes(SECRET, "database/secret.bin")
    folder = ok_rel.split("/")[0]
    server = clean_range_server
    prefix = server.url_for(f"{folder}/data")  # no trailing slash
    ok_url = server.url_for(ok_rel)
    root = make_store(tmp_path / "ok", two_chunks(ok_url))
    allowed = read_all_ways(root, allowed_prefixes=[prefix])
    assert_all_bytes(allowed, OK_DATA[:CHUNK], OK_DATA[CHUNK : 2 * CHUNK])
    assert server.request_count(ok_rel) > 0
    base = f"http://127.0.0.1:{server.port}/{folder}"
    refused = [
        server.url_for(secret_rel),
        f"{base}/data/../database/secret.bin",
        f"{base}/data/%2e%2e/database/secret.bin",
        f"{base}/data%2f..%2fdatabase/secret.bin",
        f"{base}/database/secret.bin",
        f"{base}/data/ok.bin/../../database/secret.bin",
        f"http://127.0.0.1:{server.port + 1 if server.port < 65535 else 1}/{ok_rel}",
        f"https://127.0.0.1:{server.port}/{ok_rel}",
    ]
    server.reset_counters()
    for i, ref in enumerate(refused):
        root = make_store(tmp_path / f"store{i}", two_chunks(ref))
        outcomes = read_all_ways(root, allowed_prefixes=[prefix])
        assert_refused(outcomes, reference=None, only=SourceNotAllowedError)
    assert server.request_count() == 0, server.counts_by_path()


# ---- S3 (moto): other buckets and other prefixes -----------------------------------------


def _s3_registry(s3: S3Server, prefixes: list[str]) -> SourceRegistry:
    config = s3.obstore_config()
    return SourceRegistry.from_urls(
        prefixes,
        config={k: v for k, v in config.items() if k != "client_options"},
        client_options=config["client_options"],
    )


def test_s3_other_bucket_is_refused(tmp_path: Path, s3_server: S3Server) -> None:
    ok = s3_server.create_bucket(f"ok-{uuid.uuid4().hex[:8]}")
    other = s3_server.create_bucket(f"other-{uuid.uuid4().hex[:8]}")
    s3_server.put_object(ok, "data/ok.bin", OK_DATA)
    s3_server.put_object(ok, "database/secret.bin", SECRET)
    s3_server.put_object(ok, f"{other}/secret.bin", SECRET)
    s3_server.put_object(other, "secret.bin", SECRET)
    s3_server.put_object(other, "data/ok.bin", SECRET)
    registry = _s3_registry(s3_server, [f"s3://{ok}/data"])
    root = make_store(tmp_path / "ok", two_chunks(f"s3://{ok}/data/ok.bin"))
    assert_all_bytes(
        read_all_ways(root, registry=registry), OK_DATA[:CHUNK], OK_DATA[CHUNK : 2 * CHUNK]
    )
    refused = [
        f"s3://{other}/secret.bin",
        f"s3://{other}/data/ok.bin",  # same key, other bucket
        f"S3://{other.upper()}/data/ok.bin",
        f"s3://{ok}/database/secret.bin",  # sibling of the prefix
        f"s3://{ok}/data/../database/secret.bin",
        f"s3://{ok}/data/%2e%2e/%2e%2e/{other}/secret.bin",  # dot segments stay in the bucket
        f"s3://{ok}x/data/ok.bin",
        f"s3a://{ok}/data/ok.bin",
        f"gs://{ok}/data/ok.bin",
    ]
    for i, ref in enumerate(refused):
        root = make_store(tmp_path / f"s{i}", two_chunks(ref))
        outcomes = read_all_ways(root, registry=registry)
        assert_refused(outcomes, reference=None, only=SourceNotAllowedError)


def test_s3_root_cannot_reach_outside_its_prefix(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket(f"root-{uuid.uuid4().hex[:8]}")
    other = s3_server.create_bucket(f"other-{uuid.uuid4().hex[:8]}")
    s3_server.put_object(bucket, "secret.bin", SECRET)
    s3_server.put_object(bucket, "store2/secret.bin", SECRET)
    s3_server.put_object(other, "secret.bin", SECRET)
    cases = {
        "up": "../../secret.bin",
        "pct-up": "%2e%2e/%2e%2e/secret.bin",
        "sibling": "../../store2/secret.bin",
        "same-bucket-url": f"s3://{bucket}/secret.bin",
        "other-bucket": f"s3://{other}/secret.bin",
    }
    config = s3_server.obstore_config()
    for name, ref in cases.items():
        local = make_store(tmp_path / name, two_chunks(ref))
        prefix = f"{name}/store"
        s3_server.upload_dir(local, bucket, prefix=prefix)
        outcomes = read_all_ways(f"s3://{bucket}/{prefix}", **config)
        assert_refused(outcomes, reference=None, only=SourceNotAllowedError)
        # the store's own data, relative to the root in the bucket, reads
        good = read_all_ways(S3Store(bucket, prefix=prefix, **config), key="a/c/1")
        assert good["get"] == OK_DATA[CHUNK : 2 * CHUNK], name


# ---- offsets and lengths ------------------------------------------------------------------

BEYOND = [  # (offset, length): both valid, but the 32-byte source does not hold the range
    (28, 8),
    (32, 4),
    (10**6, 4),
    (0, 2**40),
    (0, 2**63 - 1),
    (2**62, 2**62 - 1),
    (2**63 - 5, 4),
]
INVALID = [  # (offset, length): not a valid entry at all (spec 5.3)
    (2**63 - 1, 1),
    (2**62, 2**62),
    (2**63, 0),
    (0, 2**63),
    (2**64, 4),
    (2**64 + 4, 4),
    (0, 2**64 - 1),
    (10**30, 4),
    (-1, 4),
    (0, -4),
    (-(2**63), 2**63),
]


@pytest.mark.parametrize(("offset", "length"), BEYOND)
def test_range_beyond_source_is_a_short_read(tmp_path: Path, offset: int, length: int) -> None:
    root = make_store(tmp_path / "store", two_chunks("../data/ok.bin", offset, length))
    tracemalloc.start()
    try:
        outcomes = read_all_ways(root)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    for how, got in outcomes.items():
        # a claim over the store's max_chunk_bytes is refused for its size, before any read
        want = ChunkTooLargeError if length > DEFAULT_MAX_CHUNK_BYTES else ShortReadError
        assert isinstance(got, want), f"{how}: {got!r}"
        assert got.key == "a/c/0" and "'a/c/0'" in str(got), str(got)
        assert got.url is not None and got.url.endswith("/data/ok.bin")
        assert "data/ok.bin" in str(got)
    assert peak < 64 * 2**20, f"{peak} bytes allocated for a {length}-byte claim"


@pytest.mark.parametrize(("offset", "length"), INVALID)
def test_invalid_offset_or_length_is_a_format_error(
    tmp_path: Path, offset: int, length: int
) -> None:
    root = make_store(tmp_path / "store", two_chunks("../data/ok.bin", offset, length))
    for how, got in read_all_ways(root).items():
        assert isinstance(got, ManifestFormatError), f"{how}: {got!r}"
        assert got.key == "0" and got.field in ("offset", "length"), (got.key, got.field)
        assert "manifest.json" in str(got)


def test_remote_range_beyond_source_is_a_short_read(
    tmp_path: Path, clean_range_server: RangeServer, serve_bytes: Callable[..., str]
) -> None:
    rel = serve_bytes(OK_DATA, "ok.bin")
    url = clean_range_server.url_for(rel)
    for offset, length in ((30, CHUNK + 1), (100, CHUNK), (0, 2**40), (0, 2**63 - 1)):
        for readahead in (0, 4 * 2**20):
            name = f"s{offset}-{length}-{readahead}"
            root = make_store(tmp_path / name, two_chunks(url, offset, length))
            tracemalloc.start()
            try:
                outcomes = read_all_ways(
                    root, allowed_prefixes=[clean_range_server.url], readahead_bytes=readahead
                )
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            for how, got in outcomes.items():
                # a range starting past the end is refused by the server (416): a read
                # error; one that ends past it comes back short; one over the store's
                # max_chunk_bytes is refused for its size, before any request
                want = ChunkReadError if offset >= len(OK_DATA) else ShortReadError
                if length > DEFAULT_MAX_CHUNK_BYTES:
                    want = ChunkTooLargeError
                assert isinstance(got, want), f"{how} {name}: {got!r}"
                assert got.key == "a/c/0", got
            assert peak < 64 * 2**20, peak


def test_empty_range_past_end_is_a_read_error(tmp_path: Path) -> None:
    root = make_store(tmp_path / "store", two_chunks("../data/ok.bin", 1000, 0))
    got = _catch(lambda: ManifestStore(root).get_sync("a/c/0", prototype=PROTO))
    assert isinstance(got, ChunkReadError), got


def test_source_that_shrank_after_the_manifest(tmp_path: Path) -> None:
    root = make_store(tmp_path / "store", two_chunks("../data/ok.bin"))
    store = ManifestStore(root)
    assert store.get_sync("a/c/1", prototype=PROTO).to_bytes() == OK_DATA[CHUNK : 2 * CHUNK]
    with open(root / "data" / "ok.bin", "r+b") as f:
        f.truncate(CHUNK + 2)  # chunk 1 now half there
    for got in [
        _catch(lambda: store.get_sync("a/c/1", prototype=PROTO)),  # descriptor cached
        _catch(lambda: asyncio.run(store.get("a/c/1", PROTO))),
        *read_all_ways(root, "a/c/1").values(),
    ]:
        assert isinstance(got, ShortReadError), got
        assert got.key == "a/c/1"
    # the part still there reads; the fill value never stands in for the missing part
    assert store.get_sync("a/c/0", prototype=PROTO).to_bytes() == OK_DATA[:CHUNK]
    with pytest.raises(ShortReadError):
        zarr.open_group(ManifestStore(root), mode="r")["a"][...]
    (root / "data" / "ok.bin").write_bytes(b"")
    with pytest.raises(ShortReadError):
        zarr.open_group(ManifestStore(root), mode="r")["a"][:CHUNK]


def test_remote_source_that_shrank(
    tmp_path: Path,
    clean_range_server: RangeServer,
    serve_bytes: Callable[..., str],
    range_root: Path,
) -> None:
    rel = serve_bytes(OK_DATA, "ok.bin")
    root = make_store(tmp_path / "store", two_chunks(clean_range_server.url_for(rel)))
    kwargs = {"allowed_prefixes": [clean_range_server.url], "readahead_bytes": 0}
    assert read_all_ways(root, **kwargs)["zarr"] == OK_DATA[: 2 * CHUNK]
    (range_root / rel).write_bytes(OK_DATA[:2])
    for how, got in read_all_ways(root, **kwargs).items():
        assert isinstance(got, ShortReadError), f"{how}: {got!r}"


# ---- allowed prefixes: exactly the prefix, never a sibling, never from the store -----------


def test_allowed_prefix_is_segment_wise(tmp_path: Path) -> None:
    base = tmp_path / "vol"
    (base / "data").mkdir(parents=True)
    (base / "database").mkdir()
    (base / "data" / "x.bin").write_bytes(DECOY)
    (base / "data" / "x.bin.bak").write_bytes(SECRET)
    (base / "database" / "secret.bin").write_bytes(SECRET)
    (base / "data2").symlink_to(base / "database", target_is_directory=True)
    good = local_path_to_url(base / "data" / "x.bin")
    for prefix in [str(base / "data"), str(base / "data") + "/", local_path_to_url(base / "data")]:
        root = make_store(tmp_path / "ok", two_chunks(good))
        outcomes = read_all_ways(root, allowed_prefixes=[prefix])
        assert_all_bytes(outcomes, DECOY[:CHUNK], OK_DATA[CHUNK : 2 * CHUNK])
    refused = [
        local_path_to_url(base / "database" / "secret.bin"),
        local_path_to_url(base / "data") + "/../database/secret.bin",
        local_path_to_url(base / "data") + "base/secret.bin",
        local_path_to_url(base / "data2" / "secret.bin"),
        local_path_to_url(base / "data") + "/x.bin.bak",  # with a single-file prefix below
    ]
    for i, ref in enumerate(refused):
        root = make_store(tmp_path / f"r{i}", two_chunks(ref))
        prefixes = [str(base / "data" / "x.bin")] if ref.endswith(".bak") else [str(base / "data")]
        outcomes = read_all_ways(root, allowed_prefixes=prefixes)
        assert_refused(outcomes, reference=None, only=SourceNotAllowedError)
    # a single-file prefix grants that file
    root = make_store(tmp_path / "one", two_chunks(good))
    one = read_all_ways(root, allowed_prefixes=[str(base / "data" / "x.bin")])
    assert_all_bytes(one, DECOY[:CHUNK], OK_DATA[CHUNK : 2 * CHUNK])


def test_store_cannot_widen_what_may_be_read(tmp_path: Path, outside: Path) -> None:
    """Nothing in zarr.json can allow a prefix (spec 8.1.3)."""
    doc = array_doc()
    doc["attributes"] = {"allowed_prefixes": [str(outside)]}
    doc["storage_transformers"][0]["configuration"]["x-allow"] = {
        "must_understand": False,
        "allowed_prefixes": [str(outside), outside.as_uri()],
    }
    root = make_store(tmp_path / "store", two_chunks("../../outside/secret.bin"), doc=doc)
    write_json(
        root / "zarr.json",
        {"zarr_format": 3, "node_type": "group", "attributes": {"allowed_prefixes": ["/"]}},
    )
    assert_refused(read_all_ways(root), reference=None, only=SourceNotAllowedError)


# ---- malformed and hostile JSON ------------------------------------------------------------

DEEP = 10**5
GOOD_ENTRY = b'{"path": "../data/ok.bin", "offset": 0, "length": 4}'
BAD_MANIFESTS = {
    "empty-file": b"",
    "truncated": b'{"0": {"path": "../data/ok.bin", "offset": 0, "len',
    "not-json": b"manifest",
    "trailing-comma": b'{"0": ' + GOOD_ENTRY + b",}",
    "trailing-garbage": b'{"0": ' + GOOD_ENTRY + b"} {}",
    "nan": b'{"0": {"path": "../data/ok.bin", "offset": NaN, "length": 4}}',
    "huge-float": b'{"0": {"path": "../data/ok.bin", "offset": 1e999, "length": 4}}',
    "bom": b"\xef\xbb\xbf{}",
    "utf16": '{"0": {"path": "../data/ok.bin", "offset": 0, "length": 4}}'.encode("utf-16"),
    "invalid-utf8": b'{"0": {"path": "../data/\xff.bin", "offset": 0, "length": 4}}',
    "lone-surrogate": b'{"0": {"path": "../data/\\ud800.bin", "offset": 0, "length": 4}}',
    "array": b"[]",
    "string": b'"../data/ok.bin"',
    "null": b"null",
    "duplicate-key": b'{"0": ' + GOOD_ENTRY + b', "0": ' + GOOD_ENTRY + b"}",
    "duplicate-field": b'{"0": {"path": "../data/ok.bin", "path": "/etc/passwd", "offset": 0, '
    b'"length": 4}}',
    "deep-array": b"[" * DEEP + b"]" * DEEP,
    "deep-object": b'{"0":' * DEEP + b"{}" + b"}" * DEEP,
    "deep-in-entry": b'{"0": {"path": '
    + b"[" * DEEP
    + b"]" * DEEP
    + b', "offset": 0, "length": 4}}',
    "deep-unclosed": b"[" * DEEP,
    "key-too-big": b'{"99999999999999999999": ' + GOOD_ENTRY + b"}",
    "key-outside-grid": b'{"2": ' + GOOD_ENTRY + b"}",
    "key-2d": b'{"0.0": ' + GOOD_ENTRY + b"}",
    "key-negative": b'{"-1": ' + GOOD_ENTRY + b"}",
    "key-unicode-digit": '{"\u0661": '.encode() + GOOD_ENTRY + b"}",
    "entry-list": b'{"0": ["../data/ok.bin", 0, 4]}',
}


@pytest.mark.parametrize("data", BAD_MANIFESTS.values(), ids=BAD_MANIFESTS.keys())
def test_malformed_manifest_is_a_format_error(tmp_path: Path, data: bytes) -> None:
    root = make_store(tmp_path / "store", data)
    for how, got in read_all_ways(root).items():
        assert isinstance(got, ManifestFormatError), f"{how}: {type(got).__name__}: {got}"
        assert got.location is not None and got.location.endswith("a/manifest.json")
        assert len(str(got)) < 2000, "the error message echoes the input"
    store = ManifestStore(root)
    # the array's metadata still serves; its chunks fail, never read as fill values
    served = store.get_sync("a/zarr.json", prototype=PROTO)
    assert served is not None and b"storage_transformers" not in served.to_bytes()
    assert isinstance(_catch(lambda: store.get_sync("a/c/1", prototype=PROTO)), ManifestFormatError)
    beyond = _catch(lambda: store.get_sync("a/c/9", prototype=PROTO))
    assert beyond is None or isinstance(beyond, ManifestFormatError), beyond


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


BAD_ZARR_JSON = {
    "truncated": b'{"zarr_format": 3, "node_type": "arr',
    "deep-top": _deep(DEEP),
    "deep-attributes": b'{"zarr_format": 3, "node_type": "array", "attributes": {"x": '
    + _deep(DEEP)
    + b"}}",
    "deep-codec-config": json.dumps({**array_doc(), "codecs": "@"})
    .encode()
    .replace(
        b'"@"',
        b'[{"name": "bytes", "configuration": ' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}]",
    ),
    "not-object": b"[]",
    "zarr-format-2": json.dumps({**array_doc(), "zarr_format": 2}).encode(),
    "zarr-format-true": json.dumps({**array_doc(), "zarr_format": True}).encode(),
    "zarr-format-float": json.dumps({**array_doc()})
    .encode()
    .replace(b'"zarr_format": 3', b'"zarr_format": 3.0'),
    "node-type-other": json.dumps({**array_doc(), "node_type": "Array"}).encode(),
    "missing-members": b'{"zarr_format": 3, "node_type": "array"}',
    "shape-negative": json.dumps({**array_doc(), "shape": [-8]}).encode(),
    "shape-huge": json.dumps({**array_doc(), "shape": [10**30]}).encode(),
    "shape-string": json.dumps({**array_doc(), "shape": "8"}).encode(),
    "dtype-unknown": json.dumps({**array_doc(), "data_type": "uint9"}).encode(),
    "codecs-unknown": json.dumps({**array_doc(), "codecs": [{"name": "evil"}]}).encode(),
    "transformer-twice": json.dumps(
        {**array_doc(), "storage_transformers": array_doc()["storage_transformers"] * 2}
    ).encode(),
    "transformer-unknown": json.dumps(
        {**array_doc(), "storage_transformers": [{"name": "x", "configuration": {}}]}
    ).encode(),
    "transformer-not-list": json.dumps(
        {**array_doc(), "storage_transformers": {"name": "chunk-manifest-json"}}
    ).encode(),
    "manifest-outside": json.dumps(
        {
            **array_doc(),
            "storage_transformers": [
                {"name": "chunk-manifest-json", "configuration": {"manifest": "../m.json"}}
            ],
        }
    ).encode(),
    "manifest-absolute": json.dumps(
        {
            **array_doc(),
            "storage_transformers": [
                {"name": "chunk-manifest-json", "configuration": {"manifest": "/etc/passwd"}}
            ],
        }
    ).encode(),
    "manifest-not-string": json.dumps(
        {
            **array_doc(),
            "storage_transformers": [
                {"name": "chunk-manifest-json", "configuration": {"manifest": ["x"]}}
            ],
        }
    ).encode(),
}


def _with_transformer(entry: Any) -> bytes:
    return json.dumps({**array_doc(), "storage_transformers": [entry]}).encode()


_SPEC_4 = (
    "BUG: format/transformer.py parse_array_document accepts a chunk-manifest-json entry or "
    "manifest value that spec section 4 says a reader MUST reject"
)
BAD_ZARR_JSON_MORE = [
    pytest.param(
        json.dumps({**array_doc(), "data_type": "int64", "fill_value": 2**64}).encode(),
        id="fill-value-overflow",
    ),
    pytest.param(
        _with_transformer(
            {
                "name": "chunk-manifest-json",
                "configuration": {"manifest": "./manifest.json"},
                "extra": 1,
            }
        ),
        id="transformer-extra-member",
    ),
    pytest.param(
        _with_transformer(
            {"name": "chunk-manifest-json", "configuration": {"manifest": "manifest.json?x=1"}}
        ),
        id="manifest-with-query",
    ),
    pytest.param(
        _with_transformer(
            {"name": "chunk-manifest-json", "configuration": {"manifest": "manifest.json#x"}}
        ),
        id="manifest-with-fragment",
    ),
]


@pytest.mark.parametrize(
    "data",
    [*[pytest.param(v, id=k) for k, v in BAD_ZARR_JSON.items()], *BAD_ZARR_JSON_MORE],
)
def test_malformed_array_zarr_json_is_a_format_error(tmp_path: Path, data: bytes) -> None:
    root = make_store(tmp_path / "store", two_chunks("../data/ok.bin"), doc=data)
    for how, got in read_all_ways(root).items():
        assert isinstance(got, ManifestFormatError), f"{how}: {type(got).__name__}: {got}"
        assert got.location is not None and got.location.endswith("a/zarr.json")
        assert len(str(got)) < 5000, "the error message echoes the input"


@pytest.mark.parametrize("data", [b"{", _deep(DEEP), b'{"zarr_format": 3}', b"\xff"])
def test_malformed_root_zarr_json_is_a_format_error(tmp_path: Path, data: bytes) -> None:
    root = make_store(tmp_path / "store", two_chunks("../data/ok.bin"))
    (root / "zarr.json").write_bytes(data)
    with pytest.raises(ManifestFormatError, match=r"zarr\.json"):
        zarr.open_group(ManifestStore(root), mode="r")


# ---- huge manifests and absurd grids (subprocesses) ----------------------------------------

_PROBE = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np
    n, layout, store_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    from pathlib import Path
    from zarr_manifest import ManifestStore
    from zarr_manifest.manifest import ChunkManifest
    from zarr.core.buffer import default_buffer_prototype
    t0 = time.perf_counter()
    # The attacker's bytes, made by the library's numpy encoder (fast), then respaced for
    # the "spaced" layout as Python's json.dump writes it.
    data = ChunkManifest.from_arrays(
        paths="../data/ok.bin", offsets=np.arange(n, dtype=np.int64) % 8 * 4,
        lengths=np.full(n, 4),
    ).to_json_bytes()
    if layout == "spaced":
        data = data.replace(b'":{"path":', b'": {"path": ').replace(b',"offset":', b', "offset": ')
    root = Path(store_dir)
    (root / "a").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "ok.bin").write_bytes(bytes(range(32)))
    (root / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    doc = json.loads(sys.argv[4])
    doc["shape"] = [4 * n]
    (root / "a" / "zarr.json").write_text(json.dumps(doc))
    (root / "a" / "manifest.json").write_bytes(data)
    size = len(data)
    del data
    t1 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    store = ManifestStore(root)
    proto = default_buffer_prototype()
    got = store.get_sync(f"a/c/{n - 1}", prototype=proto).to_bytes()
    t2 = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    expect = bytes(range(32))[(n - 1) % 8 * 4:][:4]
    print(json.dumps({"ok": got == expect, "bytes": size, "generate_s": t1 - t0,
                      "load_s": t2 - t1, "rss_before": before, "rss_after": after}))
    """
)


def _load_big_manifest(tmp_path: Path, n: int, layout: str) -> dict[str, Any]:
    """Write an ``n``-key manifest store and load it in a fresh process; its measurements."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            str(n),
            layout,
            str(tmp_path / "big"),
            json.dumps(array_doc()),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"], result
    return result


def test_big_manifest_loads_in_bounded_memory(tmp_path: Path) -> None:
    """10^6 keys (58 MB) in the writer's layout.  10^7 keys take 20-45 s to load on a 2-core
    machine (mostly `np.unique` in ChunkManifest._init_from_rows, whose speed varies widely
    from run to run), so the default run uses 10^6 and the 10^7 run is
    `test_very_big_manifest_loads_in_bounded_memory`."""
    n = 10**6
    r = _load_big_manifest(tmp_path, n, "canonical")
    grew = r["rss_after"] - r["rss_before"]
    print(f"10^6 canonical: {r}")
    assert grew < 400 * 2**20, f"loading {r['bytes']} bytes grew RSS by {grew / 2**20:.0f} MiB"
    assert r["load_s"] < 30, r


@pytest.mark.skipif(not os.environ.get("ZARR_MANIFEST_HEAVY"), reason="set ZARR_MANIFEST_HEAVY=1")
def test_very_big_manifest_loads_in_bounded_memory(tmp_path: Path) -> None:
    r = _load_big_manifest(tmp_path, 10**7, "canonical")
    print(f"10^7 canonical: {r}")
    assert r["rss_after"] < 2 * 2**30, r
    assert r["load_s"] < 120, r


def test_big_manifest_in_another_layout_is_refused_above_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A manifest not in the writer's layout is parsed as a whole by orjson (~700 bytes an
    entry): above MAX_GENERIC_MANIFEST_BYTES it is refused with a clear error instead of
    exhausting memory; the canonical layout of the same size is not limited."""
    from zarr_manifest import _json_codec

    m = ChunkManifest.from_arrays(
        paths="../data/ok.bin", offsets=np.arange(200) % 8 * 4, lengths=np.full(200, 4)
    )
    canonical = m.to_json_bytes()
    spaced = canonical.replace(b'":{"path":', b'": {"path": ')
    monkeypatch.setattr(_json_codec, "MAX_GENERIC_MANIFEST_BYTES", len(spaced) - 1)
    with pytest.raises(ManifestFormatError, match="ZARR_MANIFEST_MAX_GENERIC_BYTES") as info:
        ChunkManifest.from_json_bytes(spaced, shape=(200,), location="big/manifest.json")
    assert info.value.location == "big/manifest.json"
    assert ChunkManifest.from_json_bytes(canonical, shape=(200,)) == m
    monkeypatch.setattr(_json_codec, "MAX_GENERIC_MANIFEST_BYTES", len(spaced))
    assert ChunkManifest.from_json_bytes(spaced, shape=(200,)) == m


_GRID_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    # an address-space cap: a runaway allocation fails here instead of swapping the machine
    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
    from zarr_manifest.manifest import ChunkManifest
    out = []
    for key, shape in json.loads(sys.argv[1]):
        data = ('{"%s": {"path": "x.bin", "offset": 0, "length": 1}}' % key).encode()
        try:
            ChunkManifest.from_json_bytes(data, shape=None if shape is None else tuple(shape))
            out.append("accepted")
        except BaseException as e:
            out.append(type(e).__name__)
    print(json.dumps(out))
    """
)


def _grid_probe(cases: list[tuple[str, list[int] | None]]) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _GRID_PROBE, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_absurd_key_without_shape_is_a_manifest_error() -> None:
    from zarr_manifest.manifest import ChunkManifest

    for key in ("1000000000000", "9223372036854775808", "1000000.1000000.1000000"):
        data = b'{"' + key.encode() + b'": {"path": "x.bin", "offset": 0, "length": 1}}'
        with pytest.raises(ManifestError) as info:
            ChunkManifest.from_json_bytes(data)
        assert not isinstance(info.value, MemoryError)
    assert (
        _grid_probe([("1000000000000", None), ("0", [2**40]), ("0", [2**20, 2**20])])
        == ["ManifestFormatError"] * 3
    )


def test_largest_key_without_shape_is_a_manifest_error() -> None:
    from zarr_manifest.manifest import ChunkManifest

    data = b'{"9223372036854775807": {"path": "x.bin", "offset": 0, "length": 1}}'
    with pytest.raises(ManifestError):
        ChunkManifest.from_json_bytes(data)


def test_large_sparse_grid_is_a_manifest_error_not_memory_error() -> None:
    assert (
        _grid_probe([("8000000000", None), ("0", [8 * 10**9]), ("90000.90000", None)])
        == ["ManifestFormatError"] * 3
    )


def test_large_grid_from_zarr_json_through_the_store(tmp_path: Path) -> None:
    """zarr.json is the attacker's too: a shape far beyond any manifest is refused as a
    documented error when the array is read, not a crash."""
    doc = array_doc(shape=2**62, chunk=1)
    root = make_store(tmp_path / "store", {"0": entry("../data/ok.bin", 0, 1)}, doc=doc)
    for how in ("get", "get_sync"):
        got = read_all_ways(root)[how]
        assert isinstance(got, ManifestError), f"{how}: {got!r}"


def test_nul_in_the_manifest_member_is_a_format_error(tmp_path: Path) -> None:
    """A manifest location holding a NUL is no URI reference: a format error (found by the
    fuzzer, where os.path.realpath raised ValueError while listing)."""
    doc = array_doc()
    doc["storage_transformers"][0]["configuration"]["manifest"] = "./man\u0000ifest.json"
    root = make_store(tmp_path / "store", {"0": entry("../data/ok.bin", 0, 8)}, doc=doc)
    for how, got in read_all_ways(root).items():
        assert isinstance(got, ManifestFormatError), f"{how}: {got!r}"

    async def listing() -> list[str]:
        return [k async for k in ManifestStore(root).list()]

    with pytest.raises(ManifestFormatError, match="control character"):
        asyncio.run(listing())


class _RedirectingHandler(http.server.BaseHTTPRequestHandler):
    """Answers /public/* with a redirect to /secret, which serves the secret."""

    def do_GET(self) -> None:
        if self.path.startswith("/public/"):
            self.send_response(302)
            self.send_header("Location", "/secret")
            self.end_headers()
            return
        body = bytes(range(200, 216))
        ask = self.headers.get("Range", "")
        if ask.startswith("bytes="):
            first, last = (int(x) for x in ask[len("bytes=") :].split("-"))
            body = body[first : last + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{last}/16")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_http_redirect_out_of_the_allowed_prefix_is_not_followed(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RedirectingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        (tmp_path / "a").mkdir()
        (tmp_path / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
        doc = array_doc()
        (tmp_path / "a" / "zarr.json").write_text(json.dumps(doc))
        entry = {"path": f"{base}/public/x.bin", "offset": 0, "length": 4}
        (tmp_path / "a" / "manifest.json").write_text(json.dumps({"0": entry}))
        store = ManifestStore(tmp_path, allowed_prefixes=[f"{base}/public/"], verify="never")
        with pytest.raises((SourceNotAllowedError, ChunkReadError)):
            store.get_sync("a/c/0", prototype=default_buffer_prototype())
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_http_redirects_are_rechecked_against_the_allowed_prefixes(
    tmp_path: Path,
    clean_range_server: RangeServer,
    serve_bytes: Callable[..., str],
    status: int,
) -> None:
    """An allowed server redirecting (any 3xx kind) to a path outside the allowed prefix is
    refused, sync and async, before a single byte of the target is requested."""
    srv = clean_range_server
    public = serve_bytes(OK_DATA, "public/x.bin")
    secret = serve_bytes(SECRET, "secret.bin")
    allowed = srv.url_for(public.rsplit("/", 1)[0] + "/")
    srv.set_redirect(public, srv.url_for(secret), status=status)
    try:
        root = make_store(tmp_path / "store", two_chunks(srv.url_for(public)))
        outcomes = read_all_ways(root, allowed_prefixes=[allowed], verify="never")
    finally:
        srv.set_redirect(public, None)
    for how, got in outcomes.items():
        assert_no_secret(got)
        assert isinstance(got, SourceNotAllowedError), f"{how}: {got!r}"
        assert "redirects" in str(got) and srv.url_for(secret) in str(got), f"{how}: {got}"
    assert srv.request_count(secret) == 0


def test_http_redirect_inside_the_allowed_prefix_is_followed(
    tmp_path: Path, clean_range_server: RangeServer, serve_bytes: Callable[..., str]
) -> None:
    """A redirect to another allowed URL is followed (data portals move files), and the
    bytes come from the target."""
    srv = clean_range_server
    moved = serve_bytes(OK_DATA, "public/new.bin")
    old = moved.replace("new.bin", "old.bin")
    allowed = srv.url_for(moved.rsplit("/", 1)[0] + "/")
    srv.set_redirect(old, "new.bin", status=301)  # relative Location
    try:
        root = make_store(tmp_path / "store", two_chunks(srv.url_for(old)))
        outcomes = read_all_ways(root, allowed_prefixes=[allowed], verify="never")
    finally:
        srv.set_redirect(old, None)
    assert outcomes["get"] == OK_DATA[:CHUNK]
    assert outcomes["get_sync"] == OK_DATA[:CHUNK]
    assert outcomes["zarr"] == OK_DATA[:CHUNK] + OK_DATA[CHUNK : 2 * CHUNK]


def test_http_redirect_loops_are_refused(
    tmp_path: Path, clean_range_server: RangeServer, serve_bytes: Callable[..., str]
) -> None:
    srv = clean_range_server
    first = serve_bytes(OK_DATA, "public/a.bin")
    second = first.replace("a.bin", "b.bin")
    allowed = srv.url_for(first.rsplit("/", 1)[0] + "/")
    srv.set_redirect(first, "b.bin")
    srv.set_redirect(second, "a.bin")
    try:
        root = make_store(tmp_path / "store", two_chunks(srv.url_for(first)))
        outcomes = read_all_ways(root, allowed_prefixes=[allowed], verify="never")
    finally:
        srv.set_redirect(first, None)
        srv.set_redirect(second, None)
    for how, got in outcomes.items():
        assert isinstance(got, SourceNotAllowedError), f"{how}: {got!r}"
        assert "more than" in str(got)


# ---- races, special files, hard links (issue 13 items 4, 5, 6, 15) ----------------------

_RENAME_EXCHANGE = 2


def _renameat2_exchange() -> Callable[[str, str], None] | None:
    """``renameat2(RENAME_EXCHANGE)`` through ctypes (Linux), else None."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return None
    at_fdcwd = -100

    def exchange(a: str, b: str) -> None:
        fn(at_fdcwd, a.encode(), at_fdcwd, b.encode(), _RENAME_EXCHANGE)

    return exchange


def test_swapping_a_directory_for_a_symlink_never_leaks(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TOCTOU: a thread swaps a directory inside the root with a symlink to an outside
    directory (atomically, renameat2 RENAME_EXCHANGE) while the same source is read over
    and over; every read either returns the file's own bytes or fails with a documented
    error -- never a byte from outside."""
    from zarr_manifest.store import fetch

    exchange = _renameat2_exchange()
    if exchange is None:
        pytest.skip("renameat2 is not available")
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.bin").write_bytes(OK_DATA)
    (outside / "d").mkdir()
    (outside / "d" / "f.bin").write_bytes(SECRET)
    (root / "swap").symlink_to(outside / "d", target_is_directory=True)
    registry = SourceRegistry({str(root): None})
    source = registry.resolve(local_path_to_url(str(root / "d" / "f.bin")))
    # Reopen (and so re-check) the file at every read, as after a cache expiry.
    monkeypatch.setattr(fetch, "LOCAL_REVALIDATE_SECONDS", -1.0)
    stop = threading.Event()

    def swap() -> None:
        a, b = str(root / "d"), str(root / "swap")
        while not stop.is_set():
            exchange(a, b)

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    leaked = refused = ok = 0
    try:
        # the old check-then-open leaked about once per 1,000 reads here
        for i in range(12000):
            try:
                got = bytes(fetch.read_range_sync(source, 0, 8))
            except (SourceNotAllowedError, ChunkReadError):
                refused += 1
                continue
            if got == SECRET[:8]:
                leaked += 1
            else:
                assert got == OK_DATA[:8]
                ok += 1
            if i % 16:
                continue
            # resolving while the swap runs: a refusal, never a bare OSError
            with contextlib.suppress(SourceNotAllowedError):
                registry.copy().resolve(local_path_to_url(str(root / "d" / "f.bin")))
    finally:
        stop.set()
        swapper.join(timeout=5)
        close_local_files()
    assert leaked == 0, f"{leaked} reads returned bytes from outside ({ok} ok, {refused} refused)"
    assert ok > 0 and refused > 0


def test_realpath_failing_mid_race_is_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.path.realpath raises OSError(EINVAL) when a component stops being a symlink
    between its lstat and readlink: the reference is refused, naming it."""
    import errno

    root = make_store(tmp_path / "store", {"0": entry("../data/ok.bin")})
    registry = SourceRegistry({str(root): None})

    def racing_realpath(path: Any, *args: Any, **kwargs: Any) -> str:
        raise OSError(errno.EINVAL, "Invalid argument", str(path))

    monkeypatch.setattr(os.path, "realpath", racing_realpath)
    url = local_path_to_url(str(root / "data" / "ok.bin"))
    with pytest.raises(SourceNotAllowedError, match="could not be resolved") as info:
        registry.resolve(url, key="a/c/0")
    assert info.value.key == "a/c/0" and url in str(info.value)


def _in_thread(fn: Callable[[], Outcome], timeout: float = 20.0) -> Outcome:
    box: list[Outcome] = []
    worker = threading.Thread(target=lambda: box.append(_catch(fn)), daemon=True)
    worker.start()
    worker.join(timeout)
    return box[0] if box else TimeoutError(f"still blocked after {timeout} s")


def test_fifo_as_data_file_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO named by a reference would block a reader (and zarr's event loop) until a
    writer comes; it is refused at once, as is any file that is not a regular file."""
    root = make_store(tmp_path / "store", two_chunks("../data/pipe.bin"))
    fifo = root / "data" / "pipe.bin"
    os.mkfifo(fifo)
    try:
        outcomes = _in_thread(lambda: read_all_ways(root))  # type: ignore[arg-type,return-value]
    finally:
        # unblock a reader that did block (old code), so no thread hangs on
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert isinstance(outcomes, dict), outcomes
    for how, got in outcomes.items():
        assert isinstance(got, SourceNotAllowedError), f"{how}: {got!r}"
        assert "not a regular file (a FIFO)" in str(got), f"{how}: {got}"


def test_character_device_as_data_file_is_refused(tmp_path: Path) -> None:
    root = make_store(tmp_path / "store", two_chunks("../data/dev.bin"))
    (root / "data" / "dev.bin").symlink_to("/dev/zero")
    # /dev/zero lies outside the root: allow it explicitly, the kind of file is what counts
    outcomes = read_all_ways(root, allowed_prefixes=["/dev/zero"])
    for how, got in outcomes.items():
        assert isinstance(got, SourceNotAllowedError), f"{how}: {got!r}"
        assert "character device" in str(got), f"{how}: {got}"


def test_hard_links_strict_mode(tmp_path: Path, outside: Path) -> None:
    """A hard link inside the root to an outside file is the file itself: read by default
    (spec 8.2), refused with ``SourceRegistry(hard_links=False)``, and read again under a
    prefix the caller exempts."""
    root = make_store(tmp_path / "store", two_chunks("../data/hl.bin"))
    os.link(outside / "secret.bin", root / "data" / "hl.bin")
    default = read_all_ways(root)
    assert default["get_sync"] == SECRET[:CHUNK]
    strict = read_all_ways(root, registry=SourceRegistry(hard_links=False))
    for how, got in strict.items():
        assert isinstance(got, SourceNotAllowedError), f"{how}: {got!r}"
        assert "2 hard links" in str(got), f"{how}: {got}"
    exempt = read_all_ways(root, registry=SourceRegistry(hard_links=[str(root / "data")]))
    assert exempt["get_sync"] == SECRET[:CHUNK]
    # a file with one link is read in strict mode
    ok = make_store(tmp_path / "ok", two_chunks("../data/ok.bin"))
    assert read_all_ways(ok, registry=SourceRegistry(hard_links=False))["get"] == OK_DATA[:CHUNK]
