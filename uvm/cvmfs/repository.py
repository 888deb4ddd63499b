"""The reader façade: open a repository revision with everything verified, then browse it.

``Repository.open`` wires the pieces in a fixed order and names the stage
that fails: manifest (syntax, name, root path), certificate object and
manifest signature, whitelist (master-key signature, name, expiry,
certificate fingerprint), rollback state, then the revision to show (head,
``tag``, ``date`` or a pinned ``root_hash``) and its catalog tree.  All I/O
goes through an ``ObjectSource``; by default a :class:`SimpleSource` over
``servers``.
"""

from __future__ import annotations

import datetime as _dt
import errno
import io
import os
import posixpath
import shutil
import stat as _stat
from typing import Callable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from uvm import log as uvm_log
from uvm.cvmfs import manifest as manifest_mod
from uvm.cvmfs import signature, variant
from uvm.cvmfs import whitelist as whitelist_mod
from uvm.cvmfs.catalog import DirEntry
from uvm.cvmfs.catalog_tree import CatalogTree
from uvm.cvmfs.hashing import Algorithm, ContentHash, Suffix
from uvm.cvmfs.history import History, Tag, parse_date
from uvm.cvmfs.rollback import RollbackState, default_state_dir
from uvm.cvmfs.source import ObjectSource
from uvm.errors import CvmfsError, PathNotFoundError

log = uvm_log.get(__name__)

Keys = Union[None, str, Sequence[str]]


def normalize(path: str) -> str:
    """A user path (``/a/b/``, ``a/b``, ``/``) as a catalog path (``/a/b``, root ``''``)."""
    clean = posixpath.normpath("/" + path.lstrip("/"))
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    return "" if clean == "/" else clean


def display(path: str) -> str:
    return path or "/"


def _copy_all(src: io.BufferedIOBase, out: io.BufferedIOBase) -> None:
    """The rest of ``src`` to ``out``: in the kernel (``copy_file_range``)
    between files of one file system, else through a buffer."""
    out.flush()  # what was written through ``out`` must land before, not after
    try:
        while os.copy_file_range(src.fileno(), out.fileno(), 1 << 30):
            pass
        return
    except (AttributeError, io.UnsupportedOperation):
        pass  # not a plain file
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    shutil.copyfileobj(src, out, 1 << 20)
    out.flush()  # the next piece may be copied in the kernel again


