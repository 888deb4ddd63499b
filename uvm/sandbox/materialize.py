"""The shadow tree: a CernVM-FS revision as a host directory, filled on first touch.

The only sandbox module that meets CernVM-FS.  A repository revision (its
root catalog hash) is presented as a directory of the user's cache::

    <cache_base>/shadow/<uid>/<fqrn>/<root catalog hash>/
        tree/          the repository's "/": what the guest sees
        tmp/           entries being made (<pid>.<thread>.<n>), same file system as tree/
        lock           flock: entries are added and contents swapped one at a time
        complete-dirs  directories that hold every entry (NUL-separated paths)
        absent         paths known not to exist in the revision
        prefetch-listed  template paths whose .uvm-prefetch was looked for (and fetched)

Per user, so that files appear owned by the invoking user and nobody can
change another user's view.  Keyed by the root catalog hash: a revision
never changes, so what one run made serves every later run of the same
revision.

- **Entries on lookup** (:meth:`ShadowTree.ensure`, which the namespace calls
  for every host path it hands out): the parents first, then the entry
  itself, alone, from the catalog: a directory as an empty directory, a
  regular file as a sparse placeholder of the right size, a symlink with the
  published target (variant ``$(VAR)`` ones expanded), a hard-link group
  whole (real hard links), FIFOs and sockets as such, device nodes as empty
  regular files with the device's permission bits (no mknod without
  privileges; cvmfs mounts are ``nodev`` anyway); every mode and mtime as
  published.  Each is made in ``tmp/`` and renamed in, so nobody sees a
  half-made entry, and the directory's mtime is set back.  A path the
  catalog does not have is noted as absent.
- **Directories complete on listing or stat** (:meth:`complete_if_dir`,
  called by the tracer before an open or a stat of a directory): every
  missing entry is added, and the directory noted complete.  Most
  directories a program walks through (``/usr/bin`` to reach one program,
  ``/usr/lib/x86_64-linux-gnu`` to load five libraries) are never listed,
  so a cold start creates tens of entries, not thousands.  Nested catalogs
  are invisible (their mountpoints are plain directories).
- **File content** is fetched (through the fetcher: shared cache, one
  download per object however many runs and users want it; the chunks of a
  chunked file in parallel), verified, copied to ``tmp/`` and renamed over
  the placeholder the first time the file is opened or executed
  (:meth:`ShadowTree.ensure_content`).  A placeholder is a sparse file
  (``st_blocks == 0``); a filled file has blocks (when in doubt, a refill is
  harmless: same content, atomic rename).  A stat or a listing never
  downloads content.  Hard-link groups are swapped together, so ``st_nlink``
  stays right.
- A warm run (everything it touches made, complete or known absent) needs no
  catalog: :class:`LazyRepository` opens the repository on first need only.
- **A prefetch list** (:meth:`ShadowTree.prefetch_listed`): a template (or a
  repository) may name, in ``.uvm-prefetch`` at its top, the files its
  programs open when they start, one path per line, as ``uvm run
  --record-prefetch`` writes them. A cold start fetches them all in one
  parallel wave in the background, so that a start that opens files one
  after another (an interpreter and its modules) waits for one round trip
  instead of one per file. Lines ending in ``/`` name directories the start
  lists: another background thread completes them meanwhile (the entries of
  Python's module directories took a cold start 60-90 ms of creations).
  Nothing is fetched that the catalog does not list; the first run of a
  revision notes that it looked (``prefetch-listed``).
- **A start set** (:meth:`ShadowTree._prefetch_start`): when a CPython
  interpreter is executed cold, what its start reads (``startsets``) is
  fetched the same way while the interpreter downloads, unless the
  template's list names the interpreter.

Everything is idempotent and safe with several uvm processes on the same
tree: entries and contents are built privately and renamed in under the
tree's ``flock``, after looking again.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from uvm import log as uvm_log
from uvm.cvmfs import variant
from uvm.errors import CvmfsError, SandboxError
from uvm.sandbox.namespace import canonical_lexical
from uvm.sandbox.trees import remove_tree

# A warm run needs no catalog, download or quota code: what only cold work
# uses (``Suffix``, which imports hashlib and dataclasses; ``pid_alive``,
# whose module imports sqlite3; the ELF reader) is imported where it is used.

log = uvm_log.get(__name__)

O_ACCMODE = 0o3
O_CREAT = 0o100
O_TRUNC = 0o1000
O_APPEND = 0o2000
_WRITE_FLAGS = O_CREAT | O_TRUNC | O_APPEND

# Calls that change a file system: refused with EROFS on a CernVM-FS tree, as
# a read-only mount would (a writable layer, when there is one, redirects
# them before they get here).
MUTATING_CALLS = frozenset({
    "creat", "unlink", "unlinkat", "rmdir", "mkdir", "mkdirat", "rename", "renameat",
    "renameat2", "symlink", "symlinkat", "mknod", "mknodat", "chmod", "fchmodat",
    "fchmodat2", "chown", "lchown", "chown16", "lchown16", "chown32", "lchown32",
    "fchownat", "utime", "utimes", "futimesat", "utimensat", "utimensat_time64",
    "truncate", "truncate64", "setxattr", "lsetxattr", "removexattr", "lremovexattr",
    "setxattrat", "removexattrat", "file_setattr",
})
CREATING_CALLS = frozenset({"mkdir", "mkdirat", "mknod", "mknodat", "symlink", "symlinkat"})
LINK_CALLS = frozenset({"link", "linkat"})
OPEN_CALLS = frozenset({"open", "openat", "openat2"})
STAT_CALLS = frozenset({"stat", "lstat", "oldstat", "oldlstat", "stat64", "lstat64",
                        "newfstatat", "fstatat64", "statx"})
EXEC_CALLS = frozenset({"execve", "execveat", "uselib"})
LD_SO_CACHE = "/etc/ld.so.cache"
LD_SO_CACHE_NAME = "ld.so.cache"
PREFETCH_LIST = ".uvm-prefetch"
PREFETCH_LIST_MAX = 1 << 20  # bytes: a list is a few kB; anything bigger is not one
_FOLLOW_WAVES = 64    # waves of files a command line's files name (headers: 8-11 for a hello)
_FOLLOW_FILES = 5000  # files followed at most (a C++ hello: 262)


def _ns(entry: Any) -> int:
    return entry.mtime * 1_000_000_000 + (entry.mtime_ns or 0)


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class FetchLog:
    """What cold runs fetched: counts, bytes and time, and an optional live line."""

    def __init__(self, show: Optional[Callable[[str], None]] = None) -> None:
        self.files = 0
        self.bytes = 0
        self.seconds = 0.0
        self.show = show
        self._shown = False

    def begin(self, what: str, size: int) -> float:
        if self.show is not None and (self.seconds > 0.3 or size > (4 << 20)):
            self.show(f"fetching {what} ({_human(size)}); so far {self.files} files, "
                      f"{_human(self.bytes)} in {self.seconds:.1f} s")
            self._shown = True
        return time.monotonic()

    def end(self, started: float, size: int) -> None:
        self.files += 1
        self.bytes += size
        self.seconds += time.monotonic() - started

    def summary(self) -> Optional[str]:
        if not self.files:
            return None
        return (f"fetched {self.files} files, {_human(self.bytes)} "
                f"in {self.seconds:.1f} s")


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


class ShadowTree:
    """One repository revision materialized lazily under ``base`` (see the module doc).

    ``repository`` is an open :class:`uvm.cvmfs.repository.Repository`
    (pinned: its revision never moves); its ``source`` is the fetcher.
    ``environ`` expands variant symlinks (default: the repository's).
    """

    def __init__(self, repository: Any, base: str, environ: Optional[Any] = None,
                 fetch_log: Optional[FetchLog] = None) -> None:
        self.repo = repository
        self.fqrn = repository.fqrn
        self.root_hash = str(repository.root_hash)
        self.environ = repository.environ if environ is None else environ
        self.dir = os.path.join(os.path.realpath(base), self.fqrn, self.root_hash)
        self.top = os.path.join(self.dir, "tree")
        self.prefix = self.top + "/"
        self._tmp_dir = os.path.join(self.dir, "tmp")
        self._complete_log = os.path.join(self.dir, "complete-dirs")
        self._complete: Set[str] = set()     # repo paths of directories with every entry
        self._absent_log = os.path.join(self.dir, "absent")
        self._absent: Set[str] = set()       # repo paths known not to exist
        self.fetch_log = fetch_log or FetchLog()
        self._done: Set[str] = set()         # host paths already ensured
        self._checked: Set[str] = set()      # host paths already completed if directories
        self._content: Set[str] = set()      # host paths whose content is there
        self._reported: Set[str] = set()     # repo paths whose failure uvm has said (once each)
        self._counter = 0
        self._lock_fd = -1
        self._tmp_fd = -1
        self._thread_lock = threading.RLock()
        self._prefetched: Set[str] = set()   # programs (host paths) whose libraries were asked for
        self._started: Set[str] = set()      # interpreters (repo paths) whose start set was
        self._pool: Any = None
        self._listed_log = os.path.join(self.dir, "prefetch-listed")
        self._list_jobs: List[threading.Thread] = []
        self._listing: Set[str] = set()         # sysroots whose list this run looks at
        self._list_read: Dict[str, threading.Event] = {}  # set once that list is read (or none)
        self._listed: Dict[str, Set[str]] = {}  # the paths each list names
        self._waved: Tuple[int, int] = (0, 0)  # objects and bytes the waves asked for
        # when asked (--record-prefetch): the repo paths whose content this run
        # fetched, and those of the directories it completed, ending in "/"
        self.fetched: Optional[List[str]] = None
        self._root = os.geteuid() == 0
        self._setup()

    # -- setup -------------------------------------------------------------------------

    def _setup(self) -> None:
        os.makedirs(self._tmp_dir, mode=0o700, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self.dir, "lock"),
                                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with self._locked():
            self._clean_tmp()
            if not os.path.isdir(self.top):
                root = self.repo.stat("/")
                os.mkdir(self.top, 0o700)
                os.chmod(self.top, stat.S_IMODE(root.mode) | 0o700)
                os.utime(self.top, ns=(_ns(root), _ns(root)))
        self._done.add(os.path.dirname(self.top))
        self._complete = _read_log(self._complete_log)
        self._absent = _read_log(self._absent_log)

    def _clean_tmp(self) -> None:
        names = os.listdir(self._tmp_dir)
        if not names:
            return
        from uvm.cvmfs.quota import pid_alive

        for name in names:
            try:
                pid = int(name.split(".", 1)[0])
            except ValueError:
                pid = 0
            if pid and pid_alive(pid) and pid != os.getpid():
                continue
            path = os.path.join(self._tmp_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                remove_tree(path)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def _tmpname(self) -> str:
        with self._thread_lock:
            self._counter += 1
            return os.path.join(self._tmp_dir, f"{os.getpid()}.{threading.get_ident() % 10000}."
                                               f"{self._counter}")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for job in self._list_jobs:  # the listed files are wanted by the next start
            if job.is_alive() and self.fetch_log.show is not None and self._waved[0]:
                self.fetch_log.show(f"finishing the prefetch of {self.fqrn} "
                                    f"({self._waved[0]} objects, {_human(self._waved[1])})")
            job.join()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        if self._tmp_fd >= 0:
            os.close(self._tmp_fd)
            self._tmp_fd = -1

    # -- paths ---------------------------------------------------------------------------

    def host_path(self, repo_path: str) -> str:
        """Host path of ``repo_path`` (no filling)."""
        clean = "/".join(p for p in repo_path.split("/") if p)
        return self.top + ("/" + clean if clean else "")

    def host_of(self, repo_path: str) -> str:
        """Host path of ``repo_path``: the directories on the way made, and the
        path itself complete if it is a directory (ready to list)."""
        host = self.host_path(repo_path)
        self.ensure(host)
        self.complete_if_dir(host)
        return host

    def owns(self, host: str) -> bool:
        return host == self.top or host.startswith(self.prefix)

    # -- directories ---------------------------------------------------------------------

    def ensure(self, host: str) -> None:
        """Make ``host`` (a path in this tree) exist if the revision has it:
        its parents first, then its own entry (alone: a directory is completed
        only when it is listed or stat'ed, see :meth:`complete_if_dir`).
        Cheap when already done (a set lookup)."""
        if host in self._done:
            return
        host = host.rstrip("/") or "/"
        if host in self._done:
            return
        if not self.owns(host):
            return
        if host != self.top:
            parent = host.rpartition("/")[0]
            if parent not in self._done:
                self.ensure(parent)
            parent_repo = parent[len(self.top):]
            if parent_repo not in self._complete and not os.path.lexists(host):
                self._create_one(parent_repo, host[len(self.top):])
        if len(self._done) > 500_000:
            self._done.clear()
        self._done.add(host)

    def _create_one(self, parent_repo: str, repo: str) -> None:
        if repo in self._absent or parent_repo in self._absent:
            return
        if not os.path.isdir(self.top + parent_repo):
            return  # below a file, a symlink or nothing: the kernel will say so
        try:
            entry = self.repo.tree.lookup(repo)
        except CvmfsError as err:
            raise _io_error(err)
        if entry is None or entry.is_hidden:
            self._note(self._absent, self._absent_log, repo)
            return
        members = [entry]
        if entry.is_regular and entry.hardlink_group:  # a group is made whole, or not at all
            members = [e for e in self.repo.scandir(parent_repo or "/")
                       if e.is_regular and e.hardlink_group == entry.hardlink_group]
        with self._locked():
            self._add_entries(parent_repo, members)

    def complete_if_dir(self, host: str) -> None:
        """If ``host`` is a directory of the tree, give it every entry (before
        a listing, or a stat: ``st_nlink`` counts subdirectories)."""
        if host in self._checked:
            return
        host = host.rstrip("/") or "/"
        if self.owns(host):
            try:
                mode = os.lstat(host).st_mode
            except OSError:
                mode = 0
            if stat.S_ISDIR(mode):
                self._complete_dir(host[len(self.top):])
        if len(self._checked) > 500_000:
            self._checked.clear()
        self._checked.add(host)

    def _complete_dir(self, repo: str) -> None:
        if repo in self._complete:
            return
        try:
            entries = self.repo.scandir(repo or "/")
        except CvmfsError as err:
            if isinstance(err, FileNotFoundError):
                return
            raise _io_error(err)
        with self._locked():
            self._add_entries(repo, entries)
        self._mark_complete(repo)
        if self.fetched is not None:
            self.fetched.append(repo + "/")

    def _mark_complete(self, repo: str) -> None:
        self._note(self._complete, self._complete_log, repo)

    @staticmethod
    def _note(known: Set[str], path: str, repo: str) -> None:
        """Remember ``repo`` in ``known`` and in the log at ``path``, for this
        process and later ones (one O_APPEND write: atomic among processes)."""
        known.add(repo)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, os.fsencode(repo or "/") + b"\0")  # the root is ""
            finally:
                os.close(fd)
        except OSError as err:
            log.debug("cannot note %s in %s: %s", repo, path, err)

    def _add_entries(self, parent_repo: str, entries: Sequence[Any]) -> None:
        """Create the missing ``entries`` of directory ``parent_repo`` (under the
        lock): built in ``tmp/``, then each renamed in, so that nobody sees a
        half-made entry; the directory's mtime is set again afterwards."""
        parent = self.top + parent_repo
        present = set(os.listdir(parent)) if len(entries) > 1 else None  # one getdents
        todo = [e for e in entries if not (e.name in present if present is not None
                                           else os.path.lexists(os.path.join(parent, e.name)))]
        if not todo:
            return
        if self._tmp_fd < 0:
            self._tmp_fd = os.open(self._tmp_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        names = [os.path.basename(self._tmpname()) for _entry in todo]
        made: List[str] = []
        try:
            groups: Dict[int, str] = {}
            for entry, name in zip(todo, names):
                made.append(name)
                self._make_entry(entry, self._tmp_fd, name, groups, self._tmp_dir)
            with _writable(parent, self._root):
                for entry, name in zip(todo, names):
                    os.rename(name, os.path.join(parent, entry.name), src_dir_fd=self._tmp_fd)
            made = []
            for entry in todo:
                if entry.is_dir:  # made writable for the move (its ".." changes); now final
                    path = os.path.join(parent, entry.name)
                    os.chmod(path, stat.S_IMODE(entry.mode))
                    os.utime(path, ns=(_ns(entry), _ns(entry)))
        finally:
            for name in made:  # a failure half-way: leave nothing behind in tmp/
                try:
                    os.rmdir(name, dir_fd=self._tmp_fd)
                except OSError:
                    try:
                        os.unlink(name, dir_fd=self._tmp_fd)
                    except OSError:
                        pass
        me = self.repo.stat(parent_repo or "/")
        os.utime(parent, ns=(_ns(me), _ns(me)))

    def _restore_parent_mtime(self, repo: str) -> None:
        if not repo:
            return
        parent_repo = repo.rpartition("/")[0]
        parent = self.repo.stat(parent_repo or "/")
        os.utime(self.top + parent_repo, ns=(_ns(parent), _ns(parent)))

    def _make_entry(self, entry: Any, dfd: int, name: str, groups: Dict[int, str],
                    directory: str) -> None:
        """Create ``name`` in the directory open as ``dfd`` (no path walks)."""
        mode = stat.S_IMODE(entry.mode)
        times = (_ns(entry), _ns(entry))
        if entry.is_regular:
            if entry.hardlink_group:
                first = groups.get(entry.hardlink_group)
                if first is not None:
                    os.link(first, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                    return
                groups[entry.hardlink_group] = name
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                         dir_fd=dfd)
            try:
                if entry.size:
                    os.ftruncate(fd, entry.size)
                os.fchmod(fd, mode)
                os.utime(fd, ns=times)
            finally:
                os.close(fd)
            return
        if entry.is_dir:  # 0700 until moved into place (see _add_entries)
            os.mkdir(name, 0o700, dir_fd=dfd)
            return
        elif entry.is_symlink:
            os.symlink(variant.expand(entry.symlink, self.environ), name, dir_fd=dfd)
            os.utime(name, ns=times, dir_fd=dfd, follow_symlinks=False)
            return
        elif stat.S_ISFIFO(entry.mode):
            os.mkfifo(name, 0o600, dir_fd=dfd)
        elif stat.S_ISSOCK(entry.mode):
            _make_socket(os.path.join(directory, name))
        else:  # character and block devices: see the module doc
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                             dir_fd=dfd))
        os.chmod(name, mode, dir_fd=dfd)
        os.utime(name, ns=times, dir_fd=dfd)

    # -- content -------------------------------------------------------------------------

    def ensure_content(self, host: str, executing: bool = False) -> None:
        """Make sure the regular file at ``host`` holds its content (no-op if it does)."""
        if host in self._content:
            return
        self.ensure(host)
        try:
            st = os.lstat(host)
        except OSError:
            return
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or st.st_blocks > 0:
            self._content.add(host)
            return
        repo = host[len(self.top):]
        try:
            entry = self.repo.stat(repo)
        except CvmfsError as err:
            raise _io_error(err)
        if not entry.is_regular or entry.size == 0:
            self._content.add(host)
            return
        self._fill_content(repo, host, entry, executing)

    def _fill_content(self, repo: str, host: str, entry: Any, executing: bool = False) -> None:
        started = self.fetch_log.begin(f"{self.fqrn}:{repo}", entry.size)
        tmp = self._tmpname()
        try:
            try:
                if executing:
                    self._prefetch_start(repo)
                self._fetch_all(repo, entry)  # every object verified before a byte is written
                if executing:  # a cold start: what it loads is probably cold too
                    self._prefetch_deps(host)  # (from the cache, while the copy is made)
                with open(tmp, "wb") as out:
                    self.repo.copy_file(repo, out)
            except CvmfsError as err:
                if repo not in self._reported:  # a shell tries /bin/x and /usr/bin/x alike
                    self._reported.add(repo)
                    log.error("%s", err.one_line())
                raise _io_error(err)
            os.chmod(tmp, stat.S_IMODE(entry.mode))
            os.utime(tmp, ns=(_ns(entry), _ns(entry)))
            parent_repo = repo.rpartition("/")[0]
            if entry.hardlink_group:
                members = [e for e in self.repo.scandir(parent_repo or "/")
                           if e.is_regular and e.hardlink_group == entry.hardlink_group]
            else:
                members = [entry]
            targets = [self.top + m.path for m in members]
            with self._locked():
                try:
                    st = os.lstat(host)
                    placeholder = st.st_blocks == 0
                except OSError:
                    placeholder = False
                if placeholder:
                    parent = os.path.dirname(host)
                    with _writable(parent, self._root):
                        if len(targets) == 1:
                            os.rename(tmp, host)
                        else:
                            for target in targets:
                                extra = tmp + ".l"
                                os.link(tmp, extra)
                                os.rename(extra, target)
                    self._restore_parent_mtime(repo)
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self._content.update(targets)
        if self.fetched is not None:
            self.fetched.append(repo)
        self.fetch_log.end(started, entry.size)

    def _fetch_all(self, repo: str, entry: Any) -> None:
        """Fetch the objects of a file; the chunks of a chunked one in parallel."""
        from uvm.cvmfs.hashing import Suffix

        prefetch = getattr(self.repo.source, "prefetch", None)
        if entry.is_chunked and prefetch is not None:
            chunks = self.repo.tree.chunks(entry)
            prefetch([(c.content_hash, Suffix.PARTIAL, c.size, entry.compressed)
                      for c in chunks])
        self.repo.prefetch(repo)

    # -- prefetch ------------------------------------------------------------------------

    def _prefetch_deps(self, host: str) -> None:
        """Fetch, in the background and in parallel, the objects of what the
        program at ``host`` will load (PT_INTERP and DT_NEEDED, transitively,
        and ``/etc/ld.so.cache``, which the loader reads before any library),
        looked up in the standard library directories of its tree."""
        if host in self._prefetched or getattr(self.repo.source, "prefetch", None) is None:
            return
        self._prefetched.add(host)
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uvm-elf")
        self._pool.submit(self._prefetch_closure, host)

    def _prefetch_closure(self, host: str) -> None:
        try:
            self._closure(host)
        except Exception as err:  # best effort: the loader fetches what is missing
            log.debug("prefetch for %s stopped: %s", host, err)

    def _closure(self, host: str) -> None:
        from uvm.cvmfs.hashing import Suffix
        from uvm.sandbox import elfdeps

        fetcher = self.repo.source
        program_repo = host[len(self.top):]
        with self.repo.open_file(program_repo) as handle:
            info = elfdeps.read_elf(handle)
        if info is None:
            return
        sysroot = self.sysroot_of(program_repo)
        seen: Set[str] = set()
        frontier: List[Tuple[Any, Any]] = [(info, program_repo)]
        while frontier:
            wanted: Dict[str, Any] = {}
            for elf, where in frontier:
                names = list(elf.needed)
                dirs = list(elfdeps.LIB_DIRS_64 if elf.is_64 else elfdeps.LIB_DIRS_32)
                runpath = [p.replace("$ORIGIN", (sysroot_strip(where, sysroot)).rpartition("/")[0])
                           for p in elf.runpath]
                for name in names:
                    if name in seen:
                        continue
                    seen.add(name)
                    entry = self._find_lib(name, runpath + dirs, sysroot)
                    if entry is not None:
                        wanted[entry.path] = entry
                if elf.interp and elf.interp not in seen:
                    seen.add(elf.interp)
                    for path in (elf.interp, LD_SO_CACHE):  # the loader reads its cache first
                        entry = self._lookup_follow(sysroot + path)
                        if entry is not None:
                            wanted[entry.path] = entry
            requests = []
            for entry in wanted.values():
                if entry.is_chunked or entry.content_hash is None or entry.size == 0:
                    continue
                requests.append((entry.content_hash, Suffix.NONE, entry.size, entry.compressed))
            if not requests:
                return
            paths = fetcher.prefetch(requests)
            frontier = []
            for entry, path in zip([e for e in wanted.values() if not (
                    e.is_chunked or e.content_hash is None or e.size == 0)], paths):
                if entry.name == LD_SO_CACHE_NAME:
                    continue
                with open(path, "rb") as handle:
                    elf = elfdeps.read_elf(handle)
                if elf is not None:
                    frontier.append((elf, entry.path))

    def prefetch_listed(self, sysroot: str) -> None:
        """Fetch, in the background and in one parallel wave, the files that
        ``<sysroot>/.uvm-prefetch`` names, once per revision: the first run
        notes that it looked (list or none), so a warm run reads one small
        file and opens nothing of the repository."""
        if sysroot in self._listing or sysroot in _read_log(self._listed_log):
            return
        self._listing.add(sysroot)
        self._list_read[sysroot] = threading.Event()
        job = threading.Thread(target=self._fetch_listed, args=(sysroot,),
                               name="uvm-prefetch-list", daemon=True)
        job.start()
        self._list_jobs.append(job)

    def _fetch_listed(self, sysroot: str) -> None:
        try:
            listing = self._lookup_follow(sysroot + "/" + PREFETCH_LIST)
            if listing is None or listing.size > PREFETCH_LIST_MAX \
                    or getattr(self.repo.source, "prefetch", None) is None:
                self._note(set(), self._listed_log, sysroot)
                return
            with self.repo.open_file(listing.path) as handle:
                names = parse_prefetch_list(handle.read())
            self._listed[sysroot] = set(names)
            self._list_read[sysroot].set()  # before the wave: a start set waits for this
            self._wave(sysroot, [(name,) for name in names if not name.endswith("/")],
                       [name for name in names if name.endswith("/")])
            self._note(set(), self._listed_log, sysroot)
        except Exception as err:  # best effort: the guest fetches what it opens
            log.debug("prefetch list of %s:%s stopped: %s", self.fqrn, sysroot or "/", err)
        finally:
            self._list_read[sysroot].set()

    def _prefetch_start(self, repo: str) -> None:
        """Fetch, in the background and in one parallel wave, what the
        interpreter at ``repo`` reads when it starts (:mod:`startsets`), while
        the interpreter itself downloads."""
        from uvm.sandbox.startsets import start_set

        sysroot = self.sysroot_of(repo)
        known = start_set(sysroot_strip(repo, sysroot))
        if known is None or repo in self._started \
                or getattr(self.repo.source, "prefetch", None) is None:
            return
        self._started.add(repo)
        job = threading.Thread(target=self._fetch_start,
                               args=(sysroot, sysroot_strip(repo, sysroot), known),
                               name="uvm-prefetch-start", daemon=True)
        job.start()
        self._list_jobs.append(job)

    def _fetch_start(self, sysroot: str, program: str, known: Any) -> None:
        from uvm.sandbox.startsets import module_files, pth_imports

        try:
            if sysroot in self._list_read:  # a list recorded from a real start knows better
                self._list_read[sysroot].wait()
            if program in self._listed.get(sysroot, ()):
                return
            pth = [entry for site in known.site_dirs for entry in self._scandir(sysroot + site)
                   if entry.name.endswith(".pth") and entry.is_regular]
            self._wave(sysroot, known.files + [(sysroot_strip(e.path, sysroot),) for e in pth],
                       known.dirs)
            imported = [known.pth_codec] if pth else []  # and what they import, once here
            for entry in pth:
                with self.repo.open_file(entry.path) as handle:
                    site = sysroot_strip(entry.path, sysroot).rpartition("/")[0]
                    imported.extend(module_files(site, name, known.cache_tag)
                                    for name in pth_imports(handle.read(PREFETCH_LIST_MAX)))
            if imported:
                self._wave(sysroot, imported, ())
        except Exception as err:  # best effort: the guest fetches what it opens
            log.debug("start set in %s:%s stopped: %s", self.fqrn, sysroot or "/", err)

    def _scandir(self, repo_path: str) -> List[Any]:
        try:
            return self.repo.scandir(repo_path)
        except CvmfsError:
            return []

    def _wave(self, sysroot: str, files: Sequence[Sequence[str]], dirs: Sequence[str]) -> None:
        """Fetch the objects of ``files`` in one parallel wave while another
        thread completes ``dirs`` (paths below ``sysroot``).  Each of ``files``
        is a list of alternatives: the first the revision has as a regular
        file (symlinks followed) is fetched, and none if it has none."""
        if dirs:
            job = threading.Thread(target=self._complete_listed, args=(sysroot, list(dirs)),
                                   name="uvm-prefetch-dirs", daemon=True)
            job.start()
            self._list_jobs.append(job)
        entries = []
        for names in files:
            entry = next(filter(None, (self._lookup_follow(sysroot + n) for n in names)), None)
            if entry is not None:
                entries.append(entry)
        self.fetch_entries(entries)

    def find(self, host: str) -> Optional[Any]:
        """The regular-file entry at ``host`` (a path in this tree, not made), symlinks followed."""
        return self._lookup_follow(host[len(self.top):])

    def fetch_entries(self, entries: Sequence[Any]) -> None:
        """Fetch the objects of regular-file ``entries`` in one parallel wave
        into the cache (the shadow tree's files stay as they are: their first
        open copies them from there)."""
        from uvm.cvmfs.hashing import Suffix

        requests = []
        for entry in entries:
            if entry.size == 0 or entry.is_external:
                continue
            if entry.is_chunked:
                requests.extend((c.content_hash, Suffix.PARTIAL, c.size, entry.compressed)
                                for c in self.repo.tree.chunks(entry))
            elif entry.content_hash is not None:
                requests.append((entry.content_hash, Suffix.NONE, entry.size, entry.compressed))
        with self._thread_lock:
            objects, size = self._waved
            self._waved = (objects + len(requests), size + sum(r[2] or 0 for r in requests))
        self.repo.source.prefetch(requests)

    def _complete_listed(self, sysroot: str, dirs: List[str]) -> None:
        """Complete the directories a prefetch list names, while the files'
        downloads are on their way: a start that lists them (an interpreter
        caching its module directories) finds them ready instead of making
        hundreds of entries one directory after another."""
        try:
            for name in dirs:
                self.host_of(sysroot + name)
        except Exception as err:  # best effort: the guest's own listing completes them
            log.debug("prefetch list of %s:%s: directories stopped: %s", self.fqrn,
                      sysroot or "/", err)

    def fetched_below(self, sysroot: str) -> List[str]:
        """The files whose content this run fetched, then the directories it
        completed (ending in ``/``), as paths below ``sysroot``: a prefetch
        list (:func:`parse_prefetch_list`)."""
        prefix = sysroot + "/"
        below = [path[len(sysroot):] for path in dict.fromkeys(self.fetched or ())
                 if path.startswith(prefix)]
        return ([p for p in below if not p.endswith("/")] + [p for p in below if p.endswith("/")])

    sysroots: Tuple[str, ...] = ()

    def sysroot_of(self, repo_path: str) -> str:
        """The template path (a repository subtree used as a root) holding ``repo_path``."""
        best = ""
        for root in self.sysroots:
            if (repo_path == root or repo_path.startswith(root + "/")) and len(root) > len(best):
                best = root
        return best

    def _find_lib(self, name: str, dirs: Sequence[str], sysroot: str) -> Optional[Any]:
        if "/" in name:
            return self._lookup_follow(sysroot + name if name.startswith("/") else name)
        for directory in dirs:
            if not directory.startswith("/"):
                continue
            entry = self._lookup_follow(sysroot + directory + "/" + name)
            if entry is not None:
                return entry
        return None

    def _lookup_follow(self, repo_path: str, depth: int = 0) -> Optional[Any]:
        """The regular-file entry at ``repo_path``, symlinks followed in the tree's terms."""
        if depth > 8:
            return None
        try:
            entry = self.repo.tree.lookup(_norm(repo_path))
        except CvmfsError:
            return None
        if entry is None:
            # a symlink in the middle (merged /usr: /lib -> usr/lib)
            parts = _norm(repo_path).split("/")
            for i in range(2, len(parts)):
                head = "/".join(parts[:i])
                try:
                    mid = self.repo.tree.lookup(head)
                except CvmfsError:
                    return None
                if mid is None:
                    return None
                if mid.is_symlink:
                    target = variant.expand(mid.symlink, self.environ)
                    sysroot = self.sysroot_of(head)
                    base = sysroot if target.startswith("/") else head.rpartition("/")[0]
                    rest = "/".join(parts[i:])
                    return self._lookup_follow(base + "/" + target + "/" + rest, depth + 1)
            return None
        if entry.is_symlink:
            target = variant.expand(entry.symlink, self.environ)
            sysroot = self.sysroot_of(entry.path)
            base = sysroot if target.startswith("/") else entry.path.rpartition("/")[0]
            return self._lookup_follow(base + "/" + target, depth + 1)
        return entry if entry.is_regular else None


def sysroot_strip(path: str, sysroot: str) -> str:
    return path[len(sysroot):] if sysroot and path.startswith(sysroot) else path


def _norm(path: str) -> str:
    """A path resolved lexically, as a catalog path (the root is '')."""
    clean = canonical_lexical(path)
    return "" if clean == "/" else clean


def parse_prefetch_list(data: bytes) -> List[str]:
    """The paths of a prefetch list: one per line, from the template's top
    (``/usr/bin/python3``; a directory to complete ends in ``/``), ``#``
    comments and blank lines ignored, each resolved lexically so that none
    climbs above the top."""
    names = []
    for raw in data.split(b"\n"):
        line = raw.strip()
        if line and not line.startswith(b"#"):
            name = canonical_lexical("/" + os.fsdecode(line))
            names.append(name + "/" if line.endswith(b"/") and name != "/" else name)
    return names


def _read_log(path: str) -> Set[str]:
    try:
        with open(path, "rb") as handle:
            return {"" if p == b"/" else os.fsdecode(p)
                    for p in handle.read().split(b"\0") if p}
    except OSError:
        return set()


def _io_error(err: CvmfsError) -> OSError:
    """A CernVM-FS failure as the guest sees it (EIO), the message logged once."""
    out = OSError(errno.EIO, err.one_line() if hasattr(err, "one_line") else str(err))
    out.__cause__ = err
    return out


@contextmanager
def _writable(directory: str, is_root: bool) -> Iterator[None]:
    """Let the owner write into ``directory`` for a moment (published modes may lack u+w)."""
    if is_root:
        yield
        return
    mode = os.lstat(directory).st_mode
    if mode & stat.S_IWUSR and mode & stat.S_IXUSR:
        yield
        return
    os.chmod(directory, stat.S_IMODE(mode) | stat.S_IWUSR | stat.S_IXUSR)
    try:
        yield
    finally:
        os.chmod(directory, stat.S_IMODE(mode))


def _make_socket(path: str) -> None:
    """A socket inode at ``path`` (bound under a short name, then renamed)."""
    import socket

    directory = os.path.dirname(path)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        short = f"/proc/self/fd/{fd}/.s{os.getpid()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(short)
        finally:
            sock.close()
        os.rename(os.path.join(directory, f".s{os.getpid()}"), path)
    finally:
        os.close(fd)


class LazyRepository:
    """A repository revision known by its root hash, opened only when needed.

    A warm run (every directory it touches filled, every file it opens
    there) never needs the catalogs: the shadow tree alone serves it, so the
    repository is opened (manifest, signatures, catalogs) on the first real
    lookup only.  ``opener()`` must open exactly ``root_hash``.
    """

    def __init__(self, fqrn: str, root_hash: str, opener: Callable[[], Any],
                 environ: Any, revision: Optional[int] = None) -> None:
        self.fqrn = fqrn
        self.root_hash = root_hash
        self.environ = environ
        self._opener = opener
        self._repo: Any = None
        self._revision = revision
        self._opening = threading.Lock()  # the tracer and a background prefetch

    @property
    def opened(self) -> bool:
        return self._repo is not None

    def _get(self) -> Any:
        if self._repo is None:
            with self._opening:
                if self._repo is None:
                    repo = self._opener()
                    if str(repo.root_hash) != self.root_hash:
                        raise SandboxError(f"{self.fqrn}: opened {repo.root_hash}, "
                                           f"expected {self.root_hash}")
                    self._repo = repo
        return self._repo

    @property
    def revision(self) -> int:
        return self._revision if self._revision is not None else self._get().revision

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._get(), name)

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None


