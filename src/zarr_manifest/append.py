"""`append`: new files (or groups) at the end of an existing manifest store, along a dimension.

Only the new files are parsed; the store's manifests are read, concatenated with the new
ones by `zarr_manifest.combine.concat` (so every check of combining applies), checked to
follow the store's coordinate, and published like any replacement of the store
(`zarr_manifest.format.publish`): readers see the old store or the new one.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from zarr_manifest import _cf
from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.build import build, expand_inputs
from zarr_manifest.combine import concat
from zarr_manifest.errors import CombineError
from zarr_manifest.format.hierarchy import write_group
from zarr_manifest.format.location import open_location
from zarr_manifest.format.publish import read_snapshot
from zarr_manifest.format.split import DEFAULT_SPLIT_ABOVE
from zarr_manifest.format.storage_options import StorageOptions, merge_storage_options
from zarr_manifest.group import ManifestGroup

__all__ = ["append"]

#: `build`'s own keywords; any other keyword `append` takes is an obstore option
_BUILD_KEYWORDS = frozenset(
    inspect.signature(build).parameters.keys() - {"urls_or_glob", "storage_options"}
)


def append(
    store: str | os.PathLike[str] | Any,
    new: str | os.PathLike[str] | ManifestGroup | Iterable[str | os.PathLike[str] | ManifestGroup],
    *,
    dim: str,
    load: Sequence[str] | None = None,
    split_above: int | None = DEFAULT_SPLIT_ABOVE,
    storage_options: StorageOptions | None = None,
    **build_options: Any,
) -> ManifestGroup:
    """Append files or groups to the manifest store ``store`` along the dimension ``dim``.

    Parameters
    ----------
    store
        The manifest store (local path, URL or obstore store); it must exist.
    new
        Files or URLs (or one glob pattern), or `ManifestGroup` objects, in order along
        ``dim``.  Only these are parsed.
    dim
        The dimension to append along; arrays without it must be the same in the new
        inputs as in the store.
    load
        Variables to store inline when parsing the new files; default: the store's inline
        arrays (so that, for example, ``time`` is loaded as it was when the store was built).
    split_above
        As for `ManifestGroup.to_store`.
    storage_options
        Credentials and client settings, in obstore's vocabulary with URL-prefix overrides
        (see `open_virtual`), for the store (when a URL) and the new files alike.
        Default: obstore's (credentials from the environment).
    **build_options
        Passed to `zarr_manifest.build` for the new files (``format``, ``group``, ``drop``,
        ``executor``, ``progress``; obstore options too, merged into ``storage_options``).

    Returns
    -------
    ManifestGroup
        The store's new contents.

    Raises
    ------
    CombineError
        The new inputs do not combine with the store (any check of `concat`: data types,
        codecs, encodings, arrays without ``dim`` that differ), or the coordinate ``dim``
        of the new inputs overlaps the store's or does not follow it (compared decoded
        where the encodings differ: dates in each file's own "days since" units), or a
        loaded variable's new values cannot be re-encoded exactly into the store's
        encoding; the message names the input and the values.
    ConcurrentWriteError
        Another writer changed the store while this one was appending; nothing was written.
    FileNotFoundError
        There is no manifest store at ``store``.
    """
    options = merge_storage_options(
        storage_options,
        {k: v for k, v in build_options.items() if k not in _BUILD_KEYWORDS},
    )
    build_options = {k: v for k, v in build_options.items() if k in _BUILD_KEYWORDS}
    build_options["storage_options"] = options
    location = open_location(store, storage_options=options)
    base = read_snapshot(location)
    existing = ManifestGroup.from_store(store, storage_options=options)
    if load is None:
        load = [path for path, node in existing.walk() if isinstance(node, InlineArray)]
    additions = _new_group(new, dim, load, build_options)
    label = f"store {location.url}"
    _check_follows(existing, additions, dim, label, options)
    combined = concat(
        [existing, additions], dim, labels=[label, _describe(new)], store_options=options
    )
    _check_encodings_kept(existing, combined, label)
    write_group(
        combined,
        store,
        overwrite=True,
        split_above=split_above,
        if_snapshot=base,
        storage_options=options,
    )
    return combined


def _new_group(
    new: Any, dim: str, load: Sequence[str], build_options: dict[str, Any]
) -> ManifestGroup:
    """The new inputs as one group: files are parsed (and concatenated along ``dim``)."""
    items = [new] if isinstance(new, str | os.PathLike | ManifestGroup) else list(new)
    if not items:
        raise CombineError("append needs at least one new file or group")
    groups = [i for i in items if isinstance(i, ManifestGroup)]
    if groups and len(groups) != len(items):
        raise CombineError("append takes files or ManifestGroups, not both at once")
    if groups:
        return groups[0] if len(groups) == 1 else concat(groups, dim)
    paths = [os.fspath(i) for i in items if isinstance(i, str | os.PathLike)]
    urls = expand_inputs(paths[0] if len(paths) == 1 else paths, build_options["storage_options"])
    return build(urls, concat_dim=dim, load=load, **build_options)


def _describe(new: Any) -> str:
    if isinstance(new, str | os.PathLike):
        return repr(os.fspath(new))
    if isinstance(new, ManifestGroup):
        return "the new group"
    return "the new inputs"


def _check_follows(
    existing: ManifestGroup,
    new: ManifestGroup,
    dim: str,
    label: str,
    store_options: StorageOptions,
) -> None:
    """The coordinate ``dim`` of ``new`` must continue the store's, in its direction.

    The values are compared as stored where both encode ``dim`` alike, decoded (dates)
    where not: daily files written by xarray each count "days since" their own date.

    Raises
    ------
    CombineError
        A new value lies at or before the store's last value (an overlap, or input that
        belongs before the store), naming both values.
    """
    old_node, new_node = _coordinate_node(existing, dim), _coordinate_node(new, dim)
    if old_node is None or new_node is None or not old_node.shape[0] or not new_node.shape[0]:
        return
    if _cf.first_difference(_cf.encoding_of(existing, dim), _cf.encoding_of(new, dim)) is None:
        old_values = _stored(old_node, dim, store_options)
        new_values = _stored(new_node, dim, store_options)
    else:
        why = f"append: coordinate {dim!r} is encoded differently in the new input"
        old_values, new_values = (
            np.asarray(
                _cf.decoded(
                    {**_cf.inherited_context(group, dim), dim: node},
                    dim,
                    why=why,
                    store_options=store_options,
                ).values
            )
            for group, node in ((existing, old_node), (new, new_node))
        )
        if old_values.dtype != new_values.dtype:
            raise CombineError(
                f"append: coordinate {dim!r} decodes to {old_values.dtype} in the {label} but "
                f"{new_values.dtype} in the new input, so the two cannot be one array"
            )
    # the direction the store's coordinate runs (or the new one's, if the store has one value)
    both = old_values if old_values.size > 1 else np.concatenate([old_values, new_values])
    decreasing = both.size > 1 and bool(both[1] < both[0])
    last = old_values[-1]
    beyond = new_values < last if decreasing else new_values > last
    if not bool(np.all(beyond)):
        bad = new_values[~beyond][0]
        relation = "above" if decreasing else "below"
        raise CombineError(
            f"append: coordinate {dim!r} of the new input has {bad!r}, at or {relation} the "
            f"last value {last!r} of the {label}: the new input overlaps the store or does "
            "not follow it (append only adds after the end)"
        )


def _check_encodings_kept(existing: ManifestGroup, combined: ManifestGroup, label: str) -> None:
    """Every array of the store keeps its encoding: new values re-encoded by `concat` must be
    in the store's (``concat`` may pick finer time units for all inputs; append does not
    rewrite the store's).

    Raises
    ------
    CombineError
        An array's encoding changed (the new values cannot be held exactly in the store's).
    """
    for name in existing.arrays:
        if name not in combined.arrays:
            continue
        before, after = _cf.encoding_of(existing, name), _cf.encoding_of(combined, name)
        difference = _cf.first_difference(before, after)
        if difference is not None:
            key, a, b = difference
            raise CombineError(
                f"append: variable {name!r} of the new input cannot be encoded exactly in the "
                f"encoding of the {label} ({_cf.label(key)} {_cf.describe(key, a, before)}; "
                f"holding every value needs {_cf.describe(key, b, after)}); build the store "
                "again from all the files instead"
            )


def _coordinate_node(group: ManifestGroup, dim: str) -> InlineArray | ManifestArray | None:
    node = group.arrays.get(dim)
    if node is None or node.ndim != 1 or tuple(node.dimension_names or ()) != (dim,):
        return None
    return node


def _stored(
    node: InlineArray | ManifestArray, dim: str, store_options: StorageOptions
) -> np.ndarray:
    """The coordinate's stored (not decoded) values."""
    if isinstance(node, InlineArray):
        return np.asarray(node.data)
    import zarr

    from zarr_manifest.store import ManifestStore

    return np.asarray(
        zarr.open_array(
            ManifestStore(ManifestGroup(arrays={dim: node}), storage_options=store_options),
            path=dim,
            mode="r",
        )[...]
    )
