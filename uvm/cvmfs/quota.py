"""Cache size accounting and least-recently-used eviction, in an SQLite ``cachedb``.

Why a database shared by every process rather than per-process bookkeeping:
the cache is shared, so the quota must be too.  The table is the stock
client's ``cache_catalog`` (``sha1`` = hash text with algorithm id, ``size``,
``acseq`` = access sequence, ``type`` 0 regular / 1 catalog, ``pinned``),
plus uvm's own tables:

* ``pins(sha1, pid)``: objects in use by a running process.  A pin of a dead
  process is void; rows are dropped when found stale, so a crash never pins
  an object for ever;
* ``counters(name, value)``: hits, misses, downloads, evictions, persisted so
  that ``uvm cache info`` shows a hit rate across runs.

Eviction follows the stock rule: when an insert pushes usage above the limit,
unpinned entries are removed in LRU order until usage is at most half the
limit.  Access-time updates and counters are batched in memory and written
with the next insert or every few seconds, so that a cache hit costs no
database write.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from uvm import log as uvm_log
from uvm.errors import CacheError

log = uvm_log.get(__name__)

REGULAR, CATALOG = 0, 1
_FLUSH_SECONDS = 5.0
_FLUSH_COUNT = 4096
TOUCH_PRECISION = 60.0
_RECENT_MAX = 1 << 18

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_catalog (
    sha1 TEXT PRIMARY KEY, size INTEGER, acseq INTEGER UNIQUE,
    path TEXT, type INTEGER, pinned INTEGER);
CREATE TABLE IF NOT EXISTS properties (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS pins (sha1 TEXT, pid INTEGER, PRIMARY KEY (sha1, pid));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER);
INSERT OR IGNORE INTO properties VALUES ('schema', '1.0');
"""

COUNTERS = ("hits", "misses", "downloads", "bytes_downloaded", "evictions")


