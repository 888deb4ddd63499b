"""Open a repository the production way: configuration → fetcher → verified reader.

The one place where the network client is wired to the format reader, in a
fixed order (as ``MountPoint::Create`` does in the stock client): effective
settings for the repository, the shared cache, the fetcher with its mirror
and proxy chain, the master keys, then :meth:`Repository.open`, which
verifies manifest, certificate and whitelist through the fetcher.  Only once
that succeeded are the bootstrap files kept as the "last verified" state for
offline runs.
"""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional, Tuple

from uvm import config as config_mod
from uvm import log as uvm_log
from uvm.cvmfs.cache import Cache
from uvm.cvmfs.domains import public_key_files
from uvm.cvmfs.fetcher import BOOTSTRAP_FILES, Fetcher, ObjectRequest
from uvm.cvmfs.hashing import Suffix
from uvm.cvmfs.head import effective_ttl
from uvm.errors import (ManifestError, RollbackError, SignatureError, UvmError,
                        WhitelistError)

log = uvm_log.get(__name__)

SHORT_TERM_TTL = 180.0
"""Seconds before retrying a failed revision check (the stock ``kShortTermTTL``)."""


def parse_target(text: str) -> Tuple[str, str]:
    """``FQRN[:/path]`` → (fqrn, path)."""
    fqrn, _, path = text.partition(":")
    return fqrn, path or "/"


def open_repository(
    fqrn: str,
    config: Optional[config_mod.Config] = None,
    *,
    tag: Optional[str] = None,
    date: Optional[str] = None,
    root_hash: Optional[str] = None,
    cache: Optional[Cache] = None,
    state_dir: Optional[str] = None,
    quiet_offline: bool = False,
) -> Any:
    """A verified :class:`uvm.cvmfs.repository.Repository` whose source is a :class:`Fetcher`.

    ``tag``/``date``/``root_hash`` default to ``CVMFS_REPOSITORY_TAG`` /
    ``CVMFS_REPOSITORY_DATE`` / ``CVMFS_ROOT_HASH``.  The repository's
    ``source`` attribute is the fetcher (for prefetching and statistics).
    ``quiet_offline``: the caller has said already that no mirror answers,
    so going offline is not announced again.
    """
    config = config or config_mod.load()
    settings = config.settings(fqrn)
    if tag is None and date is None and root_hash is None:
        tag = settings.repository_tag or None
        date = settings.repository_date or None
        root_hash = settings.root_hash or None
    fetcher = Fetcher.from_settings(fqrn, settings, cache)
    fetcher.quiet_offline = quiet_offline
    try:
        # The bootstrap files, then the certificate and catalog the manifest
        # names, are asked for before the reader is imported: their two
        # round trips then overlap with importing the signature code
        # (``cryptography``, 50-60 ms of CPU on a cold start).  Verification
        # is unchanged: the reader takes them from the fetcher and checks them.
        fetcher.ahead(files=BOOTSTRAP_FILES, then=_after_manifest(fetcher, tag, date, root_hash))
        from uvm.cvmfs.repository import Repository

        keys = public_key_files(settings.public_key, settings.keys_dir, fqrn)
        handle = _SourceHandle(fetcher)

        def open_once() -> Any:
            return Repository.open(
                fqrn, keys=keys or None, tag=tag, date=date, root_hash=root_hash,
                source=handle, state_dir=state_dir, environ=config.environ)

        repository = _with_mirror_retry(fetcher, open_once)
    except BaseException:
        fetcher.close()
        raise
    fetcher.remember_verified(keys)
    handle.owns = True  # from now on, closing the repository closes the fetcher
    return repository


def _after_manifest(fetcher: Fetcher, tag: Optional[str], date: Optional[str],
                    root_hash: Optional[str]) -> Callable[[str, bytes], None]:
    """For :meth:`Fetcher.ahead`: once the manifest came, ask for the
    certificate and the first catalog it names, as the reader will.  Only
    parsed here (no signature code is imported yet); objects are verified by
    their hashes on arrival and trusted no more than before."""
    def then(name: str, data: bytes) -> None:
        if name != ".cvmfspublished":
            return
        from uvm.cvmfs import manifest as manifest_mod

        manifest = manifest_mod.parse_manifest(data)
        wanted = manifest_mod.first_objects(manifest, tag, date, root_hash)
        if manifest.certificate is not None:
            wanted.insert(0, (manifest.certificate, Suffix.CERTIFICATE, None, True))
        fetcher.ahead(objects=wanted)
    return then


# Failures of a verified open that another mirror may not have (stale or
# damaged copies); as in the stock client, the next stratum 1 gets one chance.
_MIRROR_SPECIFIC = (SignatureError, WhitelistError, RollbackError, ManifestError)


