"""GRIB (editions 1 and 2) -> `ManifestGroup`, laid out exactly as cfgrib reads the file.

The file is walked here message by message (``GRIB`` ... ``7777``; bytes between and after
messages — bulletin headers, zero padding — are skipped, as eccodes does), and cfgrib's own
index (``cfgrib.messages.FieldsetIndex`` over those messages) and its own mapping to the
netCDF data model (``cfgrib.dataset.build_variable_components``) decide each variable's
dimensions, coordinates and attributes.  So every variable has cfgrib's dims (length-1 header
dims squeezed into scalar coordinates), cfgrib's dtype (float32) and cfgrib's values:

- a data variable is referenced in place, one chunk per GRIB message (chunk shape ``1`` along
  the header dims — time, step, level, number... — and the whole grid along the geographic
  ones); header positions without a message read as NaN, as in cfgrib;
- coordinates (small; computed by cfgrib from the message headers) are stored inline.

Layout (``tree=True``, the default): one group per variable and cfgrib dataset,
``<variable>/<stepType>/<typeOfLevel>/`` holding the variable and its coordinates.  When
cfgrib has to split a variable further (``multiple values for unique key``), each part gets a
sub-group ``<key>=<value>``, the ``filter_by_keys`` that opens it with cfgrib.
``tree=False`` gives one group ``message_<i>`` per message instead.

GRIB2 messages holding several fields (repeated sections 2-7) cannot be referenced as one
chunk per field and are refused, as are truncated messages and GRIB editions other than 1/2.

Zarr v3 has no GRIB codec of its own: `GribCodec` is the Zarr v3 (array->bytes) form of the
numcodecs ``grib`` codec, registered with zarr as ``numcodecs.grib`` (the name zarr gives the
v3 wrapper of a numcodecs codec).  It decodes a message as cfgrib does (missing points from the
bitmap become NaN; alternate-row scanning is undone).  Readers need it registered: importing
this module does it, and the package's ``zarr.codecs`` entry point does it for zarr on its
own.  Decoding needs eccodes, building also cfgrib (``pip install eccodes cfgrib``).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import JSON, parse_named_configuration
from zarr.registry import register_codec

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.errors import BuildError, UnsupportedError
from zarr_manifest.group import ManifestGroup
from zarr_manifest.manifest import ChunkManifest

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

__all__ = ["GRIB_CODEC_NAME", "GribCodec", "build_grib", "decode_grib_message"]

#: The Zarr v3 codec name of GRIB messages.
GRIB_CODEC_NAME = "numcodecs.grib"

# cfgrib sets eccodes' missingValue to this before reading values, so that only the points the
# bitmap marks missing (not real values that happen to equal a nominal 9999) become NaN.
_MISSING = float(np.finfo(np.float32).max)
# eccodes handles are not shared between threads; one lock keeps decoding simple and safe.
_ECCODES_LOCK = threading.RLock()


def decode_grib_message(
    message: bytes, var: str = "values", dtype: str | None = None, shape: tuple[int, ...] = ()
) -> np.ndarray:
    """The field of one GRIB message, as cfgrib reads it.

    Parameters
    ----------
    message
        The bytes of one message (``GRIB`` ... ``7777``).
    var
        ``"latitude"``/``"longitude"`` for the grid's coordinates, anything else for the values.
    dtype
        The numpy dtype of the result (float32 for values, float64 for coordinates by default).
    shape
        The shape the values are returned in; the last axis is the grid's row (used to undo
        alternate-row scanning).  Empty: a flat array.
    """
    import eccodes

    coordinate = var in ("latitude", "longitude")
    with _ECCODES_LOCK:
        handle = eccodes.codes_new_from_message(bytes(message))
        try:
            if coordinate:
                values = eccodes.codes_get_array(handle, var + "s")
            else:
                eccodes.codes_set(handle, "missingValue", _MISSING)
                values = eccodes.codes_get_array(handle, "values")
                try:
                    alternate = bool(eccodes.codes_get_long(handle, "alternativeRowScanning"))
                except eccodes.KeyValueNotFoundError:  # e.g. spherical harmonics
                    alternate = False
        finally:
            eccodes.codes_release(handle)
    out = np.asarray(values).astype(dtype or ("float64" if coordinate else "float32"))
    if shape:
        if out.size != math.prod(shape):
            raise ValueError(f"GRIB message holds {out.size} values, the chunk has shape {shape}")
        out = out.reshape(shape)
    if not coordinate:
        if alternate and shape:
            # odd rows run the other way (cfgrib's get_values_in_order); a grid of one row
            # (or a 1-D grid, whose chunk is one row) has nothing to undo
            rows = out.reshape(-1, shape[-1])
            rows[1::2, :] = rows[1::2, ::-1].copy()
        if out.dtype.kind == "f":
            out[out == np.asarray(_MISSING, dtype=out.dtype)] = np.nan
    return out


@dataclass(frozen=True)
class GribCodec(ArrayBytesCodec):
    """Decode one GRIB message (a chunk) into its field, with eccodes (read-only).

    Parameters
    ----------
    var
        The variable the chunk holds: ``"latitude"``/``"longitude"`` read the grid's
        coordinates, anything else the message's values (missing points become NaN).
    dtype
        The numpy dtype eccodes' values are returned as (kerchunk's ``dtype``).
    """

    is_fixed_size = False

    var: str
    dtype: str | None

    def __init__(self, *, var: str, dtype: str | None = None) -> None:
        object.__setattr__(self, "var", str(var))
        object.__setattr__(self, "dtype", None if dtype is None else str(dtype))

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(
            data, GRIB_CODEC_NAME, require_configuration=True
        )
        return cls(**(configuration or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        conf: dict[str, JSON] = {"var": self.var}
        if self.dtype is not None:
            conf["dtype"] = self.dtype
        return {"name": GRIB_CODEC_NAME, "configuration": conf}

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        native = chunk_spec.dtype.to_native_dtype()
        arr = decode_grib_message(
            chunk_bytes.to_bytes(), self.var, self.dtype, tuple(chunk_spec.shape)
        )
        arr = arr.astype(native, copy=False)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(arr)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        raise UnsupportedError("GRIB messages can be read, not written: load the data instead")

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise UnsupportedError("the size of an encoded GRIB message is not known in advance")


register_codec(GRIB_CODEC_NAME, GribCodec)


# ---- the messages ----------------------------------------------------------------------------


def _message_length(head: bytes) -> int:
    """The length a message's section 0 declares (``head``: its first 16 bytes)."""
    if head[7] == 1:
        return int.from_bytes(head[4:7], "big")
    return int.from_bytes(head[8:16], "big")


