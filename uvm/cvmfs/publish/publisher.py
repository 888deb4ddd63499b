"""Publish a directory tree as a new revision of a stratum-0 repository.

The order of writes is what makes a publish atomic for readers: data
objects, then catalogs bottom-up (a parent needs its children's hashes),
then the history and certificate objects, the whitelist, and last the signed
manifest, replaced by one rename.  Until that rename readers see the
previous revision; a publish killed before it leaves only unreferenced
objects and ``data/txn`` litter.

Every publish scans the whole source tree and rebuilds every catalog (the
stock server applies a change set to the previous catalogs instead); the
result is the same format, and content addressing still means unchanged
files add no objects.
"""

from __future__ import annotations

import datetime as _dt
import mmap
import os
import shutil
import stat
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set, Tuple

from uvm import log as uvm_log
from uvm.cvmfs import manifest as manifest_mod
from uvm.cvmfs import signature
from uvm.cvmfs import whitelist as whitelist_mod
from uvm.cvmfs.catalog_tree import CatalogTree
from uvm.cvmfs.catalog import (
    FLAG_CHUNKED, FLAG_DIR, FLAG_FILE, FLAG_LINK, FLAG_NESTED_MOUNTPOINT, FLAG_NESTED_ROOT,
    FLAG_SPECIAL, Catalog, encode_path,
)
from uvm.cvmfs.hashing import Algorithm, ContentHash, Suffix
from uvm.cvmfs.history import TRUNK, TRUNK_PREVIOUS, History, Tag
from uvm.cvmfs.publish.catalog_writer import CatalogWriter, Counters, Row
from uvm.cvmfs.publish.chunking import ChunkPolicy, chunk_ranges
from uvm.cvmfs.publish.keys import PublishKeys, load_publish_keys
from uvm.cvmfs.publish.store import ObjectStore
from uvm.errors import CvmfsError, PublishError

log = uvm_log.get(__name__)

MARKER = ".cvmfscatalog"
DEFAULT_AUTOCATALOG_MAX = 100_000
_PIECE = 1 << 20


@dataclass(frozen=True)
class PublishResult:
    revision: int
    root_hash: ContentHash
    timestamp: int
    catalogs: int
    entries: int
    files: int
    file_bytes: int
    new_objects: int
    new_bytes: int
    unchanged_files: int = 0


@dataclass(frozen=True)
class _FileData:
    flags: int
    content_hash: Optional[ContentHash]
    chunks: Optional[List[Tuple[int, int, ContentHash]]]


def _split_ns(st: os.stat_result) -> Tuple[int, int]:
    return st.st_mtime_ns // 1_000_000_000, st.st_mtime_ns % 1_000_000_000


def _has_marker(host_dir: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(os.path.join(host_dir, MARKER)).st_mode)
    except OSError:
        return False


def plan_autocatalogs(src: str, max_entries: int) -> Set[str]:
    """Directories (host paths) to split off so no catalog takes more than ``max_entries``.

    Post-order: a directory brings its own entries plus what its
    subdirectories leave in the same catalog.  While that exceeds the limit,
    the heaviest remaining subdirectory becomes a nested catalog and leaves
    only its mountpoint behind.  A directory with more direct entries than
    the limit still stays whole.  (The stock server's ``CVMFS_AUTOCATALOGS``
    works on the same idea with min/max weights; it also writes marker
    files, which uvm does not, since it never modifies the source.)
    """
    chosen: Set[str] = set()

    def weight(host_dir: str) -> int:
        total = 1
        candidates = []
        try:
            entries = list(os.scandir(host_dir))
        except OSError:
            return total
        for entry in entries:
            total += 1
            if entry.is_dir(follow_symlinks=False):
                sub = weight(entry.path)
                if not _has_marker(entry.path):
                    total += sub - 1
                    candidates.append((sub, entry.path))
        candidates.sort(reverse=True)
        for sub, path in candidates:
            if total <= max_entries or sub <= 1:
                break
            chosen.add(path)
            total -= sub - 1
        return total

    weight(src)
    return chosen