def _with_mirror_retry(fetcher: Fetcher, open_once: Callable[[], Any]) -> Any:
    try:
        return open_once()
    except _MIRROR_SPECIFIC as err:
        transport = fetcher._transport
        if transport is None or fetcher.offline or fetcher.fresh_from_cache \
                or len(transport.chain.hosts) < 2:
            raise
        failed, _ = transport.chain.current(allow_reset=False)
        log.warning("%s (from %s); trying the next mirror", err.one_line(),
                    transport.chain.hosts[failed])
        transport.chain.switch_host(failed)
        fetcher.forget_ahead()
        return open_once()


class _SourceHandle:
    """The fetcher as one repository revision sees it.

    ``Repository`` closes its source on close and on a failed open; the
    handle passes that on only when it ``owns`` the fetcher, so that a retry
    or several revisions can share one fetcher.
    """

    def __init__(self, fetcher: Fetcher, owns: bool = False) -> None:
        self._fetcher = fetcher
        self.owns = owns

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fetcher, name)

    def close(self) -> None:
        if self.owns:
            self._fetcher.close()


class LiveRepository:
    """A repository that moves to new revisions after the TTL, for long-running processes.

    Every attribute is looked up on the current revision (a
    :class:`~uvm.cvmfs.repository.Repository`); when the TTL (the root
    catalog's, capped by ``CVMFS_MAX_TTL``) has passed, the manifest is
    fetched and verified again and a newer revision becomes current for new
    lookups.  Older revisions stay open until :meth:`close`, so files and
    catalogs already in use keep working.  A run pinned to a tag, date or root
    hash never moves.  A failed check (offline) is retried after 180 s.
    """

    def __init__(self, fqrn: str, config: Optional[config_mod.Config] = None, *,
                 tag: Optional[str] = None, date: Optional[str] = None,
                 root_hash: Optional[str] = None, cache: Optional[Cache] = None,
                 state_dir: Optional[str] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from uvm.cvmfs.repository import Repository

        self._config = config or config_mod.load()
        settings = self._config.settings(fqrn)
        if tag is None and date is None and root_hash is None:
            tag = settings.repository_tag or None
            date = settings.repository_date or None
            root_hash = settings.root_hash or None
        self.fqrn = fqrn
        self.pinned = any(x is not None for x in (tag, date, root_hash))
        self._clock = clock
        self._max_ttl = 60.0 * max(0, settings.max_ttl)
        self.fetcher = Fetcher.from_settings(fqrn, settings, cache)
        keys = public_key_files(settings.public_key, settings.keys_dir, fqrn) or None

        def open_revision() -> Any:
            repository = _with_mirror_retry(self.fetcher, lambda: Repository.open(
                fqrn, keys=keys, tag=tag, date=date, root_hash=root_hash,
                source=_SourceHandle(self.fetcher), state_dir=state_dir,
                environ=self._config.environ))
            self.fetcher.remember_verified(keys or ())
            return repository

        self._open_revision = open_revision
        try:
            self.current = open_revision()
        except BaseException:
            self.fetcher.close()
            raise
        self._retired: List[Any] = []
        self._next_check = clock() + self.ttl()

    def ttl(self) -> float:
        return effective_ttl(float(self.current.ttl), self._max_ttl)

    def refresh(self, force: bool = False) -> bool:
        """Check for a new revision if the TTL passed (or ``force``); True if it moved."""
        now = self._clock()
        if self.pinned or (not force and now < self._next_check):
            return False
        self.fetcher.expire()
        try:
            candidate = self._open_revision()
        except UvmError as err:
            log.warning("cannot check %s for a new revision (%s); staying on revision %d",
                        self.fqrn, err.one_line(), self.current.revision)
            self._next_check = now + SHORT_TERM_TTL
            return False
        if self.fetcher.offline:
            self._next_check = now + SHORT_TERM_TTL
        else:
            self._next_check = now + self.ttl()
        if candidate.revision > self.current.revision:
            log.info("%s: revision %d → %d", self.fqrn, self.current.revision,
                     candidate.revision)
            self._retired.append(self.current)
            self.current = candidate
            self._next_check = now + self.ttl()
            return True
        candidate.close()
        return False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        self.refresh()
        return getattr(self.current, name)

    def close(self) -> None:
        for repository in self._retired + [self.current]:
            repository.close()
        self._retired.clear()
        self.fetcher.close()

    def __enter__(self) -> "LiveRepository":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def subtree_objects(repository: Any, path: str = "/") -> List[ObjectRequest]:
    """Every object needed to read the files below ``path`` (chunks included).

    Walking loads the nested catalogs on the way (they are fetched and pinned
    as the walk reaches them); external files are skipped, as uvm does not
    fetch them.
    """
    wanted: List[ObjectRequest] = []
    for _directory, _dirs, others in repository.walk(path):
        for entry in others:
            if not entry.is_regular or entry.is_external:
                continue
            compressed = getattr(entry, "compressed", True)
            if entry.is_chunked:
                for chunk in repository.tree.chunks(entry):
                    wanted.append((chunk.content_hash, Suffix.PARTIAL, chunk.size, compressed))
            elif entry.content_hash is not None:
                wanted.append((entry.content_hash, Suffix.NONE, entry.size, compressed))
    return list(dict.fromkeys(wanted))
