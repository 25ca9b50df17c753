"""The corpus' GRIB entry: how cfgrib reads a GRIB file, by the paths ``open_virtual`` uses.

To be registered by ``tests/corpus/corpus.py`` (which has the ``Format`` hook)::

    from grib_format import grib_magic, grib_reference
    register(Format("grib", grib_magic, grib_reference))

cfgrib opens each variable (``paramId``) with ``filter_by_keys``, splitting further where it
has to (``multiple values for unique key``, the ``filter_by_keys`` its error lists) — the
same walk ``zarr_manifest.builders.grib`` makes — so each dataset's variable and
coordinates are at ``<variable>/<stepType>/<typeOfLevel>[/<key>=<value>...]/<name>``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["grib_magic", "grib_readable", "grib_reference"]


def grib_magic(head: bytes) -> bool:
    """A GRIB file (edition 1 or 2) starts with ``GRIB``."""
    return head.startswith(b"GRIB") and len(head) > 7 and head[7] in (1, 2)


def grib_readable(path: Path) -> int:
    """The number of messages eccodes reads, every value decoded (raises when it cannot):
    cfgrib's whole reading takes minutes on some files that only need this answer."""
    import eccodes

    count = 0
    with open(path, "rb") as f:
        while (handle := eccodes.codes_grib_new_from_file(f)) is not None:
            try:
                eccodes.codes_get_values(handle)
            finally:
                eccodes.codes_release(handle)
            count += 1
    if not count:
        raise ValueError(f"{path}: no GRIB message")
    return count


def _datasets(path: Path, fbk: dict[str, Any]) -> Iterator[tuple[dict[str, Any], Any]]:
    import xarray as xr
    from cfgrib.dataset import DatasetBuildError

    try:
        ds = xr.open_dataset(
            path,
            engine="cfgrib",
            backend_kwargs={"indexpath": "", "filter_by_keys": fbk},
            decode_times=False,  # raw values, as stored inline
            decode_timedelta=False,
        )
    except DatasetBuildError as e:
        for sub in e.args[2]:
            yield from _datasets(path, dict(sub))
        return
    yield fbk, ds


def grib_reference(path: Path) -> dict[str, Any]:
    """``{array path: values}`` of every variable and coordinate cfgrib reads."""
    import logging

    from cfgrib import messages
    from cfgrib.dataset import open_fileindex

    logging.getLogger("cfgrib").setLevel(logging.ERROR)
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = open_fileindex(messages.FileStream(str(path)), indexpath="")
        for param_id in index["paramId"]:
            for fbk, ds in _datasets(path, {"paramId": param_id}):
                for cf_name, var in ds.data_vars.items():
                    # a parameter eccodes does not know: the builder names it by its paramId
                    # (several unknown parameters would all be cfgrib's "unknown")
                    name = (
                        f"paramId_{param_id}" if cf_name in ("unknown", "undef") else str(cf_name)
                    )
                    parts = [
                        name,
                        str(var.attrs.get("GRIB_stepType", "undef")),
                        str(var.attrs.get("GRIB_typeOfLevel", "undef")),
                    ]
                    parts += [
                        f"{k}={v}"
                        for k, v in fbk.items()
                        if k not in ("paramId", "stepType", "typeOfLevel")
                    ]
                    leaf = "/".join(parts)
                    out[f"{leaf}/{name}"] = var.values
                    for c in var.coords:
                        out[f"{leaf}/{c}"] = ds[c].values
    return out
