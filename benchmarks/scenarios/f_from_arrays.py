"""Scenario F: a chunk manifest built from grid-shaped columns, as a parser hands them over.

One million references (quick: 2,500) on a (1000, 1000) chunk grid into 4 files, given as
three numpy arrays shaped like the grid: paths as ``StringDType`` (what a parser or a
combine produces), offsets and lengths as uint64.  Two layouts of the same 4 paths:

- ``runs``: each file's chunks side by side (row blocks, as scenario C);
- ``interleaved``: chunk ``i`` in file ``i % 4`` (a round-robin writer, or a grid
  concatenated along its fastest axis).

Each layout is a phase ``"from_arrays (<layout>)"``; implementations build their in-memory
manifest from the columns (nothing is written).  The check compares the built manifest's
paths, offsets and lengths with the columns.

Data handed to factories: :class:`Columns`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import IMPLEMENTATIONS, Phase, RunConfig, Scenario, expect, register_scenario

LAYOUTS = ("runs", "interleaved")
N_FILES = 4


@dataclass(frozen=True)
class Columns:
    """The grid-shaped reference columns of scenario F, per layout.

    Attributes
    ----------
    paths
        ``{layout: StringDType array of the grid's shape}``.
    offsets, lengths
        uint64 arrays of the grid's shape (the same for both layouts).
    """

    paths: dict[str, np.ndarray]
    offsets: np.ndarray
    lengths: np.ndarray

    @property
    def count(self) -> int:
        """Number of references."""
        return int(self.offsets.size)


def params(config: RunConfig) -> dict[str, Any]:
    """Grid side (quick: 50)."""
    return {"side": 50 if config.quick else 1000, "files": N_FILES}


def generate(p: dict[str, Any], directory: Path) -> None:
    """Nothing to write: the columns are built in memory by `load`."""


def load(p: dict[str, Any], directory: Path, config: RunConfig) -> Columns:
    """Build the columns: 4 paths of 48 characters, lengths 20-40 kB, offsets back to back."""
    side, nfiles = p["side"], p["files"]
    n = side * side
    names = np.array(
        [f"s3://benchmark-bucket/model/run/output_{k:04d}.nc" for k in range(nfiles)],
        dtype=np.dtypes.StringDType(),
    )
    lengths = np.random.default_rng(0).integers(20_000, 40_000, size=n, dtype=np.uint64)
    offsets = (4096 + np.concatenate(([0], np.cumsum(lengths)[:-1]))).astype(np.uint64)
    file_of = {"runs": np.arange(n) * nfiles // n, "interleaved": np.arange(n) % nfiles}
    return Columns(
        paths={k: names[v].reshape(side, side) for k, v in file_of.items()},
        offsets=offsets.reshape(side, side),
        lengths=lengths.reshape(side, side),
    )


def phase_name(layout: str) -> str:
    """The phase measuring ``layout``."""
    return f"from_arrays ({layout})"


def check(phase: str, result: Any, data: Columns) -> None:
    """The manifest holds every column value."""
    layout = next(k for k in LAYOUTS if phase.startswith(phase_name(k)))
    for column in ("paths", "offsets", "lengths"):
        # VirtualiZarr keeps its columns private (``_paths``)
        got = getattr(result, column, None)
        got = getattr(result, f"_{column}") if got is None else got
        expected = data.paths[layout] if column == "paths" else getattr(data, column)
        expect(np.array_equal(np.asarray(got), expected), f"{phase}: {column} differ")


def phases(data: Columns, build: Any, *, slow: bool = False) -> dict[str, Phase]:
    """One phase per layout timing ``build(paths, offsets, lengths)``.

    ``slow`` (seconds per call at full size): one timed call, no warm-up, no memory run.
    """
    out = {}
    for layout in LAYOUTS:
        paths = data.paths[layout]

        def fn(paths: np.ndarray = paths) -> Any:
            return build(paths, data.offsets, data.lengths)

        if slow and data.count >= 100_000:
            out[phase_name(layout)] = Phase(fn, repeats=1, warmup=False, per=data.count)
        else:
            out[phase_name(layout)] = Phase(fn, memory=True, per=data.count)
    return out


def virtualizarr_from_arrays(data: Columns) -> dict[str, Phase]:
    """VirtualiZarr ``ChunkManifest.from_arrays`` with its defaults (paths validated)."""
    from virtualizarr.manifests import ChunkManifest

    def build(paths: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> Any:
        return ChunkManifest.from_arrays(paths=paths, offsets=offsets, lengths=lengths)

    return phases(data, build, slow=True)


SCENARIO = register_scenario(
    Scenario(
        key="F",
        title="ChunkManifest.from_arrays, 1M (quick: 2,500) refs, StringDType paths, 4 files",
        baseline="virtualizarr",
        params=params,
        generate=generate,
        load=load,
        check=check,
    )
)

IMPLEMENTATIONS["F"]["virtualizarr"] = virtualizarr_from_arrays
