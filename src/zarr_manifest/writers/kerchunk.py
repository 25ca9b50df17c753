"""`ManifestGroup` -> kerchunk references (version 1), as a dict, a JSON file or a parquet store.

The references describe a Zarr v2 hierarchy, which is what fsspec's ``ReferenceFileSystem``
(and every kerchunk consumer) opens with zarr:

- each group gets ``.zgroup`` and ``.zattrs``; each array ``.zarray`` and ``.zattrs`` (with
  ``_ARRAY_DIMENSIONS`` from the dimension names), as JSON strings;
- a virtual array's chunks become ``[path, offset, length]`` references under the keys
  ``<array>/<i.j.k>``; paths are fsspec paths (local files as absolute paths, object keys
  verbatim), see `zarr_manifest.format.paths.url_to_fsspec_path`;
- an inline array's chunks are encoded with zarr (Zarr v2 rules) and stored as
  ``"base64:..."`` values.

Zarr v3 codecs map to Zarr v2 ``filters`` + ``compressor``: a leading ``transpose`` that
reverses the axes becomes ``order: "F"``; the ``bytes`` codec's endian becomes the dtype's
byte order; ``vlen-utf8`` / ``vlen-bytes`` become the object codec (first filter, dtype
``|O``); ``numcodecs.*`` codecs become their numcodecs configs (an array->bytes one, such
as GRIB's, a filter); ``gzip``, ``zstd``,
``blosc`` and ``crc32c`` become the numcodecs codecs of the same format.  Byte codecs after
the first go in ``filters`` (as kerchunk's HDF5 references do), the last is the
``compressor``.

What cannot be expressed, and raises `UnsupportedError` (naming the array): the
``sharding_indexed`` codec (Zarr v2 has no shards); a ``transpose`` that is not a full axis
reversal, or that is not the first codec; array->bytes codecs other than ``bytes``,
``vlen-utf8`` and ``vlen-bytes``; codecs zarr-python does not know as numcodecs codecs;
chunk grids that are not regular; data types without a Zarr v2 form.
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.errors import StoreConflictError, UnsupportedError
from zarr_manifest.format.hierarchy import GroupLike

if TYPE_CHECKING:
    from zarr_manifest.group import ManifestGroup
from zarr_manifest.format.paths import url_to_fsspec_path

__all__ = ["to_kerchunk", "v3_metadata_to_v2"]

_BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_OBJECT_CODECS = {"vlen-utf8", "vlen-bytes"}
_PARQUET_REFS = re.compile(r"refs\.[0-9]+\.parq")


def _codec_dict(codec: Any) -> dict[str, Any]:
    d = codec if isinstance(codec, Mapping) else codec.to_dict()
    return {"name": d["name"], "configuration": dict(d.get("configuration") or {})}


def _codec_kind(name: str) -> str | None:
    from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec
    from zarr.registry import get_codec_class

    try:
        cls = get_codec_class(name)
    except (KeyError, ValueError, TypeError):
        return None
    for base, kind in (
        (ArrayArrayCodec, "array-array"),
        (ArrayBytesCodec, "array-bytes"),
        (BytesBytesCodec, "bytes-bytes"),
    ):
        if issubclass(cls, base):
            return kind
    return None


def _bytes_bytes_to_v2(
    name: str, conf: dict[str, Any], itemsize: int, where: str
) -> dict[str, Any]:
    """One Zarr v3 bytes->bytes codec as a numcodecs config."""
    if name == "gzip":
        return {"id": "gzip", "level": int(conf.get("level", 5))}
    if name == "zstd":
        return {
            "id": "zstd",
            "level": int(conf.get("level", 0)),
            "checksum": bool(conf.get("checksum", False)),
        }
    if name == "blosc":
        shuffle = conf.get("shuffle", "noshuffle")
        return {
            "id": "blosc",
            "cname": str(conf.get("cname", "zstd")),
            "clevel": int(conf.get("clevel", 5)),
            "shuffle": _BLOSC_SHUFFLE.get(shuffle, shuffle)
            if isinstance(shuffle, str)
            else int(shuffle),
            "blocksize": int(conf.get("blocksize", 0)),
        }
    if name == "crc32c":
        return {"id": "crc32c"}  # numcodecs' CRC32C appends the same little-endian checksum
    if name.startswith("numcodecs."):
        return {"id": name[len("numcodecs.") :], **conf}
    raise UnsupportedError(f"{where}: codec {name!r} has no Zarr v2 (numcodecs) form")


def v3_metadata_to_v2(
    array: ManifestArray | InlineArray, *, name: str = "?"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Zarr v2 ``.zarray`` and ``.zattrs`` documents of an array's Zarr v3 metadata.

    Parameters
    ----------
    array
        The array.
    name
        Its path, named in errors.

    Raises
    ------
    UnsupportedError
        A codec, chunk grid or data type Zarr v2 cannot express (see the module notes).
    """
    from zarr.core.dtype import get_data_type_from_native_dtype
    from zarr.core.metadata.v3 import RegularChunkGridMetadata

    meta = array.metadata
    where = f"array {name!r}"
    if not isinstance(meta.chunk_grid, RegularChunkGridMetadata):
        raise UnsupportedError(f"{where}: only regular chunk grids have a Zarr v2 form")
    codecs = [_codec_dict(c) for c in meta.codecs]
    order = "C"
    if codecs and codecs[0]["name"] == "transpose":
        perm = list(codecs[0]["configuration"].get("order", []))
        ndim = len(meta.shape)
        if perm == list(range(ndim - 1, -1, -1)):
            order = "F" if ndim > 1 else "C"
        elif perm != list(range(ndim)):
            raise UnsupportedError(
                f"{where}: transpose order {perm} is neither C nor F order, which Zarr v2 "
                "cannot express"
            )
        codecs = codecs[1:]
    zdtype = meta.data_type
    native = zdtype.to_native_dtype()
    filters: list[dict[str, Any]] = []
    byte_codecs: list[dict[str, Any]] = []
    object_codec: str | None = None
    seen_array_bytes = False
    for codec in codecs:
        cname, conf = codec["name"], codec["configuration"]
        if cname == "transpose":
            raise UnsupportedError(
                f"{where}: a transpose codec after the first has no Zarr v2 form"
            )
        if cname == "sharding_indexed":
            raise UnsupportedError(
                f"{where}: the sharding_indexed codec has no Zarr v2 form (kerchunk references "
                "address whole chunks, not chunks inside shards)"
            )
        if cname == "bytes":
            endian = conf.get("endian")
            if endian is not None and native.itemsize > 1:
                native = native.newbyteorder(">" if endian == "big" else "<")
            seen_array_bytes = True
        elif cname in _OBJECT_CODECS:
            object_codec = cname
            seen_array_bytes = True
        elif (
            not seen_array_bytes
            and cname.startswith("numcodecs.")
            and (_codec_kind(cname) == "array-bytes")
        ):
            # a numcodecs decoder from bytes to values (GRIB): a v2 filter, as kerchunk writes it
            filters.append({"id": cname[len("numcodecs.") :], **conf})
            seen_array_bytes = True
        elif not seen_array_bytes:
            kind = _codec_kind(cname)
            if kind != "array-array" or not cname.startswith("numcodecs."):
                raise UnsupportedError(
                    f"{where}: codec {cname!r} before the array->bytes codec has no Zarr v2 form"
                )
            filters.append({"id": cname[len("numcodecs.") :], **conf})
        else:
            kind = _codec_kind(cname)
            if kind != "bytes-bytes":
                raise UnsupportedError(
                    f"{where}: codec {cname!r} ({kind or 'unknown to zarr'}) has no Zarr v2 form "
                    "after the array->bytes codec"
                )
            byte_codecs.append(_bytes_bytes_to_v2(cname, conf, native.itemsize, where))
    if not seen_array_bytes:
        raise UnsupportedError(f"{where}: no array->bytes codec Zarr v2 can express")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if object_codec is not None:
            dtype_json: Any = "|O"
        else:
            try:
                v2_dtype = get_data_type_from_native_dtype(native) if native.kind != "O" else zdtype
                dtype_json = v2_dtype.to_json(zarr_format=2)["name"]
            except (TypeError, ValueError) as e:
                raise UnsupportedError(
                    f"{where}: data type {zdtype} has no Zarr v2 form ({e})"
                ) from e
        try:
            fill = zdtype.to_json_scalar(meta.fill_value, zarr_format=2)
        except (TypeError, ValueError) as e:
            raise UnsupportedError(
                f"{where}: fill value {meta.fill_value!r} has no Zarr v2 form ({e})"
            ) from e
    if object_codec is not None:
        filters.insert(0, {"id": object_codec})
    filters.extend(byte_codecs[:-1])
    zarray = {
        "zarr_format": 2,
        "shape": list(meta.shape),
        "chunks": list(meta.chunk_grid.chunk_shape),
        "dtype": dtype_json,
        "fill_value": fill,
        "order": order,
        "filters": filters or None,
        "compressor": byte_codecs[-1] if byte_codecs else None,
        "dimension_separator": ".",
    }
    zattrs = dict(meta.attributes)
    if meta.dimension_names is not None:
        zattrs["_ARRAY_DIMENSIONS"] = [
            str(d) if d is not None else "" for d in meta.dimension_names
        ]
    return zarray, zattrs


