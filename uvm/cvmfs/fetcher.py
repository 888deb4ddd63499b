"""The production object source: verified objects from the shared cache, else the network.

This is the only module that combines the cache and the transport (as
``Fetcher::Fetch`` in the stock client): a cache hit returns the file; a miss
takes the object's download lock, looks again (another process may have just
fetched it), then streams the object from the mirrors into a cache
transaction that inflates and verifies it, and commits it.  Each object is
therefore downloaded about once, however many threads and processes want it.

Bootstrap files (``.cvmfspublished``, ``.cvmfswhitelist``) are not content
addressed; the reader verifies their signatures.  Once it has, the caller
calls :meth:`Fetcher.remember_verified` and the fetcher keeps them, so that
with no server reachable later runs can start from the last verified state
("offline"), saying so once, and name any object that is not cached.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any, BinaryIO, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from uvm import log as uvm_log
from uvm.cvmfs import head, servers
from uvm.cvmfs.cache import Cache
from uvm.cvmfs.hashing import Algorithm, ContentHash, Suffix
from uvm.cvmfs.quota import TOUCH_PRECISION
from uvm.errors import FetchError, FetchFailure

log = uvm_log.get(__name__)

BOOTSTRAP_FILES = (head.MANIFEST, head.WHITELIST)

ObjectRequest = Tuple[ContentHash, Suffix, Optional[int], bool]
"""(hash, suffix, expected decompressed size or None, compressed) for :meth:`Fetcher.prefetch`."""


class Progress:
    """Prefetch progress as passed to a callback, updated in place."""

    __slots__ = ("done", "total", "bytes_done", "bytes_total", "failed", "started")

    def __init__(self, done: int, total: int, bytes_done: int, bytes_total: int, failed: int,
                 started: float) -> None:
        self.done = done
        self.total = total
        self.bytes_done = bytes_done
        self.bytes_total = bytes_total
        self.failed = failed
        self.started = started


ProgressCallback = Callable[[Progress], None]


class Fetcher:
    """An :class:`uvm.cvmfs.source.ObjectSource` backed by the shared cache and the mirrors.

    ``transport_factory`` builds the transport on the first cache miss, so a
    run served from a warm cache never imports HTTP code.
    """

    def __init__(
        self,
        fqrn: str,
        cache: Cache,
        transport_factory: Callable[[], Any],
        parallel: int = 16,
        own_cache: bool = False,
        max_ttl: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fqrn = fqrn
        self.cache = cache
        self._transport_factory = transport_factory
        self._transport: Any = None
        self._parallel = max(1, parallel)
        self._own_cache = own_cache
        self._lock = threading.Lock()
        self._fetched: Dict[str, bytes] = {}
        self._offline_reason: Optional[str] = None
        self._pinned: Dict[str, None] = {}
        # digest → (algorithm, path, size, cache generation, last touch, hash text)
        self._memo: Dict[bytes, Tuple[Algorithm, str, int, bytes, float, str]] = {}
        self._max_ttl = max_ttl
        self._clock = clock
        self.fresh_from_cache = False
        self.quiet_offline = False  # True: the caller has announced it (see open_repository)
        self._ahead_pool: Optional[ThreadPoolExecutor] = None
        self._ahead_files: Dict[str, "Future[bytes]"] = {}

    @classmethod
    def from_settings(cls, fqrn: str, settings: Any, cache: Optional[Cache] = None) -> "Fetcher":
        """Wire a fetcher from :meth:`uvm.config.Config.settings` for ``fqrn``."""
        from uvm.cvmfs.transport import Transport, TransportSettings

        transport_settings = TransportSettings.from_settings(settings, fqrn)
        own = cache is None
        if cache is None:
            cache = Cache(settings.cache_base, settings.quota_limit)
        return cls(fqrn, cache, lambda: Transport(transport_settings),
                   settings.parallel_downloads, own_cache=own,
                   max_ttl=60.0 * max(0, settings.max_ttl))

    # -- state --------------------------------------------------------------

    @property
    def transport(self) -> Any:
        with self._lock:
            if self._transport is None:
                self._transport = self._transport_factory()
            return self._transport

    @property
    def offline(self) -> bool:
        return self._offline_reason is not None

    def _go_offline(self, reason: str) -> None:
        with self._lock:
            first = self._offline_reason is None
            self._offline_reason = reason
        if first and not self.quiet_offline:
            log.warning(servers.offline_warning(self.fqrn, reason))

    # -- bootstrap files ----------------------------------------------------

    def fetch_file(self, name: str) -> bytes:
        """Raw bytes of ``name``: the last verified copy while it is fresh, else the mirrors.

        "Fresh" means verified less than the repository's TTL ago (manifest
        ``D``, capped by ``CVMFS_MAX_TTL``), as the stock client re-checks
        the manifest only after the TTL: a warm run needs no network at all
        (and never imports HTTP code).  With no server reachable, the last
        verified copy is used whatever its age ("offline").
        """
        with self._lock:
            pending = self._ahead_files.pop(name, None)
        if pending is not None:
            return pending.result()
        return self._fetch_file(name)

    def _fetch_file(self, name: str) -> bytes:
        from uvm.cvmfs.transport import BytesSink

        if name in BOOTSTRAP_FILES and self._fresh():
            stored = self.cache.load_file(self.fqrn, name)
            if stored is not None:
                self.fresh_from_cache = True
                return stored
        try:
            data = self.transport.download(name, BytesSink, what=f"{self.fqrn}/{name}")
        except FetchError as err:
            if servers.is_unavailable(err.failure):
                stored = self.cache.load_file(self.fqrn, name)
                if stored is not None:
                    self._go_offline(str(err))
                    return stored
            raise
        with self._lock:
            self._fetched[name] = data
        return data

    def remember_verified(self, keys: Sequence[str] = ()) -> None:
        """Keep the bootstrap files fetched so far; call once the reader
        verified them with the master key files ``keys``.  Once both were
        downloaded, what was verified is also recorded for
        :func:`uvm.cvmfs.head.revalidate_head`, after the copies."""
        with self._lock:
            items = [(n, self._fetched[n]) for n in BOOTSTRAP_FILES if n in self._fetched]
        for name, data in items:
            self.cache.save_file(self.fqrn, name, data)
        if keys and len(items) == len(BOOTSTRAP_FILES):
            try:
                record = head.verified_record(keys, items[0][1], items[1][1])
            except OSError:
                return  # a key file went away: no record, the next run verifies
            self.cache.save_file(self.fqrn, head.VERIFIED_RECORD, record)

    def last_verified(self, name: str = head.MANIFEST) -> Optional[bytes]:
        return self.cache.load_file(self.fqrn, name)

    def ttl(self) -> float:
        """Seconds a verified manifest stays fresh: its ``D`` capped by ``max_ttl``."""
        known = head.head_fields(self.cache.load_file(self.fqrn, head.MANIFEST) or b"")
        return head.effective_ttl(known.ttl if known else 0.0, self._max_ttl)

    def _fresh(self) -> bool:
        verified_at = self.cache.file_time(self.fqrn, head.MANIFEST)
        if verified_at is None or self.cache.file_time(self.fqrn, head.WHITELIST) is None:
            return False
        age = self._clock() - verified_at
        return 0 <= age < self.ttl()

    def expire(self) -> None:
        """Forget freshness: the next ``fetch_file`` asks the mirrors."""
        self.cache.touch_file(self.fqrn, head.MANIFEST, 0.0)
        self.forget_ahead()

    # -- objects ------------------------------------------------------------

    def fetch_object(
        self,
        content_hash: ContentHash,
        suffix: Suffix = Suffix.NONE,
        expected_size: Optional[int] = None,
        compressed: bool = True,
    ) -> str:
        """Local path of the verified, decompressed object (downloaded if need be).

        Catalogs are pinned in the quota until :meth:`close`, as the stock
        client pins loaded catalogs.
        """
        # Fast path for warm runs: an object this process has seen on disk,
        # while no process has evicted anything since (the cache's generation
        # counter is unchanged), needs no system call and no hashing of enums.
        memo = self._memo.get(content_hash.digest)
        if memo is not None:
            algorithm, path, size, generation, touched, key = memo
            if (algorithm is content_hash.algorithm
                    and generation == self.cache.generation()
                    and (expected_size is None or expected_size == size)):
                now = time.monotonic()
                if now - touched < TOUCH_PRECISION:
                    self.cache.quota.count_hit()
                else:
                    self.cache.quota.touch(key)
                    self._memo[content_hash.digest] = (
                        algorithm, path, size, generation, now, key)
                if suffix is Suffix.CATALOG:
                    self.pin(content_hash)
                return path
        generation = self.cache.generation()  # read before the lookup: never too new
        path = self._fetch_slow(content_hash, suffix, expected_size, compressed)
        if generation is not None:
            size = expected_size
            if size is None:
                try:
                    size = os.stat(path).st_size
                except OSError:
                    return path  # evicted already; the caller's open will tell
            if len(self._memo) > 1 << 20:
                self._memo.clear()
            self._memo[content_hash.digest] = (
                content_hash.algorithm, path, size, generation, time.monotonic(),
                str(content_hash))
        return path

    def _fetch_slow(self, content_hash: ContentHash, suffix: Suffix,
                    expected_size: Optional[int], compressed: bool) -> str:
        quota = self.cache.quota
        key = str(content_hash)
        path = self.cache.lookup_key(key, expected_size)
        if path is None:
            with self.cache.locked(content_hash):
                path = self.cache.lookup_key(key, expected_size)
                if path is None:
                    quota.count("misses")
                    path = self._download(content_hash, suffix, expected_size, compressed)
                else:
                    quota.touch(key)  # another process fetched it while we waited
        else:
            quota.touch(key)
        if suffix is Suffix.CATALOG:
            self.pin(content_hash)
        return path

    def open_object(
        self,
        content_hash: ContentHash,
        suffix: Suffix = Suffix.NONE,
        expected_size: Optional[int] = None,
        compressed: bool = True,
    ) -> BinaryIO:
        """The verified object as an open binary file.

        Prefer this to ``open(fetch_object(...))``: an object can be evicted
        by another process between the lookup and the ``open`` when the cache
        is over quota; here that is detected and the object fetched again.  An
        open file stays readable after eviction (POSIX), so nothing else can
        pull it from under the caller.
        """
        for _attempt in range(4):
            path = self.fetch_object(content_hash, suffix, expected_size, compressed)
            try:
                return open(path, "rb")
            except FileNotFoundError:
                self.cache.forget_known(str(content_hash))
                self._memo.pop(content_hash.digest, None)
        raise FetchError(f"object {content_hash} keeps disappearing from the cache "
                         f"{self.cache.root}", FetchFailure.LOCAL_IO,
                         hint="the quota is too small for the working set: raise "
                         "CVMFS_QUOTA_LIMIT")

    def _download(self, content_hash: ContentHash, suffix: Suffix,
                  expected_size: Optional[int], compressed: bool) -> str:
        what = f"object {content_hash}{suffix.value} of {self.fqrn}"
        try:
            return self.transport.download(
                content_hash.object_path(suffix),
                lambda: self.cache.begin(content_hash, expected_size, compressed,
                                         catalog=suffix is Suffix.CATALOG),
                what=what,
            )
        except FetchError as err:
            if servers.is_unavailable(err.failure) and (
                    self.offline or self.cache.load_file(self.fqrn, head.MANIFEST)):
                self._go_offline(str(err))
                raise FetchError(
                    f"{what} is not in the cache and no server is reachable (offline)",
                    FetchFailure.OFFLINE,
                    hint="reconnect, or preload it beforehand with `uvm cache preload`",
                ) from err
            raise

    def pin(self, content_hash: ContentHash) -> None:
        """Keep an object in the cache until :meth:`unpin` or :meth:`close`."""
        key = str(content_hash)
        if key not in self._pinned:
            self._pinned[key] = None
            self.cache.quota.pin(key)

    def unpin(self, content_hash: ContentHash) -> None:
        key = str(content_hash)
        if self._pinned.pop(key, 1) is None:
            self.cache.quota.unpin(key)

    # -- ahead of need -------------------------------------------------------

    def ahead(self, files: Sequence[str] = (), objects: Iterable[ObjectRequest] = (),
              then: Optional[Callable[[str, bytes], None]] = None) -> None:
        """Start fetching ``files`` and ``objects`` in the background, and return.

        Why: opening a repository is a chain of round trips (manifest, then
        certificate, catalog, whitelist); asking for what will be needed
        next while the caller parses and verifies what it has saves a round
        trip per stage.  The next :meth:`fetch_file` of a name takes the
        result fetched ahead (and raises its error); a name already asked
        for and not taken yet is not asked again, and :meth:`forget_ahead`
        drops such results (a retry on another mirror must never get the
        last attempt's file).  ``then(name, data)`` is called in the
        background with each file that arrived, to ask for what it names
        (its errors are ignored).  Objects land in the cache, verified as
        always, where the next :meth:`fetch_object` finds them (or waits on
        their download lock); their errors are left for that call to meet
        again.  Nothing fetched ahead is trusted more than if it were
        fetched later.
        """
        if files and self._fresh():
            files = ()  # fetch_file answers from the cache without a round trip
        items = list(objects)
        if not files and not items:
            return
        if files:
            # The HTTP code is imported here rather than in a worker, where it
            # would compete for the GIL with a caller that is still importing
            # (a cold start): the first request leaves sooner.
            self.transport.prepare()
        started: List[Tuple[str, "Future[bytes]"]] = []
        with self._lock:
            if self._ahead_pool is None:
                self._ahead_pool = ThreadPoolExecutor(max_workers=4,
                                                      thread_name_prefix="uvm-ahead")
            for name in files:
                if name not in self._ahead_files:
                    self._ahead_files[name] = self._ahead_pool.submit(self._fetch_file, name)
                    started.append((name, self._ahead_files[name]))
            for item in items:
                self._ahead_pool.submit(self._fetch_quietly, item)
        if then is not None:  # (outside the lock: a callback may run here, and ask ahead)
            for name, future in started:
                future.add_done_callback(lambda done, name=name: _call_then(then, name, done))

    def forget_ahead(self) -> None:
        """Drop the files fetched ahead and not taken yet (before a retry on another mirror)."""
        with self._lock:
            self._ahead_files.clear()

    def _fetch_quietly(self, item: ObjectRequest) -> None:
        try:
            self.fetch_object(*item)
        except Exception as err:  # the caller's own fetch meets it again and reports it
            log.debug("fetching %s ahead: %s", item[0], err)

    # -- bulk ---------------------------------------------------------------

    def prefetch(
        self,
        wanted: Iterable[ObjectRequest],
        progress: Optional[ProgressCallback] = None,
        parallel: Optional[int] = None,
    ) -> List[str]:
        """Fetch many objects with a bounded thread pool; return their paths in order.

        The paths are valid as long as the quota does not evict the objects:
        to read them, use :meth:`open_object`, which is then a cache hit.

        The decoder releases the GIL, so threads overlap network waits and
        inflation alike.  Every object is attempted; if some fail, a
        :class:`FetchError` naming the first and counting the rest is raised
        at the end.
        """
        items = list(dict.fromkeys(wanted))
        state = Progress(0, len(items), 0, sum(r[2] or 0 for r in items), 0, time.monotonic())
        paths: List[Optional[str]] = [None] * len(items)
        errors: List[FetchError] = []
        if progress:
            progress(state)
        workers = max(1, min(parallel or self._parallel, len(items) or 1))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="uvm-fetch") as pool:
            futures = {pool.submit(self.fetch_object, *item): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                index = futures[future]
                try:
                    paths[index] = future.result()
                except FetchError as err:
                    errors.append(err)
                    state.failed += 1
                except BaseException:
                    for pending in futures:
                        pending.cancel()
                    raise
                state.done += 1
                state.bytes_done += items[index][2] or 0
                if progress:
                    progress(state)
        if errors:
            first = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise FetchError(f"{len(errors)} of {len(items)} objects failed: {first}{more}",
                             first.failure, first.hint)
        return [p for p in paths if p is not None]

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        """Release pins, flush the quota's batched records, close connections."""
        if self._ahead_pool is not None:  # nothing may still write into a closed cache
            self._ahead_pool.shutdown(wait=True, cancel_futures=True)
            self._ahead_pool = None
            self._ahead_files.clear()
        for key in list(self._pinned):
            self.cache.quota.unpin(key)
        self._pinned.clear()
        self.cache.quota.flush()
        if self._transport is not None:
            self._transport.close()
        if self._own_cache:
            self.cache.close()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _call_then(then: Callable[[str, bytes], None], name: str, done: "Future[bytes]") -> None:
    """``then(name, data)`` for a file fetched ahead, unless its fetch failed
    (the caller's own ``fetch_file`` meets that error and reports it)."""
    if done.cancelled() or done.exception() is not None:
        return
    try:
        then(name, done.result())
    except Exception as err:  # best effort: the caller asks again in its own order
        log.debug("after fetching %s ahead: %s", name, err)

