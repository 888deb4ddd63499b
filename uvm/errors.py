"""Every error uvm raises on purpose, in one place.

Library code raises these; only the CLI turns them into a one-line message
and an exit status.  Each error carries what went wrong (``str(err)``) and,
where we know it, what the user can do about it (``err.hint``).  Layers that
need to drive a policy from the kind of failure (failover, retries) carry a
``failure`` code as well, in the manner of the CernVM-FS client's per-layer
failure enums.
"""

from __future__ import annotations

import enum

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Optional


class UvmError(Exception):
    """Root of every deliberate uvm error.

    ``exit_status`` is what the CLI exits with; subclasses override it where a
    distinct status helps scripts (for example 2 for usage errors).
    """

    exit_status = 1

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint on one line, as the CLI prints them."""
        text = " ".join(str(self).split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return text


class UsageError(UvmError, ValueError):
    """Bad command-line arguments or option values."""

    exit_status = 2


class ConfigError(UvmError, ValueError):
    """A configuration file or setting that cannot be used."""

    exit_status = 2


# --- CernVM-FS -------------------------------------------------------------


class CvmfsError(UvmError):
    """Anything that goes wrong reading or writing a CernVM-FS repository."""


class IntegrityError(CvmfsError):
    """Data that does not match its hash or signature: never used."""


class SignatureError(IntegrityError):
    """A manifest, whitelist or certificate whose signature does not verify."""


class WhitelistError(IntegrityError):
    """A whitelist that is expired, for another repository, or lacks the certificate."""


class RollbackError(IntegrityError):
    """A manifest older than one already seen for the same repository."""


class ManifestError(CvmfsError):
    """A manifest that cannot be parsed or names the wrong repository."""


class CatalogError(CvmfsError):
    """A catalog or history database that is not what the format requires."""


class PathNotFoundError(CvmfsError, FileNotFoundError):
    """A path that does not exist in the repository revision being read."""


class TagNotFoundError(CvmfsError, LookupError):
    """A tag or date that selects no revision."""


class PublishError(CvmfsError):
    """A publish that cannot proceed (unwritable store, missing keys, ...)."""


class FetchFailure(enum.Enum):
    """Why a download failed; the transport's retry and failover policy keys on it."""

    OK = "ok"
    HOST_HTTP = "host HTTP error"
    HOST_CONNECTION = "host connection error"
    PROXY_HTTP = "proxy HTTP error"
    PROXY_CONNECTION = "proxy connection error"
    TRANSFER = "transfer interrupted"
    TIMEOUT = "timeout"
    BAD_DATA = "corrupted data"
    NOT_FOUND = "not found"
    OFFLINE = "offline and not cached"
    LOCAL_IO = "local I/O error"


class FetchError(CvmfsError, OSError):
    """A download that failed after every mirror and proxy was tried."""

    def __init__(
        self, message: str, failure: FetchFailure, hint: Optional[str] = None
    ) -> None:
        super().__init__(message, hint)
        self.failure = failure


class CacheError(CvmfsError, OSError):
    """The local cache cannot be used (permissions, full disk, corruption)."""


# --- native decompressor ---------------------------------------------------


class DecodeFailure(enum.Enum):
    """The distinct ways an object can fail to inflate and verify."""

    TRUNCATED = "stream truncated"
    CORRUPT = "corrupt zlib stream"
    TRAILING_GARBAGE = "trailing bytes after the zlib stream"
    HASH_MISMATCH = "content hash mismatch"
    TOO_LARGE = "output larger than expected"
    TOO_SMALL = "output smaller than expected"
    EMPTY = "empty object"
    WRITE = "cannot write output"


class DecodeError(IntegrityError):
    """An object that failed to inflate or verify."""

    def __init__(
        self, message: str, failure: DecodeFailure, hint: Optional[str] = None
    ) -> None:
        super().__init__(message, hint)
        self.failure = failure


# --- sandbox ---------------------------------------------------------------


class SandboxError(UvmError):
    """The sandbox cannot start or keep running the guest."""


class LayerError(SandboxError):
    """The writable layer or a named instance cannot be used."""
