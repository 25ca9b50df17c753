"""Builders: a legacy file (HDF5/netCDF4, netCDF3, TIFF, FITS, GRIB, HDF4, ENVI, DMR++,
kerchunk, Zarr, zipped Zarr, Icechunk) as a group.

`open_virtual` detects the format from the file's magic bytes and calls the format's
builder, ``build_<format>(source, *, group=None, drop=(), load=(), **options)``.  Format
modules are imported only when used, so a missing optional dependency (h5py, kerchunk...)
only matters for the formats that need it.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import obstore.exceptions
from zarr.core.metadata.v3 import RegularChunkGridMetadata

from zarr_manifest._extras import extras_explained
from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.detect import FORMATS, detect_format, open_input, sniff
from zarr_manifest.errors import UnsupportedError
from zarr_manifest.fingerprint import Fingerprint
from zarr_manifest.format.paths import is_absolute_url
from zarr_manifest.format.storage_options import StorageOptions, merge_storage_options
from zarr_manifest.group import ManifestGroup

__all__ = [
    "BUILDERS",
    "FORMATS",
    "default_load",
    "has_tiny_rows",
    "detect_format",
    "get_builder",
    "open_virtual",
    "sniff",
]

#: Format name -> where its builder lives: candidate ``(module, function)`` pairs, first found
#: wins.
BUILDERS: dict[str, tuple[tuple[str, str], ...]] = {
    "hdf5": (("hdf5", "build_hdf5"),),
    "netcdf3": (("netcdf3", "build_netcdf3"),),
    "kerchunk": (("kerchunk", "build_kerchunk"),),
    "zarr": (("zarr", "build_zarr"),),
    "tiff": (("tiff", "build_tiff"),),
    "fits": (("fits", "build_fits"),),
    "grib": (("grib", "build_grib"),),
    "envi": (("envi", "build_envi"),),
    "hdf4": (("hdf4", "build_hdf4"),),
    "dmrpp": (("dmrpp", "build_dmrpp"),),
    "zip": (("zarr_zip", "build_zip"),),
    "icechunk": (("icechunk", "build_icechunk"),),
}

# Other spellings users pass as ``format``.
_ALIASES = {
    "h5": "hdf5",
    "hdf": "hdf5",
    "netcdf4": "hdf5",
    "nc4": "hdf5",
    "nc3": "netcdf3",
    "cdf": "netcdf3",
    "tif": "tiff",
    "geotiff": "tiff",
    "cog": "tiff",
    "fit": "fits",
    "grib2": "grib",
    "grb": "grib",
    "json": "kerchunk",
    "parquet": "kerchunk",
    "references": "kerchunk",
    "hdr": "envi",
    "h4": "hdf4",
    "hdf-eos": "hdf4",
    "dmr++": "dmrpp",
    "zarr.zip": "zip",
    "zipped-zarr": "zip",
}


def _normalise_format(fmt: str) -> str:
    name = fmt.strip().lower()
    name = _ALIASES.get(name, name)
    if name not in BUILDERS:
        raise UnsupportedError(
            f"unknown format {fmt!r}; known formats: {', '.join(BUILDERS)} "
            f"(or aliases {', '.join(sorted(_ALIASES))})"
        )
    return name


#: Builders found by `get_builder`, by their candidates in `BUILDERS` (an import per file
#: costs more than a lookup).
_FOUND_BUILDERS: dict[Any, Callable[..., ManifestGroup]] = {}


def get_builder(fmt: str) -> Callable[..., ManifestGroup]:
    """The ``build_<format>`` function for a format name (or alias).

    Raises
    ------
    UnsupportedError
        The format is unknown, or its builder module / function is not available (for
        example because an optional dependency is not installed).
    """
    name = _normalise_format(fmt)
    candidates = BUILDERS[name]
    found = _FOUND_BUILDERS.get(candidates)
    if found is not None:
        return found
    problems = []
    for module_name, function in candidates:
        try:
            module = importlib.import_module(f".{module_name}", __name__)
        except ModuleNotFoundError as e:
            # a missing builder module is a candidate we skip; a missing dependency inside it
            # is worth reporting
            problems.append(f"{module_name}: {e}")
            continue
        builder = getattr(module, function, None)
        if callable(builder):
            _FOUND_BUILDERS[candidates] = builder
            return builder  # type: ignore[no-any-return]
        problems.append(f"{module_name} has no {function}()")
    raise UnsupportedError(f"no builder available for format {name!r} ({'; '.join(problems)})")


def open_virtual(
    url: str | os.PathLike[str],
    *,
    format: str | None = None,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] | None = None,
    options: Mapping[str, Any] | None = None,
    fingerprints: bool = True,
    allowed_prefixes: Collection[str] = (),
    storage_options: StorageOptions | None = None,
    **obstore_kwargs: Any,
) -> ManifestGroup:
    """Reference a legacy file in place: its variables as a `ManifestGroup` of chunk manifests.

    Parameters
    ----------
    url
        A local path or URL (``s3://``, ``gs://``, ``az://``, ``http(s)://``, ``file://``) of a
        file, or of a directory / prefix for Zarr stores and kerchunk parquet references.
    format
        The format (``"hdf5"``, ``"netcdf3"``, ``"tiff"``, ``"fits"``, ``"grib"``, ``"zarr"``,
        ``"kerchunk"``, ``"hdf4"``, ``"dmrpp"``, ``"envi"``, ``"zip"`` (a zipped Zarr store),
        ``"icechunk"`` (a repository directory; ``options={"branch"/"tag"/"snapshot_id":
        ...}``), or an alias like ``"netcdf4"``); detected from magic bytes when None (an ENVI
        data file: from the ``.hdr`` next to it).
    group
        The group inside the file to start from (formats with groups).
    drop
        Variables to leave out.
    load
        Variables to read now and store inline.  Default (None): `default_load`, the
        dimension coordinates (1-D arrays named like their dimension) and the CF bounds
        variables they name, as VirtualiZarr's ``loadable_variables`` default, so inputs
        order and combine by coordinate values.  ``()`` keeps every variable referenced.
    options
        Format-specific builder options (e.g. ``{"split_contiguous_bytes": 8 << 20}`` for
        HDF5).
    fingerprints
        Record each referenced file's fingerprint (size, and ETag / last-modified where the
        storage gives them) with the manifests, so readers can detect files that changed
        since (see ``ManifestStore(verify=...)``).  It costs one ``stat`` (local) or HEAD
        request (remote) per distinct file; when a file references more than
        `MAX_FINGERPRINTED_FILES` others (a Zarr store's chunk objects), only the opened
        file is fingerprinted.
    allowed_prefixes
        For references files (kerchunk JSON / parquet), which point at other files: the URL
        prefixes or local directories they may point under besides their own directory
        (the default allows only that).  A reference anywhere else is refused
        (`SourceNotAllowedError`) before it is read or contacted.  Other formats reference
        only the opened file and take no such list.
    storage_options
        For remote URLs: credentials and client settings in obstore's vocabulary (its
        config keys, ``client_options``, ``retry_config``), with URL-prefix keys
        (``{"s3://other-bucket/": {...}}``) for files under other prefixes.  Default:
        obstore's (credentials from the environment).
    **obstore_kwargs
        Options too (the form taken before ``storage_options``); merged into it.

    Returns
    -------
    ManifestGroup
        Read it with ``zarr.open_group(ManifestStore(group), mode="r")`` or write it with
        ``group.to_store(...)``.

    Raises
    ------
    UnsupportedError
        The format is not recognised (the message names the file and the bytes seen), or a
        variable uses a codec/filter/dtype that cannot be referenced.
    BuildError
        The file cannot be parsed.
    FileNotFoundError
        A local path that does not exist.
    """
    obstore_kwargs = merge_storage_options(storage_options, obstore_kwargs)
    builder = get_builder(format) if format is not None else None
    source = open_input(url, **obstore_kwargs)
    if builder is None:
        builder = get_builder(detect_format(source))
    if allowed_prefixes:
        if "allowed_prefixes" not in inspect.signature(builder).parameters:
            raise TypeError(
                f"allowed_prefixes applies to references files; {source.url} is read by "
                f"{builder.__name__}, which references only the file itself"
            )
        options = {**dict(options or {}), "allowed_prefixes": tuple(allowed_prefixes)}
    # The opened file is fingerprinted before it is parsed: if it changes during the build,
    # the recorded state is the older one, and readers find it stale rather than trust it.
    known = {source.url: _fingerprint(source)} if fingerprints else {}

    def run(load: Collection[str], drop: Collection[str] = drop) -> ManifestGroup:
        # builders take obstore options alongside a URL (a `Source` does not hand them on)
        target = source.url if obstore_kwargs else source
        with extras_explained(f"{builder.__module__.rsplit('.', 1)[-1]} files"):
            return builder(
                target, group=group, drop=drop, load=load, **dict(options or {}), **obstore_kwargs
            )

    built = run(() if load is None else load)
    if load is None and (names := default_load(built)):
        # parsed again rather than read here: a builder loads a variable its own way
        # (netCDF-4 padding, string types), and builders do not read through the store
        built = _load_defaults(built, names, run, drop)
    if not fingerprints:
        return built
    return _with_fingerprints(built, known, obstore_kwargs)


def _load_defaults(
    built: ManifestGroup,
    names: tuple[str, ...],
    run: Callable[..., ManifestGroup],
    drop: Collection[str],
) -> ManifestGroup:
    """``built`` with the arrays at ``names`` loaded the builder's way.

    The second parse leaves out every other array (``drop``), so it builds only what it
    loads, and its arrays replace ``built``'s.  Should that parse fail, or an array come out
    different from its referenced twin in anything but its storage (shape, dimension names,
    attributes: another array's absence would show there), the file is parsed again whole.
    """
    wanted = set(names)
    others = [
        path
        for path, node in built.walk()
        if not isinstance(node, ManifestGroup) and path not in wanted
    ]
    try:
        partial = run(names, drop=(*drop, *others))
        loaded = {path: partial[path] for path in names}
    except Exception:
        return run(names)
    arrays: dict[str, ManifestArray | InlineArray] = {}
    for path, node in loaded.items():
        old = built[path]
        if not (
            isinstance(node, InlineArray)
            and isinstance(old, ManifestArray)
            and node.metadata.shape == old.metadata.shape
            and node.metadata.dimension_names == old.metadata.dimension_names
            and node.metadata.attributes == old.metadata.attributes
        ):
            return run(names)
        # loaded for its tiny rows: one chunk, not one object per row when written
        arrays[path] = _in_one_chunk(node) if has_tiny_rows(old) else node
    return _with_arrays(built, arrays)


def _in_one_chunk(array: InlineArray) -> InlineArray:
    """``array`` with one chunk holding all its values (its codecs kept)."""
    doc = array.metadata.to_dict()
    doc["chunk_grid"] = {
        "name": "regular",
        "configuration": {"chunk_shape": [max(n, 1) for n in array.shape]},
    }
    return InlineArray(doc, array.data)


def _with_arrays(
    group: ManifestGroup, arrays: Mapping[str, ManifestArray | InlineArray]
) -> ManifestGroup:
    """A copy of ``group`` with the arrays at the given paths replaced."""
    here = {path: node for path, node in arrays.items() if "/" not in path}
    below: dict[str, dict[str, ManifestArray | InlineArray]] = {}
    for path, node in arrays.items():
        if "/" in path:
            child, rest = path.split("/", 1)
            below.setdefault(child, {})[rest] = node
    groups = group.groups
    for child, nodes in below.items():
        groups[child] = _with_arrays(groups[child], nodes)
    return group.replace(arrays={**group.arrays, **here}, groups=groups)


#: `default_load` also loads uncompressed arrays stored one row per chunk (a netCDF-3 record
#: variable of several) of at most this many bytes in all ...
ROW_CHUNKS_LOAD_MAX_BYTES = 1 << 20
#: ... and at most this many bytes a row: each reference takes more room than the bytes it
#: points at, and each chunk is a read of its own (zarr spends 20-150 us on each)
ROW_CHUNK_MAX_BYTES = 64


def default_load(group: ManifestGroup) -> tuple[str, ...]:
    """What `open_virtual` loads by default: the paths of the referenced dimension
    coordinates (1-D arrays named like their dimension) and of the CF bounds variables
    they name (``time_bnds``: small, and their numbers mean what the coordinate's units say,
    which may differ from file to file), and of the arrays of tiny rows (`has_tiny_rows`).
    """
    paths = []
    for path, node in group.walk():
        if not isinstance(node, ManifestArray):
            continue
        name = path.rsplit("/", 1)[-1]
        if node.ndim == 1 and tuple(node.dimension_names or ()) == (name,):
            paths.append(path)
            bounds = node.metadata.attributes.get("bounds")
            prefix = path[: len(path) - len(name)]
            if isinstance(bounds, str):
                target = prefix + bounds
                if target in group and isinstance(group[target], ManifestArray):
                    paths.append(target)
        elif has_tiny_rows(node):
            paths.append(path)
    return tuple(dict.fromkeys(paths))


def has_tiny_rows(array: ManifestArray) -> bool:
    """Whether `default_load` loads an array for its tiny, scattered chunks.

    That is: stored uncompressed (the ``bytes`` codec alone, so loading it is a plain
    read), one row per chunk (chunks of shape ``(1, *shape[1:])``, more than one), of at
    most `ROW_CHUNK_MAX_BYTES` a row and `ROW_CHUNKS_LOAD_MAX_BYTES` in all, no row's bytes
    following the previous row's in the file -- a netCDF-3 record variable beside others
    (a radar's per-ray azimuth), whose records are interleaved with theirs.  Rows that
    follow each other are read in one request anyway; scattered ones are a read each.
    """
    shape = array.shape
    grid = array.metadata.chunk_grid
    itemsize = array.dtype.itemsize
    if not isinstance(grid, RegularChunkGridMetadata) or not shape or shape[0] < 2:
        return False
    if tuple(grid.chunk_shape) != (1, *shape[1:]):
        return False
    if array.dtype.hasobject or not itemsize or len(array.codecs) != 1:
        return False
    if array.codecs[0].to_dict().get("name") != "bytes":
        return False
    row = math.prod(shape[1:]) * itemsize
    if row > ROW_CHUNK_MAX_BYTES or row * shape[0] > ROW_CHUNKS_LOAD_MAX_BYTES:
        return False
    manifest = array.manifest
    ids = manifest.path_ids.reshape(-1)
    offsets = manifest.offsets.reshape(-1).astype(np.int64)
    ends = offsets + manifest.lengths.reshape(-1).astype(np.int64)
    follows = (ids[1:] == ids[:-1]) & (ids[1:] >= 0) & (offsets[1:] == ends[:-1])
    return not bool(follows.any())


def _fingerprint(source: Source) -> Fingerprint | None:
    """A file's fingerprint, or None when it cannot be had (a directory, no HEAD access)."""
    if source.local_path is not None and not os.path.isfile(source.local_path):
        return None
    try:
        return source.fingerprint()
    except (OSError, obstore.exceptions.BaseError):
        return None


def _fingerprint_path(path: str, obstore_kwargs: dict[str, Any]) -> Fingerprint | None:
    if not (is_absolute_url(path) or path.startswith("/")):
        return None  # a relative reference: its base is only known where it is written
    try:
        source = open_source(path, **obstore_kwargs)
    except (OSError, obstore.exceptions.BaseError):
        return None
    return _fingerprint(source)


#: Above this many referenced files besides the opened one, `open_virtual` records no
#: fingerprints for them (one HEAD request each would dominate the build).
MAX_FINGERPRINTED_FILES = 1000


def _with_fingerprints(
    group: ManifestGroup, known: dict[str, Fingerprint | None], obstore_kwargs: dict[str, Any]
) -> ManifestGroup:
    """``group`` with the fingerprint of every file its manifests reference attached."""
    arrays = [n for _, n in group.walk() if isinstance(n, ManifestArray)]
    paths = {
        p
        for a in arrays
        for p in a.manifest.path_table
        if p not in known and p not in a.fingerprints
    }
    if len(paths) > MAX_FINGERPRINTED_FILES:
        # a store of many small objects (a Zarr store's chunks): a HEAD each would cost more
        # than the build itself; such objects are not fingerprinted
        paths = set()
    if paths:
        # remote files cost a round trip each: many (Zarr chunk objects) are asked at once
        with ThreadPoolExecutor(max_workers=min(16, len(paths))) as pool:
            ordered = sorted(paths)
            found = pool.map(lambda p: _fingerprint_path(p, obstore_kwargs), ordered)
            known.update(zip(ordered, found, strict=True))

    def attach(g: ManifestGroup) -> ManifestGroup:
        members = {}
        for name, node in g.arrays.items():
            if isinstance(node, ManifestArray):
                fps = {p: fp for p in node.manifest.path_table if (fp := known.get(p)) is not None}
                node = node.with_fingerprints({**fps, **node.fingerprints})
            members[name] = node
        return g.replace(arrays=members, groups={k: attach(c) for k, c in g.groups.items()})

    return attach(group)
