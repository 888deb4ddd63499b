"""The catalog tree of one revision: routes a path to the catalog that holds it.

Starting from the root catalog, a lookup descends into the nested catalog
whose mountpoint is a prefix of the path, fetching it on first use, as the
client's ``MountSubtree`` does (format notes §4.6).  Memory stays bounded:
catalogs are queried in SQLite, at most ``max_catalogs`` are kept open, and
recently used entries are kept in a bounded LRU keyed by path (the warm
lookup path is one dictionary hit).
"""

from __future__ import annotations

import threading
from typing import List, Optional

from cachetools import LRUCache

from uvm.cvmfs.catalog import Catalog, Chunk, DirEntry, NestedRef
from uvm.cvmfs.hashing import ContentHash, Suffix
from uvm.cvmfs.source import ObjectSource
from uvm.errors import CatalogError

DEFAULT_MAX_ENTRIES = 65536
DEFAULT_MAX_CATALOGS = 64

_MISSING = object()


class _CatalogCache(LRUCache):
    """An LRU of open catalogs that closes what it evicts."""

    def popitem(self):
        key, catalog = super().popitem()
        catalog.close()
        return key, catalog


class CatalogTree:
    def __init__(
        self,
        source: ObjectSource,
        root_hash: ContentHash,
        root_size: Optional[int] = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_catalogs: int = DEFAULT_MAX_CATALOGS,
    ) -> None:
        self._source = source
        self.source = source
        self.root_hash = root_hash
        self._lock = threading.RLock()
        self._entries: LRUCache = LRUCache(max_entries)
        self._catalogs = _CatalogCache(max_catalogs)
        self._refs = {"": NestedRef("", root_hash, root_size)}
        self.root = self._load(self._refs[""])

    def _load(self, ref: NestedRef) -> Catalog:
        path = self._source.fetch_object(ref.content_hash, Suffix.CATALOG, expected_size=ref.size)
        catalog = Catalog(path, ref.path, what=f"catalog {ref.content_hash} ({ref.path or '/'})")
        if catalog.root_prefix != ref.path:
            catalog.close()
            raise CatalogError(
                f"catalog {ref.content_hash} has root {catalog.root_prefix!r}, "
                f"expected {ref.path!r}"
            )
        return catalog

    def _catalog(self, mountpoint: str) -> Catalog:
        if mountpoint == "":
            return self.root
        catalog = self._catalogs.get(mountpoint)
        if catalog is None:
            catalog = self._load(self._refs[mountpoint])
            self._catalogs[mountpoint] = catalog
        return catalog

    def catalog_for(self, path: str) -> Catalog:
        """The deepest catalog responsible for ``path`` (a mountpoint belongs to its child)."""
        with self._lock:
            catalog = self.root
            while True:
                ref = catalog.find_nested(path)
                if ref is None:
                    return catalog
                self._refs.setdefault(ref.path, ref)
                catalog = self._catalog(ref.path)

    def lookup(self, path: str) -> Optional[DirEntry]:
        """The entry at ``path`` ('' = root) or None; cached."""
        with self._lock:  # the LRU reorders itself on reads, so even hits lock
            entry = self._entries.get(path, _MISSING)
            if entry is not _MISSING:
                return entry  # type: ignore[return-value]
            entry = self.catalog_for(path).lookup(path)
            self._entries[path] = entry
        return entry

    def listing(self, path: str) -> List[DirEntry]:
        """Children of directory ``path``; nested mountpoints show the child catalog's root."""
        with self._lock:
            entries = self.catalog_for(path).listing(path)
            result = []
            for entry in entries:
                if entry.is_nested_mountpoint:
                    real = self.lookup(entry.path)
                    entry = real if real is not None else entry
                else:
                    self._entries[entry.path] = entry
                result.append(entry)
        return result

    def chunks(self, entry: DirEntry) -> List[Chunk]:
        with self._lock:
            return self.catalog_for(entry.path).chunks(entry)

    def close(self) -> None:
        with self._lock:
            self.root.close()
            for catalog in list(self._catalogs.values()):
                catalog.close()
            self._catalogs.clear()
            self._entries.clear()


__all__ = ["CatalogTree"]