def _grib2_field_count(message: bytes) -> int:
    """How many fields (data sections 7) a GRIB2 message holds."""
    pos, end, fields = 16, len(message) - 4, 0
    while pos + 5 <= end:
        length = int.from_bytes(message[pos : pos + 4], "big")
        if length < 5:
            break
        fields += message[pos + 4] == 7
        pos += length
    return fields


def _iter_messages(source: Source) -> Iterator[tuple[int, bytes]]:
    """``(offset, bytes)`` of each GRIB message of the file, in order.

    Bytes that are not a message (bulletin headers, padding) are skipped, as eccodes does.

    Raises
    ------
    BuildError
        No message, a truncated message or one without its ``7777`` end.
    UnsupportedError
        A GRIB edition other than 1 and 2, a GRIB1 message longer than its 24-bit length
        field (ECMWF's large-message convention), a GRIB2 message with several fields.
    """
    block = 1 << 20
    count = 0
    with source.open() as f:
        size = f.seek(0, 2)
        offset = 0
        while offset < size:
            f.seek(offset)
            head = bytes(f.read(16))
            if not head.startswith(b"GRIB"):
                found = -1
                pos = offset
                while found < 0 and pos < size:
                    f.seek(pos)
                    chunk = bytes(f.read(block))
                    found = chunk.find(b"GRIB")
                    if found >= 0:
                        found += pos
                    elif len(chunk) > 3:
                        pos += len(chunk) - 3  # "GRIB" may straddle two blocks
                    else:
                        break
                if found < 0:
                    break
                offset = found
                continue
            if len(head) < 16:
                break  # "GRIB" in the last bytes: padding, not a message
            edition = head[7]
            if edition not in (1, 2):
                raise UnsupportedError(
                    f"{source.url}: the message at offset {offset} is GRIB edition {edition}; "
                    "only editions 1 and 2 are supported"
                )
            length = _message_length(head)
            if length < 16 or offset + length > size:
                raise BuildError(f"{source.url}: truncated GRIB message at offset {offset}")
            f.seek(offset)
            message = bytes(f.read(length))
            if not message.endswith(b"7777"):
                if edition == 1 and length & 0x800000:
                    raise UnsupportedError(
                        f"{source.url}: the GRIB1 message at offset {offset} uses ECMWF's "
                        "large-message length convention, which is not supported"
                    )
                raise BuildError(
                    f"{source.url}: the GRIB message at offset {offset} does not end with "
                    "'7777' where its length says (corrupt or truncated)"
                )
            if edition == 2 and _grib2_field_count(message) > 1:
                raise UnsupportedError(
                    f"{source.url}: the GRIB2 message at offset {offset} holds several fields, "
                    "which cannot be referenced one chunk per field"
                )
            yield offset, message
            count += 1
            offset += length
    if not count:
        raise BuildError(f"{source.url}: no GRIB message")


