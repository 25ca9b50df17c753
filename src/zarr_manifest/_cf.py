"""CF encodings when combining: what decides a variable's decoded values, and re-encoding.

Two inputs can hold the same raw numbers and mean different things (``time`` in "days since"
each file's own first date, ``p`` packed with scale_factor 0.1 in one file and 0.2 in the
next).  This module says which attributes decide the decoded values, compares them between
inputs, and — for loaded (inline) variables only — decodes each input's values the way a
reader will (``xr.open_zarr`` over a `ManifestStore`) and re-encodes them into one encoding,
checking that the result decodes to exactly the same values.  Decoding needs xarray, which
is imported only when encodings actually differ.
"""

from __future__ import annotations

import base64
import struct
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zarr_manifest import cf_attributes
from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.cf_attributes import ABSENT, DECODING_ATTRIBUTES, same_time_units, same_value
from zarr_manifest.errors import CombineError
from zarr_manifest.group import ManifestGroup

ArrayNode = ManifestArray | InlineArray

#: Attributes that change what a variable's stored numbers decode to
ENCODING_ATTRIBUTES = DECODING_ATTRIBUTES

_MISSING = ABSENT


@dataclass(frozen=True)
class Encoding:
    """A variable's encoding in one input: attribute values, its data type and (for
    referenced arrays) the Zarr fill value that missing chunks read as."""

    values: dict[str, Any]
    #: attribute -> the variable it is inherited from (CF bounds inherit units/calendar)
    inherited: dict[str, str] = field(default_factory=dict)


def bounds_parent(group: ManifestGroup, name: str) -> str | None:
    """The variable whose ``bounds`` attribute names ``name`` and whose units are dates.

    xarray copies such a variable's ``units`` and ``calendar`` to its bounds when they have
    none (CF "Cell boundaries"), so the bounds' numbers mean what the parent's units say.
    """
    for parent, node in group.arrays.items():
        attrs = node.metadata.attributes
        units = attrs.get("units")
        if attrs.get("bounds") == name and isinstance(units, str) and "since" in units:
            return parent
    return None


def inherited_context(group: ManifestGroup, name: str) -> dict[str, ArrayNode]:
    """The arrays of ``group`` that array ``name`` inherits CF attributes from (its bounds
    parent, see `bounds_parent`), to decode it beside them."""
    parent = bounds_parent(group, name)
    return {} if parent is None else {parent: group.arrays[parent]}


def encoding_of(group: ManifestGroup, name: str) -> Encoding:
    """The encoding of array ``name`` of ``group``, inherited attributes included."""
    node = group.arrays[name]
    attrs = node.metadata.attributes
    values = {k: attrs[k] for k in ENCODING_ATTRIBUTES if k in attrs}
    inherited: dict[str, str] = {}
    parent = bounds_parent(group, name)
    if parent is not None:
        parent_attrs = group.arrays[parent].metadata.attributes
        for key in ("units", "calendar"):
            if key not in values and key in parent_attrs:
                values[key] = parent_attrs[key]
                inherited[key] = parent
    # the data type and fill value as the array's zarr.json has them (what to_dict gives,
    # without building the whole document: combine asks this of every input)
    meta = node.metadata
    values["data type"] = meta.data_type.to_json(zarr_format=3)
    if isinstance(node, ManifestArray):
        # chunks the manifest does not list read as the fill value
        values["fill value"] = meta.data_type.to_json_scalar(meta.fill_value, zarr_format=3)
    return Encoding(values, inherited)


def first_difference(a: Encoding, b: Encoding) -> tuple[str, Any, Any] | None:
    """The first encoding attribute that differs between ``a`` and ``b``: (name, a's, b's)."""
    return cf_attributes.first_difference(
        a.values, b.values, [*ENCODING_ATTRIBUTES, "data type", "fill value"]
    )


def label(key: str) -> str:
    """How an error names an encoding key: an attribute, the dtype or the fill value."""
    if key == "data type":
        return "dtype"
    if key == "fill value":
        return "fill value"
    return f"attribute {key!r}"