class _Builder:
    """Scans the source tree and writes objects and catalogs into the store."""

    def __init__(
        self,
        src: str,
        store: ObjectStore,
        chunking: ChunkPolicy,
        revision: int,
        now: int,
        ttl: int,
        previous_catalogs: Dict[str, ContentHash],
        workdir: str,
        auto_split: Set[str],
        progress: Optional[Callable[[str], None]],
        previous_tree: Optional[CatalogTree] = None,
        pool: Optional[ThreadPoolExecutor] = None,
    ) -> None:
        self.pool = pool or ThreadPoolExecutor(max_workers=1)
        self.previous_tree = previous_tree
        self.reused = 0
        self.src = src
        self.store = store
        self.chunking = chunking
        self.revision = revision
        self.now = now
        self.ttl = ttl
        self.previous_catalogs = previous_catalogs
        self.workdir = workdir
        self.auto_split = auto_split
        self.progress = progress
        self.algo_bits = store.algorithm.flag_bits
        self.by_inode: Dict[Tuple[int, int], _FileData] = {}
        self.catalogs = 0
        self.entries = 0
        self.files = 0
        self.file_bytes = 0

    # --- file content ----------------------------------------------------------

    def _unchanged(self, path: str, st: os.stat_result) -> Optional[_FileData]:
        """The previous revision's content of ``path`` if size and mtime (to the ns) are the same.

        The quick check rsync uses by default; it spares reading and
        compressing every unchanged file again.  The objects must still be
        in the store.
        """
        if self.previous_tree is None:
            return None
        try:
            old = self.previous_tree.lookup(path)
            if (old is None or not old.is_regular or old.size != st.st_size
                    or old.algorithm is not self.store.algorithm or not old.compressed
                    or old.mtime * 1_000_000_000 + (old.mtime_ns or 0) != st.st_mtime_ns):
                return None
            if old.is_chunked:
                chunks = [(c.offset, c.size, c.content_hash)
                          for c in self.previous_tree.chunks(old)]
                if not chunks or not all(self.store.exists(h, Suffix.PARTIAL)
                                         for _, _, h in chunks):
                    return None
                return _FileData(FLAG_FILE | FLAG_CHUNKED | self.algo_bits, None, chunks)
            if old.content_hash is None or not self.store.exists(old.content_hash):
                return None
            return _FileData(FLAG_FILE | self.algo_bits, old.content_hash, None)
        except (OSError, CvmfsError) as err:
            log.debug("no reuse for %s: %s", path, err)
            return None

    def _content(self, path: str, host_path: str, st: os.stat_result) -> Tuple[_FileData, bool]:
        """Stored content of one file (runs in a worker thread); True if reused unchanged."""
        data = self._unchanged(path, st)
        if data is not None:
            return data, True
        return self._store_file(host_path, st.st_size), False

    def _store_many(self, files: List[Tuple[str, str, os.stat_result]]) -> Dict[str, _FileData]:
        """Content of a directory's regular files, compressed in parallel (the codec drops the GIL).

        Files of one inode (hard links) are stored once; results are taken in
        order, so ``progress`` sees files in scan order.
        """
        result: Dict[str, _FileData] = {}
        todo: List[Tuple[str, str, os.stat_result]] = []
        first_of: Dict[Tuple[int, int], str] = {}
        aliases: List[Tuple[str, str]] = []
        for path, host_path, st in files:
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1:
                if key in self.by_inode:
                    result[path] = self.by_inode[key]
                    continue
                if key in first_of:
                    aliases.append((path, first_of[key]))
                    continue
                first_of[key] = path
            todo.append((path, host_path, st))
        outcomes = self.pool.map(lambda item: self._content(*item), todo)
        for (path, host_path, st), (data, reused) in zip(todo, outcomes):
            result[path] = data
            if st.st_nlink > 1:
                self.by_inode[(st.st_dev, st.st_ino)] = data
            self.files += 1
            self.file_bytes += st.st_size
            self.reused += reused
            if self.progress is not None:
                self.progress(host_path)
        for path, original in aliases:
            result[path] = result[original]
        return result

    def _store_file(self, host_path: str, size: int) -> _FileData:
        flags = FLAG_FILE | self.algo_bits
        if not self.chunking.might_chunk(size):
            return _FileData(flags, self.store.put_file(host_path), None)
        with open(host_path, "rb") as handle, mmap.mmap(
            handle.fileno(), 0, access=mmap.ACCESS_READ
        ) as view:
            ranges = chunk_ranges(view, self.chunking)
            if len(ranges) == 1:
                pieces = (view[o:o + _PIECE] for o in range(0, len(view), _PIECE))
                return _FileData(flags, self.store.put_pieces(pieces), None)
            chunks = []
            for offset, length in ranges:
                pieces = (
                    view[o:min(o + _PIECE, offset + length)]
                    for o in range(offset, offset + length, _PIECE)
                )
                chunks.append((offset, length, self.store.put_pieces(pieces, Suffix.PARTIAL)))
        return _FileData(flags | FLAG_CHUNKED, None, chunks)

    # --- catalogs --------------------------------------------------------------

    def _dir_row(self, path: str, st: os.stat_result, extra_flags: int) -> Row:
        mtime, mtime_ns = _split_ns(st)
        return Row(path, FLAG_DIR | extra_flags, st.st_mode, st.st_size, mtime, mtime_ns,
                   st.st_uid, st.st_gid, st.st_nlink & 0xFFFFFFFF)

    def build(self, mountpoint: str, host_dir: str,
              root_st: os.stat_result) -> Tuple[ContentHash, int, Counters]:
        """Write the catalog rooted at ``mountpoint`` (and, first, its nested catalogs)."""
        fd, db_path = tempfile.mkstemp(dir=self.workdir, suffix=".catalog")
        os.close(fd)
        os.unlink(db_path)
        writer = CatalogWriter(db_path, mountpoint)
        counters = writer.counters.self_
        writer.add(self._dir_row(mountpoint, root_st, FLAG_NESTED_ROOT if mountpoint else 0))
        counters["dir"] += 1
        groups = 0
        stack = [(mountpoint, host_dir)]
        while stack:
            path, host = stack.pop()
            try:
                scanned = sorted(os.scandir(host), key=lambda e: os.fsencode(e.name))
            except OSError as err:
                raise PublishError(f"cannot read directory {host}: {err.strerror}") from None
            stats = [(entry, entry.stat(follow_symlinks=False)) for entry in scanned]
            links: Dict[Tuple[int, int], int] = {}
            for _, st in stats:
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    links[key] = links.get(key, 0) + 1
            group_of: Dict[Tuple[int, int], int] = {}
            contents = self._store_many([
                (f"{path}/{entry.name}", entry.path, st)
                for entry, st in stats if stat.S_ISREG(st.st_mode)
            ])
            for entry, st in stats:
                child = f"{path}/{entry.name}"
                mode = st.st_mode
                mtime, mtime_ns = _split_ns(st)
                self.entries += 1
                if stat.S_ISDIR(mode):
                    if _has_marker(entry.path) or entry.path in self.auto_split:
                        nested_hash, nested_size, nested = self.build(child, entry.path, st)
                        writer.add(self._dir_row(child, st, FLAG_NESTED_MOUNTPOINT))
                        writer.add_nested(child, nested_hash, nested_size)
                        counters["dir"] += 1
                        counters["nested"] += 1
                        writer.counters.add_child(nested)
                    else:
                        writer.add(self._dir_row(child, st, 0))
                        counters["dir"] += 1
                        stack.append((child, entry.path))
                elif stat.S_ISREG(mode):
                    data = contents[child]
                    key = (st.st_dev, st.st_ino)
                    hardlinks = 1
                    if links.get(key, 0) > 1:
                        if key not in group_of:
                            groups += 1
                            group_of[key] = groups
                        hardlinks = (group_of[key] << 32) | links[key]
                    writer.add(Row(child, data.flags, mode, st.st_size, mtime, mtime_ns,
                                   st.st_uid, st.st_gid, hardlinks, data.content_hash))
                    counters["regular"] += 1
                    counters["file_size"] += st.st_size
                    if data.chunks is not None:
                        writer.add_chunks(child, data.chunks)
                        counters["chunked"] += 1
                        counters["chunked_size"] += st.st_size
                        counters["chunks"] += len(data.chunks)
                elif stat.S_ISLNK(mode):
                    target = os.readlink(entry.path)
                    writer.add(Row(child, FLAG_FILE | FLAG_LINK, mode, len(encode_path(target)),
                                   mtime, mtime_ns, st.st_uid, st.st_gid, 1, None, target))
                    counters["symlink"] += 1
                else:  # FIFO, socket, character or block device
                    size = st.st_rdev if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else 0
                    writer.add(Row(child, FLAG_FILE | FLAG_SPECIAL, mode, size, mtime,
                                   mtime_ns, st.st_uid, st.st_gid, 1))
                    counters["special"] += 1
        properties = {"revision": str(self.revision), "last_modified": str(self.now)}
        previous = self.previous_catalogs.get(mountpoint)
        if previous is not None:
            properties["previous_revision"] = str(previous)
        if not mountpoint:
            properties["TTL"] = str(self.ttl)
        writer.finish(properties)
        size = os.path.getsize(db_path)
        content_hash = self.store.put_file(db_path, Suffix.CATALOG)
        os.unlink(db_path)
        self.catalogs += 1
        return content_hash, size, writer.counters


