"""Program loading in guest terms: ``#!`` scripts, ELF interpreters.

The kernel would look up a program's PT_INTERP (and a script's
interpreter) on the host, so the tracer resolves the chain itself and
hands the kernel the guest's own loader with the program as its argument,
as PRoot does::

    execve("/guest/bin/ls", ["ls", "-l"])
      -> execve(HOST(/lib64/ld-linux-x86-64.so.2),
                ["/lib64/ld-linux-x86-64.so.2", "--argv0", "ls", "/usr/bin/ls", "-l"])

The loader then opens the program and its libraries through translated
system calls.  Static binaries are executed directly.  Pure functions of
file contents; the tracer supplies path resolution.
"""

from __future__ import annotations

import errno
import os
import stat
import struct

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Callable, Dict, FrozenSet, List, Optional, Tuple, Union

    Arg = Union[int, bytes]  # a pointer already in the tracee, or a new string

MAX_SCRIPT_DEPTH = 4
PT_INTERP = 3


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def read_interp(host: str) -> Tuple[bytes, Optional[bytes]]:
    """(kind, value) for an executable: (b"#!", line) for a script,
    (b"ELF", PT_INTERP or None), or (b"", None) for anything else."""
    try:
        with open(host, "rb") as f:
            head = f.read(256)
            if head[:2] == b"#!":
                return b"#!", head[2:].split(b"\n", 1)[0]
            if head[:4] != b"\x7fELF":
                return b"", None
            cls = head[4]
            if cls == 2:
                phoff, = struct.unpack_from("<Q", head, 32)
                phentsize, phnum = struct.unpack_from("<HH", head, 54)
                fmt, off_i, size_i = "<IIQQQQQQ", 2, 5
            else:
                phoff, = struct.unpack_from("<I", head, 28)
                phentsize, phnum = struct.unpack_from("<HH", head, 42)
                fmt, off_i, size_i = "<IIIIIIII", 1, 4
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            for i in range(phnum):
                entry = struct.unpack_from(fmt, table, i * phentsize)
                if entry[0] == PT_INTERP:
                    f.seek(entry[off_i])
                    return b"ELF", f.read(entry[size_i]).rstrip(b"\0")
            return b"ELF", None
    except (OSError, struct.error):
        raise _err(errno.ENOEXEC) from None


_INTERPS: Dict[Tuple[str, int, int, int, int, int], Tuple[bytes, Optional[bytes]]] = {}


def interp_of(host: str, st: os.stat_result) -> Tuple[bytes, Optional[bytes]]:
    """:func:`read_interp`, remembered for the file as it is (identity,
    size, times): a shell loop executes the same few programs."""
    key = (host, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    known = _INTERPS.get(key)
    if known is None:
        if len(_INTERPS) >= 1024:
            _INTERPS.clear()
        known = _INTERPS[key] = read_interp(host)
    return known


_LOADER_OPTIONS: Dict[str, FrozenSet[bytes]] = {}


def loader_options(host_loader: str) -> FrozenSet[bytes]:
    """Which of glibc's ld.so options ``--argv0`` (2.33) and ``--preload``
    (2.30) the loader understands."""
    known = _LOADER_OPTIONS.get(host_loader)
    if known is None:
        try:
            with open(host_loader, "rb") as f:
                data = f.read()
            known = frozenset(o for o in (b"--argv0", b"--preload") if o in data)
        except OSError:
            known = frozenset()
        _LOADER_OPTIONS[host_loader] = known
    return known


# The functions of native/uvm_preload.c: read-only path calls, realpath()
# and fstat() served in the guest.
PRELOAD_SYMBOLS = (b"realpath", b"canonicalize_file_name", b"__realpath_chk", b"fstat",
                   b"fstat64", b"open", b"open64", b"openat", b"openat64", b"__open_2",
                   b"__open64_2", b"__openat_2", b"__openat64_2", b"stat", b"stat64", b"lstat",
                   b"lstat64", b"fstatat", b"fstatat64", b"access", b"readlink", b"readlinkat",
                   b"fopen", b"fopen64", b"statx", b"getxattr", b"lgetxattr",
                   b"__stat64_time64", b"__lstat64_time64", b"__fstatat64_time64",
                   b"__fstat64_time64")
_WANTS_PRELOAD: Dict[Tuple[str, int, int, int, int, int], Optional[bool]] = {}


def wants_preload(host: str, st: os.stat_result) -> Optional[bool]:
    """For an ELF program at ``host`` that calls one of the functions the
    preloaded library provides (:data:`PRELOAD_SYMBOLS`): whether it is
    64-bit (True) or 32-bit (False); None for any other; remembered as
    :func:`interp_of`."""
    key = (host, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _WANTS_PRELOAD:
        from uvm.sandbox import elfdeps

        if len(_WANTS_PRELOAD) >= 1024:
            _WANTS_PRELOAD.clear()
        try:
            with open(host, "rb") as f:
                found = elfdeps.imports(f, PRELOAD_SYMBOLS)
        except OSError:
            found = None
        _WANTS_PRELOAD[key] = found[0] if found and found[1] else None
    return _WANTS_PRELOAD[key]


def plan_exec(
    guest_path: str,
    argv: List[Arg],
    resolve: Callable[[str], Tuple[str, str]],
    preload: Optional[Callable[[str, os.stat_result], Optional[bytes]]] = None,
) -> Tuple[str, List[Arg], str, bool]:
    """Decide what the kernel should execute.

    ``resolve(guest_path)`` gives (guest canonical, host) following
    symlinks; ``preload(host, stat)`` the name of a library for the loader
    to preload into that program, or None.  Returns (host executable, new
    argv or the same list, guest path of the program for /proc/self/exe,
    argv changed).
    """
    given = guest_path
    changed = False
    for _depth in range(MAX_SCRIPT_DEPTH + 1):
        guest, host = resolve(given)
        try:
            st = os.stat(host)
        except OSError:
            raise _err(errno.ENOENT) from None
        if stat.S_ISDIR(st.st_mode) or not os.access(host, os.X_OK):
            raise _err(errno.EACCES)
        kind, value = interp_of(host, st)
        if kind == b"#!":
            line = value.strip() if value else b""
            if not line:
                raise _err(errno.ENOEXEC)
            parts = line.replace(b"\t", b" ").split(b" ", 1)
            interp = parts[0]
            extra = parts[1].strip() if len(parts) > 1 else b""
            new: List[Arg] = [interp]
            if extra:
                new.append(extra)
            new.append(given.encode("utf-8", "surrogateescape"))
            argv = new + argv[1:]
            changed = True
            given = interp.decode("utf-8", "surrogateescape")
            continue
        if kind == b"ELF" and value:
            loader = value.decode("utf-8", "surrogateescape")
            _lguest, lhost = resolve(loader)
            if not os.path.isfile(lhost):
                raise _err(errno.ENOENT)
            prog = guest.encode("utf-8", "surrogateescape")
            argv0: Arg = argv[0] if argv else prog
            options = loader_options(lhost)
            lib = preload(host, st) if preload is not None and b"--preload" in options else None
            extra: List[Arg] = [b"--preload", lib] if lib else []
            if b"--argv0" in options:
                argv = [value, b"--argv0", argv0, *extra, prog] + argv[1:]
            else:
                argv = [value, *extra, prog] + argv[1:]
            return lhost, argv, guest, True
        return host, argv, guest, changed
    raise _err(errno.ELOOP)
