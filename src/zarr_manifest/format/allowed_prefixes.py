"""Default-deny: is a URL under one of a list of allowed prefixes?  The rules, written once.

Both rooms that take URLs from untrusted documents decide with this module: the store
(`zarr_manifest.store.sources.SourceRegistry`: which store reads a chunk reference) and the
kerchunk builder (which files a references file may name).  It reads nothing; it only
stats local paths to resolve their symlinks.

Prefixes match segment-wise on canonical URLs (see `zarr_manifest.format.paths`):
``"s3://b/data"`` allows ``"s3://b/data"`` and ``"s3://b/data/x.nc"`` but not
``"s3://b/database/x.nc"``; the longest matching prefix wins.  For ``file://`` prefixes the
match is made on real paths (``os.path.realpath`` of both the prefix and the reference), so
a symlink inside an allowed directory that points outside it is refused, and one pointing
into another allowed directory is matched there.  A URL naming a directory, or the root a
prefix's objects lie under, is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from zarr_manifest.errors import ManifestFormatError, SourceNotAllowedError
from zarr_manifest.format.paths import (
    canonical_url,
    local_path_to_url,
    split_url,
    url_to_local_path,
)

__all__ = [
    "Allowed",
    "AllowedPrefix",
    "AllowedPrefixes",
    "allow_hint",
    "canonical_prefix",
    "is_under_real_path",
    "suggested_prefixes",
    "url_segments",
]


def url_segments(canon: str) -> tuple[str, str, tuple[str, ...]]:
    """(scheme, authority, path segments) of a canonical URL; a trailing ``/`` adds none."""
    scheme, authority, path = split_url(canon)
    segs = path.split("/")[1:]
    if segs and segs[-1] == "":
        segs = segs[:-1]
    return scheme, authority, tuple(segs)


def canonical_prefix(prefix: str) -> str:
    """Canonical URL of a prefix; a plain local path is accepted and made a file:// URL."""
    if not isinstance(prefix, str) or not prefix:
        raise ManifestFormatError(f"invalid source prefix {prefix!r}", location=str(prefix))
    if "://" not in prefix and (prefix.startswith(("/", ".", "~")) or os.path.exists(prefix)):
        return local_path_to_url(os.path.expanduser(prefix))
    return canonical_url(prefix)


def suggested_prefixes(urls: Iterable[str]) -> list[str]:
    """The prefixes that would allow ``urls``, as a user passes them: per scheme and host,
    the deepest directory holding them all (for local files, unless that is the file
    system's root: then each file's directory), local ones as paths ending in ``/``.

    Only a suggestion for a message: nothing is allowed by it.
    """
    groups: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    for url in urls:
        try:
            scheme, authority, segs = url_segments(canonical_url(url).partition("?")[0])
        except ManifestFormatError:
            continue
        groups.setdefault((scheme, authority), []).append(segs[:-1])
    out: list[str] = []
    for (scheme, authority), directories in sorted(groups.items()):
        common = list(directories[0])
        for d in directories[1:]:
            n = 0
            while n < min(len(common), len(d)) and common[n] == d[n]:
                n += 1
            del common[n:]
        chosen = [tuple(common)] if common or scheme != "file" else sorted(set(directories))
        for segs in chosen:
            tail = "".join(f"{s}/" for s in segs)
            if scheme == "file":
                out.append(url_to_local_path(f"file:///{tail}"))
            else:
                out.append(f"{scheme}://{authority}/{tail}")
    return out


def allow_hint(prefixes: Iterable[str]) -> str:
    """``pass allowed_prefixes=[...] (command line: --allow ...)`` for ``prefixes``."""
    prefixes = list(prefixes)
    flags = " ".join(f"--allow {p}" for p in prefixes)
    return f"pass allowed_prefixes={prefixes!r} (command line: {flags})"


def is_under_real_path(real: str, real_prefix: str) -> bool:
    """Whether the real path ``real`` is ``real_prefix`` or lies under it."""
    return real == real_prefix or real.startswith(real_prefix.rstrip(os.sep) + os.sep)


