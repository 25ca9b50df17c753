"""The corpus' fast subset (CI): sample files inside the installed test-extra packages.

No download: scipy, h5py, xarray and astropy ship sample files in their wheels.  Every file
must read like its own library reads it, or be refused with a documented error; a file
listed in `KNOWN` is expected to fail (strict: it must be removed once it passes).  The full
run over downloaded packages is ``./dev.sh corpus``.
"""

from __future__ import annotations

import pytest

from corpus import PACKAGES, collect_installed, evaluate

#: Files that do not read right yet: display path -> why (strict xfail).
KNOWN: dict[str, str] = {
    "h5py/tests/data_files/vlen_string_dset.h5": "HDF5 variable-length strings",
    "h5py/tests/data_files/vlen_string_dset_utc.h5": "HDF5 variable-length strings",
    "h5py/tests/data_files/vlen_string_s390x.h5": "HDF5 variable-length strings",
    "astropy/io/fits/hdu/compressed/tests/data/compressed_with_nan.fits": "FITS tile compression",
    "astropy/io/fits/hdu/compressed/tests/data/m13_gzip.fits": "FITS tile compression",
    "astropy/io/fits/hdu/compressed/tests/data/m13_hcomp.fits": "FITS tile compression",
    "astropy/io/fits/hdu/compressed/tests/data/m13_plio.fits": "FITS tile compression",
    "astropy/io/fits/hdu/compressed/tests/data/m13_rice.fits": "FITS tile compression",
    "astropy/io/fits/tests/data/blank.fits": "FITS BLANK",
    "astropy/io/fits/tests/data/chandra_time.fits": "FITS array-valued table columns",
    "astropy/io/fits/tests/data/comp.fits": "FITS tile compression",
    "astropy/io/fits/tests/data/compressed_float_bzero.fits": "FITS tile compression",
    "astropy/io/fits/tests/data/compressed_image.fits": "FITS tile compression",
    "astropy/io/fits/tests/data/double_ext.fits": "FITS tile compression",
    "astropy/io/fits/tests/data/group.fits": "FITS random groups",
    "astropy/io/fits/tests/data/invalid/group_invalid.fits": "FITS random groups",
    "astropy/io/fits/tests/data/logical_null.fits": "FITS logical columns",
    "astropy/io/fits/tests/data/memtest.fits": "FITS array-valued table columns",
    "astropy/io/fits/tests/data/random_groups.fits": "FITS random groups",
    "astropy/io/fits/tests/data/stddata.fits": "FITS array-valued table columns",
    "astropy/io/fits/tests/data/tb.fits": "FITS scaled table columns",
    "astropy/io/fits/tests/data/tdim.fits": "FITS array-valued table columns",
    "astropy/io/fits/tests/data/theap-gap.fits": "FITS variable-length columns",
    "astropy/io/fits/tests/data/variable_length_table.fits": "FITS variable-length columns",
    "astropy/io/fits/tests/data/vla_logical_all_zero.fits": "FITS variable-length columns",
    "astropy/io/fits/tests/data/vla_logical_null.fits": "FITS variable-length columns",
    "astropy/io/fits/tests/data/vla_logical_pre_fix.fits": "FITS variable-length columns",
    "astropy/io/fits/tests/data/zerowidth.fits": "FITS array-valued table columns",
    "astropy/io/votable/tests/data/tb.fits": "FITS scaled table columns",
    "astropy/wcs/tests/data/header_with_time.fits": "FITS header integer beyond 64 bits",
    "astropy/wcs/tests/data/header_with_time_wcslib71.fits": "FITS header integer beyond 64 bits",
    "astropy/wcs/tests/data/tab-time-last-axis.fits": "FITS array-valued table columns",
    "astropy/wcs/wcsapi/tests/data/example_4d_tab.fits": "FITS array-valued table columns",
}


def _id(path: str) -> str:
    return path.split("site-packages/", 1)[-1]


def _files() -> list[tuple[str, str, str]]:
    return [(p.name, fmt, str(path)) for p in PACKAGES for fmt, path in collect_installed(p)]


FILES = _files()
PARAMS = [
    pytest.param(
        *f,
        id=_id(f[2]),
        marks=[pytest.mark.xfail(strict=True, reason=KNOWN[_id(f[2])])]
        if _id(f[2]) in KNOWN
        else [],
    )
    for f in FILES
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("package", "fmt", "path"), PARAMS)
def test_sample_file_reads_like_its_library(package: str, fmt: str, path: str) -> None:
    result = evaluate(fmt, path, package)
    if result.status == "skipped":
        pytest.skip(result.reason)
    assert result.status in ("right", "refused"), f"{result.status}: {result.reason}"


def test_the_subset_is_not_empty() -> None:
    formats = {fmt for _, fmt, _ in FILES}
    assert {"fits", "netcdf3", "hdf5"} <= formats, formats
