"""`upgrade`: rewrite a store that another writer made into the specification's current form.

Today the one such writer is VirtualiZarr 1.x (spec section 17).  The store is read with
``compat="virtualizarr-1"`` and published over itself like any replacement
(`zarr_manifest.format.publish`): under the writer lock, manifests under new names, one
snapshot as the commit.  Until `~zarr_manifest.format.publish.clean` removes them, the old
``manifest.json`` files stay, so a reader that had opened the old store keeps reading it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from zarr_manifest.errors import ManifestFormatError
from zarr_manifest.format.hierarchy import read_hierarchy, write_group
from zarr_manifest.format.location import open_location
from zarr_manifest.format.publish import read_snapshot
from zarr_manifest.format.virtualizarr1 import VIRTUALIZARR_1
from zarr_manifest.group import ManifestGroup

__all__ = ["upgrade"]


def upgrade(
    store: str | os.PathLike[str] | Any,
    *,
    storage_options: Mapping[str, Any] | None = None,
    **obstore_kwargs: Any,
) -> bool:
    """Rewrite the manifest store ``store``, written by VirtualiZarr 1.x, in the current form.

    The values read are the same before and after: only the two deviations of section 17
    are repaired (the fill value spelled ``"NaN"``, the ``bytes`` codec put back), and
    the plain-reader guard is added.  References are kept as they are.

    Parameters
    ----------
    store
        The store (local path, URL or obstore store).
    storage_options
        For a URL: credentials and client settings in obstore's vocabulary (see
        `zarr_manifest.open_virtual`).
    **obstore_kwargs
        Options too (the older form); merged into ``storage_options``.

    Returns
    -------
    bool
        True if the store was rewritten; False if it already followed the specification
        (nothing is written then).

    Raises
    ------
    ManifestFormatError
        The store follows neither the specification nor VirtualiZarr 1.x's form; the
        message names the file at fault.  Nothing is written.
    ConcurrentWriteError
        Another writer holds the store's lock, or published while it was read.
    """
    if storage_options is not None:
        obstore_kwargs = {**obstore_kwargs, "storage_options": storage_options}
    # the version read: publish only if no other writer published since (VirtualiZarr 1.x
    # wrote no snapshot; an upgrade killed after its commit left one)
    base = read_snapshot(open_location(store, **obstore_kwargs))
    try:
        read_hierarchy(store, **obstore_kwargs)
        return False
    except ManifestFormatError:
        pass
    stored = read_hierarchy(store, compat=VIRTUALIZARR_1, **obstore_kwargs)
    group = ManifestGroup._from_stored(stored)
    write_group(
        group, store, overwrite=True, if_snapshot=base, compat=VIRTUALIZARR_1, **obstore_kwargs
    )
    return True