def describe(key: str, value: Any, encoding: Encoding) -> str:
    """An attribute value for an error message (base64 fill values shown as numbers)."""
    if value is _MISSING:
        return "absent"
    shown = repr(value)
    if key in ("_FillValue", "missing_value") and isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            raw = b""
        if len(raw) == 8:
            shown = f"{struct.unpack('<d', raw)[0]!r} (stored as {value!r})"
    if key in encoding.inherited:
        shown += f" (inherited from {encoding.inherited[key]!r})"
    return shown


# ---- decoding as a reader does ------------------------------------------------------------


def _xarray(why: str) -> Any:
    try:
        import xarray
    except ImportError as e:
        raise CombineError(
            f"{why}; decoding CF values needs xarray (pip install 'zarr-manifest[xarray]')"
        ) from e
    return xarray


def decoded(
    arrays: Mapping[str, ArrayNode], name: str, *, why: str, store_options: Mapping[str, Any]
) -> Any:
    """Array ``name`` decoded as ``xr.open_zarr`` over a `ManifestStore` decodes it (the
    other ``arrays`` are there for what it inherits), as an ``xarray.Variable`` whose
    ``encoding`` holds what decoding used."""
    xr = _xarray(why)
    import zarr

    from zarr_manifest.store import ManifestStore

    store = ManifestStore(ManifestGroup(arrays=dict(arrays)), storage_options=store_options)
    with zarr.config.set({"array.rectilinear_chunks": True}), warnings.catch_warnings():
        # the reader's own notes (unstable specs, time decoding) are not the combiner's
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(store, consolidated=False, chunks=None, decode_coords=False)
        variable = ds[name].variable.load()
    return variable


