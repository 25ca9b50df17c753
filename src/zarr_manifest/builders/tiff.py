"""TIFF / GeoTIFF / OME-TIFF -> `ManifestGroup`, through tifffile's kerchunk references.

tifffile knows where every strip or tile of an image series lives and which numcodecs codec
decodes it; its ``ZarrTiffStore.write_fsspec`` writes that as kerchunk references, which go
through the one translator (`zarr_manifest.builders.kerchunk.from_kerchunk_refs`).  (kerchunk's
own ``tiff_to_zarr`` wraps the same call but breaks on current tifffile metadata, so it is not
used.)

Layout of the result:

- one series: the array ``data`` (a pyramid: the group ``data`` with arrays ``0``, ``1`` ...
  and tifffile's OME-Zarr ``multiscales`` attributes);
- several series: ``series_0``, ``series_1`` ... likewise;
- dimension names are tifffile's axis letters (``Y``, ``X``, ``S`` ...);
- the file's metadata tifffile decodes (GeoTIFF keys, ImageJ, OME-XML, ...) are the root
  group's attributes, by kind (``{"geotiff_metadata": {...}}``).

A strip image whose last strip is short (``ImageLength`` not a multiple of
``RowsPerStrip``) is referenced one chunk per page when its strips are uncompressed and
contiguous.  A series tifffile cannot express as references (a short last strip that is
compressed, a compression, bit depth or fill order no Zarr codec reads) is loaded with
tifffile and kept inline, with a warning, never dropped.
"""

from __future__ import annotations

import base64
import enum
import io
import json
import math
import os
import warnings
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from zarr_manifest.array import InlineArray
from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.kerchunk import from_kerchunk_refs, insert_array, url_to_fsspec_path
from zarr_manifest.errors import BuildError
from zarr_manifest.format.paths import decode_path_segments
from zarr_manifest.group import ManifestGroup

__all__ = ["build_tiff", "tiff_refs"]


