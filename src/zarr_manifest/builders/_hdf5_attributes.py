"""HDF5 attributes as JSON values: decoded from a header's attribute messages, or read by
h5py (dense storage, unusual types); HDF5 / netCDF-4 bookkeeping is left out, and netCDF-4
dimension scales are recognised by their attributes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from zarr_manifest.builders._hdf5_headers import (
    MSG_ATTRIBUTE,
    MSG_ATTRIBUTE_INFO,
    SHARED,
    Fallback,
    HDF5File,
    decode_text,
    parse_attribute,
    read_uint,
)

# Attributes that describe HDF5 / netCDF-4 bookkeeping rather than the data.
_INTERNAL_ATTRIBUTES = frozenset(
    {
        "_Netcdf4Dimid",
        "_Netcdf4Coordinates",
        "_NCProperties",
        "_nc3_strict",
        "_IsNetcdf4",
        "_SuperblockVersion",
        "DIMENSION_LIST",
        "REFERENCE_LIST",
        "CLASS",
        "NAME",
    }
)
_NETCDF_DIM_ONLY = b"This is a netCDF dimension but not a netCDF variable"


def _json_value(value: Any, f: Any) -> Any:
    """An attribute value as JSON-ready Python (str for bytes, lists for arrays)."""
    import h5py

    if isinstance(value, bytes | np.bytes_):
        return decode_text(bytes(value))
    if isinstance(value, str | bool | int | float) or value is None:
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSUV" or value.dtype.fields:
            out: Any = _reshape_list(
                [_json_value(v, f) for v in value.reshape(-1).tolist()], value.shape
            )
        elif value.dtype.kind == "c":
            out = np.stack([value.real, value.imag], axis=-1).tolist()
        else:
            out = value.tolist()
        # netCDF stores scalar attributes as length-1 arrays
        if value.ndim == 1 and value.size == 1:
            return out[0]
        return out
    if isinstance(value, np.void) and value.dtype.fields:
        return {name: _json_value(value[name], f) for name in value.dtype.names or ()}
    if isinstance(value, np.generic):
        return _json_value(value.item(), f)
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, h5py.Reference | h5py.RegionReference):
        return reference_name(value, f)
    if isinstance(value, list | tuple):
        return [_json_value(v, f) for v in value]
    return str(value)


def _reshape_list(items: list[Any], shape: tuple[int, ...]) -> Any:
    """A flat list nested to ``shape`` (C order), like ``ndarray.tolist``."""
    if len(shape) <= 1:
        return items if shape else items[0]
    step = len(items) // shape[0] if shape[0] else 0
    return [_reshape_list(items[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def reference_name(ref: Any, f: Any) -> str | None:
    """The path of the object an HDF5 reference points to (None for a null reference)."""
    import h5py

    if not ref:
        return None
    try:
        return decode_text(h5py.h5r.get_name(ref, f.id))
    except (KeyError, ValueError, OSError, TypeError):
        return None


# Attributes never read: dimension-scale back references (large, and only HDF5 bookkeeping)
# and netCDF-4 file bookkeeping.  DIMENSION_LIST is read only when dimension ids fail.
_NOT_READ = frozenset(
    {
        "REFERENCE_LIST",
        "DIMENSION_LIST",
        "_NCProperties",
        "_nc3_strict",
        "_IsNetcdf4",
        "_SuperblockVersion",
    }
)
_UNREAD = object()


def _h5py_attribute(obj: Any, name: str, where: str) -> tuple[bool, Any]:
    """``(True, value)`` of one attribute read by h5py, ``(False, None)`` if it cannot be."""
    try:
        return True, obj.attrs[name]
    except (OSError, TypeError, ValueError, KeyError) as e:
        warnings.warn(
            f"{where}: attribute {name!r} cannot be read and is left out ({e})", stacklevel=5
        )
        return False, None


def h5py_attributes(obj: Any, where: str) -> dict[str, Any]:
    """An object's attributes read by h5py (`_UNREAD` for the ones not needed)."""
    out: dict[str, Any] = {}
    for name in obj.attrs:
        if name in _NOT_READ:
            out[name] = _UNREAD
            continue
        ok, value = _h5py_attribute(obj, name, where)
        if ok:
            out[name] = value
    return out


def header_attributes(
    messages: list[tuple[int, int, bytes]], f: HDF5File, obj: Callable[[], Any], where: str
) -> dict[str, Any]:
    """An object's attributes decoded from its header's attribute messages.

    Attributes of types the decoder does not handle are read by h5py one by one; objects
    with dense attribute storage (a fractal heap) are read by h5py whole.
    """
    sa = f.sizeof_addr
    for mtype, _flags, body in messages:
        if mtype == MSG_ATTRIBUTE_INFO:
            heap = read_uint(body, 4 if body[1] & 1 else 2, sa)
            if heap != f.undefined:
                return h5py_attributes(obj(), where)
    out: dict[str, Any] = {}
    for mtype, mflags, body in messages:
        if mtype != MSG_ATTRIBUTE:
            continue
        if mflags & SHARED:
            return h5py_attributes(obj(), where)
        try:
            name, value = parse_attribute(body, f.sizeof_size)
        except (Fallback, UnicodeDecodeError, ValueError):
            found = _attribute_name(body)
            if found is None:
                return h5py_attributes(obj(), where)
            name = found
            if name in _NOT_READ:
                out[name] = _UNREAD
                continue
            ok, value = _h5py_attribute(obj(), name, where)
            if not ok:
                continue
        out[name] = _UNREAD if name in _NOT_READ else value
    return out


def _attribute_name(body: bytes) -> str | None:
    """The name in an attribute message, or None if it cannot be told."""
    try:
        version = body[0]
        pos = 9 if version == 3 else 8
        return body[pos : pos + read_uint(body, 2, 2)].rstrip(b"\x00").decode("utf-8")
    except (IndexError, UnicodeDecodeError):
        return None


def user_attributes(raw: dict[str, Any], f: Any) -> dict[str, Any]:
    """The attributes worth carrying over, as JSON-ready values."""
    return {
        name: _json_value(value, f)
        for name, value in raw.items()
        if name not in _INTERNAL_ATTRIBUTES and value is not _UNREAD
    }


def is_dimension_scale(raw: dict[str, Any]) -> bool:
    cls = raw.get("CLASS")
    return isinstance(cls, bytes | np.bytes_) and bytes(cls) == b"DIMENSION_SCALE"


def is_dimension_only(raw: dict[str, Any]) -> bool:
    """A netCDF-4 dimension without a variable (a dimension scale holding no data)."""
    name = raw.get("NAME")
    return (
        isinstance(name, bytes | np.bytes_)
        and bytes(name).startswith(_NETCDF_DIM_ONLY)
        and is_dimension_scale(raw)
    )


def first_int(value: Any) -> int | None:
    try:
        return int(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None
