"""Reference resolution rules of zarr_manifest.format.paths."""

from __future__ import annotations

import os
import posixpath
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zarr_manifest.errors import ManifestFormatError
from zarr_manifest.format.paths import (
    SCHEMES,
    canonical_url,
    decode_path_segments,
    is_absolute_url,
    is_url_under,
    local_path_to_url,
    relative_reference,
    resolve_reference,
    url_to_local_path,
)

BASE = "http://a/b/c/"


# RFC 3986 section 5.4 examples, with the base taken as the directory http://a/b/c/
# (a manifest's base is always a directory, and byte-range sources have no query).
@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("g", "http://a/b/c/g"),
        ("./g", "http://a/b/c/g"),
        ("g/", "http://a/b/c/g/"),
        (";x", "http://a/b/c/;x"),
        ("g;x", "http://a/b/c/g;x"),
        (".", "http://a/b/c/"),
        ("./", "http://a/b/c/"),
        ("..", "http://a/b/"),
        ("../", "http://a/b/"),
        ("../g", "http://a/b/g"),
        ("../..", "http://a/"),
        ("../../", "http://a/"),
        ("../../g", "http://a/g"),
        ("../../../g", "http://a/g"),
        ("../../../../g", "http://a/g"),
        ("g.", "http://a/b/c/g."),
        (".g", "http://a/b/c/.g"),
        ("g..", "http://a/b/c/g.."),
        ("..g", "http://a/b/c/..g"),
        ("./../g", "http://a/b/g"),
        ("./g/.", "http://a/b/c/g/"),
        ("g/./h", "http://a/b/c/g/h"),
        ("g/../h", "http://a/b/c/h"),
        ("g;x=1/./y", "http://a/b/c/g;x=1/y"),
        ("g;x=1/../y", "http://a/b/c/y"),
        ("g:h", None),  # a scheme, and not one we read
    ],
)
def test_rfc3986_examples(ref: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ManifestFormatError, match="unsupported URL scheme"):
            resolve_reference(ref, BASE)
    else:
        assert resolve_reference(ref, BASE) == expected


@pytest.mark.parametrize(
    ("ref", "base", "expected"),
    [
        ("data/a.nc", "s3://bucket/store/arr/", "s3://bucket/store/arr/data/a.nc"),
        # the base is a directory even without its trailing slash
        ("a.nc", "s3://bucket/store/arr", "s3://bucket/store/arr/a.nc"),
        ("../../raw/x.nc", "file:///data/store/temp/", "file:///data/raw/x.nc"),
        ("x.nc", "memory:///root/", "memory:///root/x.nc"),
        ("sub/x.tif", "gs://b/p/", "gs://b/p/sub/x.tif"),
        ("x", "az://acct/container/dir/", "az://acct/container/dir/x"),
        # absolute references ignore the base
        ("s3://other/k.nc", "file:///data/", "s3://other/k.nc"),
        ("S3://Other/k.nc", None, "s3://other/k.nc"),  # scheme and host lowered
        ("HTTPS://Host.Example/K.nc", None, "https://host.example/K.nc"),
        ("file://localhost/x/y.nc", None, "file:///x/y.nc"),
        # default ports dropped, others kept
        ("http://h:80/a", None, "http://h/a"),
        ("https://h:443/a", None, "https://h/a"),
        ("http://h:8080/a", None, "http://h:8080/a"),
        ("https://h:80/a", None, "https://h:80/a"),
        # queries: http(s) only, kept (presigned URLs); a relative reference brings its own
        ("https://h/x.nc?X-Sig=a%2Fb&e=1", None, "https://h/x.nc?X-Sig=a%2Fb&e=1"),
        ("x.nc?v=2", "https://host/dir/?old=1", "https://host/dir/x.nc?v=2"),
        ("../x.nc?q=a b", "http://host/d/e/", "http://host/d/x.nc?q=a%20b"),
        # the container@ userinfo of abfs
        (
            "abfs://Cont@Acct.dfs.core.windows.net/p/x",
            None,
            "abfs://cont@acct.dfs.core.windows.net/p/x",
        ),
        # the table of spec section 7.3 (store root file:///srv/s/)
        ("../data/a.bin", "file:///srv/s/a/", "file:///srv/s/data/a.bin"),
        ("../../../data/m.bin", "file:///srv/s/model/run1/wind/", "file:///srv/s/data/m.bin"),
        ("../data/run%201.bin", "file:///srv/s/a/", "file:///srv/s/data/run%201.bin"),
        ("../../outside.bin", "file:///srv/s/a/", "file:///srv/outside.bin"),
        ("%2e%2e/%2e%2e/outside.bin", "file:///srv/s/a/", "file:///srv/outside.bin"),
        ("../data/run%201%20%232.bin", "file:///srv/s/a/", "file:///srv/s/data/run%201%20%232.bin"),
        # escapes: unreserved decoded, the rest canonical upper-case
        ("%7Euser/%61.nc", "s3://b/", "s3://b/~user/a.nc"),
        ("a%2a.nc", "s3://b/", "s3://b/a*.nc"),
        ("a b.nc", "s3://b/", "s3://b/a%20b.nc"),
        ("a%20b.nc", "s3://b/", "s3://b/a%20b.nc"),
        ("%c3%bc.nc", "s3://b/", "s3://b/%C3%BC.nc"),
        ("ü.nc", "s3://b/", "s3://b/%C3%BC.nc"),
        ("100%.nc", "s3://b/", "s3://b/100%25.nc"),  # a lone % is literal
        ("a%zz", "s3://b/", "s3://b/a%25zz"),
        # dot segments hidden in escapes are dot segments
        ("%2e%2e/x", "s3://b/d/e/", "s3://b/d/x"),
        ("%2E/x", "s3://b/d/", "s3://b/d/x"),
        (".%2e/.%2E/.%2e/x", "s3://b/d/", "s3://b/x"),
        ("a/%2e%2e%2e/x", "s3://b/", "s3://b/a/.../x"),  # three dots: a name
        # ? and # written percent-encoded are characters of names
        ("a%3Fb%23c", "s3://b/", "s3://b/a%3Fb%23c"),
        ("file:///x/a%3fb", None, "file:///x/a%3Fb"),
        # the path is decoded once, then dot segments go: an encoded / is a separator
        ("a%2Fb.nc", "s3://b/d/", "s3://b/d/a/b.nc"),
        ("..%2F..%2Fetc/passwd", "s3://b/d/e/", "s3://b/etc/passwd"),
        ("%252e%252e/x", "s3://b/d/", "s3://b/d/%252e%252e/x"),  # decoded once only
        # a colon in a later segment is fine
        ("dir/a:b.nc", "s3://b/", "s3://b/dir/a:b.nc"),
        ("./a:b.nc", "s3://b/", "s3://b/a:b.nc"),
    ],
)
def test_resolve_reference(ref: str, base: str | None, expected: str) -> None:
    assert resolve_reference(ref, base) == expected


