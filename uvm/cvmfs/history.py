"""The history (tag) database: read tags, find one by name or date, and write new ones.

A SQLite file of schema 1.0 revision 3 (format notes §5), stored as a
``H`` object named by the manifest.  Reading resolves ``--tag`` and
``--date`` the way ``MountPoint::DetermineRootHash`` does; writing is what a
publish adds: ``trunk``, ``trunk-previous`` and an optional named tag.
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
import urllib.parse
from typing import List, NamedTuple, Optional

from uvm.cvmfs.hashing import ContentHash
from uvm.errors import CatalogError, CvmfsError, TagNotFoundError

SCHEMA = "1.0"
SCHEMA_REVISION = "3"
TRUNK = "trunk"
TRUNK_PREVIOUS = "trunk-previous"

_FIELDS = "name, hash, revision, timestamp, channel, description, size, branch"


class Tag(NamedTuple):
    name: str
    root_hash: ContentHash
    revision: int
    timestamp: int
    description: str = ""
    size: int = 0
    branch: str = ""
    channel: int = 0


def parse_date(text: str) -> int:
    """ISO 8601 date or time (UTC unless it says otherwise) → Unix seconds."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        when = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise CvmfsError(
            f"{text!r} is not an ISO 8601 date", hint="use e.g. 2024-05-01T12:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return int(when.timestamp())


def _row_to_tag(row: tuple) -> Tag:
    name, hash_text, revision, timestamp, channel, description, size, branch = row
    try:
        root_hash = ContentHash.parse(hash_text)
    except CvmfsError:
        raise CatalogError(f"history tag {name!r} has a malformed hash {hash_text!r}") from None
    return Tag(name, root_hash, int(revision), int(timestamp), description or "",
               int(size or 0), branch or "", int(channel or 0))


class History:
    """A history database file, read-only unless opened with ``writable``."""

    def __init__(self, db_path: str, writable: bool = False) -> None:
        mode = "rw" if writable else "ro"
        uri = "file:" + urllib.parse.quote(db_path) + f"?mode={mode}"
        try:
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(tags)")}
        except sqlite3.DatabaseError as err:
            raise CatalogError(f"history database is not SQLite ({err})") from None
        if "name" not in columns:
            self._db.close()
            raise CatalogError("history database has no tags table")
        # older schema revisions lack 'size' (rev 0) and 'branch' (before rev 3)
        fields = _FIELDS if "size" in columns else _FIELDS.replace("size", "0")
        self._fields = fields if "branch" in columns else fields.replace("branch", "''")
        self._has_branch = "branch" in columns

    @classmethod
    def create(cls, db_path: str, fqrn: str) -> "History":
        """A new empty database with the stock schema and properties."""
        db = sqlite3.connect(db_path)
        with db:
            db.executescript(
                "CREATE TABLE properties (key TEXT, value TEXT, "
                "CONSTRAINT pk_properties PRIMARY KEY (key));"
                "CREATE TABLE branches (branch TEXT, parent TEXT, initial_revision INTEGER, "
                "CONSTRAINT pk_branch PRIMARY KEY (branch));"
                "CREATE TABLE tags (name TEXT, hash TEXT, revision INTEGER, "
                "timestamp INTEGER, channel INTEGER, description TEXT, size INTEGER, "
                "branch TEXT, CONSTRAINT pk_tags PRIMARY KEY (name), "
                "FOREIGN KEY (branch) REFERENCES branches (branch));"
                "CREATE TABLE recycle_bin (hash TEXT, flags INTEGER, "
                "CONSTRAINT pk_hash PRIMARY KEY (hash));"
                "INSERT INTO branches (branch, parent, initial_revision) VALUES ('', NULL, 0);"
            )
            db.executemany(
                "INSERT INTO properties (key, value) VALUES (?, ?)",
                [("schema", SCHEMA), ("schema_revision", SCHEMA_REVISION), ("fqrn", fqrn)],
            )
        db.close()
        return cls(db_path, writable=True)

    # --- reading ------------------------------------------------------------------

    def property(self, key: str) -> Optional[str]:
        row = self._db.execute("SELECT value FROM properties WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def tags(self) -> List[Tag]:
        """Every tag, newest revision first (``SqlListTags``)."""
        rows = self._db.execute(
            f"SELECT {self._fields} FROM tags ORDER BY revision DESC, name"
        ).fetchall()
        return [_row_to_tag(row) for row in rows]

    def find(self, name: str) -> Tag:
        row = self._db.execute(
            f"SELECT {self._fields} FROM tags WHERE name = ? LIMIT 1", (name,)
        ).fetchone()
        if row is None:
            raise TagNotFoundError(f"no tag named {name!r} in the repository history")
        return _row_to_tag(row)

    def find_by_date(self, timestamp: int) -> Tag:
        """The newest trunk tag published at or before ``timestamp``."""
        branch = "branch = '' AND " if self._has_branch else ""
        row = self._db.execute(
            f"SELECT {self._fields} FROM tags WHERE {branch}timestamp <= ? "
            "ORDER BY revision DESC LIMIT 1",
            (timestamp,),
        ).fetchone()
        if row is None:
            when = _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc)
            raise TagNotFoundError(
                f"no revision was published at or before {when:%Y-%m-%dT%H:%M:%SZ}")
        return _row_to_tag(row)

    # --- writing ------------------------------------------------------------------

    def set_tag(self, tag: Tag) -> None:
        """Insert or replace one tag."""
        with self._db:
            self._db.execute(
                f"INSERT OR REPLACE INTO tags ({_FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (tag.name, str(tag.root_hash), tag.revision, tag.timestamp, tag.channel,
                 tag.description, tag.size, tag.branch),
            )

    def set_property(self, key: str, value: str) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO properties (key, value) VALUES (?, ?)", (key, value)
            )

    def close(self) -> None:
        self._db.close()