class CvmfsTrees:
    """The CernVM-FS side of a namespace: shadow trees and what the tracer asks of them.

    Given to :class:`uvm.sandbox.namespace.Namespace` as ``lazy``:
    :meth:`ensure` is called for every host path the namespace hands out,
    :meth:`before` by the tracer before a path call runs (content on open and
    exec; EROFS for writes, as a read-only mount).
    """

    def __init__(self, base: str, fetch_log: Optional[FetchLog] = None) -> None:
        self.base = os.path.realpath(base)
        self.fetch_log = fetch_log or FetchLog()
        self.trees: List[ShadowTree] = []
        self._prefix = self.base + "/"
        self._jobs: List[threading.Thread] = []

    def add(self, repository: Any, sysroot: Optional[str] = None) -> ShadowTree:
        for tree in self.trees:
            if tree.fqrn == repository.fqrn and tree.root_hash == str(repository.root_hash):
                break
        else:
            tree = ShadowTree(repository, self.base, fetch_log=self.fetch_log)
            self.trees.append(tree)
        if sysroot and sysroot not in tree.sysroots:
            tree.sysroots = tree.sysroots + (sysroot,)
        tree.prefetch_listed(sysroot or "")
        return tree

    def prefetch(self, wanted: Sequence[Sequence[str]], host_of: Callable[[str], str],
                 follow: Optional[Callable[[str, bytes, bool], List[Sequence[str]]]] = None,
                 follow_max: int = 4096) -> None:
        """Fetch, in the background, the first of each list of guest paths
        that exists (what a program's command line says it will read: a
        linker's inputs, a compiler's sources), ``host_of`` mapping them to
        host paths; those in a shadow tree in one wave per tree, a list
        whose first existing path is outside every tree is the host's.
        ``follow(path, content, on_host)`` names what a file of at most
        ``follow_max`` bytes makes the program read next (a linker script's
        files, a source's headers): fetched in the next wave, and so on,
        each file followed once.  Only trees whose repository this run has
        opened take part: a warm run does not open one for a hint."""
        opened = [tree for tree in self.trees if getattr(tree.repo, "opened", True)]
        if wanted and opened:
            job = threading.Thread(target=self._prefetch,
                                   args=(wanted, host_of, follow, follow_max, opened),
                                   name="uvm-prefetch-args", daemon=True)
            job.start()
            self._jobs.append(job)

    def _prefetch(self, wanted: Sequence[Sequence[str]], host_of: Callable[[str], str],
                  follow: Optional[Callable[[str, bytes, bool], List[Sequence[str]]]],
                  follow_max: int, opened: List[ShadowTree]) -> None:
        seen: Set[str] = set()
        try:
            for _wave in range(_FOLLOW_WAVES):
                found = []
                for names in dict.fromkeys(tuple(names) for names in wanted):
                    hit = self._first(names, host_of, opened)
                    if hit is not None and hit[1] not in seen and len(seen) < _FOLLOW_FILES:
                        seen.add(hit[1])
                        found.append(hit)
                by_tree: Dict[ShadowTree, List[Any]] = {}
                for _guest, _host, tree, entry in found:
                    if tree is not None:
                        by_tree.setdefault(tree, []).append(entry)
                for tree, entries in by_tree.items():
                    tree.fetch_entries(entries)
                if follow is None:
                    return
                wanted = []
                for guest, host, tree, entry in found:
                    wanted.extend(follow(guest, _head(host, tree, entry, follow_max), tree is None))
                if not wanted:
                    return
        except Exception as err:  # best effort: the program fetches what it opens
            log.debug("prefetch of a command line's files stopped: %s", err)

    def _first(self, names: Sequence[str], host_of: Callable[[str], str],
               opened: List[ShadowTree]) -> Optional[Tuple[str, str, Optional[ShadowTree], Any]]:
        """The first of guest paths ``names`` that exists: (guest path, host
        path, its tree and entry, or None and None on the host), or None
        (also when it lies in a tree not opened: no catalog to ask)."""
        for guest in names:
            host = host_of(canonical_lexical(guest))
            tree = self._tree(host)
            if tree is None:
                if os.path.isfile(host):
                    return guest, host, None, None
                continue
            if tree not in opened:
                return None
            entry = tree.find(host)
            if entry is not None:
                return guest, host, tree, entry
        return None

    def _tree(self, host: str) -> Optional[ShadowTree]:
        if not host.startswith(self._prefix):
            return None
        for tree in self.trees:
            if tree.owns(host):
                return tree
        return None

    def ensure(self, host: str) -> None:
        if host.startswith(self._prefix):
            tree = self._tree(host)
            if tree is not None:
                tree.ensure(host)

    def complete(self, host_dir: str) -> bool:
        """Does directory ``host_dir`` of a tree hold every entry already?
        (Then a name missing from it is absent from the revision.)"""
        tree = self._tree(host_dir) if host_dir != self.base else None
        return tree is not None and host_dir[len(tree.top):] in tree._complete

    def before(self, name: str, host: str, flags: int = 0) -> None:
        """Called by the tracer with the translated host path of a path call."""
        if not host.startswith(self._prefix):
            return
        tree = self._tree(host.rstrip("/"))
        if tree is None:
            return
        if name in OPEN_CALLS or name in STAT_CALLS:
            tree.complete_if_dir(host)
        if name in OPEN_CALLS:
            if flags & O_ACCMODE or flags & _WRITE_FLAGS:
                if flags & O_CREAT and not os.path.lexists(host):
                    raise _err(errno.EROFS)
                if flags & O_ACCMODE or flags & (O_TRUNC | O_APPEND):
                    if not os.path.isdir(host):
                        raise _err(errno.EROFS)
            tree.ensure_content(host)
        elif name in EXEC_CALLS:
            tree.ensure_content(host, executing=True)
        elif name in MUTATING_CALLS:
            if name in CREATING_CALLS and os.path.lexists(host):
                raise _err(errno.EEXIST)  # as the kernel says first (mkdir -p works)
            raise _err(errno.EROFS)
        elif name in LINK_CALLS:
            raise _err(errno.EXDEV)

    def close(self) -> None:
        for job in self._jobs:
            job.join()
        for tree in self.trees:
            tree.close()