@dataclass(frozen=True, slots=True)
class AllowedPrefix:
    """One allowed prefix.

    ``prefix`` is the canonical allowed URL (no trailing slash unless it is a root);
    ``segments`` its path segments; objects lie under its first ``root_len`` segments (the
    prefix itself, or for a prefix naming one object, its directory); ``real_prefix`` /
    ``real_root`` are the realpath'd forms for ``file://`` prefixes.
    """

    prefix: str
    scheme: str
    authority: str
    segments: tuple[str, ...]
    root_len: int
    real_root: str | None = None
    real_prefix: str | None = None

    @classmethod
    def parse(cls, prefix: str, *, as_directory: bool = False) -> AllowedPrefix:
        """The rule for ``prefix`` (a URL or a local path).

        ``as_directory``: the prefix is a directory even without a trailing ``/`` (a store
        given for it is rooted there); otherwise a prefix naming an object (a local path
        that is not a directory, a URL without a trailing ``/``) has its objects under its
        directory.

        Raises
        ------
        ManifestFormatError
            ``prefix`` is not a valid URL or path.
        """
        canon = canonical_prefix(prefix)
        scheme, authority, segs = url_segments(canon)
        is_dir = canon.endswith("/")
        root_len = len(segs) if (is_dir or as_directory) else len(segs) - 1
        normalized = f"{scheme}://{authority}/" + "/".join(segs)
        real_root = real_prefix = None
        if scheme == "file":
            # Local sources are matched and read by real path: resolve the prefix's
            # symlinks once here; a prefix naming a file is served from its directory.
            real_prefix = os.path.realpath(url_to_local_path(normalized))
            real_root = real_prefix
            if not as_directory and not is_dir and not os.path.isdir(real_prefix):
                real_root = os.path.dirname(real_prefix)
        return cls(normalized, scheme, authority, segs, root_len, real_root, real_prefix)

    @property
    def root_url(self) -> str:
        """The directory URL its objects' paths are relative to (with a trailing ``/``)."""
        return f"{self.scheme}://{self.authority}/" + "".join(
            s + "/" for s in self.segments[: self.root_len]
        )


@dataclass(frozen=True, slots=True)
class Allowed[T]:
    """A URL found under an allowed prefix.

    Attributes
    ----------
    prefix
        The longest allowed prefix it lies under.
    value
        What was attached to that prefix (`AllowedPrefixes.with_prefix`).
    url
        The canonical URL (with the query of a presigned http(s) URL).
    query
        That query (``""`` if none).
    relative
        The object's path under the prefix's root: ``/``-joined URL segments (still
        percent-encoded), or for local files the real path relative to the real root.
    real_path
        For ``file://`` URLs, the real path (symlinks resolved); else None.
    """

    prefix: AllowedPrefix
    value: T
    url: str
    query: str
    relative: str
    real_path: str | None