def _plain_zarray(array: InlineArray) -> dict[str, Any]:
    """Uncompressed Zarr v2 metadata for inline data whose own codecs have no v2 form."""
    from zarr.core.dtype import get_data_type_from_native_dtype

    data = array.data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zdtype = get_data_type_from_native_dtype(data.dtype)
        dtype_json = zdtype.to_json(zarr_format=2)
        fill = zdtype.to_json_scalar(array.metadata.fill_value, zarr_format=2)
    object_codec = dtype_json.get("object_codec_id")
    return {
        "zarr_format": 2,
        "shape": list(data.shape),
        "chunks": list(data.shape)
        if data.ndim and all(data.shape)
        else [max(s, 1) for s in data.shape],
        "dtype": dtype_json["name"],
        "fill_value": fill,
        "order": "C",
        "filters": [{"id": object_codec}] if object_codec else None,
        "compressor": None,
        "dimension_separator": ".",
    }


def _dumps(doc: Any) -> str:
    # the stdlib writes NaN/Infinity in attributes, which zarr and fsspec read back
    return json.dumps(doc, default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _inline_refs(array: InlineArray, zarray: dict[str, Any], path: str) -> dict[str, str]:
    """Encode inline data through zarr with the given v2 metadata: ``{key: "base64:..."}``."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype

    store = zarr.storage.MemoryStore()
    store._store_dict[".zarray"] = default_buffer_prototype().buffer.from_bytes(
        _dumps(zarray).encode()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        target = zarr.open_array(store, mode="r+", zarr_format=2)
        if array.data.size:
            target[...] = array.data
    return {
        f"{path}/{key}": "base64:" + base64.b64encode(value.to_bytes()).decode()
        for key, value in store._store_dict.items()
        if key != ".zarray"
    }


def _chunk_refs(array: ManifestArray, path: str) -> dict[str, list[Any]]:
    manifest = array.manifest
    flat = np.flatnonzero(manifest.path_ids.reshape(-1) >= 0)
    if not flat.size:
        return {}
    table = [url_to_fsspec_path(p) for p in manifest.path_table]
    ids = manifest.path_ids.reshape(-1)[flat].tolist()
    offs = manifest.offsets.reshape(-1)[flat].tolist()
    lens = manifest.lengths.reshape(-1)[flat].tolist()
    grid = manifest.shape_chunk_grid
    strings = np.dtypes.StringDType()
    if grid:
        # "<path>/i.j.k" built column-wise with numpy string ops
        keys: np.ndarray = np.full(flat.size, f"{path}/", dtype=strings)
        for d, col in enumerate(np.unravel_index(flat, grid)):
            if d:
                keys = np.strings.add(keys, ".")
            keys = np.strings.add(keys, col.astype(strings))
        names = keys.tolist()
    else:
        names = [f"{path}/0"]
    return {k: [table[i], o, n] for k, i, o, n in zip(names, ids, offs, lens, strict=True)}


def to_kerchunk(
    group: ManifestGroup,
    dest: str | os.PathLike[str] | None = None,
    *,
    format: Literal["json", "parquet"] = "json",
    record_size: int = 100_000,
    categorical_threshold: int = 10,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Kerchunk references (version 1) for a `ManifestGroup`, optionally written to ``dest``.

    Parameters
    ----------
    group
        The hierarchy to describe.
    dest
        Where to write: a JSON file (``format="json"``) or a parquet reference store
        directory (``format="parquet"``, written with ``kerchunk.df.refs_to_dataframe``);
        a local path or an fsspec URL.  None: only return the references.
    format
        ``"json"`` or ``"parquet"``.
    record_size
        References per parquet file (parquet only).
    categorical_threshold
        Passed to ``refs_to_dataframe`` (parquet only).
    overwrite
        Replace existing kerchunk references at ``dest`` (only those: anything else there
        is refused); otherwise an existing ``dest`` is an error.

    Returns
    -------
    dict
        ``{"version": 1, "refs": {...}}``, readable by
        ``fsspec.filesystem("reference", fo=refs)``.

    Raises
    ------
    UnsupportedError
        An array whose codecs, chunk grid or data type Zarr v2 cannot express (see the
        module notes); the message names the array.
    FileExistsError
        ``dest`` exists and ``overwrite`` is False.
    StoreConflictError
        ``overwrite`` is True but ``dest`` is not kerchunk references of that format (a
        directory given for JSON, a parquet directory holding other files); nothing is
        deleted.
    """
    if format not in ("json", "parquet"):
        raise ValueError(f"format must be 'json' or 'parquet', got {format!r}")
    if not isinstance(group, GroupLike):
        raise TypeError(f"to_kerchunk needs a ManifestGroup, got {type(group).__name__}")
    refs: dict[str, Any] = {
        ".zgroup": _dumps({"zarr_format": 2}),
        ".zattrs": _dumps(group.attributes),
    }
    for path, node in group.walk():
        if not isinstance(node, ManifestArray | InlineArray):  # a group
            refs[f"{path}/.zgroup"] = _dumps({"zarr_format": 2})
            refs[f"{path}/.zattrs"] = _dumps(node.attributes)
            continue
        if isinstance(node, ManifestArray):
            zarray, zattrs = v3_metadata_to_v2(node, name=path)
            refs.update(_chunk_refs(node, path))
        else:
            try:
                zarray, zattrs = v3_metadata_to_v2(node, name=path)
            except UnsupportedError:
                # inline data is ours to encode: store it plainly when its codecs have no v2 form
                _, zattrs = _attrs_only(node)
                zarray = _plain_zarray(node)
            refs.update(_inline_refs(node, zarray, path))
        refs[f"{path}/.zarray"] = _dumps(zarray)
        refs[f"{path}/.zattrs"] = _dumps(zattrs)
    out = {"version": 1, "refs": refs}
    if dest is not None:
        _write(out, dest, format, record_size, categorical_threshold, overwrite)
    return out


def _attrs_only(array: InlineArray) -> tuple[None, dict[str, Any]]:
    zattrs = dict(array.metadata.attributes)
    if array.metadata.dimension_names is not None:
        zattrs["_ARRAY_DIMENSIONS"] = [
            str(d) if d is not None else "" for d in array.metadata.dimension_names
        ]
    return None, zattrs


def _write(
    refs: dict[str, Any],
    dest: str | os.PathLike[str],
    format: str,
    record_size: int,
    categorical_threshold: int,
    overwrite: bool,
) -> None:
    """Write ``refs`` to ``dest``, replacing only kerchunk references found there.

    JSON goes to a temporary file beside ``dest`` that is renamed over it; a parquet store is
    written to a temporary directory beside it, and the old store (holding nothing but
    ``.zmetadata`` and ``refs.<n>.parq`` files) is swapped out after.
    """
    import fsspec

    target = os.fspath(dest)
    fs, path = fsspec.core.url_to_fs(target)
    exists = fs.exists(path)
    if exists and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    if exists:
        _check_replaceable(fs, path, target, format)
    tmp = f"{path.rstrip('/')}.tmp-{uuid.uuid4().hex[:12]}"
    if format == "json":
        with fs.open(tmp, "wb") as f:
            f.write(_dumps(refs).encode())
        fs.mv(tmp, path)  # a rename on local disks: readers see the old file or the new one
        return
    from kerchunk.df import refs_to_dataframe

    tmp_url = fs.unstrip_protocol(tmp) if "://" in target else tmp
    refs_to_dataframe(
        refs, tmp_url, record_size=record_size, categorical_threshold=categorical_threshold
    )
    if exists:
        old = f"{path.rstrip('/')}.old-{uuid.uuid4().hex[:12]}"
        fs.mv(path, old, recursive=True)
        fs.mv(tmp, path, recursive=True)
        fs.rm(old, recursive=True)
    else:
        fs.mv(tmp, path, recursive=True)


def _check_replaceable(fs: Any, path: str, target: str, format: str) -> None:
    """Refuse to replace anything but kerchunk references of the same kind.

    Raises
    ------
    StoreConflictError
        ``dest`` is not a reference file (JSON) or holds a file a parquet reference store
        does not (parquet); the message names it.
    """
    if format == "json":
        if fs.isdir(path):
            raise StoreConflictError(
                f"{target} is a directory; kerchunk JSON is written to a file", key=target
            )
        with fs.open(path, "rb") as f:
            head = f.read(64 * 1024 * 1024)
        try:
            doc = json.loads(head)
        except ValueError:
            doc = None
        if not (isinstance(doc, dict) and ("refs" in doc or "version" in doc)):
            raise StoreConflictError(
                f"{target} exists and is not kerchunk references; not replacing it", key=target
            )
        return
    if not fs.isdir(path):
        raise StoreConflictError(
            f"{target} is a file; a parquet reference store is a directory", key=target
        )
    root = path.rstrip("/") + "/"
    for found in fs.find(path):
        rel = found[len(root) :] if found.startswith(root) else found
        name = rel.rsplit("/", 1)[-1]
        if rel != ".zmetadata" and not _PARQUET_REFS.fullmatch(name):
            raise StoreConflictError(
                f"{target} holds {rel!r}, which is not part of a parquet reference store; "
                "not replacing it",
                key=rel,
            )