def _head(host: str, tree: Optional[ShadowTree], entry: Any, limit: int) -> bytes:
    """The first ``limit`` bytes of a file found by :meth:`CvmfsTrees._first`
    (from the cache for a tree's: just fetched), or none if it is larger."""
    if tree is None:
        with open(host, "rb") as handle:
            data = handle.read(limit + 1)
    elif entry.size > limit:
        return b""
    else:
        with tree.repo.open_file(entry.path) as handle:
            data = handle.read(limit + 1)
    return b"" if len(data) > limit else data


def shadow_base(cache_base: str) -> str:
    """``<cache_base>/shadow/<uid>``, created private to the user."""
    path = os.path.join(cache_base, "shadow", str(os.geteuid()))
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def mounts_dir(base: str, names: Sequence[str]) -> str:
    """A directory holding one empty directory per repository name: the guest's /cvmfs."""
    import hashlib

    key = hashlib.sha1("\0".join(sorted(names)).encode()).hexdigest()[:16]
    path = os.path.join(base, "mounts", key)
    if not os.path.isdir(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        os.makedirs(tmp, exist_ok=True)
        for name in names:
            os.makedirs(os.path.join(tmp, name), exist_ok=True)
        try:
            os.rename(tmp, path)
        except OSError:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    os.chmod(path, 0o755)
    return path


__all__ = ["ShadowTree", "CvmfsTrees", "LazyRepository", "FetchLog", "shadow_base", "mounts_dir",
           "MUTATING_CALLS", "PREFETCH_LIST", "parse_prefetch_list"]
