"""Scenario C100k: full reads of an array of 100,000 tiny chunks (quick: 2,500).

Scenario C's data at a side of 316 (99,856 int32 chunks of (1, 1) in 4 raw files), with
the full read always on: what a reader's per-chunk cost comes to, against Icechunk's.
The implementations and phases are scenario C's (write, open+first, full read); the
baseline is Icechunk, read with zarr's default config.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from harness import IMPLEMENTATIONS, RunConfig, Scenario, register_scenario
from scenarios import c_many_refs
from scenarios.c_many_refs import ManyRefs

SIDE = 316


def params(config: RunConfig) -> dict[str, Any]:
    """Scenario C's parameters at a side of 316 (quick: 50)."""
    return {**c_many_refs.params(config), "side": 50 if config.quick else SIDE}


def load(p: dict[str, Any], directory: Path, config: RunConfig) -> ManyRefs:
    """Scenario C's references, with the full read on."""
    return dataclasses.replace(c_many_refs.load(p, directory, config), full_read=True)


SCENARIO = register_scenario(
    Scenario(
        key="C100k",
        title="100,000 (quick: 2,500) tiny chunks, int32 (1,1) in 4 raw files: full read",
        baseline="icechunk (set_virtual_refs_arr)",
        params=params,
        generate=c_many_refs.generate,
        load=load,
        context=c_many_refs.scratch,
        check=c_many_refs.check,
    )
)

IMPLEMENTATIONS["C100k"]["icechunk (set_virtual_refs_arr)"] = c_many_refs.icechunk_peer(bulk=True)
IMPLEMENTATIONS["C100k"]["kerchunk parquet"] = c_many_refs.kerchunk_parquet
