"""Chunk keys: what a store key names.  `KeyRouter` keeps the nodes a store has loaded and
resolves a key to a chunk of a virtual array, a shard of one shown with virtual shards, a
merged chunk of one shown merged, served metadata bytes, a hidden object, or an ordinary
object of the root storage."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from zarr_manifest.store._merged_chunks import AUTO_MERGED_CHUNK_BYTES, MergedChunk
from zarr_manifest.store._nodes import ZARR_JSON, LoadedNode
from zarr_manifest.store._references import CheckedSources, Chunk
from zarr_manifest.store._shard_view import Shard
from zarr_manifest.store._virtual_shards import (
    AUTO_MAX_CHUNK_BYTES,
    AUTO_SHARD_BYTES,
    bulk_shard_pipeline,
)

if TYPE_CHECKING:
    from zarr.core.chunk_key_encodings import ChunkKeyEncoding

__all__ = [
    "HIDDEN",
    "KeyRouter",
    "is_valid_key",
    "is_zarr_json",
    "key_decoder",
    "node_dir",
]

#: what a key routes to when zarr must not see it (a manifest, a stray file of a
#: virtual array's directory, an invalid key)
HIDDEN = object()

#: a routed key: a chunk, a shard, a merged chunk, served bytes, HIDDEN, or None (an
#: ordinary object)
Target = Chunk | Shard | MergedChunk | bytes | object | None
#: how an array is shown: as stored, as virtual shards, or with merged chunks
View = Literal["plain", "shards", "merged"]


class KeyRouter:
    """The nodes a store has loaded, and what each key names.

    Parameters
    ----------
    load
        Loads the node at a path from the store (None: there is none).
    sources
        The store's checked sources, handed to the chunks and shards it routes to.
    shard_bytes
        The store's ``virtual_shard_bytes`` (None or 0: arrays are shown as they are;
        ``"auto"``: as shards of `AUTO_SHARD_BYTES` when that helps, see `adopt`).
    merged_bytes
        The store's ``merged_chunk_bytes`` (None or 0: never merged; ``"auto"``: merged
        up to `AUTO_MERGED_CHUNK_BYTES` when zarr's pipeline is not a bulk one).
    """

    def __init__(
        self,
        load: Callable[[str], LoadedNode | None],
        sources: CheckedSources,
        shard_bytes: int | Literal["auto"] | None,
        merged_bytes: int | Literal["auto"] | None = None,
    ) -> None:
        self._load = load
        self._sources = sources
        self._shard_bytes = shard_bytes
        self._merged_bytes = merged_bytes
        self._lock = threading.RLock()
        self.nodes: dict[str, LoadedNode | None] = {}
        #: whether the store shows one snapshot's version (spec 16): then a zarr.json
        #: that is no node of it (a writer added it since) is hidden, not read through
        self.snapshot = False
        # virtual arrays whose chunk keys are "<path>/c/i/j...": the per-chunk fast path
        self._chunk_prefixes: dict[str, LoadedNode] = {}
        # with "auto": arrays adopted but not yet looked up, whose view is not chosen yet
        self._undecided: set[str] = set()
        #: with "auto": the view chosen per array path, and views to take instead of
        #: choosing (a pickled or forked copy of the store keeps the original's: the zarr
        #: arrays it serves were opened with them)
        self.chosen: dict[str, View] = {}
        self.inherited: dict[str, View] = {}

    def route(self, key: str) -> Target:
        """What ``key`` is (see the module docstring); the fast path first."""
        return self._fast_chunk(key) or self._route(key)

    def _route(self, key: str) -> Target:
        if not is_valid_key(key):
            return HIDDEN  # "", "a/", "a//b", "../x": no object has such a key
        node = self.owner(key)
        if node is None:
            if is_zarr_json(key):
                doc = self.node(node_dir(key))
                if doc is not None:
                    return doc.served
                if self.snapshot:
                    return HIDDEN
            return None
        rest = key[len(node.path) + 1 :] if node.path else key
        if rest == ZARR_JSON:
            return node.served
        if rest == node.manifest_key:
            return HIDDEN
        if node.manifest_key is None:
            return None
        index = node.decode(rest)
        if index is None:
            return HIDDEN
        return self._target(node, index, key)

    def _target(self, node: LoadedNode, index: tuple[int, ...], key: str) -> Target:
        if node.shards is not None:
            return Shard(self._sources, node, index, key)
        if node.merged is not None:
            return MergedChunk(self._sources, node, index, key)
        return Chunk(self._sources, node, index, key)

    def _fast_chunk(self, key: str) -> Target:
        """The chunk a key names, for the common case ``<array>/c/i/j...`` of an array
        already seen; None sends the key the general way."""
        cut = key.find("/c/")
        if cut < 0:
            return None
        node = self._chunk_prefixes.get(key[:cut])
        if node is None:
            return None
        # an array holds no nodes, so a known array at this prefix owns the key
        index = node.decode(key[cut + 1 :])
        if index is None:
            return None
        return self._target(node, index, key)

    def owner(self, key: str) -> LoadedNode | None:
        """The array whose directory holds ``key``, if any (first array from the root)."""
        parts = key.split("/")
        for depth in range(len(parts)):
            prefix = "/".join(parts[:depth])
            node = self.node(prefix)
            if node is not None and node.is_array:
                return node if depth < len(parts) else None
        return None

    def node(self, path: str) -> LoadedNode | None:
        """The node at ``path``, loaded on first use (None: there is none)."""
        try:
            found = self.nodes[path]
        except KeyError:
            pass
        else:
            if path in self._undecided:
                self._choose_view(path)
            return found
        with self._lock:
            if path in self.nodes:
                if path in self._undecided:
                    self._choose_view(path)
                return self.nodes[path]
            node = self._load(path)
            self.nodes[path] = node
            if node is not None:
                self.adopt(node)
                if path in self._undecided:  # the view is chosen before anything is served
                    self._choose_view(path)
            return node

    def forget_absent(self, path: str) -> None:
        """Look ``path`` up again next time if it was found to hold no node."""
        with self._lock:
            if self.nodes.get(path, False) is None:
                del self.nodes[path]

    def adopt(self, node: LoadedNode) -> None:
        """Set up a node just loaded: its key decoder, virtual shards, the fast path."""
        self.nodes[node.path] = node
        if not node.is_array:
            return
        encoding = node.metadata.chunk_key_encoding
        node.decoder = key_decoder(encoding, len(node.metadata.shape))
        if node.manifest_key is None:
            return
        if "auto" in (self._shard_bytes, self._merged_bytes):
            # chosen on the first look-up (`node`), not now: an in-memory group's arrays
            # are adopted when the store is made, before zarr's pipeline is configured
            self._undecided.add(node.path)
            return
        self._present(node, "shards" if self._shard_bytes else "merged")
        self._enable_fast_path(node)

    def _choose_view(self, path: str) -> None:
        """``"auto"``: show the array at ``path`` as shards if zarr's configured pipeline
        reads them in bulk, else with merged chunks (see `_merged_chunks`).  Chosen once,
        when zarr first opens the array (or a listing first looks at it): keys must name
        the same objects for the store's lifetime."""
        with self._lock:
            if path not in self._undecided:
                return
            node = self.nodes[path]
            assert node is not None
            wanted: View | Literal["sparse"] | bool | None = self.inherited.get(path)
            if wanted is None:
                bulk = bulk_shard_pipeline()
                if self._shard_bytes == "auto":
                    wanted = "shards" if bulk else "sparse"
                elif self._shard_bytes:
                    wanted = "shards"
                else:
                    wanted = "plain" if bulk and self._merged_bytes == "auto" else "merged"
            self._present(node, wanted)
            # what it is shown as (a view it is not eligible for is the plain one)
            self.chosen[path] = "shards" if node.shards else "merged" if node.merged else "plain"
            self._enable_fast_path(node)
            self._undecided.discard(path)

    def _present(self, node: LoadedNode, view: View | Literal["sparse"] | bool) -> None:
        """Show ``node`` as ``view`` if it is eligible for it (an array not eligible for
        shards may still be merged); True and False are the views of older pickles.
        ``"sparse"``: shards if the array is sparse, else merged."""
        if view == "sparse":
            # a sparse array is shown as shards whatever the pipeline: zarr fills its absent
            # shards in one go each (see `sparse_chunks_per_shard`)
            node.present_as_shards(
                AUTO_SHARD_BYTES, max_chunk_bytes=AUTO_MAX_CHUNK_BYTES, sparse_only=True
            )
            if node.shards is not None:
                return
            view = "merged"
        if view in ("shards", True):
            if self._shard_bytes == "auto":
                node.present_as_shards(AUTO_SHARD_BYTES, max_chunk_bytes=AUTO_MAX_CHUNK_BYTES)
            elif self._shard_bytes:
                node.present_as_shards(self._shard_bytes)
            if node.shards is not None or not isinstance(self._merged_bytes, int):
                return
        if view in ("shards", "merged", True) and self._merged_bytes:
            if self._merged_bytes == "auto":
                node.present_merged(AUTO_MERGED_CHUNK_BYTES, auto=True)
            else:
                node.present_merged(self._merged_bytes, auto=False)

    def _enable_fast_path(self, node: LoadedNode) -> None:
        encoding = node.metadata.chunk_key_encoding
        if node.path and encoding.name == "default" and encoding.separator == "/":
            self._chunk_prefixes[node.path] = node