class _Fieldset(Mapping[int, Any]):
    """The file's messages as cfgrib's ``MappingFieldset``: message offset -> cfgrib Message.

    ``items()`` walks the file once (and records where each message is); ``[offset]`` reads
    one message again when cfgrib asks for it (the first message of each variable).
    """

    def __init__(self, source: Source):
        self.source = source
        self.spans: dict[int, int] = {}

    def items(self) -> Iterator[tuple[int, Any]]:  # type: ignore[override]
        from cfgrib import messages

        for offset, message in _iter_messages(self.source):
            self.spans[offset] = len(message)
            yield offset, messages.Message(_new_handle(message))

    def __getitem__(self, offset: int) -> Any:
        from cfgrib import messages

        return messages.Message(_new_handle(self.source.read_range(offset, self.spans[offset])))

    def __iter__(self) -> Iterator[int]:
        return iter(self.spans)

    def __len__(self) -> int:
        return len(self.spans)


def _new_handle(message: bytes) -> int:
    import eccodes

    with _ECCODES_LOCK:
        return int(eccodes.codes_new_from_message(message))


# ---- cfgrib's variables ------------------------------------------------------------------------


@dataclass
class _Leaf:
    """One variable as cfgrib opens it with ``filter_by_keys``."""

    filter_by_keys: dict[str, Any]
    name: str
    variable: Any  # cfgrib.dataset.Variable over an OnDiskArray
    coordinates: dict[str, Any]  # name -> cfgrib.dataset.Variable (numpy data)
    attributes: dict[str, Any]  # the dataset's (global) attributes


