"""The newest revision of a repository, from the manifest copies the cache verified.

A run that follows a repository's head needs its manifest.  Opening the
repository the full way (:func:`uvm.cvmfs.client.open_repository`) verifies
manifest and whitelist with ``cryptography``: 40-60 ms of imports and
checks.  Two cases do without that, each reading the cache's files directly
(no :class:`~uvm.cvmfs.cache.Cache`, no SQLite):

* :func:`fresh_head`: the copy verified less than the TTL ago is used as it
  is, without a request, as the stock client does;
* :func:`revalidate_head`: past the TTL, manifest and whitelist are
  downloaded again, as the stock client does.  Most of the time nothing was
  published meanwhile.  When both are byte for byte what the last full open
  verified, with master keys of the same content, checking their signatures
  again would give the same answer, so only what depends on the clock or on
  this user is checked: the whitelist's expiry and the rollback state.
  The full open records what it verified in ``FQRN.uvmverified``
  (:func:`verified_record`): the SHA-256 of the keys, of the manifest and
  of the whitelist, in one file written at once, so that a manifest is
  never taken as verified under keys it was not verified with.

Anything else (a new revision, a re-signed whitelist, other keys, an expired
whitelist, a rollback, an error) returns None, and the caller opens the
repository the full way, which verifies everything and reports problems.
"""

from __future__ import annotations

import os
import time
from collections import namedtuple

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    import datetime
    from typing import Any, Dict, Optional, Sequence, Tuple

MANIFEST = ".cvmfspublished"
WHITELIST = ".cvmfswhitelist"
VERIFIED_RECORD = ".uvmverified"
DEFAULT_TTL = 240
"""Seconds a manifest without a ``D`` line stays fresh (the stock default)."""


def bootstrap_dir(cache_base: str) -> str:
    """Where a cache keeps the verified manifest and whitelist of each repository."""
    return os.path.join(os.path.abspath(os.path.expanduser(cache_base)), "shared", "manifests")


def effective_ttl(manifest_ttl: float, cap: float) -> float:
    """The manifest's ``D`` capped by ``cap`` seconds (``CVMFS_MAX_TTL``; 0: no cap)."""
    return min(manifest_ttl, cap) if cap > 0 else manifest_ttl


class ManifestHead(namedtuple("ManifestHead", ("root_hash", "revision", "ttl", "timestamp"))):
    """What a run following the head needs of a manifest: root catalog hash
    (text), revision, TTL in seconds, publication time (None if absent)."""

    __slots__ = ()


class KnownHead(namedtuple("KnownHead", ("root_hash", "revision", "offline"))):
    """A head revision taken from the verified copies; ``offline``: no mirror
    answered, which the run has said already (once is enough)."""

    __slots__ = ()


def head_fields(data: bytes) -> Optional[ManifestHead]:
    """The :class:`ManifestHead` of a manifest's text, or None if malformed.

    Deliberately minimal (no :mod:`uvm.cvmfs.manifest`, which imports
    ``dataclasses``): the bytes were verified and parsed when they were stored.
    """
    fields: Dict[str, str] = {}
    for line in data.split(b"\n--\n", 1)[0].split(b"\n"):
        if line[:1] in (b"C", b"S", b"D", b"T"):
            fields[line[:1].decode()] = line[1:].decode("ascii", "replace").strip()
    try:
        timestamp = int(fields["T"]) if "T" in fields else None
        return ManifestHead(fields["C"], int(fields["S"]), float(fields.get("D", DEFAULT_TTL)),
                            timestamp)
    except (KeyError, ValueError):
        return None


def fresh_head(fqrn: str, settings: Any) -> Optional[KnownHead]:
    """(root hash, revision) of the newest revision as the last verified
    manifest in the cache names it, while that is younger than the TTL (the
    fetcher would not ask the network either); None otherwise."""
    directory = bootstrap_dir(settings.cache_base)
    path = os.path.join(directory, fqrn + MANIFEST)
    try:
        verified_at = os.stat(path).st_mtime
        os.stat(os.path.join(directory, fqrn + WHITELIST))
        with open(path, "rb") as handle:
            data = handle.read(4096)
    except OSError:
        return None
    head = head_fields(data)
    if head is None or not head.root_hash:
        return None
    age = time.time() - verified_at
    if not 0 <= age < effective_ttl(head.ttl, 60.0 * max(0, settings.max_ttl or 0)):
        return None
    return KnownHead(head.root_hash, head.revision, False)


