"""SourceRegistry: allowed URL prefixes -> obstore stores, default-deny."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import obstore
import pytest
from obstore.store import HTTPStore, LocalStore, MemoryStore, S3Store

from zarr_manifest.errors import ManifestFormatError, SourceNotAllowedError
from zarr_manifest.format.paths import local_path_to_url
from zarr_manifest.store.sources import Source, SourceRegistry


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/{a.bin, sub/b c.bin, ü.bin, in_link -> sub/b c.bin, out_link -> ../outside/secret},
    outside/secret, other/o.bin."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"A" * 10)
    (root / "sub" / "b c.bin").write_bytes(b"B" * 10)
    (root / "ü.bin").write_bytes(b"U" * 10)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"secret")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "o.bin").write_bytes(b"O" * 10)
    os.symlink(root / "sub" / "b c.bin", root / "in_link")
    os.symlink(tmp_path / "outside" / "secret", root / "out_link")
    os.symlink(tmp_path / "outside", root / "out_dir")
    os.symlink(tmp_path / "other" / "o.bin", root / "to_other")
    return tmp_path


def url(p: Path | str) -> str:
    return local_path_to_url(p)


def test_empty_registry_denies_everything(tree: Path) -> None:
    reg = SourceRegistry()
    assert reg.prefixes == ()
    assert len(reg) == 0
    with pytest.raises(SourceNotAllowedError, match="allowed prefixes: none") as info:
        reg.resolve(url(tree / "root" / "a.bin"), key="x/c/0")
    assert info.value.key == "x/c/0"
    assert info.value.path == url(tree / "root" / "a.bin")
    assert "'x/c/0'" in str(info.value)


def test_local_source_resolves_to_real_path_and_store(tree: Path) -> None:
    reg = SourceRegistry.from_urls([url(tree / "root")])
    src = reg.resolve(url(tree / "root" / "sub" / "b c.bin"))
    assert isinstance(src, Source)
    assert src.url == url(tree / "root" / "sub" / "b c.bin")
    assert src.url.endswith("/sub/b%20c.bin")
    assert src.path == "sub/b c.bin"  # decoded, as obstore expects
    assert src.local_path == os.path.realpath(tree / "root" / "sub" / "b c.bin")
    assert isinstance(src.store, LocalStore)
    # the store and path really name the file
    assert bytes(obstore.get_range(src.store, src.path, start=0, end=3)) == b"BBB"
    uni = reg.resolve(url(tree / "root" / "ü.bin"))
    assert uni.path == "ü.bin"
    assert bytes(obstore.get_range(uni.store, uni.path, start=0, end=2)) == b"UU"


def test_plain_local_path_prefix_is_accepted(tree: Path) -> None:
    reg = SourceRegistry.from_urls([str(tree / "root")])
    assert reg.prefixes == (url(tree / "root"),)
    assert reg.resolve(url(tree / "root" / "a.bin")).path == "a.bin"


def test_symlink_pointing_out_of_root_is_refused(tree: Path) -> None:
    reg = SourceRegistry.from_urls([url(tree / "root")])
    # a symlink to a file inside the root is fine, and read through its target
    inside = reg.resolve(url(tree / "root" / "in_link"))
    assert inside.local_path == os.path.realpath(tree / "root" / "sub" / "b c.bin")
    assert inside.path == "sub/b c.bin"
    for escape in ["out_link", "out_dir/secret", "to_other"]:
        with pytest.raises(SourceNotAllowedError, match="real path") as info:
            reg.resolve(url(tree / "root" / escape), key="k")
        assert info.value.key == "k"


def test_symlink_into_another_allowed_root_reads_from_there(tree: Path) -> None:
    reg = SourceRegistry.from_urls([url(tree / "root"), url(tree / "other")])
    src = reg.resolve(url(tree / "root" / "to_other"))
    assert src.local_path == os.path.realpath(tree / "other" / "o.bin")
    assert src.path == "o.bin"
    assert bytes(obstore.get_range(src.store, src.path, start=0, end=1)) == b"O"


def test_prefix_given_through_a_symlink(tree: Path) -> None:
    os.symlink(tree / "root", tree / "root_link")
    reg = SourceRegistry.from_urls([url(tree / "root_link")])
    # both spellings of the same real file are allowed
    for p in [tree / "root_link" / "a.bin", tree / "root" / "a.bin"]:
        src = reg.resolve(url(p))
        assert src.local_path == os.path.realpath(tree / "root" / "a.bin")
        assert src.path == "a.bin"


@pytest.mark.parametrize(
    "escape",
    [
        "root/../outside/secret",
        "root/%2e%2e/outside/secret",
        "root/sub/%2E%2E/%2e%2e/outside/secret",
        "root/./../outside/secret",
    ],
)
def test_dot_segments_cannot_escape(tree: Path, escape: str) -> None:
    reg = SourceRegistry.from_urls([url(tree / "root")])
    with pytest.raises(SourceNotAllowedError):
        reg.resolve(url(tree) + "/" + escape, key="k")


def test_encoded_separator_cannot_escape(tree: Path) -> None:
    # the path is decoded once before dot segments go: "..%2F" is "../"
    reg = SourceRegistry.from_urls([url(tree / "root")])
    with pytest.raises(SourceNotAllowedError):
        reg.resolve(url(tree / "root") + "/..%2F..%2Foutside%2Fsecret", key="k")
    assert reg.resolve(url(tree / "root") + "/sub%2Fb%20c.bin").path == "sub/b c.bin"
    reg_s3 = SourceRegistry.from_urls(["s3://bucket/data/"], config={"skip_signature": True})
    with pytest.raises(SourceNotAllowedError):
        reg_s3.resolve("s3://bucket/data/..%2Fsecret")
    assert reg_s3.resolve("s3://bucket/data/a%2Fb").path == "a/b"


def test_fragments_userinfo_and_foreign_queries_are_refused() -> None:
    reg = SourceRegistry.from_urls(["s3://bucket/", "https://h.example/"])
    for bad in [
        "s3://bucket/x#frag",
        "s3://bucket/x?versionId=1",
        "s3://user:pw@bucket/x",
        "https://user@h.example/x",
    ]:
        with pytest.raises(SourceNotAllowedError, match="k/0"):
            reg.resolve(bad, key="k/0")


def test_prefix_match_is_segmentwise() -> None:
    reg = SourceRegistry.from_urls(["s3://bucket/data"], config={"skip_signature": True})
    # without a trailing slash "data" may be one object: the store is rooted above it
    assert reg.resolve("s3://bucket/data/x.nc").path == "data/x.nc"
    assert reg.resolve("s3://bucket/data/sub/x.nc").path == "data/sub/x.nc"
    assert reg.resolve("s3://bucket/data").path == "data"
    slash = SourceRegistry.from_urls(["s3://bucket/data/"], config={"skip_signature": True})
    assert slash.resolve("s3://bucket/data/sub/x.nc").path == "sub/x.nc"
    for bad in [
        "s3://bucket/database/x.nc",
        "s3://bucket/dat/x.nc",
        "s3://bucket/x.nc",
        "s3://other/data/x.nc",
        "gs://bucket/data/x.nc",
        "s3://bucket/data/../x.nc",
        "s3://bucket/data/%2e%2e/x.nc",
    ]:
        with pytest.raises(SourceNotAllowedError):
            reg.resolve(bad, key="v/c/0")
    assert "s3://bucket/data/y" in reg
    assert "s3://bucket/database/y" not in reg


def test_longest_prefix_wins() -> None:
    outer = MemoryStore()
    inner = MemoryStore()
    reg = SourceRegistry({"memory:///a": outer, "memory:///a/b/": inner})
    assert reg.resolve("memory:///a/x").store is outer
    assert reg.resolve("memory:///a/x").path == "x"
    src = reg.resolve("memory:///a/b/y/z")
    assert src.store is inner
    assert src.path == "y/z"
    assert reg.resolve("memory:///a/bb/z").store is outer  # segment-wise again
    assert reg.resolve("memory:///a/bb/z").path == "bb/z"
    # order of registration does not matter
    reg2 = SourceRegistry({"memory:///a/b/": inner, "memory:///a": outer})
    assert reg2.resolve("memory:///a/b/y/z").store is inner


def test_explicit_store_is_rooted_at_the_prefix() -> None:
    mem = MemoryStore()
    mem.put("dir/k.bin", b"0123456789")
    reg = SourceRegistry()
    reg.register("memory:///root/", mem)
    src = reg.resolve("memory:///root/dir/k.bin")
    assert src.store is mem
    assert src.path == "dir/k.bin"
    assert src.local_path is None
    assert bytes(obstore.get_range(src.store, src.path, start=2, end=5)) == b"234"


def test_register_again_replaces_and_clears_cache() -> None:
    a, b = MemoryStore(), MemoryStore()
    reg = SourceRegistry({"memory:///r": a})
    assert reg.resolve("memory:///r/x").store is a
    reg.register("memory:///r/", b)  # same prefix, other spelling
    assert reg.prefixes == ("memory:///r",)
    assert reg.resolve("memory:///r/x").store is b


def test_register_rejects_store_and_kwargs() -> None:
    with pytest.raises(TypeError):
        SourceRegistry().register("memory:///", MemoryStore(), region="x")


def test_register_rejects_bad_prefix() -> None:
    with pytest.raises(ManifestFormatError):
        SourceRegistry().register("ftp://host/x")
    with pytest.raises(ManifestFormatError):
        SourceRegistry().register("")


def test_prefix_naming_one_object_allows_only_it(tree: Path) -> None:
    reg = SourceRegistry.from_urls([url(tree / "root" / "a.bin"), "s3://b/one.nc"])
    src = reg.resolve(url(tree / "root" / "a.bin"))
    assert src.path == "a.bin"
    assert bytes(obstore.get_range(src.store, src.path, start=0, end=2)) == b"AA"
    with pytest.raises(SourceNotAllowedError):
        reg.resolve(url(tree / "root" / "sub" / "b c.bin"))
    s3 = reg.resolve("s3://b/one.nc")
    assert s3.path == "one.nc"
    with pytest.raises(SourceNotAllowedError):
        reg.resolve("s3://b/one.ncx")
    with pytest.raises(SourceNotAllowedError):
        reg.resolve("s3://b/other.nc")


def test_directories_and_roots_are_not_objects(tree: Path) -> None:
    reg = SourceRegistry.from_urls([url(tree / "root"), "s3://b/d/"])
    for bad in [url(tree / "root") + "/", url(tree / "root"), "s3://b/d/", "s3://b/d"]:
        with pytest.raises(SourceNotAllowedError):
            reg.resolve(bad)


def test_invalid_urls_are_refused_naming_key() -> None:
    reg = SourceRegistry.from_urls(["s3://b/"])
    for bad in ["/abs/path", "relative/x", "ftp://b/x", ""]:
        with pytest.raises(SourceNotAllowedError) as info:
            reg.resolve(bad, key="arr/c/1")
        assert info.value.key == "arr/c/1"
        assert "arr/c/1" in str(info.value)


def test_from_urls_builds_cloud_and_http_stores() -> None:
    reg = SourceRegistry.from_urls(
        ["s3://bucket/pre/fix/", "http://127.0.0.1:9/files/", "https://h.example"],
        config={"skip_signature": True, "region": "eu-west-1"},
        client_options={"timeout": "5s"},
    )
    s3 = reg.resolve("s3://bucket/pre/fix/k.nc").store
    assert isinstance(s3, S3Store)
    assert s3.prefix == "pre/fix"
    assert s3.config["region"] == "eu-west-1"
    assert s3.config["skip_signature"] in (True, "true")
    http = reg.resolve("http://127.0.0.1:9/files/a/b.nc")
    assert isinstance(http.store, HTTPStore)
    assert http.path == "a/b.nc"
    # allow_http was merged into the given client options
    assert http.store.client_options["allow_http"] in (True, "true")
    assert http.store.client_options["timeout"] == "5s"
    # https: no allow_http needed
    assert reg.resolve("https://h.example/z").path == "z"
    # config keys differ between clouds: one from_urls call per provider
    gcs = SourceRegistry.from_urls(["gs://gbucket/x/"], config={"skip_signature": True})
    assert gcs.resolve("gs://gbucket/x/y.nc").path == "y.nc"


def test_http_store_url_does_not_double_slashes(clean_range_server, serve_bytes) -> None:  # type: ignore[no-untyped-def]
    rel = serve_bytes(b"0123456789", "x y.bin")
    folder = rel.split("/")[0]
    base = clean_range_server.url_for(folder)
    for prefix in [base, base + "/"]:
        clean_range_server.reset_counters()
        reg = SourceRegistry.from_urls([prefix])
        src = reg.resolve(base + "/x%20y.bin")
        assert src.path.endswith("x y.bin")
        assert bytes(obstore.get_range(src.store, src.path, start=1, end=4)) == b"123"
        paths = {r.path for r in clean_range_server.requests}
        assert paths == {f"{folder}/x y.bin"}


def test_s3_source_with_config(s3_server, s3_bucket) -> None:  # type: ignore[no-untyped-def]
    s3_server.put_object(s3_bucket, "data/a.bin", b"0123456789")
    cfg = s3_server.obstore_config()
    reg = SourceRegistry.from_urls(
        [f"s3://{s3_bucket}/data/"],
        config={k: v for k, v in cfg.items() if k != "client_options"},
        client_options=cfg["client_options"],
    )
    src = reg.resolve(f"s3://{s3_bucket}/data/a.bin")
    assert bytes(obstore.get_range(src.store, src.path, start=3, end=6)) == b"345"
    with pytest.raises(SourceNotAllowedError):
        reg.resolve(f"s3://{s3_bucket}/elsewhere/a.bin")


def test_pickle_and_equality(tree: Path) -> None:
    reg = SourceRegistry.from_urls(
        [url(tree / "root"), "s3://bucket/d", "http://127.0.0.1:9/x"],
        config={"skip_signature": True},
    )
    reg.resolve(url(tree / "root" / "a.bin"))  # fill the cache
    clone = pickle.loads(pickle.dumps(reg))
    assert clone == reg
    assert clone.prefixes == reg.prefixes
    assert clone.resolve(url(tree / "root" / "a.bin")).path == "a.bin"
    with pytest.raises(SourceNotAllowedError):
        clone.resolve(url(tree / "root" / "out_link"))
    assert reg != SourceRegistry.from_urls([url(tree / "root")])
    assert reg != SourceRegistry()
    assert SourceRegistry() == SourceRegistry()
    # MemoryStore does not pickle, so neither does a registry holding one
    with pytest.raises(TypeError):
        pickle.dumps(SourceRegistry({"memory:///": MemoryStore()}))


def test_copy_is_independent() -> None:
    reg = SourceRegistry.from_urls(["s3://b/d"], config={"skip_signature": True})
    dup = reg.copy()
    dup.register("s3://b/e", config={"skip_signature": True})
    assert reg.prefixes == ("s3://b/d",)
    assert dup.prefixes == ("s3://b/d", "s3://b/e")
    assert dup.resolve("s3://b/d/x").store is reg.resolve("s3://b/d/x").store


def test_repr_names_prefixes_and_stores(tree: Path) -> None:
    reg = SourceRegistry.from_urls([url(tree / "root")])
    text = repr(reg)
    assert text.startswith("SourceRegistry({")
    assert url(tree / "root") in text
    assert "LocalStore" in text
    src = reg.resolve(url(tree / "root" / "a.bin"))
    assert "local_path=" in repr(src)


def test_source_identity() -> None:
    mem = MemoryStore()
    a = Source("memory:///k", mem, "k")
    b = Source("memory:///k", mem, "k")
    c = Source("memory:///k", MemoryStore(), "k")
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2


def test_resolve_is_cached_but_not_errors(tree: Path) -> None:
    reg = SourceRegistry.from_urls([url(tree / "root")])
    u = url(tree / "root" / "a.bin")
    assert reg.resolve(u) is reg.resolve(u)
    missing = url(tree / "root" / "later.bin")
    first = reg.resolve(missing)  # a file that does not exist yet resolves lexically
    assert first.path == "later.bin"
    bad = url(tree / "root" / "out_link")
    for _ in range(2):
        with pytest.raises(SourceNotAllowedError):
            reg.resolve(bad)


def test_presigned_http_url_keeps_its_query(http_server) -> None:  # type: ignore[no-untyped-def]
    base, log = http_server
    reg = SourceRegistry.from_urls([base + "/files/"], client_options={"timeout": "5s"})
    src = reg.resolve(base + "/files/a%20b.bin?X-Sig=a%2Fb&e=1", key="k")
    assert src.url == base + "/files/a%20b.bin?X-Sig=a%2Fb&e=1"
    assert src.path == "a b.bin"
    assert src.store is not reg.resolve(base + "/files/a%20b.bin").store
    assert bytes(obstore.get_range(src.store, src.path, start=0, end=4)) == b"0123"
    assert log == ["/files/a%20b.bin?X-Sig=a%2Fb&e=1"]
    # the query does not widen what may be read
    with pytest.raises(SourceNotAllowedError):
        reg.resolve(base + "/other/x.bin?X-Sig=1")
    # an explicit HTTPStore lends its options to the per-query store
    reg2 = SourceRegistry(
        {base + "/files/": HTTPStore.from_url(base + "/files", client_options={"allow_http": True})}
    )
    src2 = reg2.resolve(base + "/files/a%20b.bin?t=2")
    assert bytes(obstore.get_range(src2.store, src2.path, start=4, end=6)) == b"45"
    assert log[-1] == "/files/a%20b.bin?t=2"


@pytest.fixture
def http_server():  # type: ignore[no-untyped-def]
    """A stdlib HTTP server answering every GET with 206 and the asked bytes of b"0123456789"."""
    import re
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    log: list[str] = []
    data = b"0123456789"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            log.append(self.path)
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range") or "")
            assert m is not None
            a, b = int(m.group(1)), int(m.group(2))
            body = data[a : b + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", log
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_hard_links_option_default_copy_and_pickle(tree: Path) -> None:
    a_bin = url(tree / "root" / "a.bin")
    default = SourceRegistry.from_urls([url(tree / "root")])
    assert default.resolve(a_bin).hard_links is True
    strict = SourceRegistry({url(tree / "root"): None}, hard_links=False)
    assert strict.resolve(a_bin).hard_links is False
    exempt = SourceRegistry({url(tree / "root"): None}, hard_links=[str(tree / "root")])
    assert exempt.resolve(a_bin).hard_links is True
    for reg in (strict, exempt):
        assert reg.copy().resolve(a_bin).hard_links == reg.resolve(a_bin).hard_links
        assert pickle.loads(pickle.dumps(reg)) == reg
    assert strict != default and strict != exempt


def test_http_sources_get_a_client_that_does_not_follow_redirects() -> None:
    reg = SourceRegistry.from_urls(
        ["http://127.0.0.1:9/x/", "s3://b/d"],
        config={"skip_signature": True},
        client_options={"timeout": "1m 30s", "connect_timeout": "250ms"},
    )
    src = reg.resolve("http://127.0.0.1:9/x/a%20b.nc?sig=1")
    assert src.http is not None and src.http.url == "http://127.0.0.1:9/x/a%20b.nc?sig=1"
    settings = src.http.client.settings
    assert (settings.timeout, settings.connect_timeout, settings.allow_http) == (90.0, 0.25, True)
    assert reg.resolve("s3://b/d/k").http is None
    # an option that changes where requests go and that the client cannot honour
    with pytest.raises(ValueError, match="proxy_excludes"):
        SourceRegistry.from_urls(["https://h/"], client_options={"proxy_excludes": "h"})
    with pytest.raises((ValueError, obstore.exceptions.GenericError), match="soon"):
        SourceRegistry.from_urls(["https://h/"], client_options={"timeout": "soon"})
