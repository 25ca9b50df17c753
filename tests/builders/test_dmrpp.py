"""The DMR++ builder: sidecars describing HDF5/netCDF-4 files written by h5py, netCDF4 and
xarray, read back through ManifestStore and compared with h5py reading the HDF5 file.

OPeNDAP's ``build_dmrpp`` is not on PyPI, so the sidecars here are written by
`dmrpp_for` (a test fixture) from what h5py says about each dataset: dtype, filters,
fill value, and the byte range of every stored chunk.  The documents ``build_dmrpp``
itself wrote that VirtualiZarr ships in its test suite are parsed too.
"""

from __future__ import annotations

import ast
import importlib.util
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import h5py
import netCDF4
import numpy as np
import pytest
import zarr

from zarr_manifest import BuildError, InlineArray, ManifestGroup, UnsupportedError, open_virtual
from zarr_manifest.builders import detect_format
from zarr_manifest.builders.dmrpp import build_dmrpp

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")

_DAP = {
    "u1": "Byte",
    "i1": "Int8",
    "i2": "Int16",
    "u2": "UInt16",
    "i4": "Int32",
    "u4": "UInt32",
    "i8": "Int64",
    "u8": "UInt64",
    "f4": "Float32",
    "f8": "Float64",
}


# ---- the fixture: a DMR++ document from h5py's view of a file --------------------------------


def _attribute_xml(name: str, value: Any) -> str:
    if isinstance(value, bytes | str):
        text = value.decode() if isinstance(value, bytes) else value
        return (
            f'<Attribute name={quoteattr(name)} type="String"><Value>{escape(text)}</Value>'
            "</Attribute>"
        )
    arr = np.atleast_1d(np.asarray(value))
    if arr.dtype.kind in "OSU":
        texts = [v.decode() if isinstance(v, bytes) else str(v) for v in arr.tolist()]
        values = "".join(f"<Value>{escape(t)}</Value>" for t in texts)
        return f'<Attribute name={quoteattr(name)} type="String">{values}</Attribute>'
    kind = _DAP[arr.dtype.newbyteorder("=").str[1:]]
    values = "".join(f"<Value>{v!r}</Value>" for v in arr.tolist())
    return f'<Attribute name={quoteattr(name)} type="{kind}">{values}</Attribute>'


def _dataset_xml(ds: h5py.Dataset, dim_paths: list[str | None], *, fill_digits: int | None) -> str:
    dtype = ds.dtype
    kind = _DAP[dtype.newbyteorder("=").str[1:]]
    parts = [f"<{kind} name={quoteattr(ds.name.rsplit('/', 1)[-1])}>"]
    parts += [
        f"<Dim name={quoteattr(p)}/>" if p else f'<Dim size="{n}"/>'
        for p, n in zip(dim_paths, ds.shape, strict=True)
    ]
    for key, value in ds.attrs.items():
        if key in ("DIMENSION_LIST", "REFERENCE_LIST", "CLASS", "NAME", "_Netcdf4Dimid"):
            continue
        parts.append(_attribute_xml(key, value))
    words = []
    dcpl = ds.id.get_create_plist()
    for i in range(dcpl.get_nfilters()):
        fid = dcpl.get_filter(i)[0]
        words.append({1: "deflate", 2: "shuffle", 3: "fletcher32"}.get(fid, f"filter{fid}"))
    fill = ds.fillvalue
    fill_text = repr(fill.item()) if fill_digits is None else f"{float(fill):.{fill_digits}g}"
    order = "BE" if dtype.byteorder == ">" else "LE"
    attrs = f'fillValue="{fill_text}" byteOrder="{order}"'
    if words:
        attrs += f' compressionType="{" ".join(words)}"'
    parts.append(f"<dmrpp:chunks {attrs}>")
    if ds.chunks is not None:
        parts.append(f"<dmrpp:chunkDimensionSizes>{' '.join(map(str, ds.chunks))}")
        parts.append("</dmrpp:chunkDimensionSizes>")
        for i in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(i)
            position = ",".join(map(str, info.chunk_offset))
            parts.append(
                f'<dmrpp:chunk offset="{info.byte_offset}" nBytes="{info.size}" '
                f'chunkPositionInArray="[{position}]"/>'
            )
    elif ds.id.get_offset() is not None:
        parts.append(
            f'<dmrpp:chunk offset="{ds.id.get_offset()}" nBytes="{ds.id.get_storage_size()}"/>'
        )
    parts.append(f"</dmrpp:chunks></{kind}>")
    return "".join(parts)


