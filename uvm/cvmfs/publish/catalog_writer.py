"""Writes one catalog SQLite file of schema 2.5, revision 7, as the stock publisher does.

Tables, columns, indexes and properties follow ``CatalogDatabase::
CreateEmptyDatabase`` / ``InsertInitialValues`` (format notes §4); the
statistics table carries every ``self_``/``subtree_`` counter of revision 7.
Names and link targets are stored as TEXT holding the raw file-system bytes
(``CAST(? AS TEXT)`` over a BLOB), exactly what the C++ publisher stores,
so non-UTF-8 names survive.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from uvm.cvmfs.catalog import encode_path, md5_pair, parent_pair
from uvm.cvmfs.hashing import ContentHash

SCHEMA = "2.5"
SCHEMA_REVISION = "7"

COUNTERS = (
    "regular", "symlink", "special", "dir", "nested", "chunked", "chunked_size",
    "chunks", "file_size", "xattr", "external", "external_file_size",
)

_CREATE = (
    "CREATE TABLE catalog (md5path_1 INTEGER, md5path_2 INTEGER, parent_1 INTEGER, "
    "parent_2 INTEGER, hardlinks INTEGER, hash BLOB, size INTEGER, mode INTEGER, "
    "mtime INTEGER, mtimens INTEGER, flags INTEGER, name TEXT, symlink TEXT, "
    "uid INTEGER, gid INTEGER, xattr BLOB, "
    "CONSTRAINT pk_catalog PRIMARY KEY (md5path_1, md5path_2));"
    "CREATE INDEX idx_catalog_parent ON catalog (parent_1, parent_2);"
    "CREATE TABLE chunks (md5path_1 INTEGER, md5path_2 INTEGER, offset INTEGER, "
    "size INTEGER, hash BLOB, "
    "CONSTRAINT pk_chunks PRIMARY KEY (md5path_1, md5path_2, offset, size), "
    "FOREIGN KEY (md5path_1, md5path_2) REFERENCES catalog(md5path_1, md5path_2));"
    "CREATE TABLE nested_catalogs (path TEXT, sha1 TEXT, size INTEGER, "
    "CONSTRAINT pk_nested_catalogs PRIMARY KEY (path));"
    "CREATE TABLE bind_mountpoints (path TEXT, sha1 TEXT, size INTEGER, "
    "CONSTRAINT pk_bind_mountpoints PRIMARY KEY (path));"
    "CREATE TABLE statistics (counter TEXT, value INTEGER, "
    "CONSTRAINT pk_statistics PRIMARY KEY (counter));"
    "CREATE TABLE properties (key TEXT, value TEXT, "
    "CONSTRAINT pk_properties PRIMARY KEY (key));"
)

_INSERT = (
    "INSERT INTO catalog (md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, "
    "size, mode, mtime, mtimens, flags, name, symlink, uid, gid, xattr) VALUES "
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS TEXT), CAST(? AS TEXT), ?, ?, ?)"
)


@dataclass
class Counters:
    """One catalog's statistics: its own entries and those of its nested subtree."""

    self_: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    subtree: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))

    def add_child(self, child: "Counters") -> None:
        for name in COUNTERS:
            self.subtree[name] += child.self_[name] + child.subtree[name]

    def rows(self) -> List[Tuple[str, int]]:
        return [(f"self_{n}", v) for n, v in self.self_.items()] + [
            (f"subtree_{n}", v) for n, v in self.subtree.items()
        ]


@dataclass(frozen=True)
class Row:
    """One entry as the publisher scanned it; ``path`` is the repository path."""

    path: str
    flags: int
    mode: int
    size: int
    mtime: int
    mtime_ns: Optional[int]
    uid: int
    gid: int
    hardlinks: int
    content_hash: Optional[ContentHash] = None
    symlink: str = ""
    name: Optional[str] = None


class CatalogWriter:
    """Collects rows for one catalog in a SQLite file and finalizes it."""

    def __init__(self, db_path: str, mountpoint: str) -> None:
        self.db_path = db_path
        self.mountpoint = mountpoint
        self.counters = Counters()
        self._db = sqlite3.connect(db_path)
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("PRAGMA journal_mode = MEMORY")
        self._db.executescript(_CREATE)
        self._db.execute("BEGIN")
        self._rows: List[tuple] = []

    def add(self, row: Row) -> None:
        name = row.name if row.name is not None else row.path.rsplit("/", 1)[-1]
        self._rows.append((
            *md5_pair(row.path), *parent_pair(row.path), row.hardlinks,
            row.content_hash.digest if row.content_hash else None,
            row.size, row.mode, row.mtime, row.mtime_ns, row.flags,
            encode_path(name), encode_path(row.symlink), row.uid, row.gid, None,
        ))
        if len(self._rows) >= 4096:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._db.executemany(_INSERT, self._rows)
            self._rows = []

    def add_chunks(self, path: str, chunks: List[Tuple[int, int, ContentHash]]) -> None:
        pair = md5_pair(path)
        self._db.executemany(
            "INSERT INTO chunks (md5path_1, md5path_2, offset, size, hash) VALUES (?, ?, ?, ?, ?)",
            [(*pair, offset, size, content_hash.digest) for offset, size, content_hash in chunks],
        )

    def add_nested(self, path: str, content_hash: ContentHash, size: int) -> None:
        self._db.execute(
            "INSERT INTO nested_catalogs (path, sha1, size) VALUES (CAST(? AS TEXT), ?, ?)",
            (encode_path(path), str(content_hash), size),
        )

    def finish(self, properties: Dict[str, str]) -> None:
        """Write statistics and properties, commit and close the file."""
        self._flush()
        self._db.executemany(
            "INSERT INTO statistics (counter, value) VALUES (?, ?)", self.counters.rows()
        )
        props = {"schema": SCHEMA, "schema_revision": SCHEMA_REVISION, **properties}
        if self.mountpoint:
            props["root_prefix"] = self.mountpoint
        self._db.executemany(
            "INSERT INTO properties (key, value) VALUES (?, CAST(? AS TEXT))",
            [(key, encode_path(value)) for key, value in props.items()],
        )
        self._db.commit()
        self._db.close()

    def abort(self) -> None:
        self._db.close()