def _previous_catalogs(store: ObjectStore, root: ContentHash,
                       workdir: str) -> Dict[str, ContentHash]:
    """Mountpoint → hash of every catalog of the previous revision (for ``previous_revision``)."""
    found: Dict[str, ContentHash] = {}
    pending = [("", root)]
    while pending:
        mountpoint, content_hash = pending.pop()
        found[mountpoint] = content_hash
        path = os.path.join(workdir, "previous.catalog")
        try:
            store.get_to_file(content_hash, Suffix.CATALOG, path)
            catalog = Catalog(path, mountpoint)
            try:
                pending.extend((ref.path, ref.content_hash) for ref in catalog.nested_catalogs())
            finally:
                catalog.close()
        except (OSError, CvmfsError) as err:
            log.warning("cannot read previous catalog %s: %s", content_hash, err)
        finally:
            if os.path.exists(path):
                os.unlink(path)
    return found


def _open_previous_tree(store: str, previous: manifest_mod.Manifest) -> Optional[CatalogTree]:
    """The previous revision's catalogs, read from our own store, for the unchanged-file check."""
    from uvm.cvmfs.http_source import SimpleSource

    source = SimpleSource([store])
    try:
        return CatalogTree(source, previous.root_hash, previous.catalog_size or None)
    except (OSError, CvmfsError) as err:
        source.close()
        log.warning("previous revision unreadable, every file is read again: %s", err)
        return None