@pytest.mark.parametrize(
    ("ref", "match"),
    [
        ("/data/x.nc", "absolute local paths"),
        ("//host/x.nc", "absolute local paths"),
        ("\\x.nc", "absolute local paths"),
        ("", "empty"),
        ("ftp://host/x", "unsupported URL scheme 'ftp'"),
        ("C:/data/x.nc", "unsupported URL scheme 'c'"),
        ("https://h/x.nc#frag", "fragment"),
        ("a.nc#frag", "fragment"),
        ("s3://b/x.nc?versionId=1", "only http"),
        ("a.nc?x", "only http"),
        ("s3://user:secret@b/x.nc", "userinfo"),
        ("https://user@h/x.nc", "userinfo"),
        ("file://otherhost/x.nc", "local host"),
        ("s3:bucket/x", "authority"),
        ("http:///x", "no host"),
        ("a%00b", "NUL"),
    ],
)
def test_resolve_reference_rejects(ref: str, match: str) -> None:
    with pytest.raises(ManifestFormatError, match=match) as info:
        resolve_reference(ref, "s3://bucket/dir/")
    assert info.value.location == ref  # the message and attribute name the path
    assert info.value.field == "path"


def test_backslash_is_a_separator_only_for_http() -> None:
    with pytest.raises(ManifestFormatError, match="backslash"):
        resolve_reference("..%5C..%5Csecret", "https://host/data/")
    with pytest.raises(ManifestFormatError, match="backslash"):
        resolve_reference("a\\b", "http://host/data/")
    # a POSIX file name or object key may hold a backslash
    assert resolve_reference("a%5cb", "s3://b/d/") == "s3://b/d/a%5Cb"
    assert resolve_reference("a\\b", "file:///d/") == "file:///d/a%5Cb"


def test_relative_reference_needs_base() -> None:
    with pytest.raises(ManifestFormatError, match="base URL"):
        resolve_reference("a.nc")


def test_query_is_kept_for_http_only() -> None:
    assert resolve_reference("x.nc?v=2", "https://host/dir/") == "https://host/dir/x.nc?v=2"
    with pytest.raises(ManifestFormatError, match="only http"):
        resolve_reference("x.nc?v=2", "gs://b/dir/")