def decoded_inline(arrays: Mapping[str, InlineArray], name: str, *, why: str) -> Any:
    """Inline array ``name`` decoded as `decoded` does, without a store: the variables
    xarray's Zarr backend would make of ``arrays`` (dimension names, attributes, its
    ``_FillValue`` encoding), through xarray's CF decoding.  Fast enough to run on every
    input; `reencode` still checks its result through the real reader."""
    xr = _xarray(why)
    from xarray.backends.zarr import FillValueCoder

    variables = {}
    for key, node in arrays.items():
        attrs = dict(node.metadata.attributes)
        if "_FillValue" in attrs:
            attrs["_FillValue"] = FillValueCoder.decode(attrs["_FillValue"], node.dtype)
        variables[key] = xr.Variable(tuple(node.dimension_names or ()), node.data, attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, _, _ = xr.conventions.decode_cf_variables(variables, {}, decode_coords=False)
    return out[name]


def reencode(
    members: Sequence[InlineArray],
    contexts: Sequence[Mapping[str, ArrayNode]],
    *,
    var: str,
    name: str,
    dim: str,
    stack_new: bool,
    names: Sequence[str],
    parent: tuple[str, ArrayNode] | None,
    store_options: Mapping[str, Any],
) -> InlineArray:
    """Loaded arrays whose encodings differ, decoded each in its own encoding, concatenated
    (or stacked) and re-encoded into the first input's encoding — exactly, or not at all.

    ``contexts[i]`` holds what member i inherits from (its bounds parent); ``parent`` is the
    combined parent whose units and calendar the result inherits, if any.  When the first
    input's time units cannot hold every date exactly (a file starting at noon under
    integer "days since"), xarray chooses units that can.

    Raises
    ------
    CombineError
        The values cannot be re-encoded into one encoding that decodes to exactly them.
    """
    xr = _xarray(f"variable {var!r} is encoded differently in its inputs")
    why = f"variable {var!r} is encoded differently in its inputs"
    parts = []
    for m, ctx in zip(members, contexts, strict=True):
        if all(isinstance(n, InlineArray) for n in ctx.values()):
            inline: dict[str, InlineArray] = {**ctx, name: m}  # type: ignore[dict-item]
            parts.append(decoded_inline(inline, name, why=why))
        else:
            parts.append(decoded({**ctx, name: m}, name, why=why, store_options=store_options))
    if all(isinstance(n, InlineArray) for n in contexts[0].values()):
        # the store-free decoding must agree with the reader's: checked on the first input
        reader = decoded(
            {**contexts[0], name: members[0]}, name, why=why, store_options=store_options
        )
        if reader.dtype != parts[0].dtype or not reader.equals(parts[0]):
            raise CombineError(
                f"variable {var!r}: decoding {names[0]} without a store disagrees with "
                "xr.open_zarr over a ManifestStore, so it cannot be re-encoded safely"
            )
    for i, p in enumerate(parts[1:], start=1):
        if p.dtype != parts[0].dtype:
            raise CombineError(
                f"variable {var!r} decodes to {parts[0].dtype} in {names[0]} but {p.dtype} "
                f"in {names[i]}, so the two cannot be one array"
            )
    try:
        whole = xr.Variable.concat(parts, dim=dim)
    except (ValueError, TypeError) as e:
        raise CombineError(f"variable {var!r}: its decoded inputs do not concatenate: {e}") from e
    first = members[0]
    target = {k: v for k, v in parts[0].encoding.items() if k in DECODING_ATTRIBUTES}
    target["dtype"] = first.dtype
    inherited: dict[str, Any] = {}
    if parent is not None:
        parent_attrs = parent[1].metadata.attributes
        for key in ("units", "calendar"):
            if key not in first.metadata.attributes and key in parent_attrs:
                target[key] = inherited[key] = parent_attrs[key]
    attempts = [target]
    if "units" in target and parent is None and "since" in str(target["units"]):
        # let xarray choose time units fine enough for every value (it does so on write)
        attempts.append({k: v for k, v in target.items() if k != "units"})
    reason = "no encoding found"
    for encoding in attempts:
        try:
            candidate = _encoded(xr, whole, encoding, first, var=var, inherited=inherited)
        except (ValueError, TypeError, OverflowError) as e:
            reason = f"{type(e).__name__}: {e}"
            continue
        context = {} if parent is None else {parent[0]: parent[1]}
        back = decoded({**context, name: candidate}, name, why=why, store_options=store_options)
        if back.dtype == whole.dtype and back.dims == whole.dims and back.equals(whole):
            return candidate
        reason = f"in {_summary(encoding)} the values do not decode back to themselves"
    raise CombineError(
        f"variable {var!r} is encoded differently in {names[0]} and other inputs, and its "
        f"values cannot be re-encoded exactly into one encoding ({reason}); drop it, or "
        "combine these inputs separately"
    )


def _encoded(
    xr: Any,
    whole: Any,
    encoding: dict[str, Any],
    first: InlineArray,
    *,
    var: str,
    inherited: Mapping[str, Any],
) -> InlineArray:
    """``whole`` encoded by xarray in ``encoding``, as an inline array with the first
    input's attributes (time units and calendar as xarray wrote them; ``inherited``: what
    the result inherits from its bounds parent, not repeated)."""
    variable = whole.copy(deep=False)
    variable.attrs = {}
    variable.encoding = dict(encoding)
    with warnings.catch_warnings():
        # xarray warns, then picks finer time units, when the asked ones are too coarse;
        # the round trip the caller checks decides
        warnings.simplefilter("ignore")
        encoded = xr.conventions.encode_cf_variable(variable, name=var)
    data = np.asarray(encoded.values)
    if data.dtype != first.dtype:
        raise ValueError(f"xarray encoded {data.dtype}, not {first.dtype}")
    attrs = dict(first.metadata.attributes)
    for key in ("units", "calendar"):
        if key not in encoded.attrs:
            continue
        value = _plain(encoded.attrs[key])
        # xarray spells units its own way ("days since 2000-01-01" for "... 00:00:00"):
        # an equivalent spelling already there (or inherited, as in the file) stays
        calendar = encoded.attrs.get("calendar")
        kept = attrs.get(key, inherited.get(key, _MISSING))
        if same_value(value, kept) or (
            key == "units" and same_time_units(value, kept, calendar, calendar)
        ):
            continue
        attrs[key] = value
    dims = tuple(first.dimension_names or ())
    return InlineArray.from_numpy(
        data,
        dimension_names=tuple(encoded.dims) if dims else None,
        attributes=attrs,
        fill_value=first.metadata.fill_value,
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _summary(encoding: Mapping[str, Any]) -> str:
    shown = {k: str(v) for k, v in encoding.items()}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "the default encoding"
