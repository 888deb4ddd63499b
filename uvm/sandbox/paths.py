"""Pure guest → host path translation, with symlinks and ``..`` resolved in
the guest's view.

No ptrace here: a :class:`Resolver` works on a :class:`Namespace`, a guest
base directory (the caller's cwd or a dirfd's guest path) and the host file
system it inspects with ``lstat``/``readlink``.  Rules:

- ``..`` never climbs above the guest ``/``; absolute symlink targets start
  again from the guest root; relative ones from the link's guest directory;
  a symlink inside a bind resolves in guest terms too (so it may leave the
  bind, never the guest view);
- the last component is followed or not as the calling system call does
  (``follow``);
- a missing component ends the walk: the rest is appended lexically, and the
  kernel then reports ENOENT or creates the entry, as it would;
- ``/proc/self`` and ``/proc/thread-self`` name the calling tracee, not the
  tracer; ``/proc/PID/root`` is the guest root; the other magic links of
  ``/proc/PID`` (cwd, exe, fd/N, ...) are translated back into guest paths
  when walked through, and left for the kernel to follow when they are the
  last component of a tracee's own path (so that a pipe or a deleted file
  opened through ``/proc/self/fd/N`` still works).
"""

from __future__ import annotations

import errno
import os
import re
import stat

from uvm.sandbox.namespace import Namespace

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