def dmrpp_for(path: Path, *, href: str = "OPeNDAP_DMRpp_DATA_ACCESS_URL", fill_digits=None) -> str:
    """A DMR++ document of an HDF5 file: the test fixture standing in for build_dmrpp.

    Dimensions are the netCDF-4 dimension scales (``<Dim size>`` for axes without one);
    ``fill_digits`` prints fill values as build_dmrpp does (6 digits).
    """

    def group_xml(g: h5py.Group) -> str:
        parts = []
        for name, obj in g.items():
            if isinstance(obj, h5py.Dataset) and obj.attrs.get("CLASS") == b"DIMENSION_SCALE":
                parts.append(f"<Dimension name={quoteattr(name)} size={quoteattr(str(len(obj)))}/>")
        for name, obj in g.items():
            if isinstance(obj, h5py.Group):
                parts.append(f"<Group name={quoteattr(name)}>{group_xml(obj)}</Group>")
            elif isinstance(obj, h5py.Dataset):
                if obj.attrs.get("NAME", b"").startswith(b"This is a netCDF dimension"):
                    continue  # a dimension without a coordinate variable
                dims = [dim[0].name if len(dim) else None for dim in obj.dims]
                if obj.attrs.get("CLASS") == b"DIMENSION_SCALE":
                    dims = [obj.name]  # a coordinate variable: its own dimension
                parts.append(_dataset_xml(obj, dims, fill_digits=fill_digits))
        for key, value in g.attrs.items():
            if key not in ("_NCProperties",):
                parts.append(_attribute_xml(key, value))
        return "".join(parts)

    with h5py.File(path, "r") as f:
        body = group_xml(f)
    return (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n'
        '<Dataset xmlns="http://xml.opendap.org/ns/DAP/4.0#" '
        'xmlns:dmrpp="http://xml.opendap.org/dap/dmrpp/1.0.0#" dapVersion="4.0" '
        f'dmrVersion="1.0" name="{path.name}" dmrpp:href={quoteattr(href)}>'
        f"{body}</Dataset>"
    )


def _sidecar(path: Path, **kwargs: Any) -> Path:
    out = path.with_name(path.name + ".dmrpp")
    out.write_text(dmrpp_for(path, **kwargs))
    return out


def _zarr(group: ManifestGroup) -> zarr.Group:
    from zarr_manifest import ManifestStore

    return zarr.open_group(ManifestStore(group), mode="r")


def _assert_matches_h5py(path: Path, group: ManifestGroup, skip: tuple[str, ...] = ()) -> int:
    z = _zarr(group)
    count = 0
    with h5py.File(path, "r") as f:

        def visit(name: str, obj: Any) -> None:
            nonlocal count
            if not isinstance(obj, h5py.Dataset) or name in skip:
                return
            if obj.attrs.get("NAME", b"").startswith(b"This is a netCDF dimension"):
                return
            got = z[name][...]
            expected = obj[...]
            assert got.dtype == expected.dtype.newbyteorder("="), name
            np.testing.assert_array_equal(got, expected, err_msg=name)
            count += 1

        f.visititems(visit)
    return count


# ---- tests ---------------------------------------------------------------------------------


def test_h5py_chunks_filters_and_fill(tmp_path: Path) -> None:
    """Chunked datasets with deflate, shuffle, fletcher32, big-endian values, partial edge
    chunks and chunks never written (the fill value), next to contiguous ones."""
    path = tmp_path / "data.h5"
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "h5py file"
        f.create_dataset("plain", data=rng.normal(size=(5, 7)))
        f.create_dataset(
            "gz",
            data=rng.integers(0, 1000, (33, 20)).astype("i4"),
            chunks=(8, 6),
            compression="gzip",
            shuffle=True,
            fletcher32=True,
        )
        big = f.create_dataset(
            "big", shape=(10, 10), dtype=">f4", chunks=(4, 4), fillvalue=-5.5, compression="gzip"
        )
        big[0:4, 0:8] = rng.normal(size=(4, 8))  # the other chunks are never written
        f.create_dataset("bytes", data=np.arange(17, dtype="u1"), chunks=(5,))
        f.create_dataset("scalar", data=np.float64(2.5))
        g = f.create_group("sub")
        g.attrs["levels"] = np.array([1, 2, 3], dtype="i2")
        g.create_dataset("u8", data=np.arange(6, dtype="u8") * 2**40, chunks=(4,))
    sidecar = _sidecar(path)
    assert detect_format(sidecar) == "dmrpp"
    group = open_virtual(sidecar)
    assert _assert_matches_h5py(path, group) == 6
    big_meta = group["big"]
    assert len(big_meta.manifest) == 2  # two chunks of nine stored
    names = [c["name"] for c in group["gz"].metadata.to_dict()["codecs"]]
    assert names == ["bytes", "numcodecs.shuffle", "numcodecs.zlib", "numcodecs.fletcher32"]
    assert group.attributes["title"] == "h5py file"
    assert group["sub"].attributes["levels"] == [1, 2, 3]
    # load reads the same values from the data file
    loaded = build_dmrpp(sidecar, load=["gz", "big", "sub/u8"])
    assert isinstance(loaded["gz"], InlineArray)
    assert _assert_matches_h5py(path, loaded) == 6


