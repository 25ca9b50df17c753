"""Codec mapping shared by the builders: HDF5 filters and Zarr v2 codecs -> Zarr v3 codecs.

Every builder describes how a chunk's bytes decode as a list of Zarr v3 codec dicts (the
``codecs`` field of zarr.json), using only codecs zarr-python 3.4 reads: its own (``bytes``,
``transpose``, ``gzip``, ``zstd``, ``blosc``, ``crc32c``) and the ``numcodecs.*`` ones it ships
(``numcodecs.zlib``, ``numcodecs.shuffle``, ``numcodecs.fletcher32``, ``numcodecs.bz2`` ...).
A filter or codec with no exact Zarr equivalent raises `UnsupportedError` naming the variable
and the filter, never a silently wrong pipeline.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from zarr_manifest.errors import UnsupportedError

__all__ = [
    "HDF5_FILTER_NAMES",
    "HDF5Filter",
    "bytes_codec",
    "hdf5_filters_to_codecs",
    "v2_codecs_to_v3",
]

#: One HDF5 filter of a dataset's pipeline: (filter id, client data values, filter name).
HDF5Filter = tuple[int, Sequence[int], str]

# HDF5 filter ids (H5Zpublic.h) and the registered ids of the plugins hdf5plugin ships.
_DEFLATE = 1
_SHUFFLE = 2
_FLETCHER32 = 3
_SZIP = 4
_NBIT = 5
_SCALEOFFSET = 6
_BZIP2 = 307
_LZF = 32000
_BLOSC = 32001
_LZ4 = 32004
_BITSHUFFLE = 32008
_ZSTD = 32015
_BLOSC2 = 32026

#: Names of well-known HDF5 filter ids, for error messages.
HDF5_FILTER_NAMES: dict[int, str] = {
    _DEFLATE: "deflate",
    _SHUFFLE: "shuffle",
    _FLETCHER32: "fletcher32",
    _SZIP: "szip",
    _NBIT: "nbit",
    _SCALEOFFSET: "scaleoffset",
    _BZIP2: "bzip2",
    _LZF: "lzf",
    _BLOSC: "blosc",
    _LZ4: "lz4",
    _BITSHUFFLE: "bitshuffle",
    32013: "zfp",
    _ZSTD: "zstd",
    32017: "sz",
    32018: "fcidecomp",
    32024: "sz3",
    _BLOSC2: "blosc2",
}

# Why the filters we cannot map have no exact Zarr v3 codec.
_UNSUPPORTED_WHY: dict[int, str] = {
    _SZIP: "szip needs imagecodecs (pip install imagecodecs)",
    _NBIT: "the HDF5 n-bit packing has no Zarr codec",
    _SCALEOFFSET: (
        "the HDF5 scale-offset filter packs each chunk with its own minimum and bit width in a "
        "chunk header, which no Zarr codec decodes"
    ),
    _LZF: "LZF has no Zarr codec",
    _LZ4: (
        "the HDF5 LZ4 filter frames its blocks (big-endian sizes per block), which differs "
        "from numcodecs' LZ4 format"
    ),
    _BITSHUFFLE: "the HDF5 bitshuffle filter's block framing has no Zarr codec",
    _BLOSC2: "Blosc2 frames have no Zarr codec",
}

#: The Zarr v3 name of imagecodecs' SZIP codec (numcodecs id ``imagecodecs_szip``).
SZIP_CODEC_NAME = "numcodecs.imagecodecs_szip"
# The HDF5 szip filter's client data, in order (H5Zszip.c), as imagecodecs names them.
_SZIP_KEYS = ("options_mask", "pixels_per_block", "bits_per_pixel", "pixels_per_scanline")


def _have_imagecodecs() -> bool:
    import importlib.util

    return importlib.util.find_spec("imagecodecs") is not None


def _szip_codec_class() -> type:
    """Zarr v3 wrapper of imagecodecs' numcodecs ``imagecodecs_szip`` (bytes->bytes).

    zarr-python reads a numcodecs codec as ``numcodecs.<id>`` through a wrapper class; its
    wrappers look the codec up in numcodecs' registry, where imagecodecs' codecs only are
    once imagecodecs registers them.
    """
    import types
    from functools import cached_property

    from zarr.codecs.numcodecs._codecs import _NumcodecsBytesBytesCodec

    def numcodecs_codec(self: Any) -> Any:
        import imagecodecs.numcodecs
        import numcodecs

        imagecodecs.numcodecs.register_codecs(["imagecodecs_szip"], verbose=False)
        return numcodecs.get_codec(dict(self.codec_config))

    def body(namespace: dict[str, Any]) -> None:
        namespace["_codec"] = cached_property(numcodecs_codec)

    cls = types.new_class(
        "ImagecodecsSzipCodec",
        (_NumcodecsBytesBytesCodec,),
        {"codec_name": "imagecodecs_szip"},  # zarr prefixes it: numcodecs.imagecodecs_szip
        body,
    )
    cls.__module__ = __name__
    return cls


ImagecodecsSzipCodec = _szip_codec_class()


def _register_szip() -> None:
    from zarr.registry import register_codec

    register_codec(SZIP_CODEC_NAME, ImagecodecsSzipCodec)


_register_szip()

# Compressor codes of the HDF5 Blosc filter (hdf5-blosc, blosc.h BLOSC_*_FORMAT order).
_BLOSC_CNAMES = {0: "blosclz", 1: "lz4", 2: "lz4hc", 3: "snappy", 4: "zlib", 5: "zstd"}
_BLOSC_SHUFFLES = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}


def _endian(dtype: np.dtype[Any]) -> str | None:
    """The byte order of ``dtype``'s multi-byte values ("little"/"big"), None if it has none.

    Raises
    ------
    ValueError
        A structured dtype whose fields disagree on byte order.
    """
    if dtype.fields:
        orders = {_endian(field[0]) for field in dtype.fields.values()} - {None}
        if len(orders) > 1:
            raise ValueError(f"structured dtype {dtype} mixes byte orders")
        return orders.pop() if orders else None
    if dtype.subdtype is not None:
        return _endian(dtype.subdtype[0])
    if dtype.itemsize <= 1 or dtype.kind in "SVbO" or dtype.byteorder == "|":
        return None
    if dtype.byteorder == "=":
        return "little" if np.little_endian else "big"
    return "little" if dtype.byteorder == "<" else "big"


def bytes_codec(dtype: np.dtype[Any] | str, *, variable: str = "?") -> dict[str, Any]:
    """The ``bytes`` array->bytes codec for values of ``dtype`` as stored.

    Parameters
    ----------
    dtype
        The stored numpy dtype, with its byte order (``">i4"``).
    variable
        Named in errors.

    Raises
    ------
    UnsupportedError
        A structured dtype whose fields have different byte orders.
    """
    try:
        endian = _endian(np.dtype(dtype))
    except ValueError as e:
        raise UnsupportedError(f"variable {variable!r}: {e}") from e
    if endian is None:
        return {"name": "bytes"}
    return {"name": "bytes", "configuration": {"endian": endian}}


def _cd(values: Sequence[int], index: int, default: int) -> int:
    return int(values[index]) if len(values) > index else default


def hdf5_filters_to_codecs(
    filters: Sequence[HDF5Filter], dtype: np.dtype[Any], *, variable: str = "?"
) -> list[dict[str, Any]]:
    """Zarr v3 codecs that decode chunks written through an HDF5 filter pipeline.

    Parameters
    ----------
    filters
        The dataset's filters in pipeline (encoding) order: ``(id, cd_values, name)``, as
        ``h5py.h5p.PropDCID.get_filter`` returns them.
    dtype
        The dataset's stored dtype (with byte order).
    variable
        The dataset's name, for error messages.

    Returns
    -------
    list of dict
        ``[bytes codec, bytes->bytes codecs in pipeline order...]``.

    Raises
    ------
    UnsupportedError
        A filter has no exact Zarr equivalent; the message names the variable and filter.
    """
    dtype = np.dtype(dtype)
    codecs: list[dict[str, Any]] = [bytes_codec(dtype, variable=variable)]
    for filter_id, cd_values, name in filters:
        fid = int(filter_id)
        cd = tuple(int(v) for v in cd_values)
        if fid == _DEFLATE:
            # HDF5 deflate writes zlib streams (RFC 1950), not gzip: numcodecs' Zlib reads them.
            codecs.append({"name": "numcodecs.zlib", "configuration": {"level": _cd(cd, 0, 6)}})
        elif fid == _SHUFFLE:
            size = _cd(cd, 0, dtype.itemsize)
            codecs.append({"name": "numcodecs.shuffle", "configuration": {"elementsize": size}})
        elif fid == _FLETCHER32:
            # numcodecs' Fletcher32 uses HDF5's checksum and layout (4 bytes appended).
            codecs.append({"name": "numcodecs.fletcher32", "configuration": {}})
        elif fid == _ZSTD:
            level = _cd(cd, 0, 3)
            codecs.append({"name": "zstd", "configuration": {"level": level, "checksum": False}})
        elif fid == _BZIP2:
            level = min(max(_cd(cd, 0, 9), 1), 9)
            codecs.append({"name": "numcodecs.bz2", "configuration": {"level": level}})
        elif fid == _BLOSC:
            codecs.append(_hdf5_blosc(cd, dtype, variable))
        elif fid == _SZIP and len(cd) >= 4 and _have_imagecodecs():
            # the HDF5 szip filter writes a 4-byte little-endian length, then a libaec stream
            # coded with the filter's parameters: imagecodecs' SZIP codec with header=True
            conf = dict(zip(_SZIP_KEYS, cd[:4], strict=True))
            codecs.append({"name": SZIP_CODEC_NAME, "configuration": {**conf, "header": True}})
        else:
            label = HDF5_FILTER_NAMES.get(fid) or (name or "unknown")
            why = _UNSUPPORTED_WHY.get(fid, "no Zarr codec is known for it")
            raise UnsupportedError(
                f"variable {variable!r} uses HDF5 filter {label!r} (id {fid}), which cannot be "
                f"referenced: {why}; load the variable or leave it out"
            )
    return codecs


def _hdf5_blosc(cd: tuple[int, ...], dtype: np.dtype[Any], variable: str) -> dict[str, Any]:
    """The ``blosc`` codec for HDF5 Blosc filter values.

    The stored values are (filter revision, blosc version, typesize, buffer size, clevel,
    shuffle, compressor); blosc chunks carry their own header, so decoding needs none of
    them, but the codec records them faithfully.
    """
    code = _cd(cd, 6, 0)
    cname = _BLOSC_CNAMES.get(code)
    if cname is None or cname == "snappy":
        raise UnsupportedError(
            f"variable {variable!r} uses the HDF5 Blosc filter with compressor code {code} "
            f"({cname or 'unknown'}), which numcodecs' Blosc cannot decode"
        )
    return {
        "name": "blosc",
        "configuration": {
            "typesize": _cd(cd, 2, dtype.itemsize) or dtype.itemsize,
            "cname": cname,
            "clevel": _cd(cd, 4, 5),
            "shuffle": _BLOSC_SHUFFLES.get(_cd(cd, 5, 1), "shuffle"),
            "blocksize": 0,
        },
    }


# ---- Zarr v2 / kerchunk (numcodecs configs) -> v3 -------------------------------------------

# numcodecs ids that replace the ``bytes`` codec (object arrays -> bytes).
_V2_ARRAY_BYTES = {"vlen-utf8": "vlen-utf8", "vlen-bytes": "vlen-bytes"}


def _codec_kind(name: str) -> str | None:
    """ "array-array", "array-bytes" or "bytes-bytes" for a Zarr v3 codec name, None if unknown."""
    from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec
    from zarr.registry import get_codec_class

    try:
        cls = get_codec_class(name)
    except (KeyError, ValueError, TypeError):
        return None
    if issubclass(cls, ArrayArrayCodec):
        return "array-array"
    if issubclass(cls, ArrayBytesCodec):
        return "array-bytes"
    if issubclass(cls, BytesBytesCodec):
        return "bytes-bytes"
    return None


def _v2_codec_to_v3(
    config: Mapping[str, Any], dtype: np.dtype[Any], variable: str
) -> tuple[str, dict[str, Any]]:
    """One numcodecs config -> (kind, v3 codec dict)."""
    if not isinstance(config, Mapping) or "id" not in config:
        raise UnsupportedError(f"variable {variable!r}: codec {config!r} has no 'id'")
    cid = str(config["id"])
    conf = {k: v for k, v in config.items() if k != "id"}
    if cid in _V2_ARRAY_BYTES:
        return "array-bytes", {"name": _V2_ARRAY_BYTES[cid]}
    if cid == "blosc":
        shuffle = int(conf.get("shuffle", 1))
        if shuffle == -1:  # AUTOSHUFFLE: numcodecs picks bit-shuffle for 1-byte items
            shuffle = 2 if dtype.itemsize == 1 else 1
        cname = str(conf.get("cname", "lz4"))
        if cname == "snappy":
            raise UnsupportedError(
                f"variable {variable!r} uses Blosc with snappy, which numcodecs cannot decode"
            )
        return "bytes-bytes", {
            "name": "blosc",
            "configuration": {
                "typesize": max(dtype.itemsize, 1),
                "cname": cname,
                "clevel": int(conf.get("clevel", 5)),
                "shuffle": _BLOSC_SHUFFLES.get(shuffle, "shuffle"),
                "blocksize": int(conf.get("blocksize", 0)),
            },
        }
    if cid == "zstd":
        return "bytes-bytes", {
            "name": "zstd",
            "configuration": {
                "level": int(conf.get("level", 0)),
                "checksum": bool(conf.get("checksum", False)),
            },
        }
    if cid == "gzip":
        level = int(conf.get("level", 1))
        return "bytes-bytes", {"name": "gzip", "configuration": {"level": level}}
    name = f"numcodecs.{cid}"
    kind = _codec_kind(name)
    if kind is None:
        raise UnsupportedError(
            f"variable {variable!r} uses codec {cid!r}, which zarr-python cannot read as a "
            "Zarr v3 codec"
        )
    # zarr's numcodecs wrappers need a "configuration" key, even an empty one
    return kind, {"name": name, "configuration": conf}


def v2_codecs_to_v3(
    dtype: np.dtype[Any] | str,
    order: str,
    filters: Sequence[Mapping[str, Any]] | None,
    compressor: Mapping[str, Any] | None,
    *,
    ndim: int | None = None,
    variable: str = "?",
) -> list[dict[str, Any]]:
    """The Zarr v3 codec list equal to a Zarr v2 (or kerchunk) ``filters`` + ``compressor``.

    Parameters
    ----------
    dtype
        The v2 dtype (``"<f8"``, ``">i4"``, ``"|O"`` ...), which sets the ``bytes`` endian
        (or the dtype a filter casts to, e.g. fixedscaleoffset's ``astype``).
    order
        ``"C"`` or ``"F"`` (F becomes a leading ``transpose`` codec).
    filters
        numcodecs configs (``{"id": "shuffle", "elementsize": 4}``), in encoding order, or None.
        Array filters (delta, fixedscaleoffset, ...) and byte filters (shuffle, zlib, crc32 ...,
        as kerchunk's HDF5 references use) may both appear, array filters first.
    compressor
        A numcodecs config or None.
    ndim
        The array's number of dimensions; needed when ``order`` is ``"F"``.
    variable
        Named in errors.

    Returns
    -------
    list of dict
        Zarr v3 codec dicts: [transpose?, array->array filters..., bytes (or vlen-*),
        bytes->bytes filters and compressor...].

    Raises
    ------
    UnsupportedError
        A codec zarr-python cannot read, or an array filter after a byte filter.
    ValueError
        ``order`` is not C/F, or is F without ``ndim``.
    """
    dt = np.dtype(dtype)
    head: list[dict[str, Any]] = []
    if order == "F":
        if ndim is None:
            raise ValueError("v2_codecs_to_v3: order 'F' needs ndim")
        if ndim > 1:
            head.append(
                {"name": "transpose", "configuration": {"order": list(range(ndim - 1, -1, -1))}}
            )
    elif order != "C":
        raise ValueError(f"v2_codecs_to_v3: order must be 'C' or 'F', got {order!r}")
    array_array: list[dict[str, Any]] = []
    array_bytes: dict[str, Any] | None = None
    bytes_bytes: list[dict[str, Any]] = []
    chain = [*(filters or ()), *([compressor] if compressor else [])]
    encoded = dt
    for config in chain:
        kind, codec = _v2_codec_to_v3(config, encoded, variable)
        if kind == "array-array":
            if array_bytes is not None or bytes_bytes:
                raise UnsupportedError(
                    f"variable {variable!r}: array filter {config.get('id')!r} follows a byte "
                    "filter, which Zarr v3 codecs cannot express"
                )
            array_array.append(codec)
            # filters such as fixedscaleoffset or astype hand on another dtype: the bytes
            # codec serialises that one
            cast = config.get("astype") or config.get("encode_dtype")
            if cast is not None:
                try:
                    encoded = np.dtype(cast)
                except TypeError as e:
                    raise UnsupportedError(
                        f"variable {variable!r}: filter {config.get('id')!r} has an invalid "
                        f"dtype {cast!r}"
                    ) from e
        elif kind == "array-bytes":
            if array_bytes is not None or bytes_bytes:
                raise UnsupportedError(
                    f"variable {variable!r}: codec {config.get('id')!r} must come before every "
                    "byte filter and appear once"
                )
            array_bytes = codec
        else:
            bytes_bytes.append(codec)
    if array_bytes is None:
        if dt.kind == "O":
            raise UnsupportedError(
                f"variable {variable!r} has object dtype but no vlen-utf8/vlen-bytes codec"
            )
        array_bytes = bytes_codec(encoded, variable=variable)
    return [*head, *array_array, array_bytes, *bytes_bytes]


def xarray_fill_value_attribute(value: Any, dtype: np.dtype[Any]) -> Any:
    """``_FillValue`` as xarray stores it in Zarr v3 attributes (floats as base64 doubles).

    xarray reads a Zarr v3 array's ``_FillValue`` attribute (not its ``fill_value``) to mask
    missing values, in this encoding; keeping it makes xarray mask exactly as netCDF does.
    """
    if dtype.kind == "S":
        raw = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        return base64.standard_b64encode(raw).decode()
    if dtype.kind == "f":
        return base64.standard_b64encode(struct.pack("<d", float(value))).decode()
    return int(value)


def v3_array_document(
    *,
    shape: list[int],
    data_type: Any,
    chunks: Any,
    fill_value: Any,
    codecs: list[dict[str, Any]],
    attributes: dict[str, Any],
    dimension_names: list[str | None] | None,
) -> dict[str, Any]:
    """A Zarr v3 array zarr.json dict with a regular chunk grid and the default "/" chunk
    key encoding: the form every v2-metadata translator (kerchunk, Zarr v2 stores) builds."""
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": data_type,
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [int(c) for c in chunks]},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill_value,
        "codecs": codecs,
        "attributes": attributes,
        "dimension_names": dimension_names,
    }


# ---- imagecodecs (TIFF) --------------------------------------------------------------------
#
# tifffile describes a TIFF's strips/tiles with imagecodecs' numcodecs codecs
# (``imagecodecs_lzw``, ``imagecodecs_jpeg``, ``imagecodecs_delta`` ...).  zarr-python reads a
# numcodecs codec as Zarr v3 ``numcodecs.<id>`` only through a wrapper class of the right
# kind, registered here (and as ``zarr.codecs`` entry points in pyproject.toml, so a reader
# process finds them without importing this module first).  Predictors (delta, floatpred)
# are byte filters in numcodecs' Zarr v2 sense — they decode the decompressed bytes with the
# dtype and shape in their configuration — so they are bytes->bytes codecs here, which keeps
# their place after decompression and before the ``bytes`` codec.

#: imagecodecs numcodecs ids tifffile emits for TIFF compressions and predictors -> codec kind.
IMAGECODECS_TIFF_CODECS: dict[str, str] = {
    "imagecodecs_lzw": "bytes-bytes",
    "imagecodecs_packbits": "bytes-bytes",
    "imagecodecs_deflate": "bytes-bytes",
    "imagecodecs_zstd": "bytes-bytes",
    "imagecodecs_lzma": "bytes-bytes",
    "imagecodecs_delta": "bytes-bytes",
    "imagecodecs_floatpred": "bytes-bytes",
    "imagecodecs_jpeg": "array-bytes",
    "imagecodecs_jpeg2k": "array-bytes",
    "imagecodecs_jpegxl": "array-bytes",
    "imagecodecs_jpegxr": "array-bytes",
    "imagecodecs_png": "array-bytes",
    "imagecodecs_webp": "array-bytes",
    "imagecodecs_lerc": "array-bytes",
    # FITS tile compression (builders/fits.py): CFITSIO's Rice coder
    "imagecodecs_rcomp": "array-bytes",
}


def _imagecodec(config: Mapping[str, Any]) -> Any:
    """The imagecodecs numcodecs codec for a config (``{"id": "imagecodecs_lzw", ...}``)."""
    try:
        import imagecodecs.numcodecs
    except ImportError as e:  # pragma: no cover - the tiff extra installs it
        raise UnsupportedError(
            f"codec {config.get('id')!r} needs imagecodecs (pip install 'zarr-manifest[tiff]')"
        ) from e
    imagecodecs.numcodecs.register_codecs([str(config["id"])], verbose=False)
    import numcodecs

    return numcodecs.get_codec(dict(config))


def _imagecodecs_wrappers() -> dict[str, type]:
    """Zarr v3 wrapper classes for `IMAGECODECS_TIFF_CODECS`, registered with zarr."""
    import types
    from functools import cached_property

    from zarr.codecs.numcodecs._codecs import (
        _NumcodecsArrayBytesCodec,
        _NumcodecsBytesBytesCodec,
    )
    from zarr.registry import register_codec

    bases = {"bytes-bytes": _NumcodecsBytesBytesCodec, "array-bytes": _NumcodecsArrayBytesCodec}
    out: dict[str, type] = {}
    for cid, kind in IMAGECODECS_TIFF_CODECS.items():
        name = "".join(part.capitalize() for part in cid.split("_")) + "Codec"

        def body(ns: dict[str, Any]) -> None:
            # zarr's wrappers find the numcodecs codec in numcodecs' registry, where
            # imagecodecs' codecs are only after imagecodecs registers them
            ns["_codec"] = cached_property(lambda self: _imagecodec(self.codec_config))

        cls = types.new_class(name, (bases[kind],), {"codec_name": cid}, body)
        cls.__module__ = __name__
        register_codec(f"numcodecs.{cid}", cls)
        out[name] = cls
    return out


_IMAGECODECS_WRAPPERS = _imagecodecs_wrappers()
globals().update(_IMAGECODECS_WRAPPERS)  # module attributes: the entry points name them
