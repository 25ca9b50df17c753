"""What a `ManifestStore` keeps of the manifests it parsed: a least-recently-used set of
whole manifests and split-manifest regions, bounded in bytes.  An evicted one is parsed
again (and its references checked again) when next needed."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["DEFAULT_MANIFEST_CACHE_BYTES", "ManifestCache"]

#: the default bound: room for the entries of some 80 million chunks, far more than the
#: arrays a dataset reads at once usually hold, while a store fed tiny manifests that
#: expand to huge grids (a hostile or broken store) keeps at most this plus the newest
DEFAULT_MANIFEST_CACHE_BYTES = 1 << 30


class ManifestCache:
    """An LRU over parsed manifests and regions, bounded by their size in memory.

    Parameters
    ----------
    limit
        The bound in bytes.  The most recently added entry is kept whatever its size
        (a read needs it); older ones are dropped until the rest fits.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: the bytes held by the entries now kept
        self.size = 0
        self._entries: OrderedDict[Hashable, tuple[int, Callable[[], None]]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: Hashable, nbytes: int, drop: Callable[[], None]) -> None:
        """Keep an entry of ``nbytes`` bytes; ``drop`` forgets it when it is evicted."""
        victims = []
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.size -= old[0]
            self._entries[key] = (nbytes, drop)
            self.size += nbytes
            while self.size > self.limit and len(self._entries) > 1:
                _, (size, evict) = self._entries.popitem(last=False)
                self.size -= size
                victims.append(evict)
        # outside the lock: a drop takes no lock, but must not run under this one either
        for evict in victims:
            evict()

    def touch(self, key: Hashable) -> None:
        """Mark an entry as just used."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)

    def discard(self, key: Hashable) -> None:
        """Forget an entry without dropping it (its owner dropped it already)."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.size -= old[0]
