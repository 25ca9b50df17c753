"""Many virtual datasets into one: concat and stack by dimension name, combine by coordinates.

Steps 3-5 of the seed pipeline, without xarray: the order comes from the caller (`concat`,
`stack`) or from the values of 1-D coordinate arrays (`combine_by_coords`); the checks name
the variable and the two inputs that differ; the manifests are merged as numpy columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.errors import CombineError
from zarr_manifest.group import ManifestGroup

__all__ = ["combine_by_coords", "concat", "input_label", "stack"]

ArrayNode = ManifestArray | InlineArray


def input_label(group: ManifestGroup, index: int) -> str:
    """How errors name an input: the first source file its manifests reference."""
    for _, node in group.walk():
        if isinstance(node, ManifestArray) and node.manifest.path_table:
            return repr(node.manifest.path_table[0].rsplit("/", 1)[-1])
    return f"input {index}"


def concat(
    groups: Sequence[ManifestGroup], dim: str, *, labels: Sequence[str] | None = None
) -> ManifestGroup:
    """Concatenate groups along the existing dimension ``dim``, in the order given.

    Arrays whose ``dimension_names`` include ``dim`` are concatenated along it; every other
    array must be identical in all inputs (metadata and references, or values).  Child
    groups are combined the same way, member by member.

    Parameters
    ----------
    groups
        The inputs, in order along ``dim``.
    dim
        The dimension name.
    labels
        Names of the inputs for error messages (default: their first source file).

    Raises
    ------
    CombineError
        Inputs with different members, or a variable that differs where it must not
        (dtype, codecs, chunking, fill value, shape off ``dim``, or content when it does
        not have ``dim``); the message names the variable and the two inputs.
    """
    groups = _check_groups(groups, "concat")
    names = _labels(groups, labels)
    return _combine_group(groups, names, dim, stack_new=False, path="")


def stack(
    groups: Sequence[ManifestGroup], dim: str, *, labels: Sequence[str] | None = None
) -> ManifestGroup:
    """Stack groups along a new leading dimension ``dim``.

    Arrays that differ between inputs get ``dim`` as a new first axis (chunk length 1);
    arrays identical in every input are kept once.

    Raises
    ------
    CombineError
        As for `concat`, or ``dim`` already exists in an input.
    """
    groups = _check_groups(groups, "stack")
    names = _labels(groups, labels)
    return _combine_group(groups, names, dim, stack_new=True, path="")


def combine_by_coords(
    groups: Sequence[ManifestGroup], *, labels: Sequence[str] | None = None
) -> ManifestGroup:
    """Order inputs by the values of their 1-D coordinate arrays and concatenate them.

    A coordinate is a 1-D array named like its dimension.  Every dimension whose
    coordinate values differ between inputs is a concatenation dimension; the inputs must
    tile those dimensions completely (e.g. tiles in x/y and steps in time), each input
    once.  Coordinates stored inline are used as they are; referenced ones are read from
    their sources.

    Raises
    ------
    CombineError
        No coordinate tells the inputs apart, inputs do not form a complete tiling, values
        overlap, or values leave a gap (for evenly spaced coordinates), or any check of
        `concat` fails; the message names the coordinate and the inputs.
    """
    groups = _check_groups(groups, "combine_by_coords")
    names = _labels(groups, labels)
    if len(groups) == 1:
        return groups[0]
    values = [_coordinate_values(g) for g in groups]
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
            combined = concat([g for g, _ in row], d, labels=[n for _, n in row])
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
    groups: list[ManifestGroup], names: list[str], dim: str, *, stack_new: bool, path: str
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
    arrays: dict[str, ArrayNode] = {}
    for name in first.arrays:
        members = [g.arrays[name] for g in groups]
        arrays[name] = _combine_array(members, names, dim, stack_new=stack_new, var=path + name)
    children = {
        name: _combine_group(
            [g.groups[name] for g in groups], names, dim, stack_new=stack_new, path=f"{path}{name}/"
        )
        for name in first.groups
    }
    return ManifestGroup(arrays=arrays, groups=children, attributes=first.attributes)


def _combine_array(
    members: list[ArrayNode], names: list[str], dim: str, *, stack_new: bool, var: str
) -> ArrayNode:
    first = members[0]
    dims = first.dimension_names or ()
    if stack_new:
        if dim in dims:
            raise CombineError(f"stack: variable {var!r} already has dimension {dim!r}")
        if all(m == first for m in members[1:]):
            return first
    elif dim not in dims:
        for i, m in enumerate(members[1:], start=1):
            if m != first:
                raise CombineError(
                    f"variable {var!r} has no dimension {dim!r}, so it must be identical in every "
                    f"input, but {names[0]} and {names[i]} differ ({_difference(first, m)})"
                )
        return first
    kinds = {type(m) for m in members}
    if kinds == {InlineArray}:
        return _combine_inline(members, dim, stack_new=stack_new, var=var, names=names)  # type: ignore[arg-type]
    if kinds != {ManifestArray}:
        raise CombineError(
            f"variable {var!r} is stored inline in some inputs and referenced in others; "
            "load it in all of them or in none"
        )
    arrays: list[ManifestArray] = members  # type: ignore[assignment]
    try:
        if stack_new:
            return ManifestArray.stack(arrays, axis=0, dimension_name=dim)
        return ManifestArray.concat(arrays, axis=dims.index(dim))
    except CombineError as e:
        raise CombineError(f"variable {var!r}: {_name_inputs(str(e), names)}") from e


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
    for field in ("shape", "data_type", "chunk_grid", "codecs", "fill_value", "attributes"):
        if da.get(field) != db.get(field):
            return f"{field}: {da.get(field)!r} vs {db.get(field)!r}"
    return "values" if isinstance(a, InlineArray) else "chunk references"


def _name_inputs(message: str, names: list[str]) -> str:
    # the array-level message counts inputs from 0; say which files they are
    for i in reversed(range(len(names))):
        message = message.replace(f"array {i} ", f"{names[i]} ").replace(
            f"input {i} ", f"{names[i]} "
        )
    return message


def _coordinate_values(group: ManifestGroup) -> dict[str, np.ndarray]:
    """The values of every 1-D coordinate array (named like its only dimension)."""
    out: dict[str, np.ndarray] = {}
    for name, node in group.arrays.items():
        if node.ndim != 1 or tuple(node.dimension_names or ()) != (name,):
            continue
        if isinstance(node, InlineArray):
            out[name] = np.asarray(node.data)
        else:
            out[name] = _read_referenced(name, node)
    return out


def _read_referenced(name: str, array: ManifestArray) -> np.ndarray:
    # Reading a referenced coordinate needs the store; imported here so the model layer
    # stays free of it for every other use.
    import zarr

    from zarr_manifest.store import ManifestStore

    store = ManifestStore(ManifestGroup(arrays={name: array}))
    return np.asarray(zarr.open_array(store, path=name, mode="r")[...])


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
