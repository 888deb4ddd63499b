"""Pure-Python twin of the native codec: zlib and hashlib behind the same API.

Used where the C extension could not be built.  It must behave exactly like
the native one, errors included; the test suite runs the same tests on both.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from typing import Callable, Iterable, NamedTuple, Optional, Union

from uvm.cvmfs.hashing import Algorithm, ContentHash, new_hasher
from uvm.errors import DecodeError, DecodeFailure

_WRITE_CHUNK = 1 << 20


class DecodeResult(NamedTuple):
    """What a finished decode produced: the hash of the input, the output size."""

    content_hash: ContentHash
    size: int


class EncodeResult(NamedTuple):
    """What a finished encode produced: hash and size of the compressed output."""

    content_hash: ContentHash
    compressed_size: int
    size: int


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view[:_WRITE_CHUNK])
        except OSError as err:
            raise DecodeError(
                f"cannot write output: {err.strerror}", DecodeFailure.WRITE
            ) from err
        view = view[written:]


class Decoder:
    """Hash compressed pieces, inflate them and write the output to ``out_fd``.

    ``expected_size`` bounds the output: one byte more stops the decode at once.
    With ``compressed=False`` the pieces are stored as they are (objects
    published uncompressed); the hash is then over the raw bytes.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        out_fd: int,
        expected_hash: Optional[ContentHash] = None,
        expected_size: Optional[int] = None,
        compressed: bool = True,
    ) -> None:
        if expected_hash is not None and expected_hash.algorithm is not algorithm:
            raise ValueError("expected_hash uses another algorithm than the decoder")
        self._hasher = new_hasher(algorithm)
        self._algorithm = algorithm
        self._fd = out_fd
        self._expected_hash = expected_hash
        self._expected_size = expected_size
        self._inflater = zlib.decompressobj() if compressed else None
        self._size = 0
        self._fed = 0

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self._fed += len(data)
        self._hasher.update(data)
        if self._inflater is None:
            self._emit(bytes(data))
            return
        if self._inflater.eof:
            raise DecodeError(
                "trailing bytes after the end of the zlib stream",
                DecodeFailure.TRAILING_GARBAGE,
            )
        limit = 0 if self._expected_size is None else self._expected_size - self._size + 1
        try:
            out = self._inflater.decompress(data, limit)
            self._emit(out)
            while self._inflater.unconsumed_tail and not self._inflater.eof:
                limit = 0 if self._expected_size is None else self._expected_size - self._size + 1
                out = self._inflater.decompress(self._inflater.unconsumed_tail, limit)
                self._emit(out)
        except zlib.error as err:
            raise DecodeError(f"corrupt zlib stream: {err}", DecodeFailure.CORRUPT) from err
        if self._inflater.unused_data:
            raise DecodeError(
                "trailing bytes after the end of the zlib stream",
                DecodeFailure.TRAILING_GARBAGE,
            )

    def _emit(self, out: bytes) -> None:
        if not out:
            return
        self._size += len(out)
        if self._expected_size is not None and self._size > self._expected_size:
            raise DecodeError(
                f"output exceeds the expected {self._expected_size} bytes",
                DecodeFailure.TOO_LARGE,
            )
        _write_all(self._fd, out)

    def finish(self) -> DecodeResult:
        if self._fed == 0 and self._inflater is not None:
            raise DecodeError("empty object: no bytes received", DecodeFailure.EMPTY)
        if self._inflater is not None and not self._inflater.eof:
            raise DecodeError("zlib stream truncated", DecodeFailure.TRUNCATED)
        result = DecodeResult(ContentHash(self._algorithm, self._hasher.digest()), self._size)
        if self._expected_hash is not None and result.content_hash != self._expected_hash:
            raise DecodeError(
                f"content hash {result.content_hash} does not match the expected "
                f"{self._expected_hash}",
                DecodeFailure.HASH_MISMATCH,
            )
        if self._expected_size is not None and self._size < self._expected_size:
            raise DecodeError(
                f"output has {self._size} bytes, expected {self._expected_size}",
                DecodeFailure.TOO_SMALL,
            )
        return result

    def abort(self) -> None:
        """Give up on this object (the native decoder frees its C state here;
        the twin has nothing to free)."""


class Encoder:
    """Deflate pieces, hash the compressed bytes and write them to ``out_fd``."""

    def __init__(self, algorithm: Algorithm, out_fd: int, level: int = 6) -> None:
        self._hasher = new_hasher(algorithm)
        self._algorithm = algorithm
        self._fd = out_fd
        self._deflater = zlib.compressobj(level)
        self._compressed_size = 0
        self._size = 0

    def _emit(self, out: bytes) -> None:
        if out:
            self._hasher.update(out)
            self._compressed_size += len(out)
            _write_all(self._fd, out)

    def feed(self, data: bytes) -> None:
        self._size += len(data)
        self._emit(self._deflater.compress(data))

    def finish(self) -> EncodeResult:
        self._emit(self._deflater.flush())
        return EncodeResult(
            ContentHash(self._algorithm, self._hasher.digest()),
            self._compressed_size,
            self._size,
        )

    def abort(self) -> None:
        """Give up on this object (the native encoder frees its C state here)."""


def decode_bytes(
    data: bytes,
    algorithm: Algorithm,
    out_fd: int,
    expected_hash: Optional[ContentHash] = None,
    expected_size: Optional[int] = None,
    compressed: bool = True,
) -> DecodeResult:
    """Decode a whole object held in memory (``Decoder``, one ``feed``, ``finish``)."""
    decoder = Decoder(algorithm, out_fd, expected_hash, expected_size, compressed)
    decoder.feed(data)
    return decoder.finish()


def encode_bytes(data: bytes, algorithm: Algorithm, out_fd: int, level: int = 6) -> EncodeResult:
    """Compress a whole object held in memory to ``out_fd``."""
    encoder = Encoder(algorithm, out_fd, level)
    encoder.feed(data)
    return encoder.finish()


def decode_to_path_with(
    decoder_class: Callable[..., "Decoder"],
    decode_one: Callable[..., DecodeResult],
    pieces: Union[bytes, Iterable[bytes]],
    path: "os.PathLike[str] | str",
    algorithm: Algorithm,
    expected_hash: Optional[ContentHash],
    expected_size: Optional[int],
    compressed: bool,
    mode: int,
) -> DecodeResult:
    """``decode_to_path`` for either backend (they pass their own classes).

    The output goes to a temporary file beside ``path`` (same file system),
    which is renamed onto ``path`` only after ``finish()`` verified hash and
    size; on any failure it is unlinked, so ``path`` never holds a partial or
    unverified object.
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory or ".")
    try:
        try:
            if isinstance(pieces, (bytes, bytearray, memoryview)):
                result = decode_one(
                    pieces, algorithm, fd, expected_hash, expected_size, compressed
                )
            else:
                decoder = decoder_class(algorithm, fd, expected_hash, expected_size, compressed)
                try:
                    for piece in pieces:
                        decoder.feed(piece)
                    result = decoder.finish()
                finally:
                    decoder.abort()
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise
    return result


def decode_to_path(
    pieces: Union[bytes, Iterable[bytes]],
    path: "os.PathLike[str] | str",
    algorithm: Algorithm,
    expected_hash: Optional[ContentHash] = None,
    expected_size: Optional[int] = None,
    compressed: bool = True,
    mode: int = 0o644,
) -> DecodeResult:
    """Decode into ``path``, which appears only once the object verified."""
    return decode_to_path_with(
        Decoder, decode_bytes, pieces, path, algorithm, expected_hash,
        expected_size, compressed, mode,
    )