@contextmanager
def _exclusive(directory: str) -> Iterator[None]:
    """``flock`` on a directory: nothing to create, freed by the kernel if we die."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """True unless ``pid`` certainly does not exist (another user's process counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Quota:
    """LRU accounting of one cache directory; thread-safe, multi-process safe.

    ``limit`` is in bytes; ``limit <= 0`` keeps accounting and counters but
    never evicts.  ``remove(key)`` deletes an object file and returns whether
    it is gone; the cache supplies it, so this module never learns the layout.
    """

    def __init__(self, db_path: str, limit: int, remove: Callable[[str], bool],
                 file_mode: Optional[int] = None) -> None:
        self.db_path = db_path
        self.limit = limit
        self._remove = remove
        self._lock = threading.RLock()
        self._touched: Dict[str, None] = {}
        self._counts: Dict[str, int] = {name: 0 for name in COUNTERS}
        self._last_flush = time.monotonic()
        self._my_pins: Dict[str, int] = {}
        self._recent: Dict[str, float] = {}
        self._quick_hits = 0
        new = not os.path.exists(db_path)
        try:
            with _exclusive(os.path.dirname(db_path) or "."):
                self._db = self._connect(db_path)
        except (sqlite3.Error, OSError) as err:
            raise self._error("open", err) from None
        if new and file_mode is not None:
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.chmod(db_path + suffix, file_mode)
                except OSError:
                    pass

    @staticmethod
    def _connect(db_path: str) -> sqlite3.Connection:
        # Switching to WAL and creating the schema can fail with "database is
        # locked" without waiting when another process does the same at that
        # moment, so callers hold the directory lock around this.
        db = sqlite3.connect(db_path, timeout=60.0, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        return db

    # -- errors -------------------------------------------------------------

    def _error(self, action: str, err: Exception) -> CacheError:
        text = str(err)
        if "full" in text or "No space" in text:
            return CacheError(
                f"cache database {self.db_path} is full (no space left on device)",
                hint="lower CVMFS_QUOTA_LIMIT below the free space or run `uvm cache clean`")
        return CacheError(f"cache database {self.db_path}: cannot {action}: {text}",
                          hint="`uvm cache clean` rebuilds it")

    def _transaction(self, action: str, body: Callable[[sqlite3.Connection], object]) -> object:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = body(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.Error as err:
                raise self._error(action, err) from None

    # -- recording ----------------------------------------------------------

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def touch(self, key: str) -> None:
        """Note an access; written lazily (see the module docstring).

        An object accessed again within ``TOUCH_PRECISION`` seconds is not
        re-queued: LRU order at a minute's precision is plenty for eviction,
        and it keeps repeated warm reads free of database writes.
        """
        now = time.monotonic()
        last = self._recent.get(key)
        if last is not None and now - last < TOUCH_PRECISION:
            self._quick_hits += 1  # unlocked: a lost increment only blurs statistics
            return
        with self._lock:
            self._counts["hits"] += 1
            self._recent[key] = now
            if len(self._recent) > _RECENT_MAX:
                self._recent.clear()
            self._touched[key] = None
            due = (len(self._touched) >= _FLUSH_COUNT
                   or now - self._last_flush >= _FLUSH_SECONDS)
        if due:
            self.flush()

    def count_hit(self) -> None:
        """A hit on an object touched less than a minute ago (see :meth:`touch`)."""
        self._quick_hits += 1  # unlocked: a lost increment only blurs statistics

    def insert(self, key: str, size: int, kind: int = REGULAR) -> None:
        """Account a newly committed object; evict if the limit is exceeded."""

        def body(db: sqlite3.Connection) -> None:
            self._flush_locked(db, counters=False)
            seq = self._next_seq(db)
            row = db.execute("SELECT size FROM cache_catalog WHERE sha1=?", (key,)).fetchone()
            self._recent[key] = time.monotonic()  # just got the newest acseq
            if row is None:
                db.execute("INSERT INTO cache_catalog VALUES (?,?,?,?,?,0)",
                           (key, size, seq, key, kind))
                delta = size
            else:
                db.execute("UPDATE cache_catalog SET acseq=?, size=?, type=? WHERE sha1=?",
                           (seq, size, kind, key))
                delta = size - row[0]
            usage = self._add_usage(db, delta)
            if self.limit > 0 and usage > self.limit:
                self._evict_locked(db, self.limit // 2)

        with self._lock:
            self._counts["downloads"] += 1
            self._counts["bytes_downloaded"] += size
            self._transaction("record an object", body)

    def flush(self) -> None:
        """Write batched access times and counters."""
        with self._lock:
            if not self._touched and not self._quick_hits and not any(self._counts.values()):
                self._last_flush = time.monotonic()
                return
            self._transaction("update access times", self._flush_locked)

    def _flush_locked(self, db: sqlite3.Connection, counters: bool = True) -> None:
        if self._touched:
            seq = self._next_seq(db)
            db.executemany("UPDATE cache_catalog SET acseq=? WHERE sha1=?",
                           [(seq + i, key) for i, key in enumerate(self._touched)])
            self._touched.clear()
        if not counters:
            return
        quick, self._quick_hits = self._quick_hits, 0
        self._counts["hits"] += quick
        for name, value in self._counts.items():
            if value:
                db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) "
                           "DO UPDATE SET value = value + excluded.value", (name, value))
                self._counts[name] = 0
        self._last_flush = time.monotonic()

    @staticmethod
    def _next_seq(db: sqlite3.Connection) -> int:
        return (db.execute("SELECT MAX(acseq) FROM cache_catalog").fetchone()[0] or 0) + 1

    @staticmethod
    def _add_usage(db: sqlite3.Connection, delta: int) -> int:
        db.execute("INSERT INTO properties VALUES ('usage', ?) ON CONFLICT(key) DO UPDATE "
                   "SET value = CAST(value AS INTEGER) + ?", (str(delta), delta))
        return int(db.execute("SELECT value FROM properties WHERE key='usage'").fetchone()[0])

    # -- pins ---------------------------------------------------------------

    def pin(self, key: str) -> None:
        """Protect ``key`` from eviction while this process lives (or until unpinned)."""
        with self._lock:
            self._my_pins[key] = self._my_pins.get(key, 0) + 1
            if self._my_pins[key] > 1:
                return
            pid = os.getpid()
            self._transaction("pin an object", lambda db: db.execute(
                "INSERT OR IGNORE INTO pins VALUES (?, ?)", (key, pid)))

    def unpin(self, key: str) -> None:
        with self._lock:
            left = self._my_pins.get(key, 0) - 1
            if left > 0:
                self._my_pins[key] = left
                return
            self._my_pins.pop(key, None)
            pid = os.getpid()
            self._transaction("unpin an object", lambda db: db.execute(
                "DELETE FROM pins WHERE sha1=? AND pid=?", (key, pid)))

    def pinned(self) -> List[str]:
        with self._lock:
            return self._transaction("list pins", lambda db: [
                r[0] for r in db.execute("SELECT DISTINCT sha1 FROM pins")])  # type: ignore

    @staticmethod
    def _drop_stale_pins(db: sqlite3.Connection) -> None:
        for (pid,) in db.execute("SELECT DISTINCT pid FROM pins").fetchall():
            if not pid_alive(pid):
                db.execute("DELETE FROM pins WHERE pid=?", (pid,))

    # -- eviction -----------------------------------------------------------

    def cleanup(self, target: int) -> int:
        """Evict unpinned LRU objects until usage is at most ``target`` bytes."""
        return self._transaction("evict objects",  # type: ignore[return-value]
                                 lambda db: self._evict_locked(db, target))

    def _evict_locked(self, db: sqlite3.Connection, target: int) -> int:
        self._flush_locked(db)
        self._drop_stale_pins(db)
        usage = self._add_usage(db, 0)
        evicted = 0
        while usage > target:
            rows = db.execute(
                "SELECT sha1, size FROM cache_catalog WHERE sha1 NOT IN "
                "(SELECT sha1 FROM pins) ORDER BY acseq LIMIT 256").fetchall()
            if not rows:
                break
            for key, size in rows:
                if usage <= target:
                    break
                if not self._remove(key):
                    log.warning("cannot evict %s from the cache (permissions?)", key)
                db.execute("DELETE FROM cache_catalog WHERE sha1=?", (key,))
                usage = self._add_usage(db, -size)
                evicted += 1
        if evicted:
            db.execute("INSERT INTO counters VALUES ('evictions', ?) ON CONFLICT(name) "
                       "DO UPDATE SET value = value + excluded.value", (evicted,))
            log.info("cache quota: evicted %d objects, %d bytes in use", evicted, usage)
        return evicted

    # -- reporting ----------------------------------------------------------

    def stats(self) -> Dict[str, int]:
        """Usage, object count, pins and persisted counters."""
        self.flush()

        def body(db: sqlite3.Connection) -> Dict[str, int]:
            self._drop_stale_pins(db)
            result = {name: 0 for name in COUNTERS}
            result.update(dict(db.execute("SELECT name, value FROM counters").fetchall()))
            objects, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM cache_catalog").fetchone()
            result["objects"] = objects
            result["usage"] = size
            result["pinned"] = db.execute(
                "SELECT COUNT(DISTINCT sha1) FROM pins").fetchone()[0]
            return result

        return self._transaction("read statistics", body)  # type: ignore[return-value]

    def forget(self, keys: Iterable[str]) -> None:
        """Drop entries whose files are gone (found missing by the cache)."""

        def body(db: sqlite3.Connection) -> None:
            for key in keys:
                row = db.execute("SELECT size FROM cache_catalog WHERE sha1=?",
                                 (key,)).fetchone()
                if row is not None:
                    db.execute("DELETE FROM cache_catalog WHERE sha1=?", (key,))
                    self._add_usage(db, -row[0])

        self._transaction("forget objects", body)

    def rebuild(self, entries: Iterable[Tuple[str, int]]) -> None:
        """Replace the accounting with ``entries`` (key, size), as found on disk."""

        def body(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM cache_catalog")
            db.executemany("INSERT INTO cache_catalog VALUES (?,?,?,?,0,0)",
                           [(k, s, i + 1, k) for i, (k, s) in enumerate(entries)])
            total = db.execute("SELECT COALESCE(SUM(size),0) FROM cache_catalog").fetchone()[0]
            db.execute("INSERT OR REPLACE INTO properties VALUES ('usage', ?)", (str(total),))

        self._transaction("rebuild the accounting", body)

    def close(self) -> None:
        with self._lock:
            try:
                self.flush()
                if self._my_pins:
                    pid = os.getpid()
                    keys = list(self._my_pins)
                    self._transaction("unpin objects", lambda db: db.executemany(
                        "DELETE FROM pins WHERE sha1=? AND pid=?", [(k, pid) for k in keys]))
                    self._my_pins.clear()
            except CacheError as err:
                log.warning("%s", err.one_line())
            finally:
                self._db.close()
