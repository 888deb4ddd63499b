"""The stratum-0 object store: a directory any static web server can serve.

Layout (``STORE`` is the repository directory itself, served as
``http://HOST/cvmfs/FQRN``)::

    STORE/.cvmfspublished     signed manifest, replaced last by one rename
    STORE/.cvmfswhitelist     whitelist signed by the master key
    STORE/data/00 .. ff/      content-addressed zlib objects
    STORE/data/txn/           objects being written

Every object is compressed and hashed by the codec's ``Encoder`` into a
temporary file in ``data/txn`` and renamed to its content name; an object
that already exists is left alone (content addressing makes it identical),
so a republish adds only new objects and a killed publish leaves only
``txn`` litter and unreferenced objects behind.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
from typing import Iterable, Optional

from uvm._native import Decoder, Encoder
from uvm.cvmfs.hashing import Algorithm, ContentHash, Suffix
from uvm.errors import PublishError

_PIECE = 1 << 20


class ObjectStore:
    def __init__(self, root: str, algorithm: Algorithm = Algorithm.SHA1) -> None:
        self.root = root
        self.algorithm = algorithm
        self.txn = os.path.join(root, "data", "txn")
        self.new_objects = 0
        self.new_bytes = 0
        self._lock_fd: Optional[int] = None
        self._counting = threading.Lock()  # put_* run in several threads

    def prepare(self) -> None:
        """Create the layout (all 256 ``data/XX`` directories and ``txn``) and check access."""
        try:
            os.makedirs(self.root, exist_ok=True)
            for index in range(256):
                os.makedirs(os.path.join(self.root, "data", f"{index:02x}"), exist_ok=True)
            os.makedirs(self.txn, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.txn, prefix="probe.")
            probe.close()
        except OSError as err:
            raise PublishError(
                f"store {self.root} is not writable: {err.strerror or err}",
                hint="choose a directory you can write to with --to",
            ) from None

    def lock(self) -> None:
        """Take the store's publish lock, then clear what killed publishes left in ``txn``.

        An advisory ``flock`` on ``data/txn/.lock``: the kernel drops it when
        the holder dies, even by SIGKILL, so there is never a stale lock.
        """
        path = os.path.join(self.txn, ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PublishError(f"another publish into {self.root} is in progress") from None
        self._lock_fd = fd
        for name in os.listdir(self.txn):
            if name == ".lock":
                continue
            litter = os.path.join(self.txn, name)
            if os.path.isdir(litter) and not os.path.islink(litter):
                shutil.rmtree(litter, ignore_errors=True)
            else:
                try:
                    os.unlink(litter)
                except OSError:
                    pass

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def path_of(self, content_hash: ContentHash, suffix: Suffix = Suffix.NONE) -> str:
        return os.path.join(self.root, content_hash.object_path(suffix))

    def exists(self, content_hash: ContentHash, suffix: Suffix = Suffix.NONE) -> bool:
        return os.path.exists(self.path_of(content_hash, suffix))

    def put_pieces(self, pieces: Iterable[bytes], suffix: Suffix = Suffix.NONE) -> ContentHash:
        """Compress ``pieces`` into one object; return its content hash."""
        fd, tmp = tempfile.mkstemp(dir=self.txn, prefix="obj.")
        try:
            try:
                encoder = Encoder(self.algorithm, fd)
                for piece in pieces:
                    encoder.feed(piece)
                result = encoder.finish()
            finally:
                os.close(fd)
            final = self.path_of(result.content_hash, suffix)
            os.chmod(tmp, 0o644)
            with self._counting:  # two threads may have stored the same content
                if os.path.exists(final):
                    os.unlink(tmp)
                else:
                    os.rename(tmp, final)
                    self.new_objects += 1
                    self.new_bytes += result.compressed_size
            return result.content_hash
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def put_bytes(self, data: bytes, suffix: Suffix = Suffix.NONE) -> ContentHash:
        return self.put_pieces([data], suffix)

    def put_file(self, path: str, suffix: Suffix = Suffix.NONE) -> ContentHash:
        def pieces():
            with open(path, "rb") as handle:
                while True:
                    piece = handle.read(_PIECE)
                    if not piece:
                        return
                    yield piece

        return self.put_pieces(pieces(), suffix)

    def get_to_file(self, content_hash: ContentHash, suffix: Suffix, dest: str) -> None:
        """Inflate one of our own objects (previous catalogs, history) to ``dest``."""
        with open(self.path_of(content_hash, suffix), "rb") as src:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                decoder = Decoder(content_hash.algorithm, fd, expected_hash=content_hash)
                while True:
                    piece = src.read(_PIECE)
                    if not piece:
                        break
                    decoder.feed(piece)
                decoder.finish()
            finally:
                os.close(fd)

    def replace_file(self, name: str, data: bytes) -> None:
        """Write ``STORE/name`` atomically: temporary file, fsync, rename."""
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{name}.tmp.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.rename(tmp, os.path.join(self.root, name))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def read_file(self, name: str) -> Optional[bytes]:
        try:
            with open(os.path.join(self.root, name), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
