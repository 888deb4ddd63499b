"""Content hashes as CernVM-FS writes them: algorithms, textual form, object paths.

A content hash names every object of a repository.  Its text form is the
lower-case hex digest followed by an algorithm id (nothing for SHA-1,
``-rmd160``, ``-shake128``); an object's URL adds a one-letter type suffix
(``C`` catalog, ``P`` chunk, ...).  All functions here are pure.
"""

from __future__ import annotations

import enum
import hashlib
from typing import NamedTuple, Optional, Protocol

from uvm.errors import CvmfsError


class Algorithm(enum.Enum):
    """Content-hash algorithms; ``value`` is the id appended to the hex text."""

    SHA1 = ""
    RMD160 = "-rmd160"
    SHAKE128 = "-shake128"

    @property
    def flag_bits(self) -> int:
        """The catalog ``flags`` encoding (bits 8-10 hold the enum minus one)."""
        return _FLAG_CODES[self] << 8

    @classmethod
    def from_flags(cls, flags: int) -> "Algorithm":
        code = (flags >> 8) & 0x7
        for algorithm, value in _FLAG_CODES.items():
            if value == code:
                return algorithm
        raise CvmfsError(f"unknown hash algorithm code {code} in catalog flags")

    @classmethod
    def from_name(cls, name: str) -> "Algorithm":
        """Parse a user-facing name such as ``sha1`` or ``shake128``."""
        key = name.strip().lower().lstrip("-")
        for algorithm in cls:
            if algorithm.name.lower() == key or algorithm.value.lstrip("-") == key:
                return algorithm
        raise CvmfsError(
            f"unknown hash algorithm {name!r}", hint="use sha1, rmd160 or shake128"
        )


_FLAG_CODES = {Algorithm.SHA1: 0, Algorithm.RMD160: 1, Algorithm.SHAKE128: 2}

DIGEST_SIZE = 20
"""Every content algorithm yields 20 bytes (SHAKE-128 is cut to 160 bits)."""


class Suffix(str, enum.Enum):
    """Object type letters, appended to an object's name on the server."""

    NONE = ""
    CATALOG = "C"
    PARTIAL = "P"
    HISTORY = "H"
    CERTIFICATE = "X"
    METAINFO = "M"


class Hasher(Protocol):
    def update(self, data: bytes) -> None: ...

    def digest(self) -> bytes: ...


class _Shake128:
    """SHAKE-128 cut to the 20 bytes CernVM-FS uses, behind the usual hasher API."""

    def __init__(self) -> None:
        self._h = hashlib.shake_128()

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.digest(DIGEST_SIZE)


def new_hasher(algorithm: Algorithm) -> Hasher:
    """A fresh incremental hasher for ``algorithm``."""
    if algorithm is Algorithm.SHA1:
        return hashlib.sha1()
    if algorithm is Algorithm.SHAKE128:
        return _Shake128()
    try:
        return hashlib.new("ripemd160")
    except ValueError as err:  # OpenSSL built without the legacy provider
        raise CvmfsError(
            "RIPEMD-160 is not available in this Python's OpenSSL",
            hint="install an OpenSSL with RIPEMD-160 or use a SHA-1 repository",
        ) from err


class ContentHash(NamedTuple):
    """A content hash: algorithm plus raw 20-byte digest."""

    algorithm: Algorithm
    digest: bytes

    @classmethod
    def of(cls, data: bytes, algorithm: Algorithm = Algorithm.SHA1) -> "ContentHash":
        hasher = new_hasher(algorithm)
        hasher.update(data)
        return cls(algorithm, hasher.digest())

    @classmethod
    def parse(cls, text: str) -> "ContentHash":
        """Parse ``<40 hex>[-rmd160|-shake128]`` (no type suffix)."""
        text = text.strip()
        hex_part, algorithm = text, Algorithm.SHA1
        for candidate in (Algorithm.RMD160, Algorithm.SHAKE128):
            if text.endswith(candidate.value):
                hex_part, algorithm = text[: -len(candidate.value)], candidate
                break
        if len(hex_part) != 2 * DIGEST_SIZE:
            raise CvmfsError(f"malformed content hash {text!r}")
        try:
            digest = bytes.fromhex(hex_part)
        except ValueError:
            raise CvmfsError(f"malformed content hash {text!r}") from None
        return cls(algorithm, digest)

    @classmethod
    def from_catalog(cls, blob: Optional[bytes], flags: int) -> Optional["ContentHash"]:
        """The hash of a catalog row: a raw digest BLOB, algorithm in the flags."""
        if not blob:
            return None
        return cls(Algorithm.from_flags(flags), bytes(blob))

    @property
    def hex(self) -> str:
        return self.digest.hex()

    def __str__(self) -> str:
        return self.hex + self.algorithm.value

    def object_path(self, suffix: Suffix = Suffix.NONE) -> str:
        """Path of the object below the repository URL, e.g. ``data/ab/cdef...C``."""
        text = str(self)
        return f"data/{text[:2]}/{text[2:]}{suffix.value}"

    def cache_path(self) -> str:
        """Path of the decompressed object in a cache: ``ab/cdef...`` without suffix."""
        text = str(self)
        return f"{text[:2]}/{text[2:]}"