def keys_digest(paths: Sequence[str]) -> str:
    """SHA-256 over the contents of the master key files, in order."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            data = handle.read()
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def verified_record(keys: Sequence[str], manifest: bytes, whitelist: bytes) -> bytes:
    """What a full open verified: keys, manifest and whitelist, by SHA-256."""
    import hashlib

    return " ".join((keys_digest(keys), hashlib.sha256(manifest).hexdigest(),
                     hashlib.sha256(whitelist).hexdigest())).encode() + b"\n"


def revalidate_head(fqrn: str, settings: Any, state_dir: Optional[str] = None,
                    now: Optional[datetime.datetime] = None) -> Optional[KnownHead]:
    """The head revision when the mirrors still serve what was verified.

    One round trip for manifest and whitelist together.  On success the
    verified copies count as verified now (their mtime), so that the runs of
    the next TTL use :func:`fresh_head`.  With no mirror reachable, the
    copies themselves are checked the same way and used, as the full open
    does offline, but stay stale, so that the next run asks the network.
    """
    import datetime

    from uvm.cvmfs.domains import public_key_files

    directory = bootstrap_dir(settings.cache_base)
    try:
        with open(os.path.join(directory, fqrn + VERIFIED_RECORD), "rb") as handle:
            record = handle.read()
        keys = public_key_files(settings.public_key, settings.keys_dir, fqrn)
        keys_part = keys_digest(keys).encode() if keys else b""
    except OSError:
        return None
    if not keys_part or not record.startswith(keys_part + b" "):
        return None
    from uvm.cvmfs import servers
    from uvm.errors import CvmfsError, FetchError

    try:
        manifest, whitelist = _download(fqrn, settings)
        offline = None
    except FetchError as err:
        if not servers.is_unavailable(err.failure):
            return None
        offline = str(err)
        try:
            manifest, whitelist = (_read(directory, fqrn + name) for name in (MANIFEST, WHITELIST))
        except OSError:
            return None
    except CvmfsError:  # a configuration problem: the full open reports it
        return None
    if verified_record(keys, manifest, whitelist) != record:
        return None
    if offline is None:  # the copies that fresh_head will read must be these bytes
        try:
            if (_read(directory, fqrn + MANIFEST), _read(directory, fqrn + WHITELIST)) \
                    != (manifest, whitelist):
                return None
        except OSError:
            return None
    head = _checked(fqrn, manifest, whitelist, state_dir,
                    now or datetime.datetime.now(datetime.timezone.utc))
    if head is None:
        return None
    if offline is not None:
        from uvm import log as uvm_log

        uvm_log.get(__name__).warning(servers.offline_warning(fqrn, offline))
        return KnownHead(head[0], head[1], True)
    for name in (MANIFEST, WHITELIST):
        try:  # "now" needs only write access: a shared cache's copies may be another user's
            os.utime(os.path.join(directory, fqrn + name))
        except OSError:
            pass
    return KnownHead(head[0], head[1], False)


def _read(directory: str, name: str) -> bytes:
    with open(os.path.join(directory, name), "rb") as handle:
        return handle.read()


def _download(fqrn: str, settings: Any) -> Tuple[bytes, bytes]:
    """Manifest and whitelist from the mirrors, in parallel; FetchError if not."""
    import threading

    from uvm.cvmfs.transport import BytesSink, Transport, TransportSettings

    transport = Transport(TransportSettings.from_settings(settings, fqrn))
    got: Dict[str, Any] = {}

    def get(name: str) -> None:
        try:
            got[name] = transport.download(name, BytesSink, what=f"{fqrn}/{name}")
        except BaseException as err:  # handed to the caller's thread below
            got[name] = err

    try:
        transport.prepare()
        other = threading.Thread(target=get, args=(WHITELIST,), daemon=True)
        other.start()
        get(MANIFEST)
        other.join()
    finally:
        transport.close()
    for name in (MANIFEST, WHITELIST):
        if isinstance(got[name], BaseException):
            raise got[name]
    return got[MANIFEST], got[WHITELIST]


def _checked(fqrn: str, manifest: bytes, whitelist: bytes, state_dir: Optional[str],
             now: datetime.datetime) -> Optional[Tuple[str, int]]:
    """The clock- and user-dependent checks of a full open, on verified bytes."""
    from uvm.cvmfs import whitelist as whitelist_mod
    from uvm.cvmfs.rollback import RollbackState, default_state_dir
    from uvm.errors import CvmfsError

    head = head_fields(manifest)
    if head is None:
        return None
    try:
        if whitelist_mod.is_expired(whitelist_mod.expiry(whitelist), now):
            return None
        RollbackState(state_dir or default_state_dir()).check_and_record(
            fqrn, head.revision, head.timestamp, head.root_hash)
    except CvmfsError:
        return None
    return head.root_hash, head.revision