MAX_SYMLINKS = 40
PATH_MAX = 4096
_MAGIC = re.compile(r"/proc/(\d+)/(?:task/\d+/)?(cwd|exe|root|fd/\d+|map_files/[^/]+)\Z")
_S_IFLNK = stat.S_IFLNK
_S_IFDIR = stat.S_IFDIR
_S_IFMT = 0o170000


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class Resolver:
    """Translates guest paths for one namespace, caching resolved directories.

    ``is_tracee(pid)`` tells whether a pid belongs to the guest (its magic
    /proc links may be followed by the kernel).  Call :meth:`invalidate`
    after any call that may turn a directory or a symlink into something
    else (rename, unlink of a symlink, rmdir, symlink, link).
    """

    def __init__(
        self,
        ns: Namespace,
        is_tracee: Callable[[int], bool] = lambda pid: False,
        tgid_of: Callable[[int], int] = lambda tid: tid,
    ) -> None:
        self.ns = ns
        self.host_of = ns.host_of
        self.is_tracee = is_tracee
        self.tgid_of = tgid_of
        self._dirs: Dict[str, str] = {}
        self._links: Dict[str, Tuple[str, str]] = {}  # final symlinks followed
        # (head, guest directory, name): the last walk of a head that found
        # no ``name`` in that existing directory (see :meth:`missing_in`).
        self._missing: Optional[Tuple[str, str, str]] = None
        self._absent: Optional[Tuple[str, str]] = None  # set by _walk_full

    def invalidate(self) -> None:
        self._dirs.clear()
        self._links.clear()

    def cached_dir(self, head: str) -> Optional[str]:
        """Canonical guest directory cached for ``head`` (a path's part before
        its last slash, as given), if any."""
        return self._dirs.get(head or "/")

    def missing_in(self, head: str) -> Optional[Tuple[str, str]]:
        """When the last :meth:`resolve` found that directory ``head`` does
        not exist: (the deepest guest directory its walk reached, the name
        that directory lacks).  Every path below ``head`` is then ENOENT for
        as long as that name stays absent."""
        missing = self._missing
        if missing is not None and missing[0] == head:
            return missing[1], missing[2]
        return None

    # -- public ----------------------------------------------------------------

    def resolve(self, path: str, base: str, follow: bool, tid: int = 0) -> Tuple[str, str]:
        """(guest canonical path, host path) of ``path`` seen from guest
        directory ``base``.  Raises OSError (ENOENT for "", ELOOP, ...)."""
        self._missing = None
        if not path:
            raise _err(errno.ENOENT)
        full = path if path[0] == "/" else (base + "/" + path if base != "/" else "/" + path)
        head, _, last = full.rpartition("/")
        if last in ("", ".", ".."):
            # A trailing slash (or . / ..) names a directory: always followed,
            # and kept on the host path so that the kernel checks it is one.
            self._absent = None
            guest, host = self._walk(full, True, tid)
            if self._absent is not None and not full.startswith("/proc"):
                self._missing = (head, *self._absent)
            if last == "" and host != "/":
                host += "/"
        elif tid and full.startswith("/proc"):
            guest, host = self._walk(full, follow, tid)
        else:
            gdir = self._dirs.get(head or "/")
            if gdir is None:
                gdir = self._dir(head or "/", tid)
            guest = gdir + "/" + last if gdir != "/" else "/" + last
            host = self.host_of(guest)
            if follow:
                try:
                    mode = os.lstat(host).st_mode
                except OSError:
                    mode = 0
                if mode & _S_IFMT == _S_IFLNK:
                    guest, host = self._through_link(full, tid)
        if len(host) >= PATH_MAX:
            raise _err(errno.ENAMETOOLONG)
        return guest, host

    def _through_link(self, full: str, tid: int) -> Tuple[str, str]:
        """``full``, whose last component is a symlink, followed to its end
        (every exec follows /lib64/ld-linux-x86-64.so.2), kept like the
        resolved directories while the target exists."""
        known = self._links.get(full)
        if known is not None:
            return known
        guest, host, exact = self._walk_full(full, True, tid)
        if exact and not guest.startswith("/proc") and not full.startswith("/proc"):
            if len(self._links) > 8192:
                self._links.clear()
            self._links[full] = (guest, host)
        return guest, host

    def _dir(self, head: str, tid: int) -> str:
        self._absent = None
        try:
            guest, _host, exact = self._walk_full(head, True, tid)
        except FileNotFoundError:
            if self._absent is not None:  # "missing/..": absent while the name is
                self._missing = (head, *self._absent)
            raise
        if head.startswith("/proc") or guest.startswith("/proc"):
            return guest
        if exact:
            if len(self._dirs) > 8192:
                self._dirs.clear()
            self._dirs[head] = guest
        elif self._absent is not None:
            self._missing = (head, *self._absent)
        return guest

    def _walk(self, full: str, follow: bool, tid: int) -> Tuple[str, str]:
        guest, host, _exact = self._walk_full(full, follow, tid)
        return guest, host

    # -- the walk ------------------------------------------------------------------

    def _walk_full(self, full: str, follow: bool, tid: int) -> Tuple[str, str, bool]:
        """Walk ``full`` component by component.  Returns (guest, host,
        exact) where exact is False when a component was missing (the rest
        was appended lexically) or a magic link was left to the kernel."""
        host_of = self.host_of
        todo: List[str] = full.split("/")
        todo.reverse()
        guest = "/"
        links = 0
        while todo:
            comp = todo.pop()
            if comp == "" or comp == ".":
                continue
            if comp == "..":
                if guest != "/":
                    if not os.access(host_of(guest), os.X_OK):
                        raise _err(errno.EACCES)  # the kernel looks ".." up in it
                    guest = guest.rpartition("/")[0] or "/"
                continue
            nxt = guest + "/" + comp if guest != "/" else "/" + comp
            last = not any(c not in ("", ".") for c in todo)
            if last and not follow:
                guest = nxt
                break
            host = host_of(nxt)
            if tid and host.startswith("/proc/"):
                special = self._proc(host, last, tid)
                if special is not None:
                    kind, value = special
                    if kind == "literal":
                        return nxt, value, False
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise _err(errno.ELOOP)
                    if value.startswith("/"):
                        guest = "/"
                    todo.extend(reversed(value.split("/")))
                    continue
            try:
                mode = os.lstat(host).st_mode
            except (FileNotFoundError, NotADirectoryError) as exc:
                if isinstance(exc, FileNotFoundError):
                    self._absent = (guest, comp)
                rest = [c for c in reversed(todo)]
                if ".." in rest:  # the kernel walks the missing name before going up
                    raise _err(exc.errno)
                return self._lexical(nxt, rest)
            except OSError as exc:
                raise _err(exc.errno or errno.EACCES)
            if mode & _S_IFMT == _S_IFLNK:
                links += 1
                if links > MAX_SYMLINKS:
                    raise _err(errno.ELOOP)
                target = os.readlink(host)
                if not target:
                    raise _err(errno.ENOENT)
                if target[0] == "/":
                    guest = "/"
                todo.extend(reversed(target.split("/")))
                continue
            if not last and mode & _S_IFMT != _S_IFDIR:
                raise _err(errno.ENOTDIR)  # "file/.." (a final "/" is the kernel's to check)
            guest = nxt
        return guest, host_of(guest), True

    def _lexical(self, guest: str, rest: List[str]) -> Tuple[str, str, bool]:
        parts = guest.split("/")[1:]
        for comp in rest:
            if comp == "" or comp == ".":
                continue
            if comp == "..":
                if parts:
                    parts.pop()
            else:
                parts.append(comp)
        guest = "/" + "/".join(parts)
        return guest, self.host_of(guest), False

    def _proc(self, host: str, last: bool, tid: int) -> Optional[Tuple[str, str]]:
        """Handle /proc entries whose meaning depends on who asks.
        Returns None (ordinary entry), ("link", guest target) to continue
        the walk with, or ("literal", host path) to hand to the kernel."""
        if host == "/proc/self":
            return "link", str(self.tgid_of(tid))
        if host == "/proc/thread-self":
            return "link", f"{self.tgid_of(tid)}/task/{tid}"
        m = _MAGIC.match(host)
        if m is None:
            return None
        if m.group(2) == "root":
            return "link", "/"
        owner = int(m.group(1))
        mine = self.is_tracee(owner)
        if last and mine:
            return "literal", host
        try:
            target = os.readlink(host)
        except OSError as exc:
            raise _err(exc.errno or errno.ENOENT)
        if not target.startswith("/"):
            if last:
                return "literal", host
            raise _err(errno.ENOTDIR)
        guest = self.ns.guest_of(target)
        if guest is None:
            raise _err(errno.EACCES)
        return "link", guest


def guest_cwd(ns: Namespace, tid: int) -> str:
    """Guest path of a tracee's current directory ("/" when outside the view)."""
    try:
        host = os.readlink(f"/proc/{tid}/cwd")
    except OSError:
        return "/"
    return ns.guest_of(host) or "/"


def guest_fd_dir(ns: Namespace, tid: int, fd: int) -> str:
    """Guest path of a directory descriptor; OSError when it is not usable."""
    try:
        host = os.readlink(f"/proc/{tid}/fd/{fd}")
    except OSError:
        raise _err(errno.EBADF) from None
    if not host.startswith("/"):
        raise _err(errno.ENOTDIR)
    guest = ns.guest_of(host)
    if guest is None:
        raise _err(errno.EACCES)
    return guest
