"""Chunk reference paths: how a manifest ``path`` becomes the URL of the bytes.

Implements section 7 of ``spec/chunk-manifest-json.md``.  A manifest ``path`` is either

- an absolute URL with one of the schemes in `SCHEMES` (``file``, ``s3``, ``gs``, ``az`` /
  ``abfs`` ..., ``http``, ``https``, ``memory``), or
- a relative reference (no scheme, not starting with ``/``), resolved RFC 3986-style
  against a base URL: the URL of the array's directory, with a trailing ``/``.

Absolute local paths without a scheme (``/data/x.nc``, ``//host/x``) are refused because
they mean different files on different machines; writers and builders turn local paths
into ``file://`` URLs with `local_path_to_url`.  Fragments (``#``) are refused; only
``http(s)`` URLs may carry a query (presigned URLs), which is kept verbatim.  Userinfo
(``user@``) is refused except the ``container@`` of ``abfs``/``abfss`` URLs.

Canonical form
--------------
Every URL this module returns is in one canonical form, so that two spellings of the same
target compare equal and prefix checks cannot be fooled by escapes:

- scheme and authority are lower case; a default port (``:80`` for http, ``:443`` for
  https) is dropped; ``file://localhost/`` becomes ``file:///``;
- the path is percent-decoded exactly once (a ``%`` that does not start a valid escape is
  literal), dot segments are removed from the *decoded* path -- so ``%2e%2e/`` and
  ``..%2F`` act as ``../`` and cannot smuggle a parent step past a prefix check -- and each
  segment is re-encoded with one fixed rule: unreserved characters, sub-delimiters, ``:``
  and ``@`` stay literal, everything else (space, ``%``, ``?``, ``#``, non-ASCII as UTF-8
  ...) becomes ``%XX`` with upper-case hex;
- a path that decodes to a NUL byte is refused, and so is a backslash in ``http(s)`` paths
  (some servers take it for ``/``; on POSIX it is an ordinary file-name character).
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote, unquote_to_bytes

from zarr_manifest.errors import ManifestFormatError

__all__ = [
    "SCHEMES",
    "canonical_url",
    "decode_path_segments",
    "encode_path_segments",
    "is_absolute_url",
    "is_url_under",
    "local_path_to_url",
    "relative_reference",
    "resolve_reference",
    "split_url",
    "url_to_fsspec_path",
    "url_to_local_path",
]

#: URL schemes a manifest may reference (the ones obstore can read).
SCHEMES: frozenset[str] = frozenset(
    {
        "file",
        "memory",
        "s3",
        "s3a",
        "gs",
        "az",
        "azure",
        "abfs",
        "abfss",
        "adl",
        "http",
        "https",
    }
)

_HTTP_SCHEMES = frozenset({"http", "https"})

# RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) followed by ":".
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")

# A '%' followed by something that is not two hex digits is taken literally.
_BAD_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")

# pchar minus pct-encoded: unreserved / sub-delims / ":" / "@" (RFC 3986 section 3.3).
# quote() always keeps ALPHA / DIGIT / "_.-~".
_SEGMENT_SAFE = "!$&'()*+,;=:@"

_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_USERINFO_SCHEMES = frozenset({"abfs", "abfss"})  # abfs://container@account.../path

# Characters re-encoded in a kept query: only those RFC 3986 never allows there.
_QUERY_SAFE = "!$&'()*+,;=:@/?%"


def _fail(message: str, path: str) -> ManifestFormatError:
    return ManifestFormatError(f"{message}: {path!r}", location=path, field="path")


def is_absolute_url(path: str) -> bool:
    """Whether ``path`` starts with a URL scheme (``scheme:``)."""
    return _SCHEME_RE.match(path) is not None


def _split(url: str) -> tuple[str, str, str, str | None]:
    """``(scheme, authority, path, query)`` of an absolute URL; refuses fragments."""
    m = _SCHEME_RE.match(url)
    if m is None:
        raise _fail("not an absolute URL", url)
    scheme = m.group(1).lower()
    if scheme not in SCHEMES:
        raise _fail(f"unsupported URL scheme {scheme!r} (supported: {sorted(SCHEMES)})", url)
    rest = url[m.end() :]
    if not rest.startswith("//"):
        raise _fail("URL has no '//' authority part", url)
    rest = rest[2:]
    if "#" in rest:
        raise _fail("references must not carry a fragment ('#'; encode it as %23)", url)
    query = None
    if "?" in rest:
        if scheme not in _HTTP_SCHEMES:
            raise _fail("only http(s) URLs may carry a query ('?'; encode it as %3F)", url)
        rest, query = rest.split("?", 1)
    slash = rest.find("/")
    if slash < 0:
        return scheme, rest, "", query
    return scheme, rest[:slash], rest[slash:], query


def split_url(url: str) -> tuple[str, str, str]:
    """Split an absolute URL into ``(scheme, authority, path)``.

    The scheme is lower-cased; nothing else is normalized.  The path is ``""`` or starts
    with ``/``; a query (http(s) only) is not part of it.

    Raises
    ------
    ManifestFormatError
        If ``url`` has no scheme, or an unknown one, no ``//authority`` part, a fragment,
        or a query on a scheme other than http(s).
    """
    scheme, authority, path, _ = _split(url)
    return scheme, authority, path


def _canonical_path(path: str, original: str, backslash_separates: bool) -> str:
    """Decode once, remove dot segments, re-encode: the canonical form of an absolute path."""
    if not path:
        return "/"
    if "%" not in path and path.isascii():
        raw = path.encode()  # fast path: nothing to decode
    else:
        raw = unquote_to_bytes(_BAD_PERCENT_RE.sub("%25", path))
    if b"\x00" in raw:
        raise _fail("the path decodes to a NUL byte", original)
    if backslash_separates and b"\\" in raw:
        raise _fail("the path holds a backslash, a separator to some servers", original)
    segments = raw.split(b"/")
    # RFC 3986 section 5.2.4, on the decoded segments (the first one is the empty root).
    out: list[bytes] = []
    for seg in segments[1:]:
        if seg == b".":
            continue
        if seg == b"..":
            if out:
                out.pop()
            continue
        out.append(seg)
    if segments[-1] in (b".", b"..") and len(segments) > 1:
        out.append(b"")  # a trailing "." or ".." names a directory
    return "/" + "/".join(quote(seg, safe=_SEGMENT_SAFE) for seg in out)


def _canonical_authority(scheme: str, authority: str, url: str) -> str:
    authority = authority.lower()
    if "@" in authority and scheme not in _USERINFO_SCHEMES:
        raise _fail("references must not carry userinfo (credentials)", url)
    port = _DEFAULT_PORTS.get(scheme)
    if port and authority.endswith(port):
        authority = authority[: -len(port)]
    if scheme in _HTTP_SCHEMES and not authority:
        raise _fail("http(s) URL has no host", url)
    if scheme == "file":
        if authority not in ("", "localhost"):
            raise _fail("file URLs must name the local host (file:///path)", url)
        authority = ""
    return authority


def canonical_url(url: str) -> str:
    """Return the canonical form of an absolute URL (see the module notes).

    Idempotent: ``canonical_url(canonical_url(u)) == canonical_url(u)``.

    Raises
    ------
    ManifestFormatError
        Unknown scheme, a fragment, a query outside http(s), userinfo, a ``file`` URL on
        another host, a path decoding to NUL (or holding ``\\`` for http(s)).  The message
        and the error's ``location`` name the URL.
    """
    scheme, authority, path, query = _split(url)
    authority = _canonical_authority(scheme, authority, url)
    backslash_separates = scheme in _HTTP_SCHEMES or (scheme == "file" and os.sep == "\\")
    canon = f"{scheme}://{authority}{_canonical_path(path, url, backslash_separates)}"
    if query is not None:
        canon += "?" + quote(query, safe=_QUERY_SAFE)
    return canon


def resolve_reference(path: str, base_url: str | None = None) -> str:
    """Resolve a manifest ``path`` to a canonical absolute URL.

    Parameters
    ----------
    path
        An absolute URL (scheme in `SCHEMES`) or a relative reference (``"data/a.nc"``,
        ``"../raw/b.nc"``).
    base_url
        The URL of the array's directory.  Treated as a directory whether or not it ends
        with ``/`` (a manifest lives *in* that directory).  Needed only for relative
        references.

    Returns
    -------
    str
        The canonical URL (see the module notes).

    Raises
    ------
    ManifestFormatError
        For an empty path, an absolute local path (``/x/y.nc``) or network-path reference
        (``//host/x``), an unknown scheme, a relative reference without a base URL, or any
        of the reasons `canonical_url` gives.  The message names the path.
    """
    if not isinstance(path, str) or not path:
        raise _fail("empty or non-string reference path", str(path))
    if is_absolute_url(path):
        return canonical_url(path)
    if path.startswith("/") or path.startswith("\\"):
        raise _fail(
            "absolute local paths are not allowed in manifests; use a file:// URL or a "
            "path relative to the array",
            path,
        )
    if base_url is None:
        raise _fail("relative reference needs a base URL", path)
    scheme, authority, base_path = split_url(base_url)
    if not base_path.endswith("/"):
        base_path += "/"
    # Merge (RFC 3986 5.2.3) with a directory base is concatenation; the canonical pass
    # then decodes and removes dot segments, which cannot climb above the root.
    merged = f"{scheme}://{authority}{base_path}{path}"
    try:
        return canonical_url(merged)
    except ManifestFormatError as exc:
        # Name the reference as the manifest wrote it, not the merged URL.
        reason = str(exc).rsplit(": ", 1)[0]
        raise _fail(f"{reason} (resolved against {base_url!r})", path) from exc


def _path_segments(url: str) -> tuple[str, str, list[str], str | None]:
    """Canonical (scheme, authority, segments, query) of a URL, for segment-wise comparison."""
    scheme, authority, path, query = _split(canonical_url(url))
    return scheme, authority, path.split("/")[1:], query


def is_url_under(url: str, prefix: str) -> bool:
    """Whether ``url`` is ``prefix`` itself or lies under it, segment by segment.

    Both are canonicalized first, so escapes and dot segments cannot fool the check;
    ``"s3://b/data"`` (with or without a trailing ``/``) covers ``"s3://b/data/x"`` but
    not ``"s3://b/database/x"``.  Queries play no part (they do not change which host and
    path a request goes to).

    Raises
    ------
    ManifestFormatError
        If either argument is not a valid absolute URL.
    """
    u_scheme, u_auth, u_segs, _ = _path_segments(url)
    p_scheme, p_auth, p_segs, _ = _path_segments(prefix)
    if (u_scheme, u_auth) != (p_scheme, p_auth):
        return False
    if p_segs and p_segs[-1] == "":
        p_segs = p_segs[:-1]  # "dir/" covers the same as "dir"
    return u_segs[: len(p_segs)] == p_segs


def relative_reference(url: str, base_url: str) -> str | None:
    """A relative reference from ``base_url`` (a directory) to ``url``, if ``url`` is under it.

    Only downward references are made (no ``..``): a writer uses this to store paths
    relative to the store when the source files lie inside it, so the store can be moved
    together with them.

    Returns
    -------
    str or None
        ``r`` with ``resolve_reference(r, base_url) == canonical_url(url)``, or ``None`` if
        ``url`` is not strictly under ``base_url`` (other scheme/host, outside, or the
        directory itself).
    """
    u_scheme, u_auth, u_segs, query = _path_segments(url)
    b_scheme, b_auth, b_segs, _ = _path_segments(base_url)
    if (u_scheme, u_auth) != (b_scheme, b_auth):
        return None
    if b_segs and b_segs[-1] == "":
        b_segs = b_segs[:-1]
    n = len(b_segs)
    if u_segs[:n] != b_segs or len(u_segs) <= n:
        return None
    rest = u_segs[n:]
    if rest == [""]:
        return None  # the directory itself
    ref = "/".join(rest)
    # A first segment holding ':' would read as a scheme, an empty one as an absolute
    # path (RFC 3986 section 4.2): "./" keeps the reference relative.
    if ":" in rest[0] or rest[0] == "":
        ref = "./" + ref
    return ref if query is None else f"{ref}?{query}"


def local_path_to_url(path: str | os.PathLike[str]) -> str:
    """Turn a local filesystem path into a canonical ``file://`` URL.

    Relative paths are made absolute against the current directory; symlinks are kept
    (use ``os.path.realpath`` first if you want them resolved).  A trailing separator is
    kept, so a directory given as ``"dir/"`` becomes a directory URL.
    """
    raw = os.fspath(path)
    if not raw:
        raise _fail("empty local path", raw)
    trailing = raw.endswith(os.sep) or (os.altsep is not None and raw.endswith(os.altsep))
    absolute = os.path.abspath(raw)
    if os.sep != "/":
        absolute = absolute.replace(os.sep, "/")
    if not absolute.startswith("/"):  # Windows drive: C:/x -> /C:/x
        absolute = "/" + absolute
    encoded = "/".join(quote(os.fsencode(s), safe=_SEGMENT_SAFE) for s in absolute.split("/"))
    if trailing and not encoded.endswith("/"):
        encoded += "/"
    return canonical_url("file://" + encoded)


def encode_path_segments(path: str) -> str:
    """Percent-encode a store key path for use in a URL (``"#refs#/b"`` -> ``"%23refs%23/b"``).

    Zarr node names may hold characters a URL path cannot (``#``, ``?``, ``%``, spaces);
    ``/`` still separates the segments.
    """
    return "/".join(quote(s, safe=_SEGMENT_SAFE) for s in path.split("/"))


def decode_path_segments(path: str) -> str:
    """Percent-decode a canonical URL path (``"a%20b/c"`` -> ``"a b/c"``).

    Unambiguous because canonical paths are decoded before their segments are split, so
    no segment holds an escaped ``/``; bytes that are not UTF-8 come back as surrogate
    escapes (as `os.fsdecode` does).
    """
    return unquote_to_bytes(path).decode("utf-8", "surrogateescape")


def url_to_local_path(url: str) -> str:
    """The local filesystem path of a ``file://`` URL (percent-decoded, dot segments removed).

    Raises
    ------
    ManifestFormatError
        If ``url`` is not a ``file://`` URL (or not a valid one).
    """
    scheme, _, path = split_url(canonical_url(url))
    if scheme != "file":
        raise _fail("not a file:// URL", url)
    local = os.fsdecode(unquote_to_bytes(path))
    if os.sep != "/":
        local = local.lstrip("/") if re.match(r"^/[A-Za-z]:", local) else local
        local = local.replace("/", os.sep)
    return local


# "scheme://": the URLs kerchunk references hold (their readers and writers share this)
_URL_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def url_to_fsspec_path(url: str) -> str:
    """The fsspec path of a canonical URL, as kerchunk references write it.

    ``file://`` URLs become local paths and object-store keys are percent-decoded (fsspec
    uses keys verbatim); ``http(s)`` URLs stay URLs.  The kerchunk builder maps the result
    back to ``url`` (`zarr_manifest.builders.kerchunk.from_kerchunk_refs`).
    """
    if url.startswith("file://"):
        return url_to_local_path(url)
    m = _URL_SCHEME_RE.match(url)
    if m is None or m.group(1).lower() in ("http", "https"):
        return url
    rest = url[m.end() :]
    authority, slash, path = rest.partition("/")
    return f"{m.group(1)}://{authority}{slash}{decode_path_segments(path)}"