def test_resolution_never_climbs_above_root() -> None:
    assert resolve_reference("../../../../etc/passwd", "file:///srv/store/arr/") == (
        "file:///etc/passwd"
    )
    assert resolve_reference("%2e%2e/%2e%2e/%2e%2e/x", "s3://bucket/a/") == "s3://bucket/x"


def test_is_absolute_url() -> None:
    assert is_absolute_url("s3://b/x")
    assert is_absolute_url("file:///x")
    assert not is_absolute_url("a/b")
    assert not is_absolute_url("/a/b")
    assert not is_absolute_url("./a:b")


@pytest.mark.parametrize(
    ("url", "prefix", "expected"),
    [
        ("s3://b/data/x", "s3://b/data", True),
        ("s3://b/data/x", "s3://b/data/", True),
        ("s3://b/data", "s3://b/data/", True),
        ("s3://b/data/sub/deep/x", "s3://b/data", True),
        ("s3://b/database/x", "s3://b/data", False),
        ("s3://b/database/x", "s3://b/data/", False),
        ("s3://b/dat", "s3://b/data", False),
        ("s3://b/x", "s3://b/", True),
        ("s3://b/x", "s3://b", True),
        ("s3://bb/x", "s3://b", False),
        ("s3://b/x", "gs://b/", False),
        ("s3://b/data/../secret", "s3://b/data", False),
        ("s3://b/data/%2e%2e/secret", "s3://b/data", False),
        ("s3://b/data/./x", "s3://b/data", True),
        ("s3://b/d%61ta/x", "s3://b/data", True),  # %61 is "a"
        ("s3://b/a%20b/x", "s3://b/a b", True),
        ("HTTP://HOST/a/x", "http://host/a", True),
        ("http://host:8080/a/x", "http://host/a", False),
        ("file:///data/x", "file://localhost/data", True),
    ],
)
def test_is_url_under(url: str, prefix: str, expected: bool) -> None:
    assert is_url_under(url, prefix) is expected


@pytest.mark.parametrize(
    ("url", "base", "expected"),
    [
        ("s3://b/store/data/a.nc", "s3://b/store/", "data/a.nc"),
        ("s3://b/store/data/a.nc", "s3://b/store", "data/a.nc"),
        ("s3://b/store/a%20b.nc", "s3://b/store/", "a%20b.nc"),
        ("s3://b/store/a:b.nc", "s3://b/store/", "./a:b.nc"),
        ("s3://b/other/a.nc", "s3://b/store/", None),
        ("s3://b/storex/a.nc", "s3://b/store/", None),
        ("s3://b/store/", "s3://b/store/", None),
        ("s3://b/store", "s3://b/store/", None),
        ("gs://b/store/a.nc", "s3://b/store/", None),
    ],
)
def test_relative_reference(url: str, base: str, expected: str | None) -> None:
    ref = relative_reference(url, base)
    assert ref == expected
    if ref is not None:
        assert resolve_reference(ref, base) == canonical_url(url)


def test_local_path_to_url_and_back(tmp_path: os.PathLike[str]) -> None:
    p = os.path.join(os.fspath(tmp_path), "dir with space", "ü%#?@+.nc")
    url = local_path_to_url(p)
    assert url.startswith("file:///")
    assert " " not in url and "#" not in url and "?" not in url
    assert "%25" in url  # the literal % of the name is escaped
    assert url_to_local_path(url) == p
    assert local_path_to_url("dir/") == local_path_to_url(os.path.abspath("dir")) + "/"
    assert local_path_to_url("rel.nc") == local_path_to_url(os.path.abspath("rel.nc"))
    with pytest.raises(ManifestFormatError, match="not a file"):
        url_to_local_path("s3://b/x")
    with pytest.raises(ManifestFormatError, match="empty"):
        local_path_to_url("")


def test_local_path_to_url_keeps_symlinks(tmp_path: os.PathLike[str]) -> None:
    real = os.path.join(os.fspath(tmp_path), "real")
    os.mkdir(real)
    link = os.path.join(os.fspath(tmp_path), "link")
    os.symlink(real, link)
    assert local_path_to_url(link).endswith("/link")


def test_decode_path_segments() -> None:
    assert decode_path_segments("a%20b/%C3%BC/c%25d") == "a b/ü/c%d"


def test_schemes_cover_obstore() -> None:
    import obstore

    for scheme in SCHEMES:
        # every scheme we accept is one obstore can build a store for
        host = "" if scheme in ("file", "memory") else "host"
        assert obstore.parse_scheme(f"{scheme}://{host}/path")


