"""Where to cut large files: the stock publisher's content-defined xor32 chunker.

Content-defined cut marks depend only on the bytes around them, so an edit
in the middle of a large file changes only the chunks near the edit, and
republishing stores only those (fixed-size chunks would all shift).  This is
``Xor32Detector`` from ``cvmfs/ingestion/chunk_detector.{h,cc}``: a rolling
``x = (x << 1) ^ byte`` over 32-bit words (which depends only on the last 32
bytes), checked from ``min`` bytes after the last cut on; a cut falls where
``|int32(x) - 0x7FFFFFFF| < 0xFFFFFFFF // avg``, or hard at ``max`` bytes.
With the same parameters it cuts where the stock tools cut, so both dedupe
alike.  Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Tuple

MiB = 1 << 20
_WINDOW = 32
_MASK = 0xFFFFFFFF
_MAGIC = 0x7FFFFFFF  # uint32 max / 2


@dataclass(frozen=True)
class ChunkPolicy:
    """Chunk sizes in bytes; the stock defaults are 4/8/16 MiB."""

    min_size: int = 4 * MiB
    avg_size: int = 8 * MiB
    max_size: int = 16 * MiB
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.enabled and not (_WINDOW <= self.min_size < self.avg_size < self.max_size):
            raise ValueError("chunk sizes must satisfy 32 <= min < avg < max")

    def might_chunk(self, size: int) -> bool:
        return self.enabled and size > self.min_size


NO_CHUNKING = ChunkPolicy(enabled=False)


def _cut_in(window: bytes, threshold: int) -> int:
    """Index in ``window`` (first 32 bytes are warm-up) of the first cut mark, or -1.

    ``abs(int32(x) - magic) < threshold`` with C's wrap-around of the int32
    subtraction is, for unsigned ``x``: ``magic - t < x < magic + t`` or
    ``x == 0xFFFFFFFF`` (where the difference wraps to INT_MIN, whose abs()
    stays negative).  This form is the fastest pure-Python loop we found.
    """
    x = 0
    for byte in window[:_WINDOW]:
        x = ((x << 1) ^ byte) & _MASK
    low, high = _MAGIC - threshold, _MAGIC + threshold
    index = _WINDOW
    for byte in memoryview(window)[_WINDOW:]:
        x = ((x << 1) ^ byte) & _MASK
        if low < x < high or x == _MASK:
            return index
        index += 1
    return -1


def cut_marks(data, policy: ChunkPolicy) -> Iterator[int]:
    """Offsets where chunks end (excluding the file end) for ``data`` (bytes or mmap)."""
    size = len(data)
    threshold = _MASK // policy.avg_size
    last = 0
    while last + policy.min_size < size:
        start = last + policy.min_size - _WINDOW
        stop = min(last + policy.max_size, size)
        found = _cut_in(bytes(data[start:stop]), threshold)
        if found >= 0:
            cut = start + found
        elif last + policy.max_size < size:
            cut = last + policy.max_size
        else:
            return
        yield cut
        last = cut


def chunk_ranges(data, policy: ChunkPolicy) -> List[Tuple[int, int]]:
    """``(offset, size)`` pieces covering ``data``; a single piece means 'do not chunk'."""
    size = len(data)
    if not policy.might_chunk(size):
        return [(0, size)]
    ranges = []
    last = 0
    for cut in cut_marks(data, policy):
        ranges.append((last, cut - last))
        last = cut
    ranges.append((last, size - last))
    return ranges
