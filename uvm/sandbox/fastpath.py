"""The tracer's hot path in C (``native/uvm_fastpath.c``), taught by Python.

Most stops of real workloads are read-only calls on absolute paths in
directories the tracer has resolved before (gcc's realpath readlinks, the
opens and stats of an interpreter start-up) and glibc's fstat done as
``newfstatat(fd, "", AT_EMPTY_PATH)``.  For those the Python tracer does the
same few things every time; the C wait loop does them without the
interpreter and hands every other stop back to :class:`~uvm.sandbox.dispatch.Tracer`.

What the C knows, Python told it:

- a row per read-only system call, built here from the handler table (the
  stat family, access, readlink, getxattr, open/openat without write or
  create flags); calls that write, create, remove or execute never run in C;
- guest directories resolved by the namespace (:meth:`publish`, and
  :meth:`publish_dir` for names relative to a guest's cwd or descriptor that
  is that directory): the head of a guest path exactly as written, and the
  tracer's anchor descriptor of its host directory (see ``anchors.py``), only for directories whose every
  entry maps to the same host directory (not a layer's copied-up directory,
  in a CernVM-FS shadow directory, subdirectories, files whose content is
  not fetched yet and, while the directory is still being filled, missing
  names go to Python);
- guest directories that do not exist (:meth:`publish_missing`): below
  them, every read-only call fails with ENOENT while the first missing
  component is still absent, which the C checks each time;
- the guest path of a host directory a tracee's getcwd was answered in
  (:meth:`publish_cwd`); the same cwd is answered in C the next time;
- last components that may be bind points, which always go to Python;
- the tracees (:meth:`know`): their fork, vfork and clone events, their
  first stops and the signals they are sent are resumed in C; the C keeps
  the children it saw born for Python to take (:meth:`take_births`) before
  Python handles the next stop; the exec events Python said need nothing
  at the event (:meth:`exec_settles`) too.

The directories live in a table in a memfd (``native/uvm_table.h``), which
the library preloaded into guest programs maps read-only and looks up with
the same code, to serve those calls without a stop (preload.py).

Everything Python forgets (a rename, an unlink, a copy-up, a new generation
of anchors), the C forgets too (:meth:`clear`).  ``UVM_TRACER=python`` turns
the C off (benchmarks compare both; a suspected C bug).
"""

from __future__ import annotations

import errno
import os

from uvm.sandbox.handlers import NOFOLLOW_TWIN, TABLE
from uvm.sandbox.sysnums import NUMBERS

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any, Iterable, List, Optional, Tuple

FAST_AT, FAST_PATH, FAST_OPEN, FAST_READLINK, FAST_GETCWD = 1, 2, 3, 4, 5

# The calls the C may settle: they read, never change, the file system.
READ_ONLY = frozenset({
    "stat", "lstat", "stat64", "lstat64", "newfstatat", "fstatat64", "statx",
    "statfs", "statfs64", "access", "faccessat", "faccessat2",
    "getxattr", "lgetxattr", "listxattr", "llistxattr",
    "readlink", "readlinkat", "open", "openat", "getcwd",
})

def _load() -> Tuple[Any, str]:
    if os.environ.get("UVM_TRACER", "").strip().lower() == "python":
        return None, "Python, forced by UVM_TRACER=python"
    try:
        from uvm import _native_fastpath
    except ImportError as err:
        return None, f"Python, C fast path not built: {err}"
    return _native_fastpath, "C fast path"


_MODULE, BACKEND = _load()


def _row(name: str, row: tuple, numbers: dict) -> Optional[dict]:
    kind = row[0]
    if kind == "path":
        twin = NOFOLLOW_TWIN.get(name)
        return {"kind": FAST_PATH, "dirfd_i": -1, "path_i": row[1], "flags_i": -1,
                "follow": int(row[2]), "toggle": 0,
                "nofollow_nr": numbers.get(twin, -1) if twin else -1}
    if kind == "at":
        return {"kind": FAST_AT, "dirfd_i": row[1], "path_i": row[2], "flags_i": row[3],
                "follow": int(row[4]), "toggle": row[5], "nofollow_nr": -1}
    if kind == "open" and row[2] >= 0:
        return {"kind": FAST_OPEN, "dirfd_i": -1, "path_i": row[1], "flags_i": row[2],
                "follow": 1, "toggle": 0, "nofollow_nr": -1}
    if kind == "openat":
        return {"kind": FAST_OPEN, "dirfd_i": row[1], "path_i": row[2], "flags_i": row[3],
                "follow": 1, "toggle": 0, "nofollow_nr": -1}
    if kind == "getcwd":
        return {"kind": FAST_GETCWD, "dirfd_i": -1, "path_i": 0, "flags_i": 1,
                "follow": 0, "toggle": 0, "nofollow_nr": -1}
    if kind == "readlink":
        return {"kind": FAST_READLINK, "dirfd_i": row[1], "path_i": row[2], "flags_i": -1,
                "follow": 0, "toggle": 0, "nofollow_nr": -1}
    return None


