"""Many virtual datasets into one: concat and stack by dimension name, combine by coordinates.

Steps 3-5 of the seed pipeline: the order comes from the caller (`concat`, `stack`) or from
the values of 1-D coordinate arrays (`combine_by_coords`); the checks name the variable and
the two inputs that differ; the manifests are merged as numpy columns.  Encodings are
compared the CF way (`zarr_manifest._cf`): arrays concatenated must decode alike, arrays
kept once must hold the same decoded values (``compat``, xarray's vocabulary).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from zarr_manifest import _cf
from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.cf_attributes import same_value
from zarr_manifest.errors import CombineError
from zarr_manifest.group import ManifestGroup

__all__ = ["COMPARE_LIMIT", "Compat", "combine_by_coords", "concat", "input_label", "stack"]

ArrayNode = ManifestArray | InlineArray

#: How arrays without the concatenation dimension are checked (xarray's vocabulary):
#: ``"equals"`` same decoded values, ``"identical"`` values and attributes, ``"override"``
#: the first input's, unchecked.
Compat = Literal["equals", "identical", "override"]

#: Default bound, in bytes, on a referenced array read to compare its values between inputs.
COMPARE_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class _Options:
    compat: Compat = "equals"
    compare_limit: int | None = COMPARE_LIMIT
    store_options: Mapping[str, Any] = field(default_factory=dict)


def _options(compat: Any, compare_limit: Any, store_options: Mapping[str, Any] | None) -> _Options:
    if compat not in ("equals", "identical", "override"):
        raise CombineError(f"compat must be 'equals', 'identical' or 'override', got {compat!r}")
    if compare_limit is not None and (
        isinstance(compare_limit, bool) or not isinstance(compare_limit, int) or compare_limit < 0
    ):
        raise CombineError(
            f"compare_limit must be a number of bytes or None, got {compare_limit!r}"
        )
    return _Options(compat, compare_limit, dict(store_options or {}))


def input_label(group: ManifestGroup, index: int) -> str:
    """How errors name an input: the first source file its manifests reference."""
    for _, node in group.walk():
        if isinstance(node, ManifestArray) and node.manifest.path_table:
            return repr(node.manifest.path_table[0].rsplit("/", 1)[-1])
    return f"input {index}"


def concat(
    groups: Sequence[ManifestGroup],
    dim: str,
    *,
    labels: Sequence[str] | None = None,
    compat: Compat = "equals",
    compare_limit: int | None = COMPARE_LIMIT,
    store_options: Mapping[str, Any] | None = None,
) -> ManifestGroup:
    """Concatenate groups along the existing dimension ``dim``, in the order given.

    Arrays whose ``dimension_names`` include ``dim`` are concatenated along it.  Their CF
    encodings (``units``, ``calendar``, ``scale_factor``, ``add_offset``, ``_FillValue``,
    ``missing_value``, data type; a bounds variable's inherited units) must agree: where
    they differ, a loaded (inline) array is decoded and re-encoded into the first input's
    encoding when that is exact (xarray's coding; per-file time units), and a referenced
    array is refused.  Every other array must hold the same values in all inputs (see
    ``compat``); the first input's is kept.  Child groups are combined the same way.

    Parameters
    ----------
    groups
        The inputs, in order along ``dim``.
    dim
        The dimension name.
    labels
        Names of the inputs for error messages (default: their first source file).
    compat
        How arrays without ``dim`` are checked: ``"equals"`` (default) the same decoded
        values, ``"identical"`` values and attributes, ``"override"`` not at all (the first
        input's is taken).  Arrays with the same metadata and references pass unread.
    compare_limit
        Referenced arrays without ``dim`` larger than this many bytes are compared by
        reference only, not read (None: no limit).
    store_options
        Passed to the `ManifestStore` that reads values to compare (obstore credentials
        for remote sources).

    Raises
    ------
    CombineError
        Inputs with different members, or a variable that differs where it must not
        (encoding, dtype, codecs, chunking, fill value, shape off ``dim``, or values when
        it does not have ``dim``); the message names the variable, what differs, both
        values and both inputs.
    """
    groups = _check_groups(groups, "concat")
    names = _labels(groups, labels)
    options = _options(compat, compare_limit, store_options)
    return _combine_group(groups, names, dim, stack_new=False, path="", options=options)


def stack(
    groups: Sequence[ManifestGroup],
    dim: str,
    *,
    labels: Sequence[str] | None = None,
    store_options: Mapping[str, Any] | None = None,
) -> ManifestGroup:
    """Stack groups along a new leading dimension ``dim``.

    Arrays that differ between inputs get ``dim`` as a new first axis (chunk length 1);
    arrays identical in every input (metadata and references, or values) are kept once.
    Encodings are checked as in `concat`.

    Raises
    ------
    CombineError
        As for `concat`, or ``dim`` already exists in an input.
    """
    groups = _check_groups(groups, "stack")
    names = _labels(groups, labels)
    options = _options("equals", COMPARE_LIMIT, store_options)
    return _combine_group(groups, names, dim, stack_new=True, path="", options=options)


def combine_by_coords(
    groups: Sequence[ManifestGroup],
    *,
    labels: Sequence[str] | None = None,
    compat: Compat = "equals",
    compare_limit: int | None = COMPARE_LIMIT,
    store_options: Mapping[str, Any] | None = None,
) -> ManifestGroup:
    """Order inputs by the values of their 1-D coordinate arrays and concatenate them.

    A coordinate is a 1-D array named like its dimension.  Every dimension whose
    coordinate values differ between inputs is a concatenation dimension; the inputs must
    tile those dimensions completely (e.g. tiles in x/y and steps in time), each input
    once.  Coordinates are compared by their decoded values (times in different units
    compare as dates); referenced ones are read from their sources.  ``compat``,
    ``compare_limit`` and ``store_options`` are as for `concat`.

    Raises
    ------
    CombineError
        No coordinate tells the inputs apart, inputs do not form a complete tiling, values
        overlap, or values leave a gap (for evenly spaced coordinates), or any check of
        `concat` fails; the message names the coordinate and the inputs.
    """
    groups = _check_groups(groups, "combine_by_coords")
    names = _labels(groups, labels)
    options = _options(compat, compare_limit, store_options)
    if len(groups) == 1:
        return groups[0]
    values = _coordinate_values(groups, names, options)
    dims = sorted(set(values[0]).intersection(*values[1:]))
    concat_dims = [
        d for d in dims if any(not np.array_equal(values[0][d], v[d]) for v in values[1:])
    ]
    if not concat_dims:
        raise CombineError(
            "combine_by_coords: no 1-D coordinate differs between the inputs, so there is no "
            f"order to combine them in (coordinates: {dims or 'none'})"
        )
    # Each input's position along each concatenation dimension: the rank of its first value,
    # in the direction the coordinate runs (latitudes are often stored north to south).
    positions: list[tuple[int, ...]] = []
    ranks: dict[str, dict[Any, int]] = {}
    directions: dict[str, int] = {}
    for d in concat_dims:
        directions[d] = _direction([v[d] for v in values], d, names)
        firsts = sorted(
            {_first(v[d], d, names[i]) for i, v in enumerate(values)},
            reverse=directions[d] < 0,
        )
        ranks[d] = {x: r for r, x in enumerate(firsts)}
    for i, v in enumerate(values):
        positions.append(tuple(ranks[d][_first(v[d], d, names[i])] for d in concat_dims))
    shape = tuple(len(ranks[d]) for d in concat_dims)
    seen: dict[tuple[int, ...], int] = {}
    for i, pos in enumerate(positions):
        if pos in seen:
            raise CombineError(
                f"combine_by_coords: inputs {names[seen[pos]]} and {names[i]} start at the same "
                f"coordinate values along {concat_dims}"
            )
        seen[pos] = i
    if len(seen) != int(np.prod(shape)):
        raise CombineError(
            f"combine_by_coords: {len(groups)} inputs do not tile the {shape} grid of "
            f"{concat_dims} completely"
        )
    grid = np.empty(shape, dtype=object)
    for i, pos in enumerate(positions):
        grid[pos] = i
    for axis, d in enumerate(concat_dims):
        _check_spacing(grid, axis, d, values, names, directions[d])
    # Concatenate along the last dimension first, then outwards.
    items: np.ndarray = np.vectorize(lambda i: (groups[i], names[i]), otypes=[object])(grid)
    for axis in reversed(range(len(concat_dims))):
        d = concat_dims[axis]
        moved = np.moveaxis(items, axis, -1)
        out = np.empty(moved.shape[:-1], dtype=object)
        for index in np.ndindex(*moved.shape[:-1]):
            row = moved[index]
            combined = _combine_group(
                [g for g, _ in row],
                [n for _, n in row],
                d,
                stack_new=False,
                path="",
                options=options,
            )
            out[index] = (combined, " + ".join(n for _, n in row))
        items = out
    result: ManifestGroup = items[()][0]
    return result


# ---- internals ----------------------------------------------------------------------------


def _labels(groups: list[ManifestGroup], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return [input_label(g, i) for i, g in enumerate(groups)]
    names = list(labels)
    if len(names) != len(groups):
        raise CombineError(f"{len(names)} labels for {len(groups)} inputs")
    return names


def _check_groups(groups: Sequence[ManifestGroup], what: str) -> list[ManifestGroup]:
    groups = list(groups)
    if not groups:
        raise CombineError(f"{what} needs at least one group")
    for i, g in enumerate(groups):
        if not isinstance(g, ManifestGroup):
            raise CombineError(f"{what}: input {i} is a {type(g).__name__}, not a ManifestGroup")
    return groups


def _combine_group(
    groups: list[ManifestGroup],
    names: list[str],
    dim: str,
    *,
    stack_new: bool,
    path: str,
    options: _Options,
) -> ManifestGroup:
    first = groups[0]
    for i, g in enumerate(groups[1:], start=1):
        for kind, mine, theirs in (
            ("arrays", first.arrays, g.arrays),
            ("groups", first.groups, g.groups),
        ):
            if set(mine) != set(theirs):
                diff = sorted(set(mine) ^ set(theirs))
                raise CombineError(
                    f"{path or '/'}: {names[0]} and {names[i]} have different {kind} "
                    f"({', '.join(diff)})"
                )
    # bounds variables after the variables they inherit units from: a re-encoded bounds
    # array takes its parent's combined encoding
    parents = {name: _cf.bounds_parent(first, name) for name in first.arrays}
    order = sorted(first.arrays, key=lambda name: parents[name] is not None)
    arrays: dict[str, ArrayNode] = {}
    for name in order:
        parent = parents[name]
        arrays[name] = _combine_array(
            groups,
            name,
            names,
            dim,
            stack_new=stack_new,
            var=path + name,
            options=options,
            # (a bounds variable of a bounds variable finds no combined parent, and its
            # re-encoded form then states its units itself)
            parent=None if parent not in arrays else (parent, arrays[parent]),
        )
    children = {
        name: _combine_group(
            [g.groups[name] for g in groups],
            names,
            dim,
            stack_new=stack_new,
            path=f"{path}{name}/",
            options=options,
        )
        for name in first.groups
    }
    return ManifestGroup(
        arrays={name: arrays[name] for name in first.arrays},
        groups=children,
        attributes=first.attributes,
    )


def _combine_array(
    groups: list[ManifestGroup],
    name: str,
    names: list[str],
    dim: str,
    *,
    stack_new: bool,
    var: str,
    options: _Options,
    parent: tuple[str, ArrayNode] | None,
) -> ArrayNode:
    members = [g.arrays[name] for g in groups]
    first = members[0]
    dims = first.dimension_names or ()
    if stack_new:
        if dim in dims:
            raise CombineError(f"stack: variable {var!r} already has dimension {dim!r}")
        if all(m == first for m in members[1:]):
            return first
    elif dim not in dims:
        return _kept_once(groups, name, names, dim, var=var, options=options)
    kinds = {type(m) for m in members}
    if len(kinds) > 1:
        raise CombineError(
            f"variable {var!r} is stored inline in some inputs and referenced in others; "
            "load it in all of them or in none"
        )
    encodings = [_cf.encoding_of(g, name) for g in groups]
    for i, enc in enumerate(encodings[1:], start=1):
        difference = _cf.first_difference(encodings[0], enc)
        if difference is None:
            continue
        key, a, b = difference
        if kinds == {InlineArray}:
            inline: list[InlineArray] = members  # type: ignore[assignment]
            return _cf.reencode(
                inline,
                [_cf.inherited_context(g, name) for g in groups],
                var=var,
                name=name,
                dim=dim,
                stack_new=stack_new,
                names=names,
                parent=parent,
                store_options=options.store_options,
            )
        hint = ""
        if key in ("units", "calendar") and not stack_new:
            hint = (
                f"; load it (load=[{name!r}, ...]) to have its values decoded and re-encoded "
                "into one encoding"
            )
        shown_a, shown_b = _cf.describe(key, a, encodings[0]), _cf.describe(key, b, enc)
        raise CombineError(
            f"variable {var!r}: {_cf.label(key)} is {shown_a} in {names[0]} "
            f"but {shown_b} in {names[i]}, so the same stored numbers mean "
            f"different things; one array cannot describe both{hint}"
        )
    if kinds == {InlineArray}:
        return _combine_inline(members, dim, stack_new=stack_new, var=var, names=names)  # type: ignore[arg-type]
    arrays: list[ManifestArray] = members  # type: ignore[assignment]
    try:
        if stack_new:
            return ManifestArray.stack(arrays, axis=0, dimension_name=dim)
        return ManifestArray.concat(arrays, axis=dims.index(dim))
    except CombineError as e:
        raise CombineError(f"variable {var!r}: {_name_inputs(str(e), names)}") from e


def _kept_once(
    groups: list[ManifestGroup],
    name: str,
    names: list[str],
    dim: str,
    *,
    var: str,
    options: _Options,
) -> ArrayNode:
    """An array without ``dim``: the first input's, once every input holds the same
    values (``compat``)."""
    members = [g.arrays[name] for g in groups]
    first = members[0]
    if options.compat == "override":
        return first
    differing = [i for i, m in enumerate(members) if i and m != first]

    def refuse(i: int, what: str) -> CombineError:
        return CombineError(
            f"variable {var!r} has no dimension {dim!r}, so it must be the same in every "
            f"input (compat={options.compat!r}), but {names[0]} and {names[i]} differ "
            f"({what}); pass compat='override' to keep the one in {names[0]}"
        )

    size = int(np.prod(first.shape)) * first.dtype.itemsize
    for i in differing:
        m = members[i]
        if m.shape != first.shape or tuple(m.dimension_names or ()) != tuple(
            first.dimension_names or ()
        ):
            raise refuse(i, _difference(first, m))
        referenced = isinstance(first, ManifestArray) or isinstance(m, ManifestArray)
        if referenced and options.compare_limit is not None and size > options.compare_limit:
            raise refuse(
                i,
                f"{_difference(first, m)}; at {size} bytes it is above compare_limit="
                f"{options.compare_limit} and was not read: pass compare_limit={size} (or "
                "--compare-limit) to compare its values",
            )
    if not differing:
        return first
    # read a batch of inputs at a time: memory stays near the comparison bound
    per_batch = max(1, (options.compare_limit or COMPARE_LIMIT) // max(size, 1))
    values = _values({0: first}, options)
    decoded_first: Any = None
    for start in range(0, len(differing), per_batch):
        batch = differing[start : start + per_batch]
        values = {0: values[0], **_values({i: members[i] for i in batch}, options)}
        for i in batch:
            decoded_first = _compare_kept(
                groups, name, i, values, decoded_first, var=var, options=options, refuse=refuse
            )
    return first


def _compare_kept(
    groups: list[ManifestGroup],
    name: str,
    i: int,
    values: dict[int, np.ndarray],
    decoded_first: Any,
    *,
    var: str,
    options: _Options,
    refuse: Callable[[int, str], CombineError],
) -> Any:
    """Check input ``i``'s array ``name`` against the first input's (`_kept_once`); returns
    the first input's decoded variable once it was needed, for the next call."""
    first, m = groups[0].arrays[name], groups[i].arrays[name]
    encodings_equal = (
        _cf.first_difference(_cf.encoding_of(groups[0], name), _cf.encoding_of(groups[i], name))
        is None
    )
    if encodings_equal and _equal_values(values[0], values[i]):
        if options.compat == "identical":
            diff = _attribute_difference(first.attributes, m.attributes)
            if diff is not None:
                raise refuse(i, f"attributes: {diff}")
        return decoded_first
    why = f"variable {var!r} is stored differently in two inputs"
    if decoded_first is None:
        decoded_first = _cf.decoded(
            {**_cf.inherited_context(groups[0], name), name: first},
            name,
            why=why,
            store_options=options.store_options,
        )
    other = _cf.decoded(
        {**_cf.inherited_context(groups[i], name), name: m},
        name,
        why=why,
        store_options=options.store_options,
    )
    if not decoded_first.equals(other):
        raise refuse(i, f"decoded values{_first_unequal(decoded_first.values, other.values)}")
    if options.compat == "identical" and not decoded_first.identical(other):
        raise refuse(i, f"attributes: {_attribute_difference(decoded_first.attrs, other.attrs)}")
    return decoded_first


def _first_unequal(a: np.ndarray, b: np.ndarray) -> str:
    """Where two arrays of one shape first differ, for an error message ("" if unknown)."""
    if a.shape != b.shape:
        return ""
    try:
        same = (a == b) | ((a != a) & (b != b))  # NaN (and NaT) equal themselves here
    except (TypeError, ValueError):
        return ""
    where = np.argwhere(~np.asarray(same, dtype=bool))
    if not where.size:
        return ""
    index = tuple(int(k) for k in where[0])
    return f", first at index {index}: {a[index]} vs {b[index]}"


def _values(nodes: Mapping[int, ArrayNode], options: _Options) -> dict[int, np.ndarray]:
    """The stored (raw) values of arrays, the referenced ones read through one store."""
    out = {i: np.asarray(n.data) for i, n in nodes.items() if isinstance(n, InlineArray)}
    referenced = {f"a{i}": n for i, n in nodes.items() if isinstance(n, ManifestArray)}
    for key, data in _read_referenced(referenced, options.store_options).items():
        out[int(key[1:])] = data
    return out


def _equal_values(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    equal_nan = a.dtype.kind in "fcmM" and b.dtype.kind in "fcmM"
    return bool(np.array_equal(a, b, equal_nan=equal_nan))


def _attribute_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b or not same_value(a[key], b[key]):
            return f"{key!r}: {a.get(key, 'absent')!r} vs {b.get(key, 'absent')!r}"
    return None


def _combine_inline(
    members: list[InlineArray], dim: str, *, stack_new: bool, var: str, names: list[str]
) -> InlineArray:
    first = members[0]
    dims = tuple(first.dimension_names or ())
    axis = None if stack_new else dims.index(dim)
    for i, m in enumerate(members[1:], start=1):
        if m.dtype != first.dtype:
            raise CombineError(
                f"variable {var!r}: {names[i]} has dtype {m.dtype}, {names[0]} has {first.dtype}"
            )
        # checked here so numpy's own shape errors never escape as a bare ValueError
        if tuple(m.dimension_names or ()) != dims:
            raise CombineError(
                f"variable {var!r}: {names[i]} has dimensions {m.dimension_names}, "
                f"{names[0]} has {first.dimension_names}"
            )
        off = [d for d in range(first.ndim) if d != axis and m.shape[d] != first.shape[d]]
        if m.ndim != first.ndim or off:
            where = "" if axis is None else f" off dimension {dim!r}"
            raise CombineError(
                f"variable {var!r}: {names[i]} has shape {m.shape}, {names[0]} has "
                f"{first.shape}; they must agree{where}"
            )
    if stack_new:
        data = np.stack([m.data for m in members])
        dims = (dim, *dims)
    else:
        data = np.concatenate([m.data for m in members], axis=axis)
    return InlineArray.from_numpy(
        data,
        dimension_names=dims or None,
        attributes=first.attributes,
        fill_value=first.metadata.fill_value,
    )


def _difference(a: ArrayNode, b: ArrayNode) -> str:
    if type(a) is not type(b):
        return "one is inline, one referenced"
    da, db = a.metadata.to_dict(), b.metadata.to_dict()
    for key in ("shape", "data_type", "chunk_grid", "codecs", "fill_value", "attributes"):
        if da.get(key) != db.get(key):
            return f"{key}: {da.get(key)!r} vs {db.get(key)!r}"
    return "values" if isinstance(a, InlineArray) else "chunk references"


def _name_inputs(message: str, names: list[str]) -> str:
    # the array-level message counts inputs from 0; say which files they are
    for i in reversed(range(len(names))):
        message = message.replace(f"array {i} ", f"{names[i]} ").replace(
            f"input {i} ", f"{names[i]} "
        )
    return message


def _coordinate_values(
    groups: list[ManifestGroup], names: list[str], options: _Options
) -> list[dict[str, np.ndarray]]:
    """The values of every 1-D coordinate array (named like its only dimension) of each
    input: as stored where every input encodes it alike, decoded (dates) where not."""
    found: list[dict[str, ArrayNode]] = [
        {
            name: node
            for name, node in g.arrays.items()
            if node.ndim == 1 and tuple(node.dimension_names or ()) == (name,)
        }
        for g in groups
    ]
    common = set(found[0]).intersection(*found[1:])
    out: list[dict[str, np.ndarray]] = [{} for _ in groups]
    for name in sorted(common):
        encodings = [_cf.encoding_of(g, name) for g in groups]
        alike = all(_cf.first_difference(encodings[0], e) is None for e in encodings[1:])
        if alike:
            raw = _values({i: found[i][name] for i in range(len(groups))}, options)
        for i, g in enumerate(groups):
            node = found[i][name]
            if alike:
                out[i][name] = raw[i]
            else:
                why = f"combine_by_coords: coordinate {name!r} is encoded differently in {names[i]}"
                decoded = _cf.decoded(
                    {**_cf.inherited_context(g, name), name: node},
                    name,
                    why=why,
                    store_options=options.store_options,
                )
                out[i][name] = np.asarray(decoded.values)
    return out


def _read_referenced(
    arrays: Mapping[str, ManifestArray], store_options: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """The values of referenced arrays, read through one in-memory `ManifestStore`."""
    if not arrays:
        return {}
    # Reading needs the store; imported here so the model layer stays free of it.
    import zarr
    from zarr.core.sync import sync

    from zarr_manifest.store import ManifestStore

    store = ManifestStore(ManifestGroup(arrays=dict(arrays)), storage_options=store_options)

    async def read(name: str) -> np.ndarray:
        array = await zarr.api.asynchronous.open_array(store=store, path=name, mode="r")
        return np.asarray(await array.getitem(...))

    async def read_all() -> list[np.ndarray]:
        # one trip to zarr's event loop for all of them: a blocking open and read per array
        # cost milliseconds each when combining hundreds of files
        return list(await asyncio.gather(*(read(name) for name in arrays)))

    with zarr.config.set({"array.rectilinear_chunks": True}):
        return dict(zip(arrays, sync(read_all()), strict=True))


def _first(values: np.ndarray, dim: str, label: str) -> Any:
    if values.size == 0:
        raise CombineError(f"combine_by_coords: coordinate {dim!r} of {label} is empty")
    return values[0].item() if hasattr(values[0], "item") else values[0]


def _direction(coords: list[np.ndarray], dim: str, names: list[str]) -> int:
    """+1 if the coordinate increases in every input, -1 if it decreases in every input.

    Inputs with a single value say nothing and take the others' direction (increasing
    when no input has two values).
    """
    seen: dict[int, int] = {}
    for i, c in enumerate(coords):
        if c.size < 2:
            continue
        # compare neighbours rather than np.diff, which wraps around for unsigned integers
        if np.all(c[1:] > c[:-1]):
            seen.setdefault(1, i)
        elif np.all(c[1:] < c[:-1]):
            seen.setdefault(-1, i)
        else:
            raise CombineError(
                f"combine_by_coords: coordinate {dim!r} is not strictly monotonic in {names[i]}"
            )
    if len(seen) == 2:
        raise CombineError(
            f"combine_by_coords: coordinate {dim!r} increases in {names[seen[1]]} but "
            f"decreases in {names[seen[-1]]}"
        )
    return -1 if -1 in seen else 1


def _check_spacing(
    grid: np.ndarray,
    axis: int,
    dim: str,
    values: list[dict[str, np.ndarray]],
    names: list[str],
    direction: int,
) -> None:
    """Consecutive inputs along ``dim`` must not overlap, nor leave a gap in an evenly
    spaced coordinate (``direction``: +1 increasing, -1 decreasing)."""
    moved = np.moveaxis(grid, axis, -1)
    for index in np.ndindex(*moved.shape[:-1]):
        row = [int(i) for i in moved[index]]
        coords = [values[i][dim] for i in row]
        for a, b, ia, ib in zip(coords, coords[1:], row, row[1:], strict=False):
            if a.size == 0 or b.size == 0:
                continue
            if a.dtype.kind == "u":
                # signed steps: unsigned subtraction wraps around when the coordinate falls
                a, b = a.astype(np.int64), b.astype(np.int64)
            if (b[0] <= a[-1]) if direction > 0 else (b[0] >= a[-1]):
                raise CombineError(
                    f"combine_by_coords: coordinate {dim!r} overlaps between {names[ia]} "
                    f"(ends at {a[-1]}) and {names[ib]} (starts at {b[0]})"
                )
            steps = np.concatenate([np.diff(a), np.diff(b)])
            if not steps.size or steps.dtype.kind not in "iufcm":
                continue
            step = steps[0]
            jump = b[0] - a[-1]
            # exact comparison for integers and time deltas (np.isclose rejects timedelta64)
            if steps.dtype.kind in "fc":
                even, same = bool(np.allclose(steps, step)), bool(np.isclose(jump, step))
            else:
                even, same = bool(np.all(steps == step)), bool(jump == step)
            if even and not same:
                raise CombineError(
                    f"combine_by_coords: coordinate {dim!r} has a gap between "
                    f"{names[ia]} (ends at {a[-1]}) and {names[ib]} (starts at "
                    f"{b[0]}); the step is {step}"
                )