def is_valid_key(key: str) -> bool:
    """Whether ``key`` can name an object: not empty, no empty, ``.`` or ``..`` part."""
    return bool(key) and all(part not in ("", ".", "..") for part in key.split("/"))


def is_zarr_json(key: str) -> bool:
    """Whether ``key`` names a node's metadata document."""
    return key == ZARR_JSON or key.endswith("/" + ZARR_JSON)


def node_dir(zarr_json_key: str) -> str:
    """The node path of a zarr.json key ("" for the root)."""
    return zarr_json_key[: -len(ZARR_JSON)].rstrip("/")


def key_decoder(encoding: ChunkKeyEncoding, ndim: int) -> Callable[[str], tuple[int, ...] | None]:
    """A fast chunk-key parser for an encoding: the key relative to the array, or None."""
    name = encoding.name
    sep: str = encoding.separator  # type: ignore[attr-defined]  # both encodings have one
    if name == "default":
        if ndim == 0:
            return lambda rest: () if rest == "c" else None
        head = "c" + sep

        def decode_default(rest: str) -> tuple[int, ...] | None:
            if not rest.startswith(head):
                return None
            return _indices(rest[2:].split(sep), ndim)

        return decode_default
    if ndim == 0:
        return lambda rest: () if rest == "0" else None
    return lambda rest: _indices(rest.split(sep), ndim)


def _indices(parts: list[str], ndim: int) -> tuple[int, ...] | None:
    if len(parts) != ndim:
        return None
    for p in parts:
        # Only the exact encoding of an index is a chunk key: "01" or "+1" must be absent
        # (spec 9.2), not an alias of chunk 1.
        if not (p.isdigit() and p.isascii()) or (p[0] == "0" and len(p) > 1):
            return None
    return tuple(map(int, parts))
