"""Parsing speed: ``zm.open_virtual`` against VirtualiZarr 2.8's parser, file by file.

    python benchmarks/bench_parsers.py [--formats hdf5,netcdf3,fits,grib,tiff]
                                       [--repeats 3] [--limit N] [--json out.json]

The files are the corpus' (``tests/corpus/corpus.py``, its download cache: run
``./dev.sh corpus`` once first).  For every file, each of these is called ``--repeats``
times after one untimed warm-up call, and the fastest call counts:

- ``zm.open_virtual(path, format=...)``: our default (1-D dimension coordinates loaded);
- ``zm.open_virtual(..., load=())``: everything referenced, nothing read but headers;
- VirtualiZarr 2.8's parser for the format: ``HDFParser``, ``NetCDF3Parser`` or ``FITSParser``
  called on a ``file://`` URL with an ``ObjectStoreRegistry`` holding an obstore
  ``LocalStore`` (metadata and references only, like ``load=()``).  VirtualiZarr has no
  GRIB or TIFF parser of its own; for those the peer is kerchunk's scanner
  (``kerchunk.grib2.scan_grib``: one reference set per message;
  ``kerchunk.tiff.tiff_to_zarr``), each reference set read by ``KerchunkJSONParser``.

Only files that both sides open are compared (a refusal or error on either side leaves the
file out; the counts are printed).  A peer that has not returned after ``--timeout``
seconds is stopped with SIGALRM (kerchunk's ``scan_grib`` loops on zero padding after
the last message) and counts as not opened.  Printed per format: files compared, median
and p90 of the per-file times, and the ratio peer / ours of the medians (> 1: we are
faster).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "corpus"))

import corpus
import zarr_manifest as zm


class Timeout(Exception):
    """A call ran longer than ``--timeout``."""


def _alarm(signum: int, frame: Any) -> None:
    raise Timeout


def best_of(call: Callable[[], Any], repeats: int, timeout: float) -> float | None:
    """The fastest of ``repeats`` timed calls after a warm-up, or None if a call fails."""
    signal.signal(signal.SIGALRM, _alarm)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                call()  # warm-up: imports, first-use caches
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - start)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except (Exception, Timeout):
        return None
    return min(times)


def virtualizarr_call(fmt: str, path: Path, workdir: Path) -> Callable[[], Any] | None:
    """VirtualiZarr 2.8's way to parse ``path`` (None: no parser for ``fmt``)."""
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr.parsers import FITSParser, HDFParser, KerchunkJSONParser, NetCDF3Parser

    registry = ObjectStoreRegistry({"file://": LocalStore()})
    url = path.resolve().as_uri()
    parsers: dict[str, Any] = {"hdf5": HDFParser, "netcdf3": NetCDF3Parser, "fits": FITSParser}
    if fmt in parsers:
        parser = parsers[fmt]()
        return lambda: parser(url, registry=registry)
    if fmt not in ("grib", "tiff"):
        return None
    refs_file = workdir / f"{abs(hash(str(path)))}.json"

    def scan_and_parse() -> Any:
        # the references are made inside the timed call: they are the parsing
        if fmt == "grib":
            from kerchunk.grib2 import scan_grib

            documents = scan_grib(str(path))  # one reference set per message
        else:
            from kerchunk.tiff import tiff_to_zarr

            documents = [tiff_to_zarr(url)]
        stores = []
        for refs in documents:
            if "refs" not in refs:
                # tiff_to_zarr: version 0 references of a root array; VirtualiZarr reads
                # version 1 references of a group, so the array becomes the group's "data"
                if ".zarray" in refs:
                    refs = {".zgroup": '{"zarr_format": 2}'} | {
                        f"data/{k}": v for k, v in refs.items()
                    }
                refs = {"version": 1, "refs": refs}
            refs_file.write_text(json.dumps(refs))
            stores.append(KerchunkJSONParser()(refs_file.resolve().as_uri(), registry=registry))
        return stores

    return scan_and_parse


def summary(seconds: list[float]) -> tuple[float, float]:
    """Median and 90th percentile (ms)."""
    return (
        1000 * statistics.median(seconds),
        1000 * float(np.percentile(seconds, 90)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--formats", default="hdf5,netcdf3,fits,grib,tiff")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="files per format (0: all)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per file and side")
    parser.add_argument("--cache", type=Path, default=corpus.DEFAULT_CACHE)
    parser.add_argument("--json", type=Path, default=None, help="write per-file times")
    args = parser.parse_args()
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    files = corpus.gather(corpus.PACKAGES, set(formats), args.cache, installed=False)
    by_format: dict[str, list[Path]] = defaultdict(list)
    for _, fmt, path in files:
        if not args.limit or len(by_format[fmt]) < args.limit:
            by_format[fmt].append(path)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            for path in by_format[fmt]:
                peer = virtualizarr_call(fmt, path, Path(tmp))
                if peer is None:
                    continue
                default = functools.partial(zm.open_virtual, path, format=fmt)
                ours = best_of(default, args.repeats, args.timeout)
                ours_refs = best_of(functools.partial(default, load=()), args.repeats, args.timeout)
                theirs = best_of(peer, args.repeats, args.timeout)
                rows.append(
                    {
                        "format": fmt,
                        "file": str(path),
                        "ours": ours,
                        "ours_load_none": ours_refs,
                        "virtualizarr": theirs,
                    }
                )
                print(
                    f"{fmt:<8} {corpus._display(str(path))}: ours {ours} load=() {ours_refs} "
                    f"peer {theirs}",
                    file=sys.stderr,
                )

    load = os.getloadavg()[0]
    print(f"\nparse time per file, ms (best of {args.repeats}; 1-min load {load:.1f})\n")
    print(
        "| format | files both open | ours: median | p90 | ours load=(): median | p90 "
        "| VirtualiZarr: median | p90 | ratio VZ/ours (median) | only ours | only VZ |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fmt in formats:
        mine = [r for r in rows if r["format"] == fmt]
        both = [r for r in mine if r["ours"] is not None and r["virtualizarr"] is not None]
        only_ours = sum(r["ours"] is not None and r["virtualizarr"] is None for r in mine)
        only_vz = sum(r["ours"] is None and r["virtualizarr"] is not None for r in mine)
        if not both:
            print(f"| {fmt} | 0 | | | | | | | | {only_ours} | {only_vz} |")
            continue
        o = summary([r["ours"] for r in both])
        n = summary([r["ours_load_none"] for r in both if r["ours_load_none"] is not None])
        v = summary([r["virtualizarr"] for r in both])
        print(
            f"| {fmt} | {len(both)} | {o[0]:.1f} | {o[1]:.1f} | {n[0]:.1f} | {n[1]:.1f} "
            f"| {v[0]:.1f} | {v[1]:.1f} | {v[0] / o[0]:.2f} | {only_ours} | {only_vz} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