def test_xarray_netcdf4_defaults(tmp_path: Path) -> None:
    """A netCDF-4 file as xarray writes it by default: dimension names, coordinates,
    _FillValue, and the sidecar's 6-digit fillValue."""
    xr = pytest.importorskip("xarray")
    path = tmp_path / "air.nc"
    ds = xr.Dataset(
        {"air": (("time", "lat", "lon"), np.arange(24, dtype="f8").reshape(2, 3, 4) / 7)},
        coords={"time": [0.0, 6.0], "lat": [10.0, 20.0, 30.0], "lon": np.arange(4.0)},
        attrs={"Conventions": "CF-1.8"},
    )
    ds["air"].attrs["units"] = "K"
    ds["air"].encoding["_FillValue"] = 9.969209968386869e36
    ds.to_netcdf(path)
    group = open_virtual(_sidecar(path, fill_digits=6))
    air = group["air"]
    assert air.dimension_names == ("time", "lat", "lon")
    # the exact attribute wins over the rounded fillValue
    assert air.metadata.fill_value == np.float64(9.969209968386869e36)
    assert _assert_matches_h5py(path, group) == 4
    with xr.open_dataset(path) as expected:
        from zarr_manifest import ManifestStore

        with xr.open_zarr(ManifestStore(group), consolidated=False, zarr_format=3) as got:
            xr.testing.assert_identical(got.load().drop_attrs(), expected.load().drop_attrs())


def test_netcdf4_groups_and_group_option(tmp_path: Path) -> None:
    path = tmp_path / "groups.nc"
    with netCDF4.Dataset(path, "w") as nc:
        g = nc.createGroup("obs").createGroup("deep")
        g.createDimension("n", 5)
        v = g.createVariable("v", "i2", ("n",), zlib=True, fill_value=-1)
        v[:3] = [1, 2, 3]  # the rest is the fill value
    sidecar = _sidecar(path)
    group = build_dmrpp(sidecar)
    assert _assert_matches_h5py(path, group) == 1
    sub = build_dmrpp(sidecar, group="obs/deep")
    np.testing.assert_array_equal(_zarr(sub)["v"][:], [1, 2, 3, -1, -1])
    with pytest.raises(BuildError, match="no group"):
        build_dmrpp(sidecar, group="nope")


