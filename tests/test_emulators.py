"""The Azure (Azurite) and GCS (fake-gcs-server) emulators the cloud tests run on.

They are started as child process groups; these tests pin down that obstore reaches them
with the configuration they give, that what the GCS proxy translates keeps GCS's
semantics (create-only and generation-conditional puts), and that stopping one -- also
one that never became ready -- leaves no process behind.
"""

from __future__ import annotations

import socket
import stat
import time
from pathlib import Path

import obstore
import pytest
from obstore.exceptions import AlreadyExistsError, PreconditionError
from obstore.store import from_url

import emulator_requirement
from zarr_manifest.testing import AzuriteServer, EmulatorStartError, GCSServer
from zarr_manifest.testing._emulator_process import EmulatorProcess, group_alive
from zarr_manifest.testing.azurite import find_azurite
from zarr_manifest.testing.gcs_server import find_fake_gcs_server


def _port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _gone(pgid: int, timeout: float = 5.0) -> bool:
    # an orphaned child is reaped by init a moment after it dies
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---- Azurite ---------------------------------------------------------------------------------


def test_azurite_round_trip(azurite_server: AzuriteServer, azure_container: str) -> None:
    assert azurite_server.create_container(azure_container) == azure_container  # idempotent
    store = azurite_server.azure_store(azure_container)
    obstore.put(store, "a/b c.bin", b"0123456789")
    # the same container through a URL and the explicit configuration (no environment)
    by_url = from_url(f"az://{azure_container}/a", **azurite_server.obstore_config())
    assert bytes(obstore.get_range(by_url, "b c.bin", start=2, end=5)) == b"234"
    assert [m["path"] for m in obstore.list(by_url).collect()] == ["b c.bin"]


def test_azurite_needs_its_key(azurite_server: AzuriteServer, azure_container: str) -> None:
    config = azurite_server.obstore_config()
    config["account_key"] = "d3Jvbmcga2V5"  # base64 of "wrong key"
    store = from_url(f"az://{azure_container}", retry_config={"max_retries": 0}, **config)
    with pytest.raises(Exception, match=r"403|authenticat"):
        obstore.put(store, "x", b"1")


