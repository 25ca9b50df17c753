"""What the manifest.json codec's writer and readers share: the flat columns a decoded
manifest becomes (`DecodedManifest`), the largest offset or length, and how messages name
the file at fault.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: offsets, lengths and their sum must stay below this (they are read as int64)
MAX_OFFSET = 2**63 - 1


@dataclass(frozen=True, slots=True)
class DecodedManifest:
    """The flat columns of a decoded manifest.json, one row per entry, in file order.

    Attributes
    ----------
    indices
        ``(n, ndim)`` int64 chunk grid indices (``(n, 0)`` for a 0-d array).
    path_table
        The distinct paths, in order of first appearance.
    path_ids
        ``(n,)`` int64 index into ``path_table``.
    offsets, lengths
        ``(n,)`` uint64.

    No two rows have the same indices: the decoders reject repeated keys.
    """

    indices: np.ndarray
    path_table: list[str]
    path_ids: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray


def in_location(location: str | None) -> str:
    return f" in {location}" if location else ""