def test_refusals(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("lzf", data=np.arange(10.0), chunks=(5,), compression="lzf")
        f.create_dataset("ok", data=np.arange(3, dtype="i4"))
    sidecar = _sidecar(path)
    with pytest.raises(UnsupportedError, match="'lzf' uses filter 'filter32000'"):
        build_dmrpp(sidecar)
    np.testing.assert_array_equal(_zarr(build_dmrpp(sidecar, drop=["lzf"]))["ok"][:], [0, 1, 2])
    text = sidecar.read_text()
    sidecar.write_text(text.replace('byteOrder="LE"', ""))
    with pytest.raises(UnsupportedError, match="byteOrder"):
        build_dmrpp(sidecar, drop=["lzf"])
    # an href naming another file: which file holds the chunks is ambiguous
    other = tmp_path / "y.h5.dmrpp"
    other.write_text(dmrpp_for(path, href="https://archive.example/z.h5"))
    with pytest.raises(BuildError, match="dmrpp:href"):
        build_dmrpp(other, drop=["lzf"])
    group = build_dmrpp(other, drop=["lzf"], data_url=str(path))
    np.testing.assert_array_equal(_zarr(group)["ok"][:], [0, 1, 2])
    strings = tmp_path / "s.h5.dmrpp"
    strings.write_text(text.replace('<Int32 name="ok">', '<String name="s"/><Int32 name="ok">'))
    with pytest.raises(UnsupportedError, match="'s' is of DAP4 type String"):
        build_dmrpp(strings, drop=["lzf"])


def _build_dmrpp_documents() -> dict[str, str]:
    """The documents OPeNDAP's build_dmrpp wrote that VirtualiZarr's tests embed."""
    spec = importlib.util.find_spec("virtualizarr")
    if spec is None or spec.origin is None:
        return {}
    module = Path(spec.origin).parent / "tests" / "test_parsers" / "test_dmrpp.py"
    if not module.is_file():
        return {}
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == (
            "DMRPP_XML_STRINGS"
        ):
            value = node.value
            assert isinstance(value, ast.Dict)
            return {
                ast.literal_eval(k): textwrap.dedent(ast.literal_eval(v.args[0]))  # type: ignore[union-attr,arg-type]
                for k, v in zip(value.keys, value.values, strict=True)
            }
    return {}


@pytest.mark.skipif(not _build_dmrpp_documents(), reason="needs VirtualiZarr's test suite")
def test_build_dmrpp_documents(tmp_path: Path) -> None:
    """Real build_dmrpp output (air.nc, a grouped copy, an empty scalar): structure,
    dimensions, attributes, fill values and chunk references as the document says."""
    docs = _build_dmrpp_documents()
    air = tmp_path / "air.nc.dmrpp"
    air.write_text(docs["netcdf4_file"])
    group = build_dmrpp(air)
    assert group["air"].dimension_names == ("time", "lat", "lon")
    assert group["air"].shape == (2920, 25, 53)
    assert group["air"].metadata.fill_value == -32767
    assert group["air"].metadata.attributes["scale_factor"] == 0.01
    assert group["air"].metadata.attributes["actual_range"] == [185.1600037, 322.1000061]
    entry = group["air"].manifest.get((0, 0, 0))
    assert (entry["offset"], entry["length"]) == (10283, 7738000)
    assert entry["path"].endswith("/air.nc")
    assert "build_dmrpp_metadata" not in group.attributes
    assert group.attributes["Conventions"] == "COARDS"
    grouped = tmp_path / "hdf5_groups_file.nc.dmrpp"
    grouped.write_text(docs["hdf5_groups_file"])
    nested = build_dmrpp(grouped)
    assert nested["test/group/air"].shape == (2920, 25, 53)
    scalar = tmp_path / "fill_value_scalar_no_chunks.nc4.dmrpp"
    scalar.write_text(docs["fill_value_scalar_no_chunks_nc4_url"])
    empty = build_dmrpp(scalar)
    assert empty["data"].shape == ()
    assert _zarr(empty)["data"][()] == -999


def test_malformed_chunk_lists_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=np.arange(12, dtype="i4"), chunks=(4,))
    text = dmrpp_for(path)
    assert 'chunkPositionInArray="[4]"' in text
    sidecar = tmp_path / "c.h5.dmrpp"
    for replacement, error in [
        ('chunkPositionInArray="[5]"', "not on the chunk grid"),
        ('chunkPositionInArray="[0]"', "same position"),
        ('chunkPositionInArray="[4]" fm="1"', "filter mask"),  # a filter skipped
    ]:
        sidecar.write_text(text.replace('chunkPositionInArray="[4]"', replacement))
        with pytest.raises(BuildError, match=error):
            build_dmrpp(sidecar)


def test_over_http(
    clean_range_server: Any, serve_bytes: Callable[[bytes, str], str], tmp_path: Path
) -> None:
    """The sidecar and its granule side by side on an HTTP server."""
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "v", data=np.arange(40, dtype="f4").reshape(5, 8), chunks=(2, 4), compression="gzip"
        )
    data_url = clean_range_server.url_for(serve_bytes(path.read_bytes(), "g.h5"))
    url = clean_range_server.url_for(serve_bytes(dmrpp_for(path).encode(), "g.h5.dmrpp"))
    assert detect_format(url) == "dmrpp"
    group = open_virtual(url, load=["v"])  # load reads the granule over HTTP too
    assert isinstance(group["v"], InlineArray)
    virtual = open_virtual(url)
    assert virtual["v"].manifest.path_table == (data_url,)
    assert _assert_matches_h5py(path, virtual) == 1
    assert _assert_matches_h5py(path, group) == 1
