"""Run the benchmark suite: every scenario against every registered implementation.

Usage::

    python benchmarks/run.py [--scenarios A,R,B,C,random] [--quick] [--out benchmarks/results]
                             [--repeats 3] [--full-read] [--cache-dir DIR] [--only NAMES]
                             [--list]

Prints one table per scenario (best-of-N times, ratios against the scenario's baseline),
and writes ``bench-<time>[-quick].json`` and a ``.png`` bar chart into ``--out``.
Implementations are registered in ``IMPLEMENTATIONS[scenario][name]`` (see harness.py);
besides the peers in ``scenarios/``, every ``benchmarks/impls_*.py`` module is imported so
it can register more (e.g. ``impls_zarr_manifest.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    # run as a script: make harness, scenarios and impls_* importable as top-level modules
    sys.path.insert(0, str(HERE))

from harness import (  # noqa: E402
    IMPLEMENTATIONS,
    SCENARIOS,
    RunConfig,
    add_ratios,
    format_table,
    plot,
    run_scenario,
)
from scenarios import SCENARIO_MODULES  # noqa: E402

PACKAGES = (
    "zarr-manifest",
    "zarr",
    "numpy",
    "obstore",
    "h5py",
    "netCDF4",
    "xarray",
    "virtualizarr",
    "kerchunk",
    "fsspec",
    "fastparquet",
    "icechunk",
)


def load_modules() -> None:
    """Import the scenario modules, then every ``impls_*.py`` plug-in module."""
    for name in SCENARIO_MODULES:
        importlib.import_module(name)
    for path in sorted(HERE.glob("impls_*.py")):
        importlib.import_module(path.stem)


def versions() -> dict[str, str]:
    """Installed versions of the packages the suite touches ("not installed" otherwise)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenarios",
        default=None,
        help="comma-separated scenario keys (default: all, in order: A,R,B,C,random)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke test of the whole suite"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per phase (default 3, quick 2)"
    )
    parser.add_argument(
        "--full-read",
        action="store_true",
        help="scenario C: also read all chunks at full size (minutes; always on with --quick)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "zarr-manifest-bench" / "cache",
        help="where generated data is cached, keyed by its parameters",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated parts of implementation names: run only those, e.g. "
        "--only zarr-manifest,icechunk (ratios need the scenario's baseline among them)",
    )
    parser.add_argument(
        "--list", action="store_true", help="list scenarios and implementations, then exit"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # peers' deprecation and "experimental" chatter would drown the tables
    warnings.simplefilter("ignore")
    os.environ.setdefault("ICECHUNK_LOG", "error")
    load_modules()

    if args.list:
        for key, scenario in SCENARIOS.items():
            print(f"{key}: {scenario.title} (baseline: {scenario.baseline})")
            for name in IMPLEMENTATIONS[key]:
                print(f"    {name}")
        return 0

    if args.only:
        wanted = args.only.split(",")
        for impls in IMPLEMENTATIONS.values():
            for name in list(impls):
                if not any(w in name for w in wanted):
                    del impls[name]

    keys = list(SCENARIOS) if args.scenarios is None else args.scenarios.split(",")
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}", file=sys.stderr)
        return 2
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    config = RunConfig(
        quick=args.quick, repeats=repeats, cache_dir=args.cache_dir, full_read=args.full_read
    )

    started = time.perf_counter()
    reports = {}
    failed = False
    for key in keys:
        print(f"-- scenario {key}", flush=True)
        try:
            reports[key] = run_scenario(SCENARIOS[key], config, log=_log)
        except Exception as exc:
            # a scenario whose data or server cannot be set up must not sink the others
            traceback.print_exc()
            reports[key] = {
                "title": SCENARIOS[key].title,
                "baseline": SCENARIOS[key].baseline,
                "params": {},
                "error": f"{type(exc).__name__}: {exc}",
                "implementations": {},
            }
            failed = True
            continue
        add_ratios(reports[key])

    print()
    for key, report in reports.items():
        if "error" in report:
            print(f"== {key}: {report['title']}\n   scenario failed: {report['error']}\n")
            continue
        print(format_table(key, report))
        print()
        for name, entry in report["implementations"].items():
            if entry["status"] == "error":
                failed = True
                print(f"   {key} / {name} failed:\n{_indent(entry['message'])}")
            elif entry["status"] == "not installed":
                print(f"   {key} / {name}: not installed ({entry['message']})")

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    stem = f"bench-{stamp}{'-quick' if args.quick else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{stem}.json"
    document = {
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "repeats": repeats,
        "full_read": args.full_read,
        "elapsed_s": time.perf_counter() - started,
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "versions": versions(),
        "scenarios": reports,
    }
    json_path.write_text(json.dumps(document, indent=2, default=str))
    png_path = args.out / f"{stem}.png"
    plot(reports, png_path)
    print(f"wrote {json_path}")
    if png_path.exists():
        print(f"wrote {png_path}")
    print(f"total {time.perf_counter() - started:.1f} s")
    return 1 if failed else 0


def _log(message: str) -> None:
    print(message, flush=True)


def _indent(text: str) -> str:
    return "\n".join("      " + line for line in text.rstrip().splitlines())


if __name__ == "__main__":
    sys.exit(main())