class AllowedPrefixes[T]:
    """An immutable list of allowed prefixes, each with a value attached (e.g. its store).

    Default-deny: an empty list allows nothing.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Iterable[tuple[AllowedPrefix, T]] = ()) -> None:
        self._entries: tuple[tuple[AllowedPrefix, T], ...] = tuple(entries)

    @classmethod
    def of(
        cls, prefixes: Iterable[str], value: T, *, as_directory: bool = False
    ) -> AllowedPrefixes[T]:
        """Allow each of ``prefixes`` (see `AllowedPrefix.parse`), all with ``value``."""
        out: AllowedPrefixes[T] = cls()
        for prefix in prefixes:
            out = out.with_prefix(AllowedPrefix.parse(prefix, as_directory=as_directory), value)
        return out

    def with_prefix(self, rule: AllowedPrefix, value: T) -> AllowedPrefixes[T]:
        """A new list with ``rule`` last, replacing an earlier rule for the same prefix."""
        kept = [e for e in self._entries if e[0].prefix != rule.prefix]
        return AllowedPrefixes([*kept, (rule, value)])

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The allowed prefixes (canonical URLs), in order."""
        return tuple(rule.prefix for rule, _ in self._entries)

    def __iter__(self) -> Iterator[tuple[AllowedPrefix, T]]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def refusal(self, url: str, key: str | None, why: str, hint: str = "") -> SourceNotAllowedError:
        """The error refusing ``url`` (read for store key ``key``) because ``why``; ``hint``
        says what would allow it."""
        where = f" for key {key!r}" if key is not None else ""
        allowed = ", ".join(self.prefixes) or "none"
        hint = f"; to read it, {hint}" if hint else ""
        return SourceNotAllowedError(
            f"reference {url!r}{where} is not allowed: {why} (allowed prefixes: {allowed})" + hint,
            key=key,
            path=url,
        )

    def resolve(self, url: str, *, key: str | None = None) -> Allowed[T]:
        """The prefix ``url`` lies under, if any.

        Parameters
        ----------
        url
            An absolute URL (canonicalized here).
        key
            The store key being read, only to name it in errors.

        Raises
        ------
        SourceNotAllowedError
            ``url`` is not a valid absolute URL, names a directory or a prefix's root, or
            lies under no allowed prefix (for ``file://``: its real path, symlinks resolved,
            under no allowed real path).  The message names ``key`` and ``url``.
        """
        try:
            canon = canonical_url(url)
        except ManifestFormatError as exc:
            raise self.refusal(url, key, str(exc)) from exc
        # In canonical form a "?" can only start the query of an http(s) URL.
        canon_path, _, query = canon.partition("?")
        scheme, authority, segs = url_segments(canon_path)
        if canon_path.endswith("/"):
            raise self.refusal(url, key, "it names a directory, not an object")
        if scheme == "file":
            return self._resolve_file(url, canon, key)
        best: tuple[AllowedPrefix, T] | None = None
        for entry in self._entries:
            rule = entry[0]
            if (
                rule.scheme == scheme
                and rule.authority == authority
                and segs[: len(rule.segments)] == rule.segments
                and (best is None or len(rule.segments) > len(best[0].segments))
            ):
                best = entry
        if best is None:
            hint = allow_hint(suggested_prefixes([canon]))
            raise self.refusal(url, key, "it is under no registered prefix", hint)
        rel = segs[best[0].root_len :]
        if not rel:
            raise self.refusal(url, key, "it names the store root, not an object")
        return Allowed(best[0], best[1], canon, query, "/".join(rel), None)

    def _resolve_file(self, url: str, canon: str, key: str | None) -> Allowed[T]:
        try:
            real = os.path.realpath(url_to_local_path(canon))
        except OSError as exc:
            # A component swapped between realpath's lstat and readlink (EINVAL), a loop
            # of links: whatever the path means cannot be told, so it is refused.
            raise self.refusal(
                url, key, f"its real path could not be resolved ({exc.strerror or exc})"
            ) from exc
        best: tuple[AllowedPrefix, T] | None = None
        for entry in self._entries:
            rule = entry[0]
            if (
                rule.scheme == "file"
                and rule.real_prefix is not None
                and is_under_real_path(real, rule.real_prefix)
                and (best is None or len(rule.real_prefix) > len(best[0].real_prefix or ""))
            ):
                best = entry
        if best is None or best[0].real_root is None:
            why = "it is under no registered prefix"
            if real != url_to_local_path(canon):
                why += f" (its real path, symlinks resolved, is {real!r})"
            hint = allow_hint(suggested_prefixes([local_path_to_url(real)]))
            raise self.refusal(url, key, why, hint)
        rel = os.path.relpath(real, best[0].real_root)
        if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
            raise self.refusal(url, key, "it names the store root, not an object")
        return Allowed(best[0], best[1], canon, "", rel.replace(os.sep, "/"), real)