def test_azurite_upload_dir(
    azurite_server: AzuriteServer, azure_container: str, tmp_path: Path
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.bin").write_bytes(b"xx")
    (tmp_path / "y.bin").write_bytes(b"y")
    names = azurite_server.upload_dir(tmp_path, azure_container, prefix="pre/")
    assert names == ["pre/sub/x.bin", "pre/y.bin"]
    store = azurite_server.azure_store(azure_container)
    assert bytes(obstore.get(store, "pre/sub/x.bin").bytes()) == b"xx"


def test_azurite_lifecycle() -> None:
    if find_azurite() is None:
        emulator_requirement.emulator_installed("Azurite (npm package azurite)", None)
    server = AzuriteServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.endpoint
    with server:
        port, pgid = server.port, server.process_group
        container = server.create_container("lifecycle")
        obstore.put(server.azure_store(container), "x", b"1")
    assert not server.running
    assert _gone(pgid), "Azurite's process group outlived stop()"
    assert _port_is_closed(port)
    server.stop()  # idempotent


# ---- fake-gcs-server ---------------------------------------------------------------------------


def test_gcs_round_trip(gcs_server: GCSServer, gcs_bucket: str) -> None:
    assert gcs_server.create_bucket(gcs_bucket) == gcs_bucket  # idempotent
    store = gcs_server.gcs_store(gcs_bucket)
    result = obstore.put(store, "a/b c.bin", b"0123456789")  # the XML API's PUT, translated
    meta = obstore.head(store, "a/b c.bin")
    assert (meta["size"], meta["e_tag"], meta["version"]) == (
        10,
        result["e_tag"],
        result["version"],
    )
    by_url = from_url(f"gs://{gcs_bucket}/a", **gcs_server.obstore_config())
    assert bytes(obstore.get_range(by_url, "b c.bin", start=2, end=5)) == b"234"
    assert [m["path"] for m in obstore.list(by_url).collect()] == ["b c.bin"]
    obstore.delete(store, "a/b c.bin")
    assert obstore.list(store).collect() == []


def test_gcs_conditional_puts(gcs_server: GCSServer, gcs_bucket: str) -> None:
    store = gcs_server.gcs_store(gcs_bucket)
    first = obstore.put(store, "k", b"1", mode="create")
    with pytest.raises(AlreadyExistsError):
        obstore.put(store, "k", b"2", mode="create")
    second = obstore.put(
        store, "k", b"2", mode={"e_tag": first["e_tag"], "version": first["version"]}
    )
    with pytest.raises(PreconditionError):  # the generation read first is no longer current
        obstore.put(store, "k", b"3", mode={"e_tag": first["e_tag"], "version": first["version"]})
    assert bytes(obstore.get(store, "k").bytes()) == b"2"
    assert obstore.head(store, "k")["version"] == second["version"]


def test_gcs_refuses_what_it_does_not_translate(gcs_server: GCSServer, gcs_bucket: str) -> None:
    store = from_url(
        f"gs://{gcs_bucket}", retry_config={"max_retries": 0}, **gcs_server.obstore_config()
    )
    obstore.put(store, "src", b"1")
    with pytest.raises(Exception, match="not emulated"):
        obstore.copy(store, "src", "dst")
    assert [m["path"] for m in obstore.list(store).collect()] == ["src"]


def test_gcs_lifecycle() -> None:
    if find_fake_gcs_server() is None:
        emulator_requirement.emulator_installed("fake-gcs-server", None)
    server = GCSServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.endpoint
    with server:
        port, pgid = server.port, server.process_group
        upstream = int(server.upstream_endpoint.rsplit(":", 1)[1])
        obstore.put(server.gcs_store(server.create_bucket("lifecycle")), "x", b"1")
    assert not server.running
    assert _gone(pgid), "fake-gcs-server's process group outlived stop()"
    assert _port_is_closed(port) and _port_is_closed(upstream)
    server.stop()  # idempotent


# ---- starting and stopping -------------------------------------------------------------------


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "emulator.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_start_that_times_out_kills_the_whole_group(tmp_path: Path) -> None:
    # a program that never says it listens, with a child of its own
    program = _script(tmp_path, "echo starting\nsleep 60 &\nsleep 60\n")
    server = AzuriteServer(program=program, start_timeout=1.0)
    with pytest.raises(EmulatorStartError, match=r"not ready within 1\.0 s") as info:
        server.start()
    assert "starting" in str(info.value)  # the program's output is in the error
    assert not server.running


def test_stop_kills_children_too(tmp_path: Path) -> None:
    program = _script(tmp_path, "sleep 60 &\necho ready\nwait\n")
    process = EmulatorProcess([program], name="script")
    assert process.wait_for_line(lambda line: line if line == "ready" else None, 10.0)
    assert process.running()
    process.stop()
    assert _gone(process.pgid)


def test_a_program_that_exits_is_an_error(tmp_path: Path) -> None:
    program = _script(tmp_path, "echo 'no port for you' >&2\nexit 3\n")
    with pytest.raises(EmulatorStartError, match="exited with code 3") as info:
        AzuriteServer(program=program).start()
    assert "no port for you" in str(info.value)
    with pytest.raises(EmulatorStartError, match="exited with code 3"):
        GCSServer(program=program).start()


def test_a_missing_program_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EmulatorStartError, match="cannot run"):
        AzuriteServer(program=str(tmp_path / "absent")).start()


# ---- the fixtures: skip for a developer, fail in CI -----------------------------------------


def test_missing_emulator_skips_without_the_requirement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(emulator_requirement.REQUIRE_EMULATORS, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"\./dev\.sh test"):
        emulator_requirement.emulator_installed("Azurite", None)
    emulator_requirement.emulator_installed(
        "Azurite", "/usr/bin/azurite-blob"
    )  # installed: no effect


def test_missing_emulator_fails_under_the_requirement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(emulator_requirement.REQUIRE_EMULATORS, "1")
    with pytest.raises(pytest.fail.Exception, match="ZARR_MANIFEST_REQUIRE_EMULATORS=1"):
        emulator_requirement.emulator_installed("Azurite", None)
