"""Scenario C1M: full reads of an array of one million tiny chunks (quick: 2,500).

Scenario C's data as it is (1000 x 1000 int32 chunks of (1, 1) in 4 raw files; the
cache is C's), with the full read always on, against Icechunk only: issue 16's row
"1M tiny chunks, full read, default path, >= 10x Icechunk".  Icechunk's full read of a
million chunks takes about five minutes, zarr-manifest's default path two to three, so
this scenario adds about eight minutes to a full run; the other readers of scenario C
(kerchunk JSON and parquet: six minutes or more each) are left to ``C --full-read``, and
zarr-manifest's "fused, virtual_shard_bytes=None" opt-in (about 90 s here, no goal of its
own) to C100k.  Every full read also reports the process's peak RSS during the read and
how much it grew over the RSS before it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from harness import IMPLEMENTATIONS, RunConfig, Scenario, register_scenario
from scenarios import c_many_refs
from scenarios.c_many_refs import ManyRefs


def load(p: dict[str, Any], directory: Path, config: RunConfig) -> ManyRefs:
    """Scenario C's references, with the full read on."""
    return dataclasses.replace(c_many_refs.load(p, directory, config), full_read=True)


SCENARIO = register_scenario(
    Scenario(
        key="C1M",
        title="1,000,000 (quick: 2,500) tiny chunks, int32 (1,1) in 4 raw files: full read",
        baseline="icechunk (set_virtual_refs_arr)",
        params=c_many_refs.params,
        generate=c_many_refs.generate,
        load=load,
        context=c_many_refs.scratch,
        check=c_many_refs.check,
        cache_key="C",  # the same parameters as C: one data directory for both
    )
)

IMPLEMENTATIONS["C1M"]["icechunk (set_virtual_refs_arr)"] = c_many_refs.icechunk_peer(bulk=True)