def _variables(index: Any, filter_by_keys: Mapping[str, Any], url: str) -> Iterator[_Leaf]:
    """Each variable of ``index`` as cfgrib builds it, split where cfgrib has to split."""
    from cfgrib import dataset

    try:
        _dims, variable, coordinates = dataset.build_variable_components(
            index, _ENCODE_CF, dict(filter_by_keys), errors="warn", squeeze=True
        )
    except dataset.DatasetBuildError as e:
        if len(e.args) < 2:
            raise BuildError(f"{url}: cfgrib cannot build a variable ({e})") from e
        key = e.args[1]
        values = list(index[key])
        if len(values) < 2:
            raise BuildError(f"{url}: cfgrib cannot build a variable ({e})") from e
        for value in values:
            yield from _variables(index.subindex({key: value}), {**filter_by_keys, key: value}, url)
        return
    except (BuildError, MemoryError):
        raise
    except Exception as e:  # eccodes/cfgrib: a grid eccodes cannot describe (WrongGridError)...
        raise BuildError(
            f"{url}: cfgrib cannot read the variable with filter_by_keys "
            f"{dict(filter_by_keys)} ({type(e).__name__}: {e})"
        ) from e
    attrs = dataset.build_dataset_attributes(index, dict(filter_by_keys), {})
    attrs.pop("history", None)  # a timestamp: would make every build differ
    pid = filter_by_keys.get("paramId")
    name = variable.attributes.get("GRIB_cfVarName", "unknown")
    if name in ("undef", "unknown"):
        name = variable.attributes.get("GRIB_shortName", "unknown")
    if name in ("undef", "unknown"):
        name = f"paramId_{pid}"
    yield _Leaf(dict(filter_by_keys), name, variable, coordinates, attrs)


_ENCODE_CF = ("parameter", "time", "geography", "vertical")


def _index(source: Source, filter: Mapping[str, Any] | None) -> tuple[Any, _Fieldset]:
    """cfgrib's index of the file's messages (after ``filter``)."""
    from cfgrib import cfmessage, dataset, messages

    fieldset = _Fieldset(source)
    keys = dataset.compute_index_keys(("time", "step"), {}, dict(filter or {}))
    try:
        index = messages.FieldsetIndex.from_fieldset(fieldset, keys, cfmessage.COMPUTED_KEYS)
    except BuildError:
        raise
    except Exception as e:  # eccodes raises assorted errors on bad messages
        raise BuildError(f"{source.url}: not a readable GRIB file ({type(e).__name__}: {e})") from e
    if filter:
        index = index.subindex(dict(filter))
    if not index.field_ids_index:
        raise BuildError(f"{source.url}: no GRIB messages found (filter {dict(filter or {})})")
    return index, fieldset


