"""One catalog: a SQLite file queried by path hash, rows turned into ``DirEntry``.

Catalogs are never loaded into Python: each lookup is one indexed query
(format notes §4).  Paths inside a catalog are absolute repository paths
without a trailing slash; the repository root is the empty string.  Names
and symlink targets are the raw bytes the publisher's file system held; they
come back as ``str`` decoded with ``surrogateescape`` so that ``os.fsencode``
restores them byte for byte.
"""

from __future__ import annotations

import hashlib
import sqlite3
import stat
import urllib.parse
from typing import Dict, List, NamedTuple, Optional, Tuple

from uvm.cvmfs.hashing import Algorithm, ContentHash
from uvm.errors import CatalogError, CvmfsError

# flags (format notes §4.3)
FLAG_DIR = 1
FLAG_NESTED_MOUNTPOINT = 2
FLAG_FILE = 4
FLAG_LINK = 8
FLAG_SPECIAL = 16
FLAG_NESTED_ROOT = 32
FLAG_CHUNKED = 64
FLAG_EXTERNAL = 128
FLAG_BIND_MOUNTPOINT = 0x4000
FLAG_HIDDEN = 0x8000
FLAG_DIRECT_IO = 0x10000
COMPRESSION_SHIFT = 11
COMPRESSION_NONE = 1


