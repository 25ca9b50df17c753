"""`ManifestArray` as a duck array: what xarray's combining calls is answered with
references, and everything that needs values says to load the variable."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import zarr_manifest as zm

LOAD = "load the variable"


def virtual(
    shape=(4, 6), chunks=(2, 3), path="file:///data/a.nc", attributes=None, dtype="float32"
) -> zm.ManifestArray:
    grid = tuple(-(-s // c) for s, c in zip(shape, chunks, strict=True))
    n = int(np.prod(grid))
    offsets = (np.arange(n) * 1000).reshape(grid)
    metadata = {
        "shape": list(shape),
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default"},
        "fill_value": 0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": dict(attributes or {}),
    }
    manifest = zm.ChunkManifest.from_arrays(paths=path, offsets=offsets, lengths=np.full(grid, 24))
    return zm.ManifestArray(metadata, manifest)


def test_is_a_duck_array_xarray_wraps():
    a = virtual()
    v = xr.Variable(("y", "x"), a)
    assert v._data is a
    assert (v.shape, v.dtype, v.ndim, v.size) == ((4, 6), np.float32, 2, 24)
    assert a[...] is a and a[:, :] is a


def test_concatenate_and_stack_join_references():
    a, b = virtual(path="file:///data/a.nc"), virtual(path="file:///data/b.nc")
    joined = np.concatenate([a, b], axis=0)
    assert joined == zm.ManifestArray.concat([a, b], axis=0)
    assert joined.shape == (8, 6)
    v = xr.Variable.concat([xr.Variable(("y", "x"), a), xr.Variable(("y", "x"), b)], "x")
    assert v.shape == (4, 12)
    assert v._data.manifest["0.2"]["path"] == "file:///data/b.nc"
    stacked = xr.Variable.concat([xr.Variable(("y", "x"), a), xr.Variable(("y", "x"), b)], "t")
    assert stacked.dims == ("t", "y", "x")
    assert stacked._data.manifest["1.0.0"]["path"] == "file:///data/b.nc"
    assert stacked._data.chunks == (1, 2, 3)


def test_expand_dims_and_broadcast_of_length_one_axes():
    a = virtual()
    expanded = xr.Variable(("y", "x"), a).set_dims({"t": 1, "y": 4, "x": 6})
    assert expanded.shape == (1, 4, 6) and expanded._data.chunks == (1, 2, 3)
    assert np.expand_dims(a, 2).shape == (4, 6, 1)
    wide = np.broadcast_to(np.expand_dims(a, 0), (3, 4, 6))
    assert wide.shape == (3, 4, 6)
    assert wide.manifest["2.1.1"] == a.manifest["1.1"]
    assert np.broadcast_to(a, (2, 4, 6)).manifest["1.0.1"] == a.manifest["0.1"]
    with pytest.raises(ValueError, match="cannot broadcast"):
        np.broadcast_to(a, (5, 6))
    # a length-1 axis chunked longer (padded) is not a repeat of whole chunks
    padded = virtual(shape=(1, 6), chunks=(2, 3))
    with pytest.raises(TypeError, match=LOAD):
        np.broadcast_to(padded, (4, 6))


def test_result_type():
    a = virtual()
    assert np.result_type(a, a) == np.float32
    assert np.result_type(a, np.nan) == np.float32  # a scalar fill value
    assert np.result_type(a, np.float64(0)) == np.float32
    with pytest.raises(TypeError, match=LOAD):
        np.result_type(a, virtual(dtype="int16"))


def test_transpose_only_where_the_chunk_layout_allows():
    a = virtual()
    assert np.transpose(a, (0, 1)) is a
    with pytest.raises(TypeError, match=LOAD):
        a.transpose()
    three = np.expand_dims(a, 0)  # (1, 4, 6), chunks (1, 2, 3)
    moved = three.transpose(1, 0, 2)
    assert moved.shape == (4, 1, 6) and moved.chunks == (2, 1, 3)
    assert moved.manifest["1.0.1"] == three.manifest["0.1.1"]
    assert xr.Variable(("t", "y", "x"), three).transpose("y", "x", "t").shape == (4, 6, 1)


@pytest.mark.parametrize(
    "operation",
    [
        lambda v: np.asarray(v._data),
        lambda v: v + 1,
        lambda v: -v,
        lambda v: v.isel(y=0).values,
        lambda v: v[[0, 2]].values,
        lambda v: v.mean().values,
        lambda v: v.astype("float64").values,
        lambda v: np.isnan(v._data),
        lambda v: v._data > 0,
    ],
    ids=["asarray", "add", "neg", "isel", "fancy", "mean", "astype", "isnan", "compare"],
)
def test_anything_needing_values_says_load_the_variable(operation):
    v = xr.Variable(("y", "x"), virtual())
    with pytest.raises(TypeError, match=LOAD):
        operation(v)


def test_concatenating_different_decoding_attributes_is_refused():
    a = virtual(attributes={"scale_factor": 0.01, "units": "K"})
    b = virtual(attributes={"scale_factor": 0.02, "units": "K"})
    with pytest.raises(zm.CombineError, match=r"scale_factor is 0\.01 .* 0\.02"):
        np.concatenate([a, b])
    c = virtual(attributes={"scale_factor": 0.01})
    with pytest.raises(zm.CombineError, match=r"units is 'K' .* absent"):
        xr.Variable.concat([xr.Variable(("y", "x"), a), xr.Variable(("y", "x"), c)], "y")
    same = virtual(attributes={"scale_factor": 0.01, "units": "K", "long_name": "other"})
    assert np.concatenate([a, same]).shape == (8, 6)