# -- properties ----------------------------------------------------------------------------

_seg_chars = st.sampled_from(
    [
        *("a", "B", "0", "-", "_", "~", ".", "..", "%2e", "%2E%2e", " ", "%20", "%", "%zz"),
        *("ü", ":", "@", "+", "=", "!", "%41", "%c3%bc", "%3F", "%23", "%25", "'", "[", "\x7f"),
        *("%2F", "%2f", "..%2F", "%2e%2e%2f"),
    ]
)
_segments = st.lists(st.lists(_seg_chars, max_size=4).map("".join), min_size=1, max_size=6)
_relative = _segments.map("/".join).filter(
    lambda p: p and not p.startswith("/") and not is_absolute_url(p)
)
_bases = st.sampled_from(
    ["s3://bucket/store/arr/", "file:///srv/data/x/", "gs://b/", "memory:///m/n/", "az://a/c/"]
)


def _decoded_model(base: str, ref: str) -> str:
    """Model: decode the merged path, then let posixpath collapse dots (no escapes in data)."""
    base_path = base.partition("://")[2].partition("/")[2]
    merged = "/" + base_path + ref
    decoded = unquote(merged, errors="surrogateescape")  # a lone '%' stays literal
    norm = posixpath.normpath(decoded)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    last = decoded.rsplit("/", 1)[-1]
    if (decoded.endswith("/") or last in (".", "..")) and norm != "/":
        norm += "/"
    return norm


@settings(max_examples=300, deadline=None)
@given(ref=_relative, base=_bases)
def test_resolution_properties(ref: str, base: str) -> None:
    try:
        url = resolve_reference(ref, base)
    except ManifestFormatError:
        return  # '?'/'#' against http bases, ':' first segments: refused, fine
    # canonical and idempotent
    assert canonical_url(url) == url
    assert resolve_reference(url, "s3://elsewhere/") == url
    scheme, rest = url.split("://", 1)
    assert scheme == base.split("://", 1)[0]
    path = rest[rest.index("/") :] if "/" in rest else "/"
    segs = path.split("/")[1:]
    assert "." not in segs and ".." not in segs
    # no escape decodes to a separator, and nothing left undecoded that should be
    for seg in segs:
        assert "/" not in unquote(seg)
        assert " " not in seg and "?" not in seg and "#" not in seg
    # empty segments ('a//b') aside, the result matches a decode-then-normalize model
    if "//" not in unquote(ref) and not unquote(ref).startswith("/"):
        model = _decoded_model(base, ref)
        got = unquote(path, errors="surrogateescape")
        assert posixpath.normpath(got) == posixpath.normpath(model)
    # a reference without '..' stays under its base
    if ".." not in unquote(ref).split("/"):
        assert is_url_under(url, base)


@settings(max_examples=200, deadline=None)
@given(ref=_relative, base=_bases)
def test_relative_reference_roundtrip(ref: str, base: str) -> None:
    try:
        url = resolve_reference(ref, base)
    except ManifestFormatError:
        return
    rel = relative_reference(url, base)
    cb = canonical_url(base)
    if is_url_under(url, base) and url not in (cb, cb.rstrip("/")):
        assert rel is not None
        assert resolve_reference(rel, base) == url
    else:
        assert rel is None


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
            min_size=1,
            max_size=8,
        ).filter(lambda s: s not in (".", "..")),
        min_size=1,
        max_size=4,
    )
)
def test_local_path_roundtrip(names: list[str]) -> None:
    path = "/" + "/".join(names)
    url = local_path_to_url(path)
    assert canonical_url(url) == url
    assert url_to_local_path(url) == os.path.abspath(path)


@settings(max_examples=200, deadline=None)
@given(url_path=_segments.map("/".join), prefix_path=_segments.map("/".join))
def test_is_url_under_is_segmentwise(url_path: str, prefix_path: str) -> None:
    try:
        url = canonical_url("s3://b/" + url_path)
        prefix = canonical_url("s3://b/" + prefix_path)
    except ManifestFormatError:
        return
    u = url.split("://b", 1)[1].split("/")[1:]
    p = prefix.split("://b", 1)[1].split("/")[1:]
    if p[-1] == "":
        p = p[:-1]
    assert is_url_under(url, prefix) is (u[: len(p)] == p)
    # under implies: the URL string starts with the prefix plus a separator (or equals it)
    if is_url_under(url, prefix):
        pre = prefix.rstrip("/")
        assert url == pre or url.startswith(pre + "/")