def _json_value(value: Any) -> Any:
    """An attribute value as plain JSON (cfgrib gives numpy scalars and lists)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def _attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): _json_value(v) for k, v in attrs.items()}


def _data_array(leaf: _Leaf, spans: Mapping[int, int], url: str) -> ManifestArray:
    """The variable, one chunk per message."""
    on_disk = leaf.variable.data
    shape = tuple(int(n) for n in on_disk.shape)
    geo = int(on_disk.geo_ndim)
    header = shape[: len(shape) - geo]
    grid = header + (1,) * geo
    offsets = np.zeros(grid, dtype=np.uint64)
    lengths = np.zeros(grid, dtype=np.uint64)
    present = np.zeros(grid, dtype=bool)
    for position, ids in on_disk.field_id_index.items():
        first = ids[0]  # cfgrib reads the first of messages with the same header
        if not isinstance(first, int) or first not in spans:
            raise BuildError(f"{url}: cfgrib's message id {first!r} is not a message offset")
        where = tuple(position) + (0,) * geo
        offsets[where] = first
        lengths[where] = spans[first]
        present[where] = True
    # the grid is the product of the header dimensions and mostly empty in some files (1.4M
    # cells for 58 messages): a string array, not one Python object per cell
    paths: np.ndarray | str = url
    if not present.all():
        paths = np.full(grid, "", dtype=np.dtypes.StringDType())
        paths[present] = url
    doc = {
        "shape": list(shape),
        "data_type": "float32",
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [1] * len(header) + list(shape[len(header) :])},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": "NaN",
        "codecs": [
            {"name": GRIB_CODEC_NAME, "configuration": {"var": leaf.name, "dtype": "float32"}}
        ],
        "attributes": _attributes(leaf.variable.attributes),
        "dimension_names": list(leaf.variable.dimensions),
    }
    return ManifestArray(
        doc, ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)
    )


def _coordinate(variable: Any) -> InlineArray:
    """A coordinate cfgrib computed, stored inline (one uncompressed chunk)."""
    data = np.asarray(variable.data)
    dims = list(variable.dimensions)
    attrs = _attributes(variable.attributes)
    if data.dtype.kind not in "iuf":
        return InlineArray.from_numpy(data, dimension_names=dims, attributes=attrs)
    # numbers: the zarr.json written here directly (zarr.create_array costs ~8 ms apiece)
    data = data.astype(data.dtype.newbyteorder("<"), copy=False)
    doc = {
        "shape": list(data.shape),
        "data_type": data.dtype.newbyteorder("=").name,
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [max(n, 1) for n in data.shape]},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": attrs,
        "dimension_names": dims,
    }
    return InlineArray(doc, data)


def _load(source: Source, array: ManifestArray) -> InlineArray:
    """A referenced GRIB variable read now (decoded message by message)."""
    meta = array.metadata.to_dict()
    chunk = tuple(array.chunks)
    out = np.full(array.shape, np.nan, dtype=np.float32)
    manifest = array.manifest
    present = manifest.present
    for index in zip(*np.nonzero(present), strict=True):
        raw = source.read_range(int(manifest.offsets[index]), int(manifest.lengths[index]))
        where = tuple(
            slice(int(i) * c, (int(i) + 1) * c) for i, c in zip(index, chunk, strict=True)
        )
        out[where] = decode_grib_message(raw, shape=chunk)
    meta["codecs"] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    meta.pop("node_type", None)
    return InlineArray(meta, out)


def _segment(key: str, value: Any) -> str:
    return f"{key}={value}"


def _tree_nodes(
    leaves: list[_Leaf], spans: Mapping[int, int], url: str, tree: bool
) -> tuple[dict[str, ManifestArray | InlineArray], dict[str, dict[str, Any]]]:
    """Every array by its full path, and the attributes of each leaf group."""
    nodes: dict[str, ManifestArray | InlineArray] = {}
    groups: dict[str, dict[str, Any]] = {}
    for i, leaf in enumerate(leaves):
        if tree:
            attrs = leaf.variable.attributes
            parts = [
                leaf.name,
                str(attrs.get("GRIB_stepType", "undef")),
                str(attrs.get("GRIB_typeOfLevel", "undef")),
            ]
            parts += [
                _segment(k, v)
                for k, v in leaf.filter_by_keys.items()
                if k not in ("paramId", "stepType", "typeOfLevel")
            ]
            path = "/".join(parts)
        else:
            path = f"message_{i}"
        if path in groups:
            raise BuildError(f"{url}: two GRIB variables would both be stored at {path!r}")
        groups[path] = _attributes(leaf.attributes)
        nodes[f"{path}/{leaf.name}"] = _data_array(leaf, spans, url)
        for name, coordinate in leaf.coordinates.items():
            nodes[f"{path}/{name}"] = _coordinate(coordinate)
    return nodes, groups


def _assemble(
    nodes: Mapping[str, ManifestArray | InlineArray], groups: Mapping[str, dict[str, Any]]
) -> ManifestGroup:
    """Nested `ManifestGroup` of arrays given by path (``a/b/name``)."""
    children: dict[str, dict[str, Any]] = {}
    arrays: dict[str, ManifestArray | InlineArray] = {}
    for path, node in nodes.items():
        head, sep, rest = path.partition("/")
        if sep:
            children.setdefault(head, {})[rest] = node
        else:
            arrays[path] = node
    sub_groups: dict[str, dict[str, dict[str, Any]]] = {}
    for path, attrs in groups.items():
        head, sep, rest = path.partition("/")
        if sep:
            sub_groups.setdefault(head, {})[rest] = attrs
    members = {
        name: _assemble(children.get(name, {}), sub_groups.get(name, {}))
        for name in sorted(set(children) | set(sub_groups))
    }
    members = {
        name: g.replace(attributes=groups[name]) if name in groups else g
        for name, g in members.items()
    }
    return ManifestGroup(arrays=arrays, groups=members)


def build_grib(
    source: Source | str | os.PathLike[str],
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    tree: bool = True,
    filter: Mapping[str, Any] | None = None,
    **options: Any,
) -> ManifestGroup:
    """Reference the messages of a GRIB file (edition 1 or 2) in place, as cfgrib reads it.

    Parameters
    ----------
    source
        The file: a `Source`, local path or URL (remote files are read once, message by
        message, to index them).
    group
        A group of the hierarchy to start from (``"t/instant/isobaricInhPa"``).
    drop, load
        Arrays to leave out / read now, by path relative to ``group``.
    tree
        One group per variable ``<variable>/<stepType>/<typeOfLevel>`` (True) or one group
        ``message_<i>`` per message (False).
    filter
        cfgrib's ``filter_by_keys`` (``{"typeOfLevel": "surface"}``).
    **options
        obstore options when ``source`` is a path or URL.

    Raises
    ------
    BuildError
        Not a GRIB file; no messages; a truncated message; unknown ``group``/``drop``/``load``.
    UnsupportedError
        eccodes/cfgrib not installed; a GRIB edition other than 1/2; a GRIB2 message holding
        several fields.
    """
    if not isinstance(source, Source):
        source = open_source(source, **options)
    elif options:
        raise TypeError(f"build_grib: unexpected options {sorted(options)}")
    try:
        import cfgrib  # noqa: F401
        import eccodes  # noqa: F401
    except (ImportError, RuntimeError) as e:  # eccodes raises RuntimeError without its library
        raise UnsupportedError(f"{source.url}: GRIB needs eccodes and cfgrib ({e})") from e
    index, fieldset = _index(source, filter)
    leaves: list[_Leaf] = []
    if tree:
        for param_id in index.get("paramId", []):
            leaves.extend(
                _variables(
                    index.subindex(paramId=param_id),
                    {**dict(filter or {}), "paramId": param_id},
                    source.url,
                )
            )
    else:
        leaves = list(_message_variables(index, source.url))
    nodes, groups = _tree_nodes(leaves, fieldset.spans, source.url, tree)
    return _select(source, nodes, groups, group, drop, load)


def _message_variables(index: Any, url: str) -> Iterator[_Leaf]:
    """One variable per message, in file order (all header dims squeezed)."""
    ids = sorted((mid, header) for header, mids in index.field_ids_index for mid in mids)
    for mid, header in ids:
        single = type(index)(
            fieldset=index.fieldset,
            index_keys=index.index_keys,
            field_ids_index=[(header, [mid])],
            filter_by_keys={},
            computed_keys=index.computed_keys,
        )
        leaves = list(_variables(single, {}, url))
        if len(leaves) != 1:
            raise BuildError(f"{url}: the message at offset {mid} gives {len(leaves)} variables")
        yield leaves[0]


def _select(
    source: Source,
    nodes: Mapping[str, ManifestArray | InlineArray],
    groups: Mapping[str, dict[str, Any]],
    group: str | None,
    drop: Collection[str],
    load: Collection[str],
) -> ManifestGroup:
    """Apply ``group``, ``drop`` and ``load`` to the arrays (by path) and nest them."""
    prefix = (group or "").strip("/")
    if prefix:
        if not any(p.startswith(prefix + "/") for p in nodes):
            raise BuildError(f"{source.url}: no group {prefix!r} in the GRIB hierarchy")
        n = len(prefix) + 1
        nodes = {p[n:]: a for p, a in nodes.items() if p.startswith(prefix + "/")}
        top = dict(groups.get(prefix, {}))
        groups = {p[n:]: a for p, a in groups.items() if p.startswith(prefix + "/")}
    else:
        top = {}
    unknown = sorted((set(drop) | set(load)) - set(nodes))
    if unknown:
        raise BuildError(f"{source.url}: no array(s) {unknown} in the GRIB file (drop/load)")
    out: dict[str, ManifestArray | InlineArray] = {}
    for path, node in nodes.items():
        if path in drop:
            continue
        if path in load and isinstance(node, ManifestArray):
            node = _load(source, node)
        out[path] = node
    return _assemble(out, groups).replace(attributes=top)