def _json_safe(value: Any) -> Any:
    """TIFF metadata as JSON-serialisable values (enums by name, arrays as lists)."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, type) and issubclass(value, enum.Enum):
        return value.__name__
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _file_metadata(tif: Any) -> dict[str, Any]:
    """The metadata tifffile decodes from the file (``*_metadata`` properties that are set)."""
    out: dict[str, Any] = {}
    for name in dir(tif):
        if not name.endswith("_metadata") or name.startswith("_"):
            continue
        try:
            value = getattr(tif, name)
        except Exception:  # tifffile parses lazily; a malformed private tag must not stop us
            continue
        if value is None or value == () or value == {}:
            continue
        out[name] = _json_safe(value)
    return out


def _series_refs(series: Any, dir_path: str, name: str) -> dict[str, Any]:
    """kerchunk (version 0) references of one series under ``name``.

    A strip image whose last strip is short (``ImageLength`` not a multiple of
    ``RowsPerStrip``, legitimate TIFF) has no regular grid of strips; when its pages are
    uncompressed and their strips contiguous (tifffile's ``is_final``), each page is one
    byte range and is referenced as one chunk instead.

    Raises
    ------
    ValueError
        tifffile cannot express the series as references.
    """
    import tifffile

    try:
        return _write_refs(series, dir_path, name, chunkmode=None)
    except ValueError as e:
        if "incomplete chunks" not in str(e):
            raise
        try:
            refs = _write_refs(series, dir_path, name, chunkmode=tifffile.CHUNKMODE.PAGE)
        except ValueError:
            raise e from None  # compressed or scattered strips: the first reason stands
        return _split_contiguous(refs)


#: A contiguous uncompressed image referenced as one byte range is cut into chunks of
#: about this many bytes (whole rows, a regular grid).
CONTIGUOUS_CHUNK_BYTES = 16 * 2**20


def _split_contiguous(refs: dict[str, Any], target: int | None = None) -> dict[str, Any]:
    """``refs`` with the uncompressed C-order chunks of each array (pages, one byte range
    each) cut into smaller contiguous ranges: sub-chunks ``(1, ..., 1, k, full, ...)`` of at
    most ``target`` bytes where possible, ``k`` a divisor of its axis (every chunk, the last
    too, stays whole: a regular grid)."""
    target = CONTIGUOUS_CHUNK_BYTES if target is None else target
    out = dict(refs)
    for key, doc in refs.items():
        if not key.endswith(".zarray"):
            continue
        meta = json.loads(doc)
        prefix = key[: -len(".zarray")]
        shape, chunks = [int(n) for n in meta["shape"]], [int(n) for n in meta["chunks"]]
        itemsize = np.dtype(meta["dtype"]).itemsize
        nbytes = math.prod(chunks) * itemsize
        if (
            meta.get("compressor")
            or meta.get("filters")
            or meta.get("order") != "C"
            or not shape
            or any(n % c for n, c in zip(shape, chunks, strict=True))
            or nbytes <= target
        ):
            continue
        grid = [n // c for n, c in zip(shape, chunks, strict=True)]
        old = {".".join(map(str, i)): i for i in np.ndindex(*grid)}
        if any(not isinstance(refs.get(prefix + k), list) for k in old):
            continue  # a chunk missing or inline: left as it is
        if any(refs[prefix + k][2] != nbytes for k in old):
            continue
        axis = next(
            a for a in range(len(chunks)) if math.prod(chunks[a + 1 :]) * itemsize <= target
        )
        inner = math.prod(chunks[axis + 1 :]) * itemsize
        k = max(
            d for d in range(1, chunks[axis] + 1) if chunks[axis] % d == 0 and d * inner <= target
        )
        new = [1] * axis + [k] + chunks[axis + 1 :]
        sub = [c // n for c, n in zip(chunks, new, strict=True)]
        for name, index in old.items():
            url, base, _ = out.pop(prefix + name)
            for flat, within in enumerate(np.ndindex(*sub)):
                at = [i * s + w for i, s, w in zip(index, sub, within, strict=True)]
                out[prefix + ".".join(map(str, at))] = [url, base + flat * k * inner, k * inner]
        out[key] = json.dumps({**meta, "chunks": new})
    return out


def _write_refs(series: Any, dir_path: str, name: str, chunkmode: Any) -> dict[str, Any]:
    with series.aszarr(chunkmode=chunkmode) as store:
        buf = io.StringIO()
        store.write_fsspec(buf, url=dir_path, groupname=name)
    refs: dict[str, Any] = json.loads(buf.getvalue())
    return refs


def _check_refs(refs: dict[str, Any], file_size: int | None) -> None:
    """Raise ValueError when a chunk reference cannot hold its chunk: a range past the end of
    the file, or an uncompressed chunk whose length is not the chunk's size (a malformed
    ``RowsPerStrip`` or ``BitsPerSample``; tifffile reads such files, padding the missing
    samples)."""
    metas = {k[: -len(".zarray")]: json.loads(v) for k, v in refs.items() if k.endswith(".zarray")}
    for key, ref in refs.items():
        if not isinstance(ref, list) or len(ref) != 3:
            continue
        _, offset, length = ref
        if file_size is not None and offset + length > file_size:
            raise ValueError(
                f"chunk {key!r} at bytes [{offset}, {offset + length}) runs past the end of "
                f"the file ({file_size} bytes)"
            )
        meta = metas.get(key.rpartition("/")[0] + "/" if "/" in key else "")
        if meta is None or meta.get("compressor") or meta.get("filters"):
            continue
        expected = math.prod(meta["chunks"]) * np.dtype(meta["dtype"]).itemsize
        if length != expected:
            raise ValueError(
                f"chunk {key!r} holds {length} bytes where its {meta['chunks']} "
                f"{meta['dtype']} values need {expected}"
            )


def _load_series(series: Any, name: str) -> dict[str, InlineArray]:
    """A series read with tifffile: ``{path: InlineArray}`` (one per pyramid level)."""
    levels = list(series.levels) if len(series.levels) > 1 else [series]
    out: dict[str, InlineArray] = {}
    for i, level in enumerate(levels):
        data = level.asarray()
        # numpy's long long (tifffile's 64-bit integers) is not the int64 zarr knows
        data = data.view(np.dtype(data.dtype.str))
        dims = [f"{a}{i}" if i else a for a in level.axes]
        path = f"{name}/{i}" if len(levels) > 1 else name
        out[path] = InlineArray.from_numpy(
            data, dimension_names=dims if len(dims) == data.ndim else None
        )
    return out


def _file_size(source: Source) -> int | None:
    try:
        return source.fingerprint().size
    except Exception:  # no stat/HEAD access: the range check is skipped, reads still check
        return None


def tiff_refs(
    source: Source, *, series: Collection[int] | None = None
) -> tuple[dict[str, Any], dict[str, InlineArray], dict[str, Any]]:
    """kerchunk references for a TIFF file's series, plus the series that had to be loaded.

    Returns
    -------
    refs, loaded, attributes
        Version 0 references of the series that can be referenced; ``{path: InlineArray}``
        of those that cannot; the file metadata (root group attributes).

    Raises
    ------
    BuildError
        Not a TIFF file tifffile can read (names the file), or an unknown series index.
    """
    import tifffile

    url = source.url.rstrip("/")
    parent, _, basename = url.rpartition("/")
    dir_path = url_to_fsspec_path(parent + "/").rstrip("/") or "/"
    try:
        handle: Any = source.local_path if source.local_path is not None else source.open()
        with tifffile.TiffFile(handle, name=decode_path_segments(basename)) as tif:
            all_series = list(tif.series)
            wanted = range(len(all_series)) if series is None else list(series)
            bad = [i for i in wanted if not 0 <= i < len(all_series)]
            if bad:
                raise BuildError(f"{source.url}: no series {bad} (the file has {len(all_series)})")
            single = len(all_series) == 1
            size = _file_size(source)
            refs: dict[str, Any] = {".zgroup": json.dumps({"zarr_format": 2})}
            loaded: dict[str, InlineArray] = {}
            for i in wanted:
                s = all_series[i]
                name = "data" if single else f"series_{i}"
                try:
                    found = _series_refs(s, dir_path, name)
                    _check_refs(found, size)
                    refs.update(found)
                except ValueError as e:
                    warnings.warn(
                        f"{source.url}: series {i} cannot be referenced ({e}); loading it",
                        stacklevel=3,
                    )
                    loaded.update(_load_series(s, name))
            attributes = _file_metadata(tif)
    except tifffile.TiffFileError as e:
        raise BuildError(f"{source.url}: not a readable TIFF file ({e})") from e
    return refs, loaded, attributes


def build_tiff(
    source: Source | str | os.PathLike[str],
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    series: Collection[int] | None = None,
    **options: Any,
) -> ManifestGroup:
    """Reference the image series of a TIFF file (GeoTIFF, OME-TIFF, pyramids) in place.

    Parameters
    ----------
    source
        The file: a `Source`, local path or URL.
    group
        A pyramid's group (``"data"``) to start from, or None for the root.
    drop, load
        Arrays to leave out / read now and keep inline, by path (``"data"``,
        ``"series_1"``, ``"data/1"`` for a pyramid level).
    series
        Indices of the series to include (default: all).
    **options
        obstore options when ``source`` is a path or URL.

    Returns
    -------
    ManifestGroup
        See the module notes for the layout.

    Raises
    ------
    BuildError
        Not a TIFF file; unknown series, ``group``, ``drop`` or ``load`` name.
    UnsupportedError
        A codec or data type neither referenceable nor decodable.
    """
    if not isinstance(source, Source):
        source = open_source(source, **options)
    elif options:
        raise TypeError(f"build_tiff: unexpected options {sorted(options)}")
    refs, loaded, attributes = tiff_refs(source, series=series)
    prefix = (group or "").strip("/")
    if prefix:
        loaded = {p[len(prefix) + 1 :]: a for p, a in loaded.items() if p.startswith(prefix + "/")}
    virtual_names = _array_paths(refs, prefix)
    unknown = sorted((set(drop) | set(load)) - virtual_names - set(loaded))
    if unknown:
        raise BuildError(f"{source.url}: no array(s) {unknown} in the file (drop/load)")
    if virtual_names or not loaded:
        result = from_kerchunk_refs(
            refs,
            group=group,
            drop=[d for d in drop if d in virtual_names],
            load=[x for x in load if x in virtual_names],
            location=source.url,
        )
    else:
        result = ManifestGroup()
    for path, array in loaded.items():
        if path not in drop:
            result = insert_array(result, path, array)
    return result.replace(attributes={**attributes, **result.attributes}) if not prefix else result


def _array_paths(refs: Mapping[str, Any], prefix: str) -> set[str]:
    paths = {k[: -len("/.zarray")] for k in refs if k.endswith("/.zarray")}
    if not prefix:
        return paths
    return {p[len(prefix) + 1 :] for p in paths if p.startswith(prefix + "/")}