class FastPath:
    """One C fast path for one sandbox run (not thread-safe: the tracer's)."""

    def __init__(self, module: Any, reserved_names: Iterable[str], relative_ok: bool,
                 check_caps: bool, table_fd: int = -1, key: int = 0) -> None:
        self._ffi = module.ffi
        self._lib = module.lib
        self._fast = self._ffi.gc(
            self._lib.fast_new(os.getpid(), int(check_caps), int(relative_ok), table_fd, key),
            self._lib.fast_free)
        if self._fast == self._ffi.NULL:
            raise MemoryError("uvm: cannot allocate the tracer's fast path")
        for abi in (0, 1):
            numbers = NUMBERS[abi]
            for name in READ_ONLY:
                nr, row = numbers.get(name), TABLE.get(name)
                spec = _row(name, row, numbers) if nr is not None and row is not None else None
                if spec is not None:
                    self._lib.fast_set_row(self._fast, abi, nr, self._ffi.new("struct fast_row *", spec))
        for name in reserved_names:
            raw = name.encode("utf-8", "surrogateescape")
            if raw and self._lib.fast_add_name(self._fast, raw, len(raw)) != 0:
                raise ValueError("uvm: too many bind points for the tracer's fast path")
        self._published: set = set()
        self._out = self._ffi.new("int[2]")
        self._text = self._ffi.new("char[]", 4096)
        self._counts = self._ffi.new("struct fast_counts *")
        self._births = self._ffi.new("struct fast_birth[]", 256)
        self._sampled = self._ffi.new("int *")  # the placement thread's
        self._waited = self._ffi.new("long long *")
        # births waiting in the C (see wait): take them before the stop
        self.born = 0

    def pass_through(self, path: bytes) -> None:
        """A read-only open of exactly ``path`` goes to the kernel as it is
        (the preloaded library's name; two at most)."""
        if self._lib.fast_add_passthrough(self._fast, path, len(path)) != 0:
            raise ValueError("uvm: too many pass-through paths for the tracer's fast path")

    def publish(self, head: bytes, fd: int, host_len: int, lazy: int = 0,
                canonical: bytes = b"", writes: bool = False) -> None:
        """Guest directory ``head`` (as the guest wrote it) is host
        directory ``host_len`` bytes long behind tracer descriptor ``fd``;
        ``lazy``: 0 for a plain directory, else ``namespace.FILLED`` or
        ``namespace.PARTIAL`` (a CernVM-FS shadow directory, complete or not)
        or ``namespace.LAYERED`` (a copied-up layer directory);
        ``canonical``: its guest path with every symlink resolved (for
        realpath()); ``writes``: an open that creates or writes a name in
        it is a plain translation too (:meth:`Namespace.fast_writes`)."""
        key = (head, writes)
        if key not in self._published:
            self._published.add(key)
            if canonical:
                self._lib.fast_publish_canonical(self._fast, head, len(head), fd, host_len, lazy,
                                                 writes, canonical, len(canonical))
            else:
                self._lib.fast_publish(self._fast, head, len(head), fd, host_len, lazy, writes)

    def publish_exact(self, path: bytes, fd: int, host_len: int, lazy: int = 0,
                      target: bytes = b"") -> None:
        """Absolute ``path`` itself is the name it has in the host directory
        behind ``fd``, though its siblings may not be; or, with ``target``,
        a symlink that calls following it find as entry ``target`` there
        (``lazy`` as for :meth:`publish`)."""
        key = (b"\x01" + path, target)
        if key not in self._published:
            self._published.add(key)
            self._lib.fast_publish_exact(self._fast, path, len(path), fd, host_len, lazy,
                                         target, len(target))

    def publish_missing(self, head: bytes, fd: int, name: bytes) -> None:
        """Guest directory ``head`` does not exist: ``name``, the first
        component of its walk that was not there, is absent from the
        directory behind ``fd``.  The C checks that it still is, each time."""
        key = (b"missing", head, fd, name)
        if key not in self._published:
            self._published.add(key)
            self._lib.fast_publish_missing(self._fast, head, len(head), fd, name, len(name))

    def publish_cwd(self, host: bytes, guest: bytes) -> None:
        """getcwd in a directory whose host path is ``host`` answers ``guest``."""
        key = (b"cwd", host)
        if key not in self._published:
            self._published.add(key)
            self._lib.fast_publish_cwd(self._fast, host, len(host), guest, len(guest))

    def publish_dir(self, fd: int, host_len: int, lazy: int = 0) -> None:
        """The same, for names relative to a guest's cwd or descriptor that
        is this very directory (known to the C by device and inode)."""
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if key not in self._published:
            self._published.add(key)
            self._lib.fast_publish_dir(self._fast, st.st_dev, st.st_ino, fd, host_len, lazy)

    def clear(self) -> None:
        if self._published:
            self._published.clear()
            self._lib.fast_clear(self._fast)

    def forget_creds(self) -> None:
        self._lib.fast_forget_creds(self._fast)

    def forget(self, tid: int) -> None:
        """``tid`` exited; its number may be given to a new thread."""
        self._lib.fast_forget(self._fast, tid)

    def know(self, tid: int, own: bool = False) -> None:
        """``tid`` is a tracee: the C may settle its fork events, first
        stop and signals; ``own``: it chose its CPUs (forks go to Python)."""
        self._lib.fast_know(self._fast, tid, int(own))

    def known(self) -> List[int]:
        """The live tracees the C knows (any thread may ask)."""
        out = self._ffi.new("int[]", 8192)
        return list(out[0:self._lib.fast_known(self._fast, out, 8192)])

    def sample(self, tracer_tid: int, limit: int, runnable: bool) -> Tuple[int, int, int]:
        """As ``placement.sample`` for the tracees the C knows, read in C
        with Python's lock released (in Python, the placement thread's
        10 ms samples held it often enough to slow the tracer)."""
        return self._lib.fast_sample(self._fast, tracer_tid, limit, int(runnable), self._sampled,
                                     self._waited), self._sampled[0], self._waited[0]

    def exec_settles(self, tid: int, yes: bool) -> None:
        """Whether the C may resume ``tid``'s next exec event and queue it
        with the births (:meth:`take_births`): nothing is due at the event."""
        self._lib.fast_exec_settles(self._fast, tid, int(yes))

    def take_births(self) -> List[Tuple[int, int, int]]:
        """(parent, child, event) of the forks, vforks and clones the C
        settled since the last call, and (tid, tid, EVENT_EXEC) of the execs
        it resumed, oldest first."""
        n = self._lib.fast_take_births(self._fast, self._births, 256)  # the C keeps 256 at most
        self.born = 0
        return [(b.parent, b.child, b.event) for b in self._births[0:n]]

    def wait(self) -> Tuple[int, int]:
        """The next stop Python must handle, as ``os.waitpid(-1, __WALL)``
        would return it; :attr:`born` says whether births wait to be taken
        (before that stop is handled: it may be a child's)."""
        res = self._lib.fast_wait(self._fast, self._out, self._out + 1)
        while res == -errno.EINTR:  # the interpreter runs signal handlers here
            res = self._lib.fast_wait(self._fast, self._out, self._out + 1)
        if res == -errno.ECHILD:
            raise ChildProcessError(errno.ECHILD, os.strerror(errno.ECHILD))
        if res < 0:
            raise OSError(-res, os.strerror(-res))
        self.born = res
        return self._out[0], self._out[1]

    def restarted(self, tid: int, rip: int, rsp: int, addr: int) -> Optional[bytes]:
        """The guest's path of a call the C translated, restarted after a signal."""
        n = self._lib.fast_restarted(self._fast, tid, rip, rsp, addr, self._text, 4096)
        return None if n < 0 else self._ffi.buffer(self._text, n)[:]

    def counts(self) -> Tuple[int, int, int]:
        """(seccomp stops settled in C, of which paths rewritten, other
        stops settled in C)."""
        self._lib.fast_counts(self._fast, self._counts)
        return self._counts.handled, self._counts.rewritten, self._counts.events


def create(reserved_names: Iterable[str], relative_ok: bool, check_caps: bool,
           table_fd: int = -1, key: int = 0) -> Optional[FastPath]:
    """A fast path, or None when the C is not built or turned off; its
    table of published directories in memfd ``table_fd`` (of
    :func:`table_size` bytes) when one is given, which the preloaded
    library maps (preload.py)."""
    if _MODULE is None:
        return None
    return FastPath(_MODULE, reserved_names, relative_ok, check_caps, table_fd, key)


def table_size() -> int:
    """The bytes of the fast path's table; 0 when there is no fast path."""
    return 0 if _MODULE is None else int(_MODULE.lib.fast_table_size())


def checks() -> list:
    """For ``uvm doctor``: which tracer loop runs (the Python one is slower, not wrong)."""
    from uvm.doctor import Check

    return [Check("tracer", True, BACKEND)]
