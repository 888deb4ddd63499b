"""Race-free hand-over of translated paths to the kernel.

The tracer resolves a guest path while the guest is stopped; the kernel
walks the host path after it resumes.  If another guest process swaps a
directory on that path for a symlink in between, a plain host path would be
followed on the host.  So the tracer opens the resolved parent directory
itself (O_PATH, with openat2's RESOLVE_NO_SYMLINKS: every component must be
the real directory the resolution saw) and hands the kernel
``/proc/<tracer>/fd/<N>/<name>``: the kernel then starts from that very
directory.  Only the last component is looked up by name.

Directory descriptors are cached by host path; a cache generation is retired
(closed one generation later, so that calls still in flight keep working)
whenever the guest renames, unlinks or replaces something, and when the
cache grows too large.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import struct

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional

_SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
_O_PATH = 0o10000000
_O_DIRECTORY = 0o200000
_O_CLOEXEC = 0o2000000
MAX_ANCHORS = 2048

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _openat2_dir(path: bytes) -> int:
    how = ctypes.create_string_buffer(
        struct.pack("<QQQ", _O_PATH | _O_DIRECTORY | _O_CLOEXEC, 0,
                    RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS))
    fd = _syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_long(-100), ctypes.c_char_p(path),
                  how, ctypes.c_size_t(24))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return fd


def available() -> bool:
    """openat2 exists (Linux 5.6+) and /proc/self/fd can be walked through."""
    try:
        fd = _openat2_dir(b"/")
    except OSError:
        return False
    try:
        return os.path.isdir(f"/proc/{os.getpid()}/fd/{fd}/")
    finally:
        os.close(fd)


class Anchors:
    """Host directory → ``/proc/<tracer>/fd/<N>`` prefix, cached."""

    def __init__(self) -> None:
        self.prefix = f"/proc/{os.getpid()}/fd/"
        # Called before a generation is retired: whoever copied descriptor
        # numbers (the C fast path) must forget them.
        self.on_retire: Callable[[], None] = lambda: None
        self._fds: Dict[str, int] = {}
        self._retired: List[int] = []
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, 8 * MAX_ANCHORS) if hard != resource.RLIM_INFINITY else 8 * MAX_ANCHORS
        if soft < want:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            except (ValueError, OSError):
                pass

    def anchored(self, host: str) -> str:
        """The kernel-side name of host path ``host`` (absolute, canonical,
        symlink-free up to its last component).  OSError ELOOP when a
        directory on it has just been replaced by a symlink."""
        slash = "/" if host.endswith("/") and len(host) > 1 else ""
        parent, _, last = (host[:-1] if slash else host).rpartition("/")
        if not parent or not last:
            return host  # a top-level name: nothing to swap above it
        fd = self._fds.get(parent)
        if fd is None:
            if len(self._fds) >= MAX_ANCHORS:
                self.retire()
            fd = _openat2_dir(parent.encode("utf-8", "surrogateescape"))
            self._fds[parent] = fd
        # The last component stays a name (with its trailing slash): rename,
        # rmdir and unlink act on it, not on the magic link.
        return f"{self.prefix}{fd}/{last}{slash}"

    def fd_of(self, host_dir: str) -> Optional[int]:
        """The descriptor anchoring ``host_dir`` in the current generation."""
        return self._fds.get(host_dir)

    def retire(self) -> None:
        """Start a new generation: close the previous retired one."""
        self.on_retire()
        for fd in self._retired:
            try:
                os.close(fd)
            except OSError:
                pass
        self._retired = list(self._fds.values())
        self._fds = {}

    def close(self) -> None:
        self.retire()
        self.retire()


def errno_for_race(exc: OSError) -> int:
    return exc.errno if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES) else errno.ELOOP
