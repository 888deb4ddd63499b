"""The object codec: the C extension when it was built, else its Python twin.

Callers import ``Decoder``, ``Encoder``, ``DecodeResult``, ``EncodeResult``,
``decode_bytes``, ``encode_bytes``, ``decode_to_path`` and ``BACKEND`` from
here and never care which one is active.  ``UVM_CODEC=python`` in the
environment forces the twin (tests, benchmarks, a suspected C bug).

The C side (``native/uvm_codec.c``, built by cffi as ``uvm._native_codec``)
returns status codes; this module maps them onto :class:`DecodeError` with
the same :class:`DecodeFailure` and message the twin raises.  cffi releases
the GIL around every C call, so decoders in several threads run in parallel.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any, Dict, Iterable, Iterator, Optional, Union

from uvm import _pycodec
from uvm._pycodec import DecodeResult, EncodeResult
from uvm.cvmfs.hashing import Algorithm, ContentHash
from uvm.errors import CvmfsError, DecodeError, DecodeFailure

__all__ = [
    "BACKEND",
    "Decoder",
    "DecodeResult",
    "Encoder",
    "EncodeResult",
    "checks",
    "decode_bytes",
    "decode_to_path",
    "encode_bytes",
]

ONESHOT_LIMIT = 32 << 20
"""Objects whose expected size is at most this (CernVM-FS chunks are at most
16 MiB by default) are inflated in one libdeflate call, about twice zlib's
speed, into a buffer of that size; larger ones and objects of unknown size
stream through zlib.  Either way output beyond the expected size is never
written."""


def _load() -> "tuple[Any, str]":
    """The cffi module and why it is (not) used."""
    if os.environ.get("UVM_CODEC", "").strip().lower() == "python":
        return None, "pure Python, forced by UVM_CODEC=python"
    try:
        from uvm import _native_codec
    except ImportError as err:
        warnings.warn(
            f"uvm: the C object codec is not built ({err}); using the slower "
            "pure-Python one (reinstall uvm with a C compiler, zlib and OpenSSL "
            "headers to build it)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None, f"pure Python, C extension not built: {err}"
    inflater = "libdeflate + zlib" if _native_codec.lib.codec_have_libdeflate() else "zlib"
    return _native_codec, f"C ({inflater}, OpenSSL libcrypto)"


_codec, DETAIL = _load()
BACKEND = "native" if _codec is not None else "python"


def checks() -> Iterator["object"]:
    from uvm.doctor import Check

    yield Check("codec", BACKEND == "native", f"object codec: {BACKEND}: {DETAIL}")


if _codec is None:
    Decoder = _pycodec.Decoder  # type: ignore[misc]
    Encoder = _pycodec.Encoder  # type: ignore[misc]
    decode_bytes = _pycodec.decode_bytes
    encode_bytes = _pycodec.encode_bytes
    decode_to_path = _pycodec.decode_to_path
else:
    ffi, lib = _codec.ffi, _codec.lib

    _ALGORITHM_IDS = {
        Algorithm.SHA1: lib.CODEC_ALG_SHA1,
        Algorithm.RMD160: lib.CODEC_ALG_RMD160,
        Algorithm.SHAKE128: lib.CODEC_ALG_SHAKE128,
    }
    # Digest implementations, fetched once per process and shared by threads
    # (an EVP_MD is immutable).  A race fetches one twice: harmless.  Keyed
    # by the member's value: hashing a str is cheaper than hashing an Enum.
    _MDS: Dict[str, Any] = {}

    def _md(algorithm: Algorithm) -> Any:
        md = _MDS.get(algorithm._value_)
        if md is None:
            md = lib.codec_md_fetch(_ALGORITHM_IDS[algorithm])
            if md == ffi.NULL:
                raise CvmfsError(
                    f"{algorithm.name} is not available in this OpenSSL libcrypto",
                    hint="install an OpenSSL with RIPEMD-160 or use a SHA-1 repository",
                )
            _MDS[algorithm._value_] = md
        return md

    def _buffer(data: Any) -> Any:
        return data if type(data) is bytes else ffi.from_buffer(data)

    def _raise(status: int, result: Any = None, expected_hash: Optional[ContentHash] = None,
               expected_size: Optional[int] = None, algorithm: Optional[Algorithm] = None) -> None:
        """Raise what the twin raises for the same failure."""
        if status == lib.CODEC_NOMEM:
            raise MemoryError("the object codec ran out of memory")
        if status == lib.CODEC_HASH_ERROR:
            raise CvmfsError("the digest computation failed (or the codec was already finished)")
        if status == lib.CODEC_WRITE:
            code = result.sys_errno if result is not None else 0
            cause = OSError(code, os.strerror(code))  # as the twin's: errno for the caller
            raise DecodeError(
                f"cannot write output: {os.strerror(code)}", DecodeFailure.WRITE
            ) from cause
        if status == lib.CODEC_TRUNCATED:
            raise DecodeError("zlib stream truncated", DecodeFailure.TRUNCATED)
        if status == lib.CODEC_CORRUPT:
            raise DecodeError("corrupt zlib stream", DecodeFailure.CORRUPT)
        if status == lib.CODEC_TRAILING_GARBAGE:
            raise DecodeError(
                "trailing bytes after the end of the zlib stream", DecodeFailure.TRAILING_GARBAGE
            )
        if status == lib.CODEC_TOO_LARGE:
            raise DecodeError(
                f"output exceeds the expected {expected_size} bytes", DecodeFailure.TOO_LARGE
            )
        if status == lib.CODEC_EMPTY:
            raise DecodeError("empty object: no bytes received", DecodeFailure.EMPTY)
        if status == lib.CODEC_HASH_MISMATCH:
            got = ContentHash(algorithm, ffi.buffer(result.digest)[:])  # type: ignore[arg-type]
            raise DecodeError(
                f"content hash {got} does not match the expected {expected_hash}",
                DecodeFailure.HASH_MISMATCH,
            )
        if status == lib.CODEC_TOO_SMALL:
            raise DecodeError(
                f"output has {result.size} bytes, expected {expected_size}",
                DecodeFailure.TOO_SMALL,
            )
        raise CvmfsError(f"the object codec returned unknown status {status}")

    def _check_hash(algorithm: Algorithm, expected_hash: Optional[ContentHash]) -> Any:
        if expected_hash is None:
            return ffi.NULL
        if expected_hash.algorithm is not algorithm:
            raise ValueError("expected_hash uses another algorithm than the decoder")
        return expected_hash.digest

    _ONESHOT = bool(lib.codec_have_libdeflate())

    def _oneshot_bound(expected_size: int) -> int:
        """Longest input still worth one-shot inflating (as the C side reckons)."""
        return expected_size + expected_size // 8 + 4096

    class Decoder:  # type: ignore[no-redef]
        """Hash compressed pieces, inflate them and write the output to ``out_fd``.

        Same contract as :class:`uvm._pycodec.Decoder`.  An object whose
        expected size is at most ``ONESHOT_LIMIT`` is collected and decoded
        at ``finish()`` in one C call (libdeflate, no per-piece calls); any
        other streams through zlib piece by piece.  The C state is freed by
        ``finish()``, ``abort()`` or garbage collection.
        """

        __slots__ = ("_dec", "_pieces", "_room", "_fd", "_algorithm", "_expected_hash",
                     "_expected_size", "_compressed")

        def __init__(
            self,
            algorithm: Algorithm,
            out_fd: int,
            expected_hash: Optional[ContentHash] = None,
            expected_size: Optional[int] = None,
            compressed: bool = True,
        ) -> None:
            _check_hash(algorithm, expected_hash)
            self._algorithm = algorithm
            self._fd = out_fd
            self._expected_hash = expected_hash
            self._expected_size = expected_size
            self._compressed = compressed
            self._dec: Any = None
            self._pieces: Optional[list] = None
            if (_ONESHOT and compressed and expected_size is not None
                    and 0 <= expected_size <= ONESHOT_LIMIT):
                self._pieces = []
                self._room = _oneshot_bound(expected_size)
            else:
                self._start()

        def _start(self) -> None:
            expected = self._expected_hash
            dec = lib.codec_decoder_new(
                _md(self._algorithm), self._fd,
                ffi.NULL if expected is None else expected.digest,
                -1 if self._expected_size is None else self._expected_size,
                1 if self._compressed else 0,
            )
            if dec == ffi.NULL:
                raise MemoryError("cannot allocate an object decoder")
            self._dec = ffi.gc(dec, lib.codec_decoder_free)

        def feed(self, data: bytes) -> None:
            if not data:
                return
            pieces = self._pieces
            if pieces is not None:
                self._room -= len(data)
                if self._room >= 0:
                    pieces.append(data if type(data) is bytes else bytes(data))
                    return
                # Far longer than any encoder makes for this size: stream it.
                self._pieces = None
                self._start()
                for piece in pieces:
                    self._feed(piece)
            self._feed(data)

        def _feed(self, data: Any) -> None:
            if self._dec is None:
                raise ValueError("the decoder is finished or aborted")
            buf = _buffer(data)
            status = lib.codec_decoder_feed(self._dec, buf, len(buf))
            if status:
                result = ffi.new("codec_result *")
                lib.codec_decoder_finish(self._dec, result)  # sticky status; fills sys_errno
                _raise(status, result, self._expected_hash, self._expected_size, self._algorithm)

        def finish(self) -> DecodeResult:
            pieces = self._pieces
            if pieces is not None:
                self._pieces = None
                data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                try:
                    return _decode(data, self._algorithm, self._fd, self._expected_hash,
                                   self._expected_size, True, 0)
                except _Retry:
                    # Not a clean object: stream the pieces as they came, so that
                    # the failure is the one the twin names for the same feeds.
                    self._start()
                    for piece in pieces:
                        self._feed(piece)
            if self._dec is None:
                raise ValueError("the decoder is finished or aborted")
            result = ffi.new("codec_result *")
            status = lib.codec_decoder_finish(self._dec, result)
            if status:
                _raise(status, result, self._expected_hash, self._expected_size, self._algorithm)
            self.abort()
            return DecodeResult(
                ContentHash(self._algorithm, ffi.buffer(result.digest)[:]), result.size
            )

        def abort(self) -> None:
            """Drop the object; the decoder cannot be used afterwards."""
            self._pieces = None
            if self._dec is not None:
                ffi.release(self._dec)
                self._dec = None

    class Encoder:  # type: ignore[no-redef]
        """Deflate pieces, hash the compressed bytes and write them to ``out_fd``."""

        __slots__ = ("_enc", "_algorithm")

        def __init__(self, algorithm: Algorithm, out_fd: int, level: int = 6) -> None:
            if not -1 <= level <= 9:
                raise ValueError(f"compression level {level} is not in -1..9")
            enc = lib.codec_encoder_new(_md(algorithm), out_fd, level)
            if enc == ffi.NULL:
                raise MemoryError("cannot allocate an object encoder")
            self._enc = ffi.gc(enc, lib.codec_encoder_free)
            self._algorithm = algorithm

        def feed(self, data: bytes) -> None:
            if not data:
                return
            buf = _buffer(data)
            status = lib.codec_encoder_feed(self._enc, buf, len(buf))
            if status:
                result = ffi.new("codec_result *")
                lib.codec_encoder_finish(self._enc, result)  # sticky status; fills sys_errno
                _raise(status, result)

        def finish(self) -> EncodeResult:
            result = ffi.new("codec_result *")
            status = lib.codec_encoder_finish(self._enc, result)
            if status:
                _raise(status, result)
            self.abort()
            return EncodeResult(
                ContentHash(self._algorithm, ffi.buffer(result.digest)[:]),
                result.compressed_size,
                result.size,
            )

        def abort(self) -> None:
            """Free the C state now; the encoder cannot be used afterwards."""
            if self._enc is not None:
                ffi.release(self._enc)
                self._enc = None

    _scratch = threading.local()

    def _scratch_result() -> Any:
        """This thread's result struct and a view of its digest (no per-call churn)."""
        try:
            return _scratch.value
        except AttributeError:
            result = ffi.new("codec_result *")
            _scratch.value = (result, ffi.buffer(result.digest))
            return _scratch.value

    class _Retry(Exception):
        """The one-shot path could not decode the object cleanly (nothing written)."""

    def decode_bytes(
        data: bytes,
        algorithm: Algorithm,
        out_fd: int,
        expected_hash: Optional[ContentHash] = None,
        expected_size: Optional[int] = None,
        compressed: bool = True,
    ) -> DecodeResult:
        """Decode a whole object held in memory: one C call, no copy."""
        return _decode(data, algorithm, out_fd, expected_hash, expected_size, compressed, 1)

    def _decode(
        data: Any,
        algorithm: Algorithm,
        out_fd: int,
        expected_hash: Optional[ContentHash],
        expected_size: Optional[int],
        compressed: bool,
        replay: int,
    ) -> DecodeResult:
        """``decode_bytes``; with ``replay=0`` a failed one-shot raises ``_Retry``.

        The hot path for small objects, so it avoids per-call allocations:
        cached digest implementation, per-thread result struct, size as the
        return value."""
        md = _MDS.get(algorithm._value_)
        if md is None:
            md = _md(algorithm)
        if expected_hash is None:
            digest = ffi.NULL
        elif expected_hash.algorithm is algorithm:
            digest = expected_hash.digest
        else:
            raise ValueError("expected_hash uses another algorithm than the decoder")
        if type(data) is not bytes:
            data = ffi.from_buffer(data)
        result, result_digest = _scratch_result()
        size = lib.codec_decode(
            md, out_fd, data, len(data), digest,
            -1 if expected_size is None else expected_size,
            compressed, ONESHOT_LIMIT, replay, result,
        )
        if size < 0:
            if size == -lib.CODEC_RETRY:
                raise _Retry()
            _raise(-size, result, expected_hash, expected_size, algorithm)
        return DecodeResult(ContentHash(algorithm, result_digest[:]), size)

    def encode_bytes(
        data: bytes, algorithm: Algorithm, out_fd: int, level: int = 6
    ) -> EncodeResult:
        """Compress a whole object held in memory to ``out_fd``."""
        encoder = Encoder(algorithm, out_fd, level)
        encoder.feed(data)
        return encoder.finish()

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
        return _pycodec.decode_to_path_with(
            Decoder, decode_bytes, pieces, path, algorithm, expected_hash,
            expected_size, compressed, mode,
        )
