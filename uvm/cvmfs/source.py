"""What the repository reader needs from the outside world: an object source.

The reader never speaks HTTP or manages files itself.  It asks an
``ObjectSource`` for the two unsigned-by-hash bootstrap files (manifest and
whitelist) and for content-addressed objects, which come back as local files
holding the *decompressed* content, already verified against their hash.
The format issue ships a simple implementation; the network issue replaces it
with mirrors, proxies and the shared cache behind the same protocol.
"""

from __future__ import annotations

from typing import BinaryIO, Optional, Protocol

from uvm.cvmfs.hashing import ContentHash, Suffix


class ObjectSource(Protocol):
    def fetch_file(self, name: str) -> bytes:
        """Raw bytes of a repository file such as ``.cvmfspublished`` (no hash check)."""

    def fetch_object(
        self,
        content_hash: ContentHash,
        suffix: Suffix = Suffix.NONE,
        expected_size: Optional[int] = None,
        compressed: bool = True,
    ) -> str:
        """Local path of the object's verified, decompressed content.

        Raises ``FetchError`` when it cannot be had and ``IntegrityError``
        (``DecodeError``) when what arrived does not match ``content_hash``.
        The file stays valid at least as long as the source is open.
        """

    def open_object(
        self,
        content_hash: ContentHash,
        suffix: Suffix = Suffix.NONE,
        expected_size: Optional[int] = None,
        compressed: bool = True,
    ) -> BinaryIO:
        """The verified object opened for reading.

        Unlike ``open(fetch_object(...))`` this cannot lose a race with a
        cache eviction between the lookup and the open.
        """

    def close(self) -> None:
        """Release connections and temporary files."""
