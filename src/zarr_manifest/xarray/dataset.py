"""Virtual datasets: legacy files as `xarray.Dataset`s of `ManifestArray`s, and back.

`open_virtual_dataset` references a file (with `zarr_manifest.open_virtual`) and shows it as
an `xarray.Dataset` whose variables wrap `ManifestArray`s, except the variables that are
loaded: dimension coordinates by default (so xarray can index, align and order by them)
and those asked for.  xarray's ``concat`` / ``combine_nested`` / ``combine_by_coords`` then
join the references (see `zarr_manifest.array_api`); `dataset_to_group` turns the result
into a `ManifestGroup` to write.  Parameter names follow VirtualiZarr 2.x where they mean
the same, so scripts port by changing an import.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, Literal

import numpy as np
import xarray as xr
import zarr
from xarray.backends.zarr import FillValueCoder, encode_zarr_attr_value

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.build import expand_inputs
from zarr_manifest.builders import open_virtual
from zarr_manifest.cf_attributes import (
    DECODING_ATTRIBUTES,
    check_decoding_attributes,
    same_value,
)
from zarr_manifest.errors import CombineError, MetadataError
from zarr_manifest.group import ManifestGroup
from zarr_manifest.store import ManifestStore
from zarr_manifest.xarray.backend import ManifestBackendEntrypoint

__all__ = [
    "dataset_to_group",
    "group_to_dataset",
    "open_virtual_dataset",
    "open_virtual_mfdataset",
]


def open_virtual_dataset(
    url: str | os.PathLike[str],
    *,
    group: str | None = None,
    drop_variables: Iterable[str] | None = None,
    loadable_variables: Iterable[str] | None = None,
    decode_times: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    format: str | None = None,
    options: Mapping[str, Any] | None = None,
    fingerprints: bool = True,
) -> xr.Dataset:
    """Reference a legacy file in place, as an `xarray.Dataset` of `ManifestArray`s.

    Parameters
    ----------
    url
        A local path or URL of the file (see `zarr_manifest.open_virtual`).
    group
        The group inside the file to open.
    drop_variables
        Variables to leave out.
    loadable_variables
        Variables to read into memory (as numpy, CF-decoded) instead of referencing.
        Default (None): the dimension coordinates (1-D variables named like their
        dimension), as xarray loads them to index.  Variables that cannot be referenced
        (variable-length strings, compact HDF5 datasets) are always loaded.
    decode_times
        Decode the loaded variables' times (as `xarray.open_dataset`); None: xarray's default.
    storage_options
        Credentials and client settings for remote URLs, in obstore's vocabulary with
        URL-prefix overrides (see `zarr_manifest.open_virtual`).  Default: obstore's
        (credentials from the environment).
    format, options, fingerprints
        As for `zarr_manifest.open_virtual` (the format, builder options, whether to record
        the files' fingerprints).

    Returns
    -------
    xarray.Dataset
        Referenced variables wrap `ManifestArray`s with their stored (undecoded) attributes;
        loaded variables hold numpy arrays.  ``ds.manifest`` writes it.

    Raises
    ------
    UnsupportedError, BuildError
        As `zarr_manifest.open_virtual`.
    """
    drop = list(drop_variables or ())
    built = open_virtual(
        url,
        format=format,
        group=group,
        drop=drop,
        # every variable referenced: what is loaded is decided here, read through the
        # references (as the engine will read them), whatever open_virtual's default
        load=(),
        options=options,
        fingerprints=fingerprints,
        storage_options=storage_options,
    )
    ds = group_to_dataset(
        built,
        loadable_variables=loadable_variables,
        decode_times=decode_times,
        storage_options=storage_options,
    )
    ds = ds.drop_vars([d for d in drop if d in ds.variables])
    ds.encoding["source"] = os.fspath(url)
    return ds


def group_to_dataset(
    group: ManifestGroup,
    *,
    loadable_variables: Iterable[str] | None = None,
    decode_times: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """A `ManifestGroup`'s arrays (not its child groups) as a virtual `xarray.Dataset`.

    See `open_virtual_dataset` for ``loadable_variables``, ``decode_times`` and
    ``storage_options`` (used to read the variables that are loaded).
    """
    store = ManifestStore(group, storage_options=storage_options)
    # the same dataset twice: CF-decoded (what loaded variables become, and which variables
    # are coordinates) and undecoded (the stored attributes of referenced variables)
    decoded = xr.open_dataset(
        store,  # type: ignore[arg-type]  # xarray types its first argument for its own engines
        engine=ManifestBackendEntrypoint,
        decode_times=decode_times,
        chunks=None,
        # indexes are made once, below, for what is loaded (not by reading everything twice)
        create_default_indexes=False,
    )
    raw = xr.open_dataset(
        store,  # type: ignore[arg-type]
        engine=ManifestBackendEntrypoint,
        decode_cf=False,
        chunks=None,
        create_default_indexes=False,
    )
    arrays = group.arrays
    if loadable_variables is None:
        load = {name for name, var in decoded.variables.items() if var.dims == (name,)}
    else:
        load = set(loadable_variables)
        unknown = sorted(str(n) for n in load - set(arrays))
        if unknown:
            raise KeyError(f"loadable_variables names {unknown}, which the file does not hold")
    load |= {name for name, a in arrays.items() if isinstance(a, InlineArray)}

    variables: dict[Hashable, xr.Variable] = {}
    for name in decoded.variables:
        array = arrays[str(name)]
        if name in load:
            variables[name] = decoded.variables[name].load()
        else:
            assert isinstance(array, ManifestArray)
            stored = raw.variables[name]
            variables[name] = xr.Variable(
                stored.dims, array, attrs=stored.attrs, encoding=stored.encoding
            )
    coord_names = set(decoded.coords)
    # nothing refers to the opened datasets any more (loaded values are in memory)
    decoded.close()
    raw.close()
    indexed = {n: v for n, v in variables.items() if n in coord_names and n in load}
    plain = {n: v for n, v in variables.items() if n in coord_names and n not in load}
    data_vars = {n: v for n, v in variables.items() if n not in coord_names}
    # a referenced 1-D coordinate gets no index: building one would need its values
    ds = xr.Dataset(data_vars, coords=xr.Coordinates(indexed), attrs=raw.attrs)
    if plain:
        ds = ds.assign_coords(xr.Coordinates(plain, indexes={}))
    return ds


def open_virtual_mfdataset(
    paths: str | os.PathLike[str] | Sequence[Any],
    *,
    concat_dim: Any = None,
    compat: Any = "no_conflicts",
    preprocess: Callable[[xr.Dataset], xr.Dataset] | None = None,
    data_vars: Any = "all",
    coords: Any = "different",
    combine: Literal["by_coords", "nested"] = "by_coords",
    parallel: Executor | Literal["dask", False] | None = None,
    join: Any = "outer",
    attrs_file: str | os.PathLike[str] | None = None,
    combine_attrs: Any = "override",
    storage_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> xr.Dataset:
    """Open many files with `open_virtual_dataset` and combine them with xarray.

    Modelled on `xarray.open_mfdataset` (and VirtualiZarr's function of this name): the
    combining options mean what they mean there.

    Parameters
    ----------
    paths
        A glob pattern, a list of paths or URLs, or (``combine="nested"``) nested lists of
        them, one level per dimension of ``concat_dim``.
    concat_dim, compat, data_vars, coords, join, combine_attrs
        As for `xarray.combine_nested` / `xarray.combine_by_coords`.
    preprocess
        Applied to each virtual dataset before combining.
    combine
        ``"by_coords"`` (the default, ordered by the loaded coordinates) or ``"nested"``.
    parallel
        A `concurrent.futures.Executor` (thread or process pool, or a dask.distributed
        ``Client.get_executor()``) to open the files on, or ``"dask"`` (``dask.delayed``
        on the current scheduler); None/False: one after the other.
    attrs_file
        The path whose global attributes the result takes (default: the first's).
    storage_options
        Credentials and client settings for remote files (see `open_virtual_dataset`),
        used to list a glob pattern and to open every file.
    **kwargs
        Passed to `open_virtual_dataset` (``loadable_variables``, ``drop_variables``...).

    Raises
    ------
    CombineError
        A referenced variable's decoding attributes (``scale_factor``, ``units``...) differ
        between two files; the message names the variable, the attribute, both values and
        both files.
    """
    nested = _nested_paths(paths, storage_options)
    kwargs = {**kwargs, "storage_options": storage_options}
    flat = list(_flatten(nested))
    if not flat:
        raise OSError("no files to open: paths is empty")
    if combine == "by_coords" and concat_dim is not None:
        raise ValueError("concat_dim has no effect with combine='by_coords'; use 'nested'")

    # a module-level function and its arguments: picklable, for process pools and clusters
    one = functools.partial(_open_one, preprocess=preprocess, kwargs=kwargs)
    if parallel is None or parallel is False:
        datasets = [one(p) for p in flat]
    elif isinstance(parallel, Executor):
        datasets = list(parallel.map(one, flat))
    elif parallel == "dask":
        import dask

        datasets = list(dask.compute(*[dask.delayed(one)(p) for p in flat]))
    else:
        raise TypeError(
            f"parallel must be a concurrent.futures.Executor, 'dask' or None, got {parallel!r}"
        )
    check_datasets_combinable(datasets, labels=flat)
    if combine == "nested":
        structured = _unflatten(nested, iter(datasets))
        combined = xr.combine_nested(
            structured,
            concat_dim=concat_dim,
            compat=compat,
            data_vars=data_vars,
            coords=coords,
            join=join,
            combine_attrs=combine_attrs,
        )
    elif combine == "by_coords":
        combined = xr.combine_by_coords(
            datasets,
            compat=compat,
            data_vars=data_vars,
            coords=coords,
            join=join,
            combine_attrs=combine_attrs,
        )
    else:
        raise ValueError(f"combine must be 'by_coords' or 'nested', got {combine!r}")
    if attrs_file is not None:
        combined.attrs = datasets[flat.index(os.fspath(attrs_file))].attrs
    return combined


def _open_one(
    path: str,
    *,
    preprocess: Callable[[xr.Dataset], xr.Dataset] | None,
    kwargs: Mapping[str, Any],
) -> xr.Dataset:
    ds = open_virtual_dataset(path, **kwargs)
    return preprocess(ds) if preprocess is not None else ds


def check_datasets_combinable(
    datasets: Sequence[xr.Dataset], labels: Sequence[str] | None = None
) -> None:
    """Refuse virtual datasets whose referenced variables of one name disagree on how
    their stored numbers decode (see `zarr_manifest.cf_attributes`).

    Raises
    ------
    CombineError
        Names the variable, the attribute, both values and both inputs.
    """
    names = list(labels) if labels is not None else [f"input {i}" for i in range(len(datasets))]
    seen: dict[Hashable, tuple[Mapping[str, Any], str]] = {}
    for ds, label in zip(datasets, names, strict=True):
        for name, var in ds.variables.items():
            if not isinstance(var._data, ManifestArray):
                continue
            if name not in seen:
                seen[name] = (var.attrs, label)
                continue
            attrs, first = seen[name]
            check_decoding_attributes(str(name), attrs, var.attrs, inputs=f"{first} and {label}")


def dataset_to_group(ds: xr.Dataset) -> ManifestGroup:
    """A virtual `xarray.Dataset` as a `ManifestGroup`, ready to write.

    Referenced variables keep their references, with the variable's dimensions and
    attributes; loaded (numpy or dask) variables are encoded by xarray exactly as
    ``to_zarr`` would (CF times, fill values, their ``encoding``) and stored inline.

    Raises
    ------
    MetadataError
        A variable wraps something that is neither a `ManifestArray` nor loadable values.
    """
    arrays: dict[str, ManifestArray | InlineArray] = {}
    loaded: dict[Hashable, xr.Variable] = {}
    coord_names = set(ds.coords)
    for name, var in ds.variables.items():
        data = var._data
        if isinstance(data, ManifestArray):
            arrays[str(name)] = _with_variable_metadata(data, var, name, ds, coord_names)
        else:
            loaded[name] = var
    arrays.update(_inline_arrays(ds, loaded))
    attrs = {str(k): encode_zarr_attr_value(v) for k, v in ds.attrs.items()}
    return ManifestGroup(arrays=arrays, attributes=attrs)


def _with_variable_metadata(
    array: ManifestArray,
    var: xr.Variable,
    name: Hashable,
    ds: xr.Dataset,
    coord_names: set[Hashable],
) -> ManifestArray:
    attrs = {str(k): encode_zarr_attr_value(v) for k, v in var.attrs.items()}
    fill = attrs.pop("_FillValue", None)
    if fill is not None:
        attrs["_FillValue"] = FillValueCoder.encode(var.attrs["_FillValue"], array.dtype)
    # How the referenced numbers decode is fixed by the files they are in: the array's own
    # decoding attributes are kept (xarray may have dropped them, e.g. combine_attrs="drop"),
    # and a variable whose attributes say otherwise is refused, never written.
    own = array.attributes
    for key in DECODING_ATTRIBUTES:
        if key in attrs and not same_value(attrs[key], own.get(key, _MISSING)):
            raise CombineError(
                f"variable {str(name)!r} has {key}={var.attrs[key]!r}, but its references "
                f"were made with {key}={own.get(key, 'absent')}; writing it "
                "would decode its values wrongly (to change it on purpose, replace the "
                "attributes of the ManifestArray itself: var.data.replace(attributes=...))"
            )
        if key in own:
            attrs[key] = own[key]
    if name not in coord_names and "coordinates" not in attrs:
        # as xarray writes it: the non-index coordinates that share this variable's dims
        extra = [
            str(c)
            for c in coord_names
            if c not in ds.dims and set(ds.variables[c].dims) <= set(var.dims)
        ]
        if extra:
            attrs["coordinates"] = " ".join(sorted(extra))
    return array.replace(attributes=attrs, dimension_names=[str(d) for d in var.dims])


def _inline_arrays(
    ds: xr.Dataset, loaded: Mapping[Hashable, xr.Variable]
) -> dict[str, InlineArray]:
    """Loaded variables encoded by xarray's own zarr writer, as inline arrays."""
    if not loaded:
        return {}
    variables = {}
    for name, var in loaded.items():
        # encodings describe the source file's layout (chunks, shards, compressors of a
        # referenced file): the inline copy is one chunk, compressed as zarr does by default
        keep = {k: v for k, v in var.encoding.items() if k in _VALUE_ENCODINGS}
        variables[name] = var.copy(deep=False)
        variables[name].encoding = keep
    part = xr.Dataset(variables)
    coords = [n for n in loaded if n in ds.coords]
    part = part.set_coords([c for c in coords if c in part.data_vars])
    memory = zarr.storage.MemoryStore()
    part.to_zarr(memory, zarr_format=3, consolidated=False, mode="w", compute=True)
    written = zarr.open_group(memory, mode="r", zarr_format=3)
    out = {}
    for name in loaded:
        arr = written[str(name)]
        if not isinstance(arr, zarr.Array):
            raise MetadataError(f"variable {name!r} was not written as an array")
        out[str(name)] = InlineArray(arr.metadata.to_dict(), np.asarray(arr[...]))
    return out


_MISSING = object()

#: encodings that say how values are stored (not where): kept for inline copies
_VALUE_ENCODINGS = frozenset(
    {
        "units",
        "calendar",
        "dtype",
        "scale_factor",
        "add_offset",
        "_FillValue",
        "missing_value",
        "fill_value",
    }
)


def _nested_paths(paths: Any, storage_options: Mapping[str, Any] | None) -> Any:
    if isinstance(paths, str | os.PathLike):
        return expand_inputs(paths, storage_options)
    return [
        _nested_paths(p, storage_options) if isinstance(p, list | tuple) else os.fspath(p)
        for p in paths
    ]


def _flatten(nested: Any) -> Iterable[str]:
    for item in nested:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


def _unflatten(nested: Any, datasets: Any) -> Any:
    return [_unflatten(p, datasets) if isinstance(p, list) else next(datasets) for p in nested]