def _load_history(store: ObjectStore, previous: Optional[manifest_mod.Manifest],
                  fqrn: str, path: str) -> History:
    if previous is not None and previous.history is not None:
        try:
            store.get_to_file(previous.history, Suffix.HISTORY, path)
            return History(path, writable=True)
        except (OSError, CvmfsError) as err:
            raise PublishError(f"cannot read the previous history database: {err}") from None
    return History.create(path, fqrn)


@dataclass(frozen=True)
class PublishOptions:
    """Everything about a publish except its source, repository, store and keys."""

    tag: Optional[str] = None
    description: Optional[str] = None
    algorithm: Algorithm = Algorithm.SHA1
    whitelist_days: int = whitelist_mod.DEFAULT_DAYS
    chunking: ChunkPolicy = ChunkPolicy()
    autocatalogs: bool = False
    autocatalog_max: int = DEFAULT_AUTOCATALOG_MAX
    ttl: int = manifest_mod.DEFAULT_TTL
    now: Optional[int] = None
    progress: Optional[Callable[[str], None]] = None
    workers: int = 0  # threads compressing files; 0 = min(4, CPUs)


def publish(
    src: str,
    fqrn: str,
    store: str,
    keydir: str,
    tag: Optional[str] = None,
    description: Optional[str] = None,
    algorithm: Algorithm = Algorithm.SHA1,
    whitelist_days: int = whitelist_mod.DEFAULT_DAYS,
    chunking: ChunkPolicy = ChunkPolicy(),
    autocatalogs: bool = False,
    autocatalog_max: int = DEFAULT_AUTOCATALOG_MAX,
    ttl: int = manifest_mod.DEFAULT_TTL,
    now: Optional[int] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> PublishResult:
    """Publish ``src`` as the next revision of ``fqrn`` in ``store`` (see module docstring).

    ``now`` fixes the publish time (tests of dates); ``progress`` is called
    with each source file once its content is stored.
    """
    options = PublishOptions(tag, description, algorithm, whitelist_days, chunking,
                             autocatalogs, autocatalog_max, ttl, now, progress)
    try:
        src_st = os.stat(src)
    except OSError as err:
        raise PublishError(f"cannot read source directory {src}: {err.strerror}") from None
    if not stat.S_ISDIR(src_st.st_mode):
        raise PublishError(f"source {src} is not a directory")
    if whitelist_days < 1:
        raise PublishError("whitelist lifetime must be at least one day")
    keys = load_publish_keys(fqrn, keydir)
    objects = ObjectStore(store, algorithm)
    objects.prepare()
    objects.lock()
    try:
        return _publish_locked(objects, src, src_st, fqrn, keys, options)
    finally:
        objects.unlock()


def _read_previous(objects: ObjectStore, fqrn: str,
                   algorithm: Algorithm) -> Optional[manifest_mod.Manifest]:
    """The store's current manifest (our own, so parsed but not re-verified), if any."""
    old = objects.read_file(".cvmfspublished")
    if old is None:
        return None
    try:
        previous = manifest_mod.parse_manifest(old)
    except CvmfsError as err:
        raise PublishError(f"store {objects.root} holds an unreadable manifest: {err}") from None
    if previous.fqrn not in (None, fqrn):
        raise PublishError(f"store {objects.root} holds repository {previous.fqrn}, not {fqrn}")
    if previous.algorithm is not algorithm:
        raise PublishError(
            f"store {objects.root} uses hash algorithm {previous.algorithm.name.lower()}",
            hint="republish with the same --hash-algorithm",
        )
    return previous


def _write_history(objects: ObjectStore, previous: Optional[manifest_mod.Manifest], fqrn: str,
                   workdir: str, trunk_tag: Tag, options: PublishOptions) -> ContentHash:
    """Move ``trunk`` to ``trunk-previous``, add the new ``trunk`` and the user's tag."""
    path = os.path.join(workdir, "history.sqlite")
    history = _load_history(objects, previous, fqrn, path)
    try:
        try:
            trunk = history.find(TRUNK)
        except CvmfsError:
            trunk = None
        if trunk is not None:
            history.set_tag(Tag(TRUNK_PREVIOUS, trunk.root_hash, trunk.revision,
                                trunk.timestamp, "default undo target", trunk.size))
        history.set_tag(trunk_tag)
        if options.tag:
            history.set_tag(Tag(options.tag, trunk_tag.root_hash, trunk_tag.revision,
                                trunk_tag.timestamp, options.description or "", trunk_tag.size))
        if previous is not None and previous.history is not None:
            history.set_property("previous_revision", str(previous.history))
    finally:
        history.close()
    return objects.put_file(path, Suffix.HISTORY)


def _sign_and_commit(objects: ObjectStore, keys: PublishKeys, fqrn: str,
                     new_manifest: manifest_mod.Manifest, options: PublishOptions) -> None:
    """Whitelist first, then the manifest: the one rename that makes the revision visible."""
    algorithm = options.algorithm
    fingerprint = signature.certificate_fingerprint(keys.certificate, algorithm)
    created = _dt.datetime.now(_dt.timezone.utc)
    body = whitelist_mod.render(fqrn, fingerprint, created, options.whitelist_days)
    objects.replace_file(".cvmfswhitelist", whitelist_mod.sign(body, keys.master_key, algorithm))
    signed = manifest_mod.sign(manifest_mod.render(new_manifest), keys.repository_key, algorithm)
    objects.replace_file(".cvmfspublished", signed)


def _publish_locked(objects: ObjectStore, src: str, src_st: os.stat_result, fqrn: str,
                    keys: PublishKeys, options: PublishOptions) -> PublishResult:
    previous = _read_previous(objects, fqrn, options.algorithm)
    timestamp = int(time.time()) if options.now is None else int(options.now)
    if previous is not None and previous.timestamp is not None and timestamp < previous.timestamp:
        if options.now is not None:
            raise PublishError("publish time is older than the previous revision's")
        timestamp = previous.timestamp  # the clock went back: T must not
    revision = (previous.revision + 1) if previous is not None else 1

    workdir = tempfile.mkdtemp(prefix="publish.", dir=objects.txn)
    try:
        previous_catalogs = (
            _previous_catalogs(objects, previous.root_hash, workdir) if previous else {}
        )
        auto = plan_autocatalogs(src, options.autocatalog_max) if options.autocatalogs else set()
        previous_tree = _open_previous_tree(objects.root, previous) if previous else None
        pool = ThreadPoolExecutor(max_workers=options.workers or min(4, os.cpu_count() or 1),
                                  thread_name_prefix="publish")
        builder = _Builder(src, objects, options.chunking, revision, timestamp, options.ttl,
                           previous_catalogs, workdir, auto, options.progress, previous_tree, pool)
        try:
            root_hash, root_size, _ = builder.build("", src, src_st)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if previous_tree is not None:
                previous_tree.close()
                previous_tree.source.close()
        trunk = Tag(TRUNK, root_hash, revision, timestamp, "current HEAD", root_size)
        history_hash = _write_history(objects, previous, fqrn, workdir, trunk, options)
        certificate_hash = objects.put_bytes(keys.certificate_pem, Suffix.CERTIFICATE)
        _sign_and_commit(objects, keys, fqrn, manifest_mod.Manifest(
            root_hash=root_hash, catalog_size=root_size, revision=revision, ttl=options.ttl,
            fqrn=fqrn, certificate=certificate_hash, history=history_hash, timestamp=timestamp,
        ), options)
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        raise PublishError(f"publish failed: {err.strerror or err}{where}") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("published %s revision %d (%s)", fqrn, revision, root_hash)
    return PublishResult(revision, root_hash, timestamp, builder.catalogs, builder.entries,
                         builder.files, builder.file_bytes, objects.new_objects, objects.new_bytes,
                         builder.reused)
