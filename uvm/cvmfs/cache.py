"""The on-disk, content-addressed object cache shared by every uvm process.

Layout (the stock client's POSIX cache, ``cvmfs-format.md`` §6.5), below
``<base>/shared``:

``00/`` … ``ff/``
    objects, decompressed, named ``XX/<rest of hash><algorithm id>`` without
    the type suffix; catalogs are opened in place as SQLite files.  A prefix
    directory is made when the first object of its prefix is stored (a cold
    start stores a dozen objects: making all 256 up front was a tenth of its
    time on a disk where creating an inode costs 0.1-0.5 ms).
``txn/``
    downloads in progress, named ``<pid>.<random>``; renamed into place only
    after the decoder verified hash and size.  Files of dead processes are
    removed when a cache is opened, so ``kill -9`` leaves nothing behind that
    could ever be served.
``quarantaine/``
    objects whose size contradicted the catalog, kept for inspection (made
    when the first one is).
Download locks
    ``fcntl.flock`` on the prefix directories (made for the lock if need
    be): one process downloads an object, the others wait and then find it.  The kernel drops a dead
    process's lock, so nobody waits for ever.
``manifests/``
    the last verified ``.cvmfspublished`` / ``.cvmfswhitelist`` per
    repository, for offline runs and runs within the TTL, and
    ``FQRN.uvmverified``, what they were verified with, for runs past it
    (:mod:`uvm.cvmfs.head`).
``cachedb``
    the quota database (:mod:`uvm.cvmfs.quota`).
``generation``
    an 8-byte counter, memory-mapped by every process and incremented
    before any object is removed.  A process remembers which objects it has
    seen on disk; while the counter is unchanged a cache hit needs no system
    call at all, which keeps warm runs as fast as reading a plain directory.

Sharing between users: if the base directory already exists and is group-
or other-writable (an administrator's ``mkdir -m 2775`` or ``1777``), new
directories get the same permission bits and files are world-readable, so
every user whose group allows it shares one cache.  Otherwise directories are
created for the current user only (the default under ``$XDG_CACHE_HOME``).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

from uvm import log as uvm_log
from uvm._native import Decoder
from uvm.cvmfs.head import bootstrap_dir
from uvm.cvmfs.hashing import ContentHash
from uvm.cvmfs.quota import CATALOG, REGULAR, Quota, pid_alive
from uvm.errors import CacheError, DecodeError, DecodeFailure

log = uvm_log.get(__name__)

_MB = 1 << 20


def _no_space(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left" in str(err) or "quota exceeded" in str(err).lower():
            return True
        err = err.__cause__  # type: ignore[assignment]
    return False


class Cache:
    """One cache directory: lookups, locked verified inserts, quota, information."""

    def __init__(self, base: str, quota_limit_mb: int = 4000) -> None:
        self.base = os.path.abspath(os.path.expanduser(base))
        self.root = os.path.join(self.base, "shared")
        self.txn_dir = os.path.join(self.root, "txn")
        self.quarantine_dir = os.path.join(self.root, "quarantaine")
        self.manifest_dir = bootstrap_dir(self.base)
        self._dir_mode, self._file_mode = self._modes()
        self._make_dirs()
        self.clean_transactions()
        self._known: Dict[str, int] = {}
        self._generation = self._map_generation()
        self._seen_generation = self._generation[:8] if self._generation is not None else b""
        db_path = os.path.join(self.root, "cachedb")
        had_db = os.path.exists(db_path)
        self.quota = Quota(db_path, quota_limit_mb * _MB if quota_limit_mb > 0 else 0,
                           self._remove, self._file_mode if self.shared else None)
        if not had_db:
            found = self.scan()
            if found:  # the database was lost: account for what is on disk
                log.info("rebuilding the accounting of %d cached objects", len(found))
                self.quota.rebuild(found)

    # -- set-up -------------------------------------------------------------

    @property
    def shared(self) -> bool:
        return self._dir_mode & 0o022 != 0

    def _modes(self) -> Tuple[int, int]:
        try:
            mode = stat.S_IMODE(os.stat(self.base).st_mode)
        except FileNotFoundError:
            return 0o700, 0o644
        except OSError as err:
            raise self._io_error("inspect", self.base, err) from None
        if mode & 0o022:  # an administrator made it shared: keep that for subdirectories
            return mode & 0o7777 & ~stat.S_ISVTX | 0o700, 0o666 if mode & 0o002 else 0o664
        return 0o700 | (mode & 0o055), 0o644

    def _mkdir(self, path: str) -> None:
        try:
            os.mkdir(path, self._dir_mode)
        except FileExistsError:
            return
        os.chmod(path, self._dir_mode)  # not subject to the umask

    def _make_dirs(self) -> None:
        """The directories every run needs; object prefixes and the
        quarantine come with their first file (see the module docstring)."""
        try:
            if os.path.isdir(self.manifest_dir):
                return  # made before (the last directory is made last)
            os.makedirs(self.base, exist_ok=True)
            for path in (self.root, self.txn_dir, self.manifest_dir):
                self._mkdir(path)
        except OSError as err:
            raise self._io_error("create", self.root, err) from None

    def _prefix_dir(self, key: str) -> str:
        """The object directory of hash text ``key``, made if it is not there yet."""
        directory = f"{self.root}/{key[:2]}"
        try:
            self._mkdir(directory)
        except OSError as err:
            raise self._io_error("create", directory, err) from None
        return directory

    def _io_error(self, action: str, path: str, err: OSError) -> CacheError:
        if _no_space(err):
            return self.full_error()
        return CacheError(f"cannot {action} {path}: {err.strerror or err}",
                          hint="set CVMFS_CACHE_BASE to a writable directory")

    def full_error(self) -> CacheError:
        return CacheError(
            f"cache directory {self.root} is full (no space left on device)",
            hint="set CVMFS_QUOTA_LIMIT (MB) below the free space, or run `uvm cache clean`")

    def _map_generation(self) -> Optional[mmap.mmap]:
        path = os.path.join(self.root, "generation")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self._file_mode)
        except OSError:
            return None  # not writable for us: no memory of hits, always stat
        try:
            if os.fstat(fd).st_size < 8:
                os.posix_fallocate(fd, 0, 8)
            return mmap.mmap(fd, 8)
        except OSError:
            return None
        finally:
            os.close(fd)

    def _bump_generation(self) -> None:
        """Tell every process that objects may disappear (before removing any)."""
        if self._generation is not None:
            value = int.from_bytes(self._generation[:8], "little")
            self._generation[:8] = ((value + 1) & (1 << 64) - 1).to_bytes(8, "little")

    # -- lookups ------------------------------------------------------------

    def path_of(self, content_hash: ContentHash) -> str:
        key = content_hash.digest.hex() + content_hash.algorithm.value
        return f"{self.root}/{key[:2]}/{key[2:]}"

    def lookup(self, content_hash: ContentHash, expected_size: Optional[int] = None
               ) -> Optional[str]:
        """Path of the cached object, or None.  A size that contradicts the
        catalog sends the file to quarantine (and counts as a miss).

        """
        return self.lookup_key(content_hash.digest.hex() + content_hash.algorithm.value,
                               expected_size)

    def lookup_key(self, key: str, expected_size: Optional[int] = None) -> Optional[str]:
        """:meth:`lookup` by hash text; the warm-run hot path: one ``stat``, one format."""
        path = f"{self.root}/{key[:2]}/{key[2:]}"
        generation = self._generation
        if generation is not None and generation[:8] != self._seen_generation:
            self._known.clear()  # something was removed somewhere: stat again
            self._seen_generation = generation[:8]
        size = self._known.get(key)
        if size is None:
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                return None
            if generation is not None:
                if len(self._known) > 1 << 20:
                    self._known.clear()
                self._known[key] = size
        if expected_size is not None and size != expected_size:
            self._known.pop(key, None)
            self._bump_generation()
            log.warning("cached %s has %d bytes, the catalog says %d: quarantined",
                        key, size, expected_size)
            self._quarantine(path, key)
            self.quota.forget([key])
            return None
        return path

    def generation(self) -> Optional[bytes]:
        """The eviction counter's current bytes (None: no memory of hits is safe)."""
        return self._generation[:8] if self._generation is not None else None

    def forget_known(self, key: str) -> None:
        """Drop the memory that ``key`` is on disk (it was found missing)."""
        self._known.pop(key, None)

    def contains(self, content_hash: ContentHash) -> bool:
        return os.path.exists(self.path_of(content_hash))

    # -- locking ------------------------------------------------------------

    @contextmanager
    def locked(self, content_hash: ContentHash) -> Iterator[None]:
        """Hold the download lock of an object (blocks; a dead holder's lock is freed).

        The lock is ``flock`` on the object's prefix directory (``ab/``): 256
        stripes, each made once with its first object, so taking a lock
        creates no file (creating files is the slowest thing a download does
        on many disks).  Two
        downloads in one stripe wait for each other, which with a few dozen
        parallel downloads happens rarely and only costs a little overlap.
        """
        key = content_hash.digest.hex()
        directory = f"{self.root}/{key[:2]}"
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = -1
        except OSError as err:
            raise self._io_error("lock", directory, err) from None
        if fd < 0:
            self._prefix_dir(key)
            try:
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as err:
                raise self._io_error("lock", directory, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- transactions -------------------------------------------------------

    def begin(self, content_hash: ContentHash, expected_size: Optional[int] = None,
              compressed: bool = True, catalog: bool = False) -> "Transaction":
        """A new download of ``content_hash``: a sink for the transport."""
        return Transaction(self, content_hash, expected_size, compressed, catalog)

    def _commit(self, txn_path: str, content_hash: ContentHash, size: int, kind: int) -> str:
        final = self.path_of(content_hash)
        try:
            try:
                os.rename(txn_path, final)
            except FileNotFoundError:  # stored without the download lock: no prefix yet
                self._prefix_dir(content_hash.digest.hex())
                os.rename(txn_path, final)
        except OSError as err:
            raise self._io_error("store", final, err) from None
        try:
            self.quota.insert(str(content_hash), size, kind)
        except CacheError as err:  # the object is verified and in place; only accounting failed
            log.warning("%s", err.one_line())
        return final

    def _quarantine(self, path: str, name: str) -> None:
        try:
            self._mkdir(self.quarantine_dir)
            os.replace(path, os.path.join(self.quarantine_dir, name))
        except OSError:
            try:
                os.unlink(path)
            except OSError:
                pass

    def _remove(self, key: str) -> bool:
        self._bump_generation()
        self._known.pop(key, None)
        try:
            os.unlink(os.path.join(self.root, key[:2], key[2:]))
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True

    def clean_transactions(self) -> int:
        """Remove downloads left by dead processes (after ``kill -9``); return the count."""
        removed = 0
        try:
            names = os.listdir(self.txn_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            pid_text = name.split(".", 1)[0]
            if pid_text.isdigit() and pid_alive(int(pid_text)):
                continue
            try:
                os.unlink(os.path.join(self.txn_dir, name))
                removed += 1
            except OSError:
                pass
        if removed:
            log.info("removed %d unfinished downloads from %s", removed, self.txn_dir)
        return removed

    # -- manifests ----------------------------------------------------------

    def save_file(self, fqrn: str, name: str, data: bytes) -> None:
        """Keep a verified bootstrap file (manifest, whitelist) for offline use."""
        path = os.path.join(self.manifest_dir, f"{fqrn}{name}")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f"{os.getpid()}.", dir=self.txn_dir)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, self._file_mode)
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError as err:
            raise self._io_error("store", path, err) from None

    def file_time(self, fqrn: str, name: str) -> Optional[float]:
        """When a bootstrap file was last verified (its mtime), or None."""
        try:
            return os.stat(os.path.join(self.manifest_dir, f"{fqrn}{name}")).st_mtime
        except FileNotFoundError:
            return None

    def touch_file(self, fqrn: str, name: str, when: float) -> None:
        try:
            os.utime(os.path.join(self.manifest_dir, f"{fqrn}{name}"), (when, when))
        except OSError:
            pass

    def load_file(self, fqrn: str, name: str) -> Optional[bytes]:
        try:
            with open(os.path.join(self.manifest_dir, f"{fqrn}{name}"), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def known_repositories(self) -> List[Tuple[str, Dict[str, str], float]]:
        """Repositories with a verified manifest here: (fqrn, manifest fields, verified at)."""
        found = []
        suffix = ".cvmfspublished"
        try:
            names = sorted(os.listdir(self.manifest_dir))
        except FileNotFoundError:
            return []
        for name in names:
            if not name.endswith(suffix):
                continue
            fqrn = name[: -len(suffix)]
            data = self.load_file(fqrn, suffix) or b""
            fields = {}
            for line in data.split(b"\n--\n", 1)[0].split(b"\n"):
                if line[:1] in (b"S", b"T", b"C"):
                    fields[line[:1].decode()] = line[1:].decode(errors="replace")
            found.append((fqrn, fields, self.file_time(fqrn, suffix) or 0.0))
        return found

    # -- maintenance --------------------------------------------------------

    def scan(self) -> List[Tuple[str, int]]:
        """Every object on disk as (hash text, size)."""
        found = []
        prefixes = {f"{i:02x}" for i in range(256)}
        for prefix in sorted(set(_listdir(self.root)) & prefixes):
            try:
                with os.scandir(os.path.join(self.root, prefix)) as entries:
                    for entry in entries:
                        found.append((prefix + entry.name, entry.stat().st_size))
            except (FileNotFoundError, NotADirectoryError):
                continue
        return found

    def info(self) -> Dict[str, object]:
        """Size, quota, object count, hit rate and housekeeping figures."""
        stats = self.quota.stats()
        lookups = stats["hits"] + stats["misses"]
        usage = os.statvfs(self.root)
        return {
            "directory": self.root,
            "shared": self.shared,
            "objects": stats["objects"],
            "size": stats["usage"],
            "quota_limit": self.quota.limit,
            "pinned": stats["pinned"],
            "hits": stats["hits"],
            "misses": stats["misses"],
            "hit_rate": stats["hits"] / lookups if lookups else None,
            "downloads": stats["downloads"],
            "bytes_downloaded": stats["bytes_downloaded"],
            "evictions": stats["evictions"],
            "in_progress": len(os.listdir(self.txn_dir)),
            "quarantined": len(_listdir(self.quarantine_dir)),
            "free": usage.f_bavail * usage.f_frsize,
        }

    def clean(self) -> int:
        """Remove every unpinned object, quarantined files and stale leftovers."""
        self.clean_transactions()
        pinned = set(self.quota.pinned())
        removed = 0
        for key, _size in self.scan():
            if key not in pinned and self._remove(key):
                removed += 1
        self.quota.rebuild([(k, s) for k, s in self.scan()])
        shutil.rmtree(self.quarantine_dir, ignore_errors=True)
        return removed

    def close(self) -> None:
        self.quota.close()
        if self._generation is not None:
            self._generation.close()
            self._generation = None


def _listdir(path: str) -> List[str]:
    """Names in ``path``; none if it was never made."""
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


class Transaction:
    """A download in progress: inflates and verifies into ``txn/``, then renames.

    Implements the transport's sink protocol.  Nothing gets the object's final
    name before the decoder has checked hash and size.
    """

    def __init__(self, cache: Cache, content_hash: ContentHash, expected_size: Optional[int],
                 compressed: bool, catalog: bool) -> None:
        self._cache = cache
        self._hash = content_hash
        self._kind = CATALOG if catalog else REGULAR
        try:
            self._fd, self.path = tempfile.mkstemp(prefix=f"{os.getpid()}.",
                                                   dir=cache.txn_dir)
            os.fchmod(self._fd, cache._file_mode)
        except OSError as err:
            raise cache._io_error("start a download in", cache.txn_dir, err) from None
        self._decoder = Decoder(content_hash.algorithm, self._fd, content_hash,
                                expected_size, compressed)
        self._open = True

    def _fail_locally(self, err: BaseException) -> CacheError:
        self.discard()
        if _no_space(err):
            return self._cache.full_error()
        return CacheError(f"cannot write {self.path}: {err}")

    def write(self, data: bytes) -> None:
        try:
            self._decoder.feed(data)
        except DecodeError as err:
            if err.failure is DecodeFailure.WRITE:
                raise self._fail_locally(err) from None
            raise

    def finish(self) -> str:
        try:
            result = self._decoder.finish()
        except DecodeError as err:
            if err.failure is DecodeFailure.WRITE:
                raise self._fail_locally(err) from None
            if err.failure in (DecodeFailure.TOO_LARGE, DecodeFailure.TOO_SMALL):
                self._close()
                self._cache._quarantine(self.path, str(self._hash))
            raise
        self._close()
        return self._cache._commit(self.path, self._hash, result.size, self._kind)

    def _close(self) -> None:
        if self._open:
            self._open = False
            os.close(self._fd)

    def discard(self) -> None:
        abort = getattr(self._decoder, "abort", None)
        if abort is not None:
            abort()
        self._close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def checks() -> Iterator["object"]:
    """``uvm doctor``: the configuration loads and the cache directory is usable."""
    from uvm import config as config_mod
    from uvm.doctor import Check
    from uvm.errors import UvmError

    try:
        settings = config_mod.load().settings()
    except UvmError as err:
        yield Check("config", False, err.one_line())
        return
    yield Check("config", True, "configuration loads (`uvm config show` for details)")
    base = os.path.abspath(os.path.expanduser(settings.cache_base))
    probe = base
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    writable = os.access(probe, os.W_OK | os.X_OK)
    try:
        usage = os.statvfs(probe)
        free = usage.f_bavail * usage.f_frsize
    except OSError:
        free = 0
    quota = settings.quota_limit * _MB if settings.quota_limit > 0 else 0
    detail = f"cache {base}: {'writable' if writable else 'NOT writable'}, {free // _MB} MB free"
    if quota:
        detail += f", quota {settings.quota_limit} MB"
        if free + _usage_of(base) < quota:
            detail += " (more than the free space: lower CVMFS_QUOTA_LIMIT)"
    yield Check("cache", writable, detail)


def _usage_of(base: str) -> int:
    """Bytes the cache already holds according to its database (0 if none)."""
    import sqlite3

    path = os.path.join(base, "shared", "cachedb")
    if not os.path.exists(path):
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute("SELECT value FROM properties WHERE key='usage'").fetchone()
            return int(row[0]) if row else 0
    except sqlite3.Error:
        return 0
