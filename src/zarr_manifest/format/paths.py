"""Chunk reference paths: how a manifest ``path`` becomes the URL of the bytes.

A manifest ``path`` is either

- an absolute URL with one of the schemes in `SCHEMES` (``file``, ``s3``, ``gs``, ``az`` /
  ``abfs`` ..., ``http``, ``https``, ``memory``), or
- a relative reference (no scheme, not starting with ``/``), resolved RFC 3986-style
  against a base URL: the URL of the array's directory, with a trailing ``/``.

Absolute local paths without a scheme (``/data/x.nc``) are refused in on-disk manifests
because they mean different files on different machines; writers and builders turn local
paths into ``file://`` URLs with `local_path_to_url`.

Canonical form
--------------
Every URL this module returns is in one canonical form, so that two spellings of the same
object compare equal and prefix checks cannot be fooled by escapes:

- the scheme is lower case (and so is the host of ``http``/``https`` URLs);
  ``file://localhost/`` becomes ``file:///``;
- each path segment is percent-decoded and re-encoded with one fixed rule: unreserved
  characters, sub-delimiters, ``:`` and ``@`` stay literal, everything else (space,
  ``%``, ``?``, ``#``, non-ASCII as UTF-8 ...) is ``%XX`` with upper-case hex;
- dot segments are removed *after* decoding, so ``%2e%2e`` is a ``..`` segment and cannot
  smuggle a parent step past a prefix check; a segment that decodes to something holding
  ``/`` or NUL is refused (it would split into other segments once decoded), and so is
  one holding ``\\`` in ``http(s)`` URLs (some servers take it for ``/``).

A ``%`` that does not start a valid escape is taken literally (encoded as ``%25``).  For
``http``/``https`` a ``?`` or ``#`` would be a query or fragment, which a byte-range
source cannot use, so they are refused there; for the other schemes (object keys, file
names) they are ordinary characters of the path.
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
    "is_absolute_url",
    "is_url_under",
    "local_path_to_url",
    "relative_reference",
    "resolve_reference",
    "split_url",
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

# Bytes that a decoded segment must not contain: they would change the segment structure
# (or truncate a C string) once the path is handed to a filesystem or object store.  A
# backslash is an ordinary character of POSIX file names and object keys, but a separator
# to Windows and to some HTTP servers.
_FORBIDDEN_DECODED = (b"/", b"\x00")
_FORBIDDEN_DECODED_SEP = (b"/", b"\x00", b"\\")


def _fail(message: str, path: str) -> ManifestFormatError:
    return ManifestFormatError(f"{message}: {path!r}", location=path, field="path")


def is_absolute_url(path: str) -> bool:
    """Whether ``path`` starts with a URL scheme (``scheme:``)."""
    return _SCHEME_RE.match(path) is not None


def _canonical_segment(segment: str, original: str, forbidden: tuple[bytes, ...]) -> str:
    """Decode one path segment and re-encode it in the canonical form."""
    if "%" not in segment and segment.isascii() and segment.isalnum():
        return segment  # fast path: nothing to decode or encode
    raw = unquote_to_bytes(_BAD_PERCENT_RE.sub("%25", segment))
    for bad in forbidden:
        if bad in raw:
            raise _fail(
                f"path segment {segment!r} contains an encoded or literal {bad.decode()!r}",
                original,
            )
    return quote(raw, safe=_SEGMENT_SAFE)


def _remove_dot_segments(segments: list[str]) -> list[str]:
    """RFC 3986 section 5.2.4 on an already split absolute path (first item is "")."""
    out: list[str] = []
    for seg in segments[1:]:
        if seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    # A trailing "." or ".." names a directory: keep the trailing slash.
    if segments[-1] in (".", "..") and len(segments) > 1:
        out.append("")
    return ["", *out]


def _canonical_path(path: str, original: str, forbidden: tuple[bytes, ...]) -> str:
    """Canonical form of an absolute path ("/..." or "")."""
    if not path:
        return "/"
    # Decode first, then remove dot segments: "%2e%2e" must act as "..".
    segments = [_canonical_segment(s, original, forbidden) for s in path.split("/")]
    segments[0] = ""
    return "/".join(_remove_dot_segments(segments))


def split_url(url: str) -> tuple[str, str, str]:
    """Split an absolute URL into ``(scheme, authority, path)``.

    The scheme is lower-cased; nothing else is normalized.  The path keeps ``?`` and
    ``#`` (see the module notes); it is ``""`` or starts with ``/``.

    Raises
    ------
    ManifestFormatError
        If ``url`` has no scheme, or an unknown one, or no ``//authority`` part.
    """
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
    slash = rest.find("/")
    if slash < 0:
        return scheme, rest, ""
    return scheme, rest[:slash], rest[slash:]


def canonical_url(url: str) -> str:
    """Return the canonical form of an absolute URL (see the module notes).

    Idempotent: ``canonical_url(canonical_url(u)) == canonical_url(u)``.

    Raises
    ------
    ManifestFormatError
        Unknown scheme, a ``file`` URL on another host, a query or fragment on an
        ``http(s)`` URL, or a segment that decodes to hold ``/``, ``\\`` or NUL.
    """
    scheme, authority, path = split_url(url)
    if scheme in _HTTP_SCHEMES:
        if "?" in path or "#" in path or "?" in authority or "#" in authority:
            raise _fail("query strings and fragments are not supported in references", url)
        authority = authority.lower()
        if not authority:
            raise _fail("http(s) URL has no host", url)
    elif scheme == "file":
        if authority not in ("", "localhost"):
            raise _fail("file URLs must name the local host (file:///path)", url)
        authority = ""
    backslash_separates = scheme in _HTTP_SCHEMES or (scheme == "file" and os.sep == "\\")
    forbidden = _FORBIDDEN_DECODED_SEP if backslash_separates else _FORBIDDEN_DECODED
    return f"{scheme}://{authority}{_canonical_path(path, url, forbidden)}"


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


def _path_segments(url: str) -> tuple[str, str, list[str]]:
    """Canonical (scheme, authority, segments) of a URL, for segment-wise comparison."""
    canon = canonical_url(url)
    scheme, authority, path = split_url(canon)
    return scheme, authority, path.split("/")[1:]


def is_url_under(url: str, prefix: str) -> bool:
    """Whether ``url`` is ``prefix`` itself or lies under it, segment by segment.

    Both are canonicalized first, so escapes and dot segments cannot fool the check;
    ``"s3://b/data"`` (with or without a trailing ``/``) covers ``"s3://b/data/x"`` but
    not ``"s3://b/database/x"``.

    Raises
    ------
    ManifestFormatError
        If either argument is not a valid absolute URL.
    """
    u_scheme, u_auth, u_segs = _path_segments(url)
    p_scheme, p_auth, p_segs = _path_segments(prefix)
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
    u_scheme, u_auth, u_segs = _path_segments(url)
    b_scheme, b_auth, b_segs = _path_segments(base_url)
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
    return ref


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


def decode_path_segments(path: str) -> str:
    """Percent-decode a canonical URL path (``"a%20b/c"`` -> ``"a b/c"``).

    Safe because canonical segments never decode to hold ``/``; bytes that are not UTF-8
    come back as surrogate escapes (as `os.fsdecode` does).
    """
    return unquote_to_bytes(path).decode("utf-8", "surrogateescape")


def url_to_local_path(url: str) -> str:
    """The local filesystem path of a ``file://`` URL (percent-decoded, dot segments removed).

    Raises
    ------
    ManifestFormatError
        If ``url`` is not a ``file://`` URL (or not a valid one).
    """
    canon = canonical_url(url)
    scheme, _, path = split_url(canon)
    if scheme != "file":
        raise _fail("not a file:// URL", url)
    local = os.fsdecode(unquote_to_bytes(path))
    if os.sep != "/":
        local = local.lstrip("/") if re.match(r"^/[A-Za-z]:", local) else local
        local = local.replace("/", os.sep)
    return local