def encode_path(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def decode_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def md5_pair(path: str) -> Tuple[int, int]:
    """The two signed little-endian 64-bit halves of MD5(path) (``md5path_1``, ``_2``)."""
    digest = hashlib.md5(encode_path(path)).digest()
    return (
        int.from_bytes(digest[:8], "little", signed=True),
        int.from_bytes(digest[8:], "little", signed=True),
    )


def parent_path(path: str) -> str:
    return path.rsplit("/", 1)[0] if path else ""


def parent_pair(path: str) -> Tuple[int, int]:
    """The root's parent hash is all zeroes, every other entry's is MD5 of its parent."""
    return (0, 0) if path == "" else md5_pair(parent_path(path))


def parse_xattrs(blob: Optional[bytes]) -> Dict[str, bytes]:
    """The ``xattr`` column: ``u8 version(1), u8 count``, then ``u8 klen, u8 vlen, key, value``."""
    if not blob:
        return {}
    if len(blob) < 2 or blob[0] != 1:
        raise CatalogError("extended attributes of unknown version")
    count, pos, result = blob[1], 2, {}
    for _ in range(count):
        if pos + 2 > len(blob):
            raise CatalogError("truncated extended attributes")
        klen, vlen = blob[pos], blob[pos + 1]
        pos += 2
        if pos + klen + vlen > len(blob):
            raise CatalogError("truncated extended attributes")
        result[decode_text(blob[pos:pos + klen])] = bytes(blob[pos + klen:pos + klen + vlen])
        pos += klen + vlen
    return result


class DirEntry(NamedTuple):
    """One catalog row, decoded.  ``path`` is the repository path ('' = root)."""

    path: str
    name: str
    mode: int
    size: int
    mtime: int
    mtime_ns: Optional[int]
    uid: int
    gid: int
    flags: int
    content_hash: Optional[ContentHash]
    symlink: str
    hardlink_group: int
    linkcount: int
    xattr: Optional[bytes]

    @property
    def is_dir(self) -> bool:
        return bool(self.flags & FLAG_DIR)

    @property
    def is_symlink(self) -> bool:
        return bool(self.flags & FLAG_LINK)

    @property
    def is_special(self) -> bool:
        return bool(self.flags & FLAG_SPECIAL)

    @property
    def is_regular(self) -> bool:
        return bool(self.flags & FLAG_FILE) and not (self.flags & (FLAG_LINK | FLAG_SPECIAL))

    @property
    def is_chunked(self) -> bool:
        return bool(self.flags & FLAG_CHUNKED)

    @property
    def is_external(self) -> bool:
        return bool(self.flags & FLAG_EXTERNAL)

    @property
    def is_nested_root(self) -> bool:
        return bool(self.flags & FLAG_NESTED_ROOT)

    @property
    def is_nested_mountpoint(self) -> bool:
        return bool(self.flags & FLAG_NESTED_MOUNTPOINT)

    @property
    def is_hidden(self) -> bool:
        return bool(self.flags & FLAG_HIDDEN)

    @property
    def compressed(self) -> bool:
        return ((self.flags >> COMPRESSION_SHIFT) & 0x7) != COMPRESSION_NONE

    @property
    def algorithm(self) -> Algorithm:
        return Algorithm.from_flags(self.flags)

    @property
    def rdev(self) -> int:
        """Device number of a character or block device (stored in ``size``)."""
        return self.size if stat.S_ISCHR(self.mode) or stat.S_ISBLK(self.mode) else 0

    @property
    def st_size(self) -> int:
        """What ``stat`` reports: devices have size 0."""
        return 0 if self.rdev else self.size

    @property
    def xattrs(self) -> Dict[str, bytes]:
        """Extended attributes published with the entry (``security.capability``, ...)."""
        return parse_xattrs(self.xattr)

    @property
    def mtime_float(self) -> float:
        return self.mtime + (self.mtime_ns or 0) / 1e9


class Chunk(NamedTuple):
    offset: int
    size: int
    content_hash: ContentHash


class NestedRef(NamedTuple):
    """A ``nested_catalogs`` row: mountpoint path, catalog hash and SQLite size."""

    path: str
    content_hash: ContentHash
    size: Optional[int]


class Catalog:
    """A read-only catalog file; ``mountpoint`` is its root path ('' for the root catalog)."""

    def __init__(self, db_path: str, mountpoint: str = "", what: str = "catalog") -> None:
        self.db_path = db_path
        self.mountpoint = mountpoint
        uri = "file:" + urllib.parse.quote(db_path) + "?mode=ro&immutable=1"
        try:
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._db.text_factory = decode_text
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(catalog)")}
            self.properties: Dict[str, str] = dict(
                self._db.execute("SELECT key, value FROM properties")
            )
        except sqlite3.DatabaseError as err:
            self.close()
            raise CatalogError(f"{what} is not a CernVM-FS catalog ({err})") from None
        required = {"md5path_1", "md5path_2", "parent_1", "parent_2", "hardlinks",
                    "hash", "size", "mode", "mtime", "flags", "name", "symlink", "uid", "gid"}
        if not required <= columns:
            self.close()
            raise CatalogError(f"{what} lacks catalog columns {sorted(required - columns)}")
        self._fields = (
            "hash, hardlinks, size, mode, mtime, flags, name, symlink, uid, gid, "
            + ("xattr, " if "xattr" in columns else "NULL, ")
            + ("mtimens" if "mtimens" in columns else "NULL")
        )
        self._nested: Optional[Dict[str, NestedRef]] = None
        self._nested_has_size = "size" in {
            row[1] for row in self._db.execute("PRAGMA table_info(nested_catalogs)")
        }

    # --- properties -----------------------------------------------------------

    @property
    def schema(self) -> float:
        return float(self.properties.get("schema", "1.0"))

    @property
    def revision(self) -> int:
        return int(self.properties.get("revision", "0"))

    @property
    def ttl(self) -> Optional[int]:
        value = self.properties.get("TTL")
        return int(value) if value is not None else None

    @property
    def root_prefix(self) -> str:
        return self.properties.get("root_prefix", "")

    def statistics(self) -> Dict[str, int]:
        return dict(self._db.execute("SELECT counter, value FROM statistics"))

    # --- entries ----------------------------------------------------------------

    def _entry(self, path: str, row: tuple) -> DirEntry:
        blob, hardlinks, size, mode, mtime, flags, name, symlink, uid, gid, xattr, mtimens = row
        hardlinks = hardlinks or 0
        try:
            content_hash = ContentHash.from_catalog(blob, flags)
        except CvmfsError as err:
            raise CatalogError(f"catalog entry {path or '/'}: {err}") from None
        return DirEntry(
            path=path,
            name=name or "",
            mode=mode,
            size=size or 0,
            mtime=mtime or 0,
            mtime_ns=mtimens,
            uid=uid or 0,
            gid=gid or 0,
            flags=flags,
            content_hash=content_hash,
            symlink=symlink or "",
            hardlink_group=(hardlinks >> 32) & 0xFFFFFFFF,
            linkcount=hardlinks & 0xFFFFFFFF,
            xattr=bytes(xattr) if xattr is not None else None,
        )

    def lookup(self, path: str) -> Optional[DirEntry]:
        """The row for ``path`` or None."""
        row = self._db.execute(
            f"SELECT {self._fields} FROM catalog WHERE md5path_1 = ? AND md5path_2 = ?",
            md5_pair(path),
        ).fetchone()
        return self._entry(path, row) if row else None

    def listing(self, path: str) -> List[DirEntry]:
        """The rows whose parent is ``path``, sorted by name bytes."""
        rows = self._db.execute(
            f"SELECT {self._fields} FROM catalog WHERE parent_1 = ? AND parent_2 = ?",
            md5_pair(path),
        ).fetchall()
        entries = [self._entry(f"{path}/{row[6]}", row) for row in rows]
        entries.sort(key=lambda entry: encode_path(entry.name))
        return entries

    def chunks(self, entry: DirEntry) -> List[Chunk]:
        """The chunk list of a chunked file, ordered by offset."""
        algorithm = entry.algorithm
        rows = self._db.execute(
            "SELECT offset, size, hash FROM chunks WHERE md5path_1 = ? AND md5path_2 = ? "
            "ORDER BY offset",
            md5_pair(entry.path),
        ).fetchall()
        return [Chunk(offset, size, ContentHash(algorithm, bytes(blob)))
                for offset, size, blob in rows]

    def nested_catalogs(self) -> List[NestedRef]:
        """The immediate children of this catalog (read once, they are few)."""
        if self._nested is None:
            self._nested = {ref.path: ref for ref in self._read_nested()}
        return list(self._nested.values())

    def _read_nested(self) -> List[NestedRef]:
        size = "size" if self._nested_has_size else "NULL"
        refs = []
        for path, hash_text, nested_size in self._db.execute(
            f"SELECT path, sha1, {size} FROM nested_catalogs"
        ):
            try:
                refs.append(NestedRef(path, ContentHash.parse(hash_text), nested_size))
            except CvmfsError:
                raise CatalogError(f"nested catalog {path}: bad hash {hash_text!r}") from None
        return refs

    def find_nested(self, path: str) -> Optional[NestedRef]:
        """The immediate nested catalog whose mountpoint is ``path`` or contains it."""
        self.nested_catalogs()
        assert self._nested is not None
        if not self._nested:
            return None
        prefix = path
        while len(prefix) > len(self.mountpoint):
            ref = self._nested.get(prefix)
            if ref is not None:
                return ref
            prefix = parent_path(prefix)
        return None

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
            self._db = None  # type: ignore[assignment]