class _ChunkedReader(io.RawIOBase):
    """A chunked file read chunk by chunk; only the current chunk is open."""

    def __init__(self, source: ObjectSource, entry: DirEntry, chunks, where: str) -> None:
        self._where = where
        self._source = source
        self._entry = entry
        self._chunks = chunks
        self._pos = 0
        self._current = -1
        self._handle = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._entry.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def _open_chunk(self, index: int) -> None:
        if self._current == index:
            return
        if self._handle is not None:
            self._handle.close()
            self._handle, self._current = None, -1
        chunk = self._chunks[index]
        try:
            self._handle = self._source.open_object(chunk.content_hash, Suffix.PARTIAL,
                                                    expected_size=chunk.size,
                                                    compressed=self._entry.compressed)
        except CvmfsError as err:
            raise _located(err, f"{self._where} (chunk at offset {chunk.offset})")
        self._current = index

    def readinto(self, buffer) -> int:
        if self._pos >= self._entry.size:
            return 0
        index = self._find(self._pos)
        chunk = self._chunks[index]
        self._open_chunk(index)
        assert self._handle is not None
        self._handle.seek(self._pos - chunk.offset)
        want = min(len(buffer), chunk.offset + chunk.size - self._pos)
        data = self._handle.read(want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _find(self, position: int) -> int:
        low, high = 0, len(self._chunks) - 1
        while low < high:
            mid = (low + high + 1) // 2
            if self._chunks[mid].offset <= position:
                low = mid
            else:
                high = mid - 1
        return low

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        super().close()


class _ClassOrInstance:
    """``Repository.open(fqrn, ...)`` opens a repository; ``repo.open(path)`` opens a file.

    Both names are what callers expect (the issue's API), so the attribute
    dispatches on whether it is reached through the class or an instance.
    """

    def __init__(self, for_class, for_instance) -> None:
        self._for_class = for_class
        self._for_instance = for_instance
        self.__doc__ = for_class.__doc__

    def __get__(self, instance, owner):
        if instance is None:
            return self._for_class.__get__(owner, owner)
        return self._for_instance.__get__(instance, owner)


class Repository:
    """One verified revision of a repository; a context manager."""

    def __init__(self, fqrn: str, source: ObjectSource, manifest: manifest_mod.Manifest,
                 tree: CatalogTree, environ: Optional[Mapping[str, str]] = None,
                 selected: Optional[Tag] = None) -> None:
        self.fqrn = fqrn
        self.source = source
        self.manifest = manifest
        self.tree = tree
        self.environ = os.environ if environ is None else environ
        self.selected_tag = selected
        self._history: Optional[History] = None

    # --- opening -------------------------------------------------------------------

    def _open_repository(
        cls,
        fqrn: str,
        servers: Union[None, str, Sequence[str]] = None,
        keys: Keys = None,
        tag: Optional[str] = None,
        date: Union[None, str, int] = None,
        root_hash: Union[None, str, ContentHash] = None,
        source: Optional[ObjectSource] = None,
        state_dir: Optional[str] = None,
        environ: Optional[Mapping[str, str]] = None,
        now: Optional[_dt.datetime] = None,
    ) -> "Repository":
        """Verify the repository's manifest and whitelist and open the chosen revision.

        ``keys``: a directory of ``*.pub`` master keys, a ``.pub`` file, a
        colon list of them (``CVMFS_PUBLIC_KEY`` style) or a list of paths;
        None means ``/etc/cvmfs/keys``.
        """
        if sum(x is not None for x in (tag, date, root_hash)) > 1:
            raise CvmfsError("choose at most one of tag, date and root hash")
        if source is None:
            from uvm.cvmfs.http_source import SimpleSource, expand_servers

            if isinstance(servers, str):
                servers = expand_servers(servers, fqrn)
            source = SimpleSource(list(servers or []))
        try:
            return cls._open(fqrn, source, keys, tag, date, root_hash, state_dir, environ, now)
        except CvmfsError as err:
            source.close()
            servers = getattr(source, "servers", None)
            where = fqrn
            if isinstance(servers, (list, tuple)) and all(isinstance(s, str) for s in servers):
                where += f" at {';'.join(servers)}" if servers else ""
            raise _located(err, where)
        except BaseException:
            source.close()
            raise

    @classmethod
    def _open(cls, fqrn, source, keys, tag, date, root_hash, state_dir, environ,
              now) -> "Repository":
        def first_objects(manifest: manifest_mod.Manifest) -> List[tuple]:
            """The catalog or tag database the revision choice below will open."""
            return manifest_mod.first_objects(manifest, tag, date, root_hash)

        manifest = verify_bootstrap(source, fqrn, signature.load_master_keys(_key_paths(keys)),
                                    now, first_objects)
        RollbackState(state_dir or default_state_dir()).check_and_record(
            fqrn, manifest.revision, manifest.timestamp, str(manifest.root_hash))
        history = None
        try:
            selected = None
            if tag is not None or date is not None:
                history = _open_history(source, manifest)
                if tag is not None:
                    selected = history.find(tag)
                else:
                    timestamp = date if isinstance(date, int) else parse_date(str(date))
                    selected = history.find_by_date(timestamp)
                root, size = selected.root_hash, selected.size or None
            elif root_hash is not None:
                root = (root_hash if isinstance(root_hash, ContentHash)
                        else _parse_root_hash(root_hash))
                size = manifest.catalog_size if root == manifest.root_hash else None
            else:
                root, size = manifest.root_hash, manifest.catalog_size or None
            tree = CatalogTree(source, root, size)
        except BaseException:
            if history is not None:
                history.close()
            raise
        repo = cls(fqrn, source, manifest, tree, environ, selected)
        repo._history = history
        return repo

    # --- revision facts -----------------------------------------------------------

    @property
    def root_hash(self) -> ContentHash:
        return self.tree.root_hash

    @property
    def revision(self) -> int:
        return self.tree.root.revision

    @property
    def algorithm(self) -> Algorithm:
        return self.manifest.algorithm

    @property
    def ttl(self) -> int:
        return self.tree.root.ttl or self.manifest.ttl

    @property
    def published(self) -> Optional[int]:
        """Publish time of the revision shown (tag time, else the manifest's ``T``)."""
        if self.selected_tag is not None:
            return self.selected_tag.timestamp
        if self.root_hash == self.manifest.root_hash:
            return self.manifest.timestamp
        return int(self.tree.root.properties.get("last_modified", "0")) or None

    @property
    def history(self) -> History:
        if self._history is None:
            self._history = _open_history(self.source, self.manifest)
        return self._history

    def tags(self) -> List[Tag]:
        if self.manifest.history is None:
            return []
        return self.history.tags()

    # --- browsing -------------------------------------------------------------------

    def stat(self, path: str) -> DirEntry:
        """The entry at ``path``; raises ``PathNotFoundError``."""
        clean = normalize(path)
        try:
            entry = self.tree.lookup(clean)
        except CvmfsError as err:
            raise _located(err, f"{self.fqrn}:{display(clean)}")
        if entry is None:
            raise PathNotFoundError(f"{self.fqrn}:{display(clean)} does not exist")
        return entry

    def exists(self, path: str) -> bool:
        return self.tree.lookup(normalize(path)) is not None

    def scandir(self, path: str) -> List[DirEntry]:
        entry = self.stat(path)
        if not entry.is_dir:
            raise CvmfsError(f"{self.fqrn}:{display(entry.path)} is not a directory")
        return [e for e in self.tree.listing(entry.path) if not e.is_hidden]

    def listdir(self, path: str) -> List[str]:
        return [entry.name for entry in self.scandir(path)]

    def readlink(self, path: str, expand: bool = True) -> str:
        """The link target; variant symlinks expanded from ``environ`` unless ``expand`` is off."""
        entry = self.stat(path)
        if not entry.is_symlink:
            raise CvmfsError(f"{self.fqrn}:{display(entry.path)} is not a symbolic link")
        return variant.expand(entry.symlink, self.environ) if expand else entry.symlink

    def _regular(self, path: str) -> Tuple[DirEntry, Optional[List]]:
        """The entry of a regular file uvm can read, and its chunks (None: one object)."""
        entry = self.stat(path)
        if not entry.is_regular:
            raise CvmfsError(f"{self.fqrn}:{display(entry.path)} is not a regular file")
        if entry.is_external:
            raise CvmfsError(f"{self.fqrn}:{display(entry.path)} is an external file, "
                             "which uvm does not fetch")
        if entry.is_chunked:
            chunks = self.tree.chunks(entry)
            if sum(chunk.size for chunk in chunks) != entry.size:
                raise CvmfsError(f"chunk list of {self.fqrn}:{display(entry.path)} "
                                 "does not add up to the file size")
            return entry, chunks
        if entry.content_hash is None:
            raise CvmfsError(f"{self.fqrn}:{display(entry.path)} has no content hash")
        return entry, None

    def open_file(self, path: str) -> io.BufferedIOBase:
        """A binary, seekable file object; chunked files are fetched chunk by chunk."""
        entry, chunks = self._regular(path)
        where = f"{self.fqrn}:{display(entry.path)}"
        if chunks is not None:
            return io.BufferedReader(_ChunkedReader(self.source, entry, chunks, where), 1 << 20)
        try:
            return self.source.open_object(entry.content_hash, Suffix.NONE,
                                           expected_size=entry.size, compressed=entry.compressed)
        except CvmfsError as err:
            raise _located(err, where)

    def copy_file(self, path: str, out: io.BufferedIOBase) -> None:
        """Append a regular file's content to ``out``, a plain file open for
        writing: object by object, in the kernel where it can
        (``copy_file_range``), so that the bytes never pass through Python."""
        entry, chunks = self._regular(path)
        where = f"{self.fqrn}:{display(entry.path)}"
        pieces = ([(c.content_hash, Suffix.PARTIAL, c.size, f"{where} (chunk at offset {c.offset})")
                   for c in chunks] if chunks is not None
                  else [(entry.content_hash, Suffix.NONE, entry.size, where)])
        for content_hash, suffix, size, what in pieces:
            try:
                handle = self.source.open_object(content_hash, suffix, expected_size=size,
                                                 compressed=entry.compressed)
            except CvmfsError as err:
                raise _located(err, what)
            with handle:
                _copy_all(handle, out)

    open = _ClassOrInstance(classmethod(_open_repository), open_file)

    def prefetch(self, path: str) -> None:
        """Fetch and verify every object of a regular file: reading it cannot fail halfway."""
        entry = self.stat(path)
        if not entry.is_regular or not entry.is_chunked:
            self.open_file(path).close()
            return
        where = f"{self.fqrn}:{display(entry.path)}"
        for chunk in self.tree.chunks(entry):
            try:
                self.source.fetch_object(chunk.content_hash, Suffix.PARTIAL,
                                         expected_size=chunk.size, compressed=entry.compressed)
            except CvmfsError as err:
                raise _located(err, f"{where} (chunk at offset {chunk.offset})")

    def read(self, path: str) -> bytes:
        with self.open_file(path) as handle:
            try:
                return handle.read()
            except CvmfsError as err:
                raise _located(err, f"{self.fqrn}:{display(normalize(path))}")

    def walk(self, path: str = "/") -> Iterator[Tuple[str, List[DirEntry], List[DirEntry]]]:
        """Like ``os.walk`` (top-down): ``(dirpath, dir entries, other entries)``."""
        pending = [self.stat(path)]
        while pending:
            directory = pending.pop()
            entries = self.scandir(directory.path or "/")
            dirs = [e for e in entries if e.is_dir]
            others = [e for e in entries if not e.is_dir]
            yield display(directory.path), dirs, others
            pending.extend(reversed(dirs))

    # --- lifetime -------------------------------------------------------------------

    def close(self) -> None:
        if self._history is not None:
            self._history.close()
            self._history = None
        self.tree.close()
        self.source.close()

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _located(err: CvmfsError, where: str) -> CvmfsError:
    """The same error with ``where`` in front of its message (its class and codes kept)."""
    if err.args and isinstance(err.args[0], str) and not err.args[0].startswith(where):
        err.args = (f"{where}: {err.args[0]}",) + err.args[1:]
    return err


def verify_bootstrap(source: ObjectSource, fqrn: str, master_keys: Sequence,
                     now: Optional[_dt.datetime] = None,
                     first_objects: Optional[Callable[[manifest_mod.Manifest], List[tuple]]]
                     = None) -> manifest_mod.Manifest:
    """Manifest → certificate → manifest signature → whitelist, as ``manifest_fetch.cc`` does.

    Returns the manifest once every check passed; raises the error of the
    first stage that failed (``ManifestError``, ``SignatureError``,
    ``WhitelistError``, ``FetchError``, ``DecodeError``).

    A source that can fetch ahead (the :class:`~uvm.cvmfs.fetcher.Fetcher`)
    is asked for the whitelist while the manifest comes, and for
    ``first_objects(manifest)`` (the root catalog) while the certificate
    comes: two round trips instead of four on a cold start.  The checks and
    their order stay as they are; only the waiting overlaps.
    """
    from cryptography.hazmat.primitives import serialization

    ahead = getattr(source, "ahead", None)
    if ahead is not None:
        ahead(files=(".cvmfswhitelist",))
    data = source.fetch_file(".cvmfspublished")
    manifest = manifest_mod.parse_manifest(data)
    manifest_mod.check_identity(manifest, fqrn)
    assert manifest.certificate is not None
    if ahead is not None and first_objects is not None:
        ahead(objects=first_objects(manifest))
    cert_path = source.fetch_object(manifest.certificate, Suffix.CERTIFICATE)
    with open(cert_path, "rb") as handle:
        certificate = signature.load_certificate(handle.read())
    manifest_mod.verify_signature(data, signature.certificate_public_key(certificate))
    whitelist_mod.verify(
        source.fetch_file(".cvmfswhitelist"), master_keys, fqrn,
        certificate.public_bytes(serialization.Encoding.DER), now=now,
    )
    return manifest


def _parse_root_hash(text: str) -> ContentHash:
    """A root catalog hash as users paste it: hex, algorithm id, maybe the ``C`` suffix."""
    text = text.strip()
    for candidate in (text, text[:-1] if text.endswith("C") else None):
        if candidate:
            try:
                return ContentHash.parse(candidate)
            except CvmfsError:
                pass
    raise CvmfsError(f"{text!r} is not a root catalog hash",
                     hint="give 40 hex digits, optionally with -shake128 or -rmd160")


def _key_paths(keys: Keys) -> List[str]:
    if keys is None:
        return signature.master_key_paths()
    if isinstance(keys, str):
        if ":" in keys or keys.endswith(".pub"):
            return signature.master_key_paths(public_key=keys)
        return signature.master_key_paths(keys_dir=keys)
    return list(keys)


def _open_history(source: ObjectSource, manifest: manifest_mod.Manifest) -> History:
    if manifest.history is None:
        raise CvmfsError("repository has no history database, so no tags or dates",
                         hint="publish with a history (uvm publish always writes one)")
    path = source.fetch_object(manifest.history, Suffix.HISTORY)
    return History(path)


def mode_string(entry: DirEntry) -> str:
    """``ls -l`` style mode text, e.g. ``drwxr-xr-x``."""
    return _stat.filemode(entry.mode)


__all__ = ["Repository", "normalize", "mode_string", "default_state_dir"]
