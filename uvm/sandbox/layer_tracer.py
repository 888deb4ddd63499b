"""The tracer side of the writable layer and of the guest identity.

:class:`LayerNamespace` is a :class:`Namespace` whose root territory is
mapped through a :class:`~uvm.sandbox.layer.Layer`; :class:`LayerTracer` is
the :class:`~uvm.sandbox.dispatch.Tracer` used with it.  It changes what
happens before a call reaches the kernel, never the hot path of runs
without a layer (the runner picks this class only when the namespace has a
layer):

- a call that creates a name (open with O_CREAT, mkdir, mknod, symlink,
  bind of an AF_UNIX socket) first copies up the directory that will hold
  it; a call that modifies an object (open for writing or with O_TRUNC,
  truncate, chmod, chown, utime, setxattr, ...) first copies the object up;
- calls whose meaning depends on the merged view are done by the tracer
  itself on the layer and their result handed back (unlink, rmdir, rename,
  link): so that a placeholder is never mistaken for the lower object;
- the descriptor forms (fchmod, fchown, fsetxattr, futimens) on a
  descriptor of a lower file copy the file up and act on the copy;
- with an identity (``-0``, ``-i``): the get*id calls are answered, set*id
  calls succeed without effect, chown and device mknod are recorded in the
  layer's metadata, and stat results are rewritten at the call's exit.
"""

from __future__ import annotations

import errno
import os
import stat
import struct

from uvm.sandbox import memory as mem
from uvm.sandbox.arch import ARG_REGS
from uvm.sandbox.dispatch import _AT_FDCWD32, _MASK64, _SKIP, SETREGS, Tracer, _err, filter_numbers
from uvm.sandbox.handlers import TABLE
from uvm.sandbox.identity import Identity, layout_for, rewrite
from uvm.sandbox.layer import Layer
from uvm.sandbox.namespace import LAYERED, NOT_FAST, PLAIN, Namespace
from uvm.sandbox.sysnums import NUMBERS

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

CREATE, MODIFY = 1, 2
O_ACCMODE = 3
O_CREAT = 0o100
O_TRUNC = 0o1000
AT_REMOVEDIR = 0x200
AT_EMPTY_PATH = 0x1000
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

CREATE_CALLS = frozenset({"mkdir", "mkdirat", "mknod", "mknodat", "symlink", "symlinkat"})
CHOWN_CALLS = frozenset({"chown", "lchown", "chown16", "lchown16", "chown32", "lchown32", "fchownat"})
MODIFY_CALLS = frozenset({
    "chmod", "fchmodat", "fchmodat2", "utime", "utimes", "futimesat", "utimensat",
    "utimensat_time64", "truncate", "truncate64", "setxattr", "lsetxattr", "removexattr",
    "lremovexattr", "setxattrat", "removexattrat", "file_setattr"}) | CHOWN_CALLS
STAT_CALLS = frozenset({"stat", "lstat", "stat64", "lstat64", "newfstatat", "fstatat64", "statx"})

# Rows added to the table for runs with a layer (descriptor forms that could
# reach a lower file) and with an identity.
LAYER_ROWS: Dict[str, Tuple] = {
    "fchmod": ("fdattr", 0),
    "fchown": ("fdattr", 0),
    "fchown32": ("fdattr", 0),
    "fchown16": ("fdattr", 0),
    "fsetxattr": ("fdattr", 0),
    "fremovexattr": ("fdattr", 0),
}
IDENTITY_ROWS: Dict[str, Tuple] = {
    # (kind, index in the credentials [ruid, euid, suid, rgid, egid, sgid], bits)
    "getuid": ("getid", 0, 32), "geteuid": ("getid", 1, 32),
    "getgid": ("getid", 3, 32), "getegid": ("getid", 4, 32),
    "getuid16": ("getid", 0, 16), "geteuid16": ("getid", 1, 16),
    "getgid16": ("getid", 3, 16), "getegid16": ("getid", 4, 16),
    "getresuid": ("getresid", 0, 32), "getresgid": ("getresid", 3, 32),
    "getresuid16": ("getresid", 0, 16), "getresgid16": ("getresid", 3, 16),
    "getgroups": ("getgroups", 32), "getgroups16": ("getgroups", 16),
    "setgroups": ("creds",), "setgroups16": ("creds",),
    "fstat": ("fstat", 0, 1), "fstat64": ("fstat", 0, 1),
}

_STAT_BUF = {"stat": 1, "lstat": 1, "stat64": 1, "lstat64": 1, "newfstatat": 2,
             "fstatat64": 2, "statx": 4}


_ROOT_ID = Identity(0, 0)


class LayerNamespace(Namespace):
    """A namespace whose root is seen through a writable layer."""

    def __init__(self, root: str, layer: Layer, binds=(), default_binds: bool = True,
                 lazy=None, identity: Optional[Identity] = None) -> None:
        self.layer = layer
        self.identity = identity
        super().__init__(root, binds, default_binds=default_binds, lazy=lazy)

    def host_of(self, guest: str) -> str:
        for bguest, bguest_slash, bhost in self._guest_prefixes:
            if guest == bguest:
                return bhost
            if guest.startswith(bguest_slash):
                return bhost + guest[len(bguest):] if bhost != "/" else guest[len(bguest):]
        return self.layer.host_of(guest)

    def fast_dir(self, guest_dir: str, host_dir: str) -> int:
        """Also: in the root, directories still wholly in the lower one or
        wholly in the layer are plain; a copied-up directory that holds
        placeholders (each maps to the lower entry it stands for, through
        its origin) is :data:`LAYERED`: a name it lacks is absent from the
        merged view, any other is Python's.  The guest's ``/`` is one (and
        the cwd of a guest started from outside its root)."""
        if self.in_root(guest_dir) and not self.layer.is_lower(host_dir) \
                and self.layer.holds_placeholders(guest_dir):
            return LAYERED if host_dir == self.layer.host_of(guest_dir) else NOT_FAST
        return Namespace.fast_dir(self, guest_dir, host_dir)

    def fast_writes(self, guest_dir: str, host_dir: str) -> bool:
        """Also: not in a directory of the root that is still the lower
        one's (a write there copies it up first)."""
        kind = self.fast_dir(guest_dir, host_dir)
        return (kind == PLAIN or kind == LAYERED) and not (
            self.in_root(guest_dir) and self.layer.is_lower(host_dir))

    def fast_absent(self, guest_dir: str, host_dir: str) -> bool:
        """A copied-up directory holds every name of the merged view, so a
        name it lacks is absent, placeholders or not."""
        return bool(self.fast_self(guest_dir, host_dir))

    def in_root(self, guest: str) -> bool:
        for bguest, bguest_slash, _bhost in self._guest_prefixes:
            if guest == bguest or guest.startswith(bguest_slash):
                return False
        return True

    def guest_of(self, host: str) -> Optional[str]:
        guest = self.layer.guest_of(host)
        if guest is not None:
            return guest
        return Namespace.guest_of(self, host)

    def describe(self) -> List[str]:
        lines = Namespace.describe(self)
        lines.append(f"layer {self.layer.path}")
        if self.identity is not None:
            lines.append(f"identity {self.identity.uid}:{self.identity.gid}")
        return lines


class _NoLazy:
    """Stands in for a lazy tree so that the tracer translates every path
    (its one-name shortcut would let the kernel create names in the lower)."""

    @staticmethod
    def before(name, host, flags=0):
        return None

    @staticmethod
    def prefetch(wanted, host_of, follow=None, follow_max=0):
        return None


class LayerTracer(Tracer):
    """Tracer for a :class:`LayerNamespace` (see the module docstring)."""

    def __init__(self, ns: LayerNamespace, verbose: int = 0, logfn=None, anchor: bool = True) -> None:
        super().__init__(ns, verbose, logfn, anchor)
        self.layer: Layer = ns.layer
        self.identity: Optional[Identity] = ns.identity
        self.real = Identity(os.getuid(), os.getgid())
        if self.identity is not None:
            self.layer.record_owners = (self.real.uid, self.real.gid)
        # fake root without real root: access() checks are answered as root's
        self._fake_root = self.identity is not None and self.identity.uid == 0 and self.real.uid != 0
        self._real_resolve = self.resolve
        self.resolve = self._resolve  # type: ignore[assignment]
        self._op = 0
        self._last_guest: Optional[str] = None
        self._last_host = ""
        if self._lazy is None:
            self._lazy = _NoLazy
        self.emulated = 0
        self._procs: Dict[int, List] = {}  # tgid -> [[ruid, euid, suid, rgid, egid, sgid], groups]
        self.extra_rows = dict(LAYER_ROWS)
        if self.identity is not None:
            self.extra_rows.update(IDENTITY_ROWS)
        for abi in (0, 1):
            numbers = NUMBERS[abi]
            for name, row in self.extra_rows.items():
                nr = numbers.get(name)
                if nr is not None:
                    self.handlers[abi][nr] = (getattr(self, "_k_" + row[0]), name) + row[1:]

    def start_fast_path(self):
        """None with an identity: stat results and access checks are then
        rewritten, which only Python does."""
        if self.identity is not None:
            return None
        return super().start_fast_path()

    def filter_numbers(self):
        """(traced, refused, traced_if) per ABI, with this run's extra rows."""
        return filter_numbers({**TABLE, **self.extra_rows})

    # -- translation with copy-up ---------------------------------------------------------

    def _resolve(self, path: str, base: str, follow: bool, tid: int = 0) -> Tuple[str, str]:
        guest, host = self._real_resolve(path, base, follow, tid)
        self._last_guest = guest
        self._last_host = host
        op = self._op
        if not op:
            return guest, host
        self._op = 0
        layer = self.layer
        if not layer.is_lower(host.rstrip("/") or "/"):
            return guest, host
        try:
            os.lstat(host)
            exists = True
        except OSError:
            exists = False
        # A copy-up moves directories from the lower root into the layer:
        # the C fast path's directories may name the lower ones.
        if self.fast is not None:
            self.fast.clear()
        if exists:
            if op != MODIFY:
                return guest, host  # the kernel reports EEXIST, touching nothing
            new = layer.copy_up(guest)
        else:
            layer.ensure_parent(guest)
            new = layer.host_of(guest)
            if layer.is_lower(new):  # cannot happen: the parent is in the layer now
                raise _err(errno.EROFS)
        layer.flush()
        return guest, new + ("/" if host.endswith("/") and not new.endswith("/") else "")

    def _done(self, tid, regs, fn, what: str, moved: bool = False, paths_kept: bool = False) -> int:
        """Run ``fn`` in the tracer instead of the call; its result (0 or
        -errno) becomes the call's.  ``moved``: directories may have moved
        or gone (new generation of anchors); ``paths_kept``: no directory
        resolution can have changed (a file, not a symlink, was removed), so
        the resolved directories stay cached (gcc removes its temporary
        files all the time)."""
        try:
            fn()
            res = 0
        except OSError as exc:
            res = -(exc.errno or errno.EIO)
        except (ValueError, TypeError, struct.error) as exc:  # never take the tracer down
            self.logfn(f"[{tid}] {what}: {exc!r}")
            res = -errno.EIO
        self.emulated += 1
        self.layer.flush()
        if not paths_kept:
            self._invalidate(moved)
        if self.verbose:
            self.logfn(f"[{tid}] {what} = {res} (layer)")
        regs.orig_rax = _SKIP
        regs.rax = res & _MASK64
        self.translated += 1
        return SETREGS

    def _guest_arg(self, tid, regs, abi, idx, dirfd_i, follow) -> Tuple[str, str]:
        args = ARG_REGS[abi]
        path = self._read_path(tid, regs, getattr(regs, args[idx]))
        base = self._base(tid, path, getattr(regs, args[dirfd_i]) if dirfd_i >= 0 else _AT_FDCWD32)
        return self._real_resolve(path, base, follow, tid)

    def _ours(self, guest: str, host: str) -> bool:
        """Is ``guest`` in the layered root (not in a bind)?"""
        return self.ns.in_root(guest) and (self.layer.is_lower(host.rstrip("/"))
                                          or host.startswith(self.layer.top))

    def _fd_guest(self, tid: int, fd: int) -> Tuple[Optional[str], str]:
        try:
            host = os.readlink(f"/proc/{tid}/fd/{fd & 0xFFFFFFFF}")
        except OSError:
            raise _err(errno.EBADF) from None
        if not host.startswith("/"):
            return None, host
        return self.ns.guest_of(host), host

    # -- handler kinds ---------------------------------------------------------------------

    def _k_path(self, tid, regs, abi, row):
        name = row[1]
        if name in ("unlink", "rmdir"):
            return self._remove(tid, regs, abi, row[2], -1, name == "rmdir", name)
        if self.identity is not None:
            if name == "access" and self._fake_root and self._cred(tid)[0][1] == 0:
                return self._fake_access(tid, regs, abi, row[2], -1, True, 1, name)
            if name in CHOWN_CALLS:
                return self._fake_chown(tid, regs, abi, row[2], -1, row[3], 1, name)
            if name == "mknod":
                res = self._fake_mknod(tid, regs, abi, row[2], -1, 1, name)
                if res is not None:
                    return res
        self._op = CREATE if name in CREATE_CALLS else MODIFY if name in MODIFY_CALLS else 0
        self._last_guest, self._last_host = None, ""
        res = super()._k_path(tid, regs, abi, row)
        self._op = 0
        if self.identity is not None and name in STAT_CALLS:
            self._want_stat(tid, regs, abi, name, self._last_guest, self._last_host)
        return res

    def _k_at(self, tid, regs, abi, row):
        _fn, name, dirfd_i, idx, flags_i, follow, toggle, _mutates = row
        args = ARG_REGS[abi]
        if name == "unlinkat":
            rm = bool(getattr(regs, args[2]) & AT_REMOVEDIR)
            return self._remove(tid, regs, abi, idx, dirfd_i, rm, name)
        flags = getattr(regs, args[flags_i]) if flags_i >= 0 else 0
        ptr = getattr(regs, args[idx])
        fd_form = (not ptr and name.startswith("utimensat")) or (
            flags & AT_EMPTY_PATH and not self._read_path(tid, regs, ptr))
        if fd_form:
            if name in MODIFY_CALLS:
                return self._fd_modify(tid, regs, abi, name, getattr(regs, args[dirfd_i]))
            if self.identity is not None and name in STAT_CALLS:
                guest, host = self._fd_guest(tid, getattr(regs, args[dirfd_i]))
                self._want_stat(tid, regs, abi, name, guest, host)
            return 0
        if flags & toggle:
            follow = not follow
        if self.identity is not None:
            if name.startswith("faccessat") and self._fake_root and self._cred(tid)[0][1] == 0:
                return self._fake_access(tid, regs, abi, idx, dirfd_i, follow, 2, name)
            if name in CHOWN_CALLS:
                return self._fake_chown(tid, regs, abi, idx, dirfd_i, follow, 2, name)
            if name == "mknodat":
                res = self._fake_mknod(tid, regs, abi, idx, dirfd_i, 2, name)
                if res is not None:
                    return res
        self._op = CREATE if name in CREATE_CALLS else MODIFY if name in MODIFY_CALLS else 0
        self._last_guest, self._last_host = None, ""
        res = super()._k_at(tid, regs, abi, row)
        self._op = 0
        if self.identity is not None and name in STAT_CALLS:
            self._want_stat(tid, regs, abi, name, self._last_guest, self._last_host)
        return res

    def _open_op(self, flags: int) -> int:
        if flags & O_ACCMODE or flags & O_TRUNC:
            return MODIFY
        return CREATE if flags & O_CREAT else 0

    def _k_open(self, tid, regs, abi, row):
        flags_i = row[3]
        flags = getattr(regs, ARG_REGS[abi][flags_i]) if flags_i >= 0 else 0o1101
        self._op = self._open_op(flags)
        try:
            return super()._k_open(tid, regs, abi, row)
        finally:
            self._op = 0

    def _k_openat(self, tid, regs, abi, row):
        self._op = self._open_op(getattr(regs, ARG_REGS[abi][row[4]]))
        try:
            return super()._k_openat(tid, regs, abi, row)
        finally:
            self._op = 0

    def _k_openat2(self, tid, regs, abi, row):
        how = mem.read_bytes(tid, getattr(regs, ARG_REGS[abi][row[4]]), 8)
        self._op = self._open_op(struct.unpack("<Q", how)[0])
        try:
            return super()._k_openat2(tid, regs, abi, row)
        finally:
            self._op = 0

    def _k_symlink(self, tid, regs, abi, row):
        self._op = CREATE
        try:
            return super()._k_symlink(tid, regs, abi, row)
        finally:
            self._op = 0

    def _sun_path(self, tid, addr, length, bind, pin=False):
        self._op = CREATE if bind else 0
        try:
            return super()._sun_path(tid, addr, length, bind, pin)
        finally:
            self._op = 0

    # -- emulated: unlink, rmdir, rename, link -----------------------------------------------

    def _remove(self, tid, regs, abi, idx, dirfd_i, rm: bool, name: str):
        guest, host = self._guest_arg(tid, regs, abi, idx, dirfd_i, False)
        if guest in self._bind_points:
            raise _err(errno.EBUSY)
        if not self._ours(guest, host):
            if rm or os.path.islink(host):  # a file's removal changes no resolution
                self._invalidate(rm)
            return self._translate(tid, regs, abi, idx, dirfd_i, False, name, busy=True)
        if guest == "/":
            raise _err(errno.EBUSY)
        if host.endswith("/") and not rm:
            raise _err(errno.EISDIR if os.path.isdir(host) else errno.ENOTDIR)
        if rm:
            return self._done(tid, regs, lambda: self.layer.rmdir(guest), f"{name}({guest!r})", True)
        # A removed symlink may be part of a cached resolution, and a removed
        # placeholder still stands in the lower root, where the C fast path
        # may look it up; the layer's own files are simply gone.
        kept = not os.path.islink(host) and not self.layer.is_lower(host)
        return self._done(tid, regs, lambda: self.layer.unlink(guest), f"{name}({guest!r})",
                          paths_kept=kept)

    def _k_two(self, tid, regs, abi, row):
        _fn, name, old_i, new_i, _follow_old = row
        return self._two(tid, regs, abi, row, name, -1, old_i, -1, new_i, 0)

    def _k_two_at(self, tid, regs, abi, row):
        _fn, name, odfd, old_i, ndfd, new_i, flags_i, _follow_flag = row
        args = ARG_REGS[abi]
        flags = getattr(regs, args[flags_i]) if flags_i >= 0 else 0
        if name == "renameat2":
            flags = getattr(regs, args[4]) & 0xFFFFFFFF
        if name == "linkat" and flags & AT_EMPTY_PATH:
            path = self._read_path(tid, regs, getattr(regs, args[old_i]))
            if not path:
                _g, host = self._fd_guest(tid, getattr(regs, args[odfd]))
                if self.layer.is_lower(host):
                    raise _err(errno.EXDEV)  # a new name for a root file's inode
            return super()._k_two_at(tid, regs, abi, row)
        return self._two(tid, regs, abi, row, name, odfd, old_i, ndfd, new_i, flags)

    def _two(self, tid, regs, abi, row, name, odfd, old_i, ndfd, new_i, flags):
        link = name.startswith("link")
        follow_old = link and bool(flags & 0x400)  # AT_SYMLINK_FOLLOW
        old, ohost = self._guest_arg(tid, regs, abi, old_i, odfd, follow_old)
        new, nhost = self._guest_arg(tid, regs, abi, new_i, ndfd, False)
        if not (self._ours(old, ohost) and self._ours(new, nhost)):
            # a bind is involved: the kernel decides (EXDEV across file systems)
            if link:
                target = ohost
                if ohost.startswith("/proc/"):
                    try:
                        target = os.readlink(ohost)  # /proc/PID/fd/N and the like
                    except OSError:
                        pass
                if self.layer.is_lower(target) and self._ours(new, nhost):
                    raise _err(errno.EXDEV)  # a layer name for a root file's inode
                return super()._k_two_at(tid, regs, abi, row) if name == "linkat" \
                    else super()._k_two(tid, regs, abi, row)
            self._invalidate(True)
            return super()._k_two_at(tid, regs, abi, row) if name != "rename" \
                else super()._k_two(tid, regs, abi, row)
        what = f"{name}({old!r}, {new!r})"
        if link:
            return self._done(tid, regs, lambda: self.layer.link(old, new), what)
        if old in self._bind_points or new in self._bind_points or "/" in (old, new):
            raise _err(errno.EBUSY)
        if new.startswith(old + "/"):
            raise _err(errno.EINVAL)
        return self._done(tid, regs, lambda: self.layer.rename(old, new, flags & 3), what, True)

    # -- descriptor forms ---------------------------------------------------------------

    def _k_fdattr(self, tid, regs, abi, row):
        name = row[1]
        fd = getattr(regs, ARG_REGS[abi][0])
        if name.startswith("fchown") and self.identity is not None:
            guest, _host = self._fd_guest(tid, fd)
            if guest is None:
                raise _err(errno.EPERM)
            uid, gid = self._ids(regs, abi, 1, name.endswith("16"))
            return self._done(tid, regs, lambda: self.layer.set_meta(guest, uid, gid),
                              f"{name}({guest!r}, {uid}, {gid})")
        return self._fd_modify(tid, regs, abi, name, fd)

    def _fd_modify(self, tid, regs, abi, name, fd):
        """An attribute change through a descriptor: on a lower file, done
        on its copy in the layer."""
        guest, host = self._fd_guest(tid, fd)
        if guest is None or not self.layer.is_lower(host) or not self.ns.in_root(guest):
            if self.identity is not None and name.startswith("fchownat"):
                return self._fake_chown_fd(tid, regs, abi, guest, name)
            return 0  # the layer's own file, or a bind: the kernel does it
        args = ARG_REGS[abi]
        layer = self.layer
        if name.startswith("fchown") and self.identity is not None:
            return self._fake_chown_fd(tid, regs, abi, guest, name)

        def act():
            target = layer.copy_up(guest)
            if name.startswith("fchmod"):
                os.chmod(target, getattr(regs, args[1 if name == "fchmod" else 2]) & 0o7777)
            elif name.startswith("fchown"):
                i = 1 if not name.startswith("fchownat") else 2
                uid, gid = self._ids(regs, abi, i, name.endswith("16"))
                os.chown(target, uid, gid)
            elif name.startswith("utimensat"):
                times = self._times(tid, regs, abi, target, name)
                if times is None:
                    os.utime(target)
                else:
                    os.utime(target, ns=times)
            else:
                raise _err(errno.ENOTSUP)  # xattrs through a descriptor of a lower file

        return self._done(tid, regs, act, f"{name}(fd {fd} {guest!r})")

    def _fake_chown_fd(self, tid, regs, abi, guest, name):
        if guest is None:
            raise _err(errno.EPERM)
        uid, gid = self._ids(regs, abi, 2, False)
        return self._done(tid, regs, lambda: self.layer.set_meta(guest, uid, gid),
                          f"{name}({guest!r}, {uid}, {gid})")

    def _times(self, tid, regs, abi, target, name):
        ptr = getattr(regs, ARG_REGS[abi][2])
        st = os.stat(target)
        if not ptr:
            return None
        fmt = "<qqqq" if abi == 0 or name == "utimensat_time64" else "<iiii"
        a_s, a_ns, m_s, m_ns = struct.unpack(fmt, mem.read_bytes(tid, ptr, struct.calcsize(fmt)))
        import time

        now = time.time_ns()

        def pick(sec, nsec, old):
            if nsec == UTIME_NOW:
                return now
            if nsec == UTIME_OMIT:
                return old
            return sec * 10**9 + nsec

        return pick(a_s, a_ns, st.st_atime_ns), pick(m_s, m_ns, st.st_mtime_ns)

    # -- identity ---------------------------------------------------------------------------

    def _ids(self, regs, abi, first: int, small: bool) -> Tuple[int, int]:
        args = ARG_REGS[abi]
        out = []
        for i in (first, first + 1):
            v = getattr(regs, args[i]) & (0xFFFF if small else 0xFFFFFFFF)
            out.append(-1 if v in (0xFFFF if small else -1, 0xFFFFFFFF) else v)
        return out[0], out[1]

    def _fake_access(self, tid, regs, abi, idx, dirfd_i, follow, mode_i, name):
        """access() as root sees it: anything that exists may be read and
        written (through the layer); X_OK needs an x bit or a directory."""
        guest, host = self._guest_arg(tid, regs, abi, idx, dirfd_i, follow)
        mode = getattr(regs, ARG_REGS[abi][mode_i]) & 7

        def act():
            st = os.stat(host) if follow else os.lstat(host)
            if mode & 1 and not stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o111:
                raise _err(errno.EACCES)

        return self._done(tid, regs, act, f"{name}({guest!r}, {mode})")

    def _fake_chown(self, tid, regs, abi, idx, dirfd_i, follow, id_i, name):
        guest, host = self._guest_arg(tid, regs, abi, idx, dirfd_i, follow)
        os.lstat(host)  # ENOENT, ENOTDIR, ... as the kernel would say
        uid, gid = self._ids(regs, abi, id_i, name.endswith("16"))
        return self._done(tid, regs, lambda: self.layer.set_meta(guest, uid, gid),
                          f"{name}({guest!r}, {uid}, {gid})")

    def _fake_mknod(self, tid, regs, abi, idx, dirfd_i, mode_i, name):
        """A device node under an identity: an empty regular file in the
        layer, its type and rdev recorded.  None for other node types."""
        args = ARG_REGS[abi]
        mode = getattr(regs, args[mode_i]) & 0xFFFFFFFF
        if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
            return None
        dev = getattr(regs, args[mode_i + 1]) & 0xFFFFFFFF
        guest, host = self._guest_arg(tid, regs, abi, idx, dirfd_i, False)
        layer = self.layer

        def act():
            target = host
            if self._ours(guest, host):
                if layer.exists(guest):
                    raise _err(errno.EEXIST)
                layer.ensure_parent(guest)
                target = self.ns.host_of(guest)
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, mode & 0o7777)
            os.close(fd)
            layer.set_meta(guest, mode=mode, rdev=dev)

        return self._done(tid, regs, act, f"{name}({guest!r}, {oct(mode)}, {dev})")

    # Credentials of each guest process under an identity: set*id calls
    # succeed and change what later get*id calls answer (programs such as
    # apt check that dropping privileges worked); files are still accessed
    # with the real credentials.

    def _cred(self, tid: int) -> List:
        tgid = self.tgid_of(tid)
        cred = self._procs.get(tgid)
        if cred is None:
            parent = None
            try:
                with open(f"/proc/{tgid}/status", "rb") as f:
                    for line in f:
                        if line.startswith(b"PPid:"):
                            parent = self._procs.get(int(line.split()[1]))
                            break
            except OSError:
                pass
            if parent is not None:
                cred = [list(parent[0]), parent[1]]
            else:
                u, g = self.identity
                cred = [[u, u, u, g, g, g], (g,)]
            self._procs[tgid] = cred
        return cred

    def _k_creds(self, tid, regs, abi, row):
        if self.identity is None:
            return super()._k_creds(tid, regs, abi, row)
        self._creds.clear()
        name = row[1]
        small = name.endswith("16")
        base = name[:-2] if small else name
        args = ARG_REGS[abi]
        none = 0xFFFF if small else 0xFFFFFFFF
        vals = [getattr(regs, args[i]) & none for i in range(3)]
        ids = self._cred(tid)[0]
        off = 3 if "gid" in base else 0
        res = 0
        if base in ("setuid", "setgid"):
            if ids[1] == 0:  # as root: all three
                ids[off:off + 3] = [vals[0]] * 3
            else:
                ids[off + 1] = vals[0]
        elif base in ("setreuid", "setregid"):
            r, e = vals[0], vals[1]
            if r != none:
                ids[off] = r
            if e != none:
                ids[off + 1] = e
                ids[off + 2] = e
        elif base in ("setresuid", "setresgid"):
            for i in range(3):
                if vals[i] != none:
                    ids[off + i] = vals[i]
        elif base in ("setfsuid", "setfsgid"):
            res = ids[off + 1]  # the previous fs id: the effective one
        elif base == "setgroups":
            n = vals[0]
            if n > 65536:
                res = -errno.EINVAL
            else:
                size = 2 if small else 4
                raw = mem.read_bytes(tid, getattr(regs, args[1]), n * size) if n else b""
                self._procs[self.tgid_of(tid)][1] = struct.unpack("<%d%s" % (n, "H" if small else "I"), raw)
        regs.orig_rax = _SKIP
        regs.rax = res & _MASK64
        return SETREGS

    def _k_getid(self, tid, regs, abi, row):
        _fn, _name, which, bits = row
        value = self._cred(tid)[0][which]
        if bits == 16 and value > 0xFFFF:
            value = 65534
        regs.orig_rax = _SKIP
        regs.rax = value
        return SETREGS

    def _k_getresid(self, tid, regs, abi, row):
        _fn, _name, which, bits = row
        ids = self._cred(tid)[0]
        fmt = "<I" if bits == 32 else "<H"
        args = ARG_REGS[abi]
        res = 0
        for i in range(3):
            value = ids[which + i]
            if bits == 16 and value > 0xFFFF:
                value = 65534
            try:
                mem.write_bytes(tid, getattr(regs, args[i]), struct.pack(fmt, value))
            except OSError:
                res = -errno.EFAULT
        regs.orig_rax = _SKIP
        regs.rax = res & _MASK64
        return SETREGS

    def _k_getgroups(self, tid, regs, abi, row):
        bits = row[2]
        args = ARG_REGS[abi]
        size = getattr(regs, args[0]) & 0xFFFFFFFF
        groups = self._cred(tid)[1]
        res = len(groups)
        if size:
            if size < len(groups):
                res = -errno.EINVAL
            else:
                vals = [g if bits == 32 or g <= 0xFFFF else 65534 for g in groups]
                try:
                    mem.write_bytes(tid, getattr(regs, args[1]),
                                    struct.pack("<%d%s" % (len(vals), "I" if bits == 32 else "H"), *vals))
                except OSError:
                    res = -errno.EFAULT
        regs.orig_rax = _SKIP
        regs.rax = res & _MASK64
        return SETREGS

    def _k_fstat(self, tid, regs, abi, row):
        name = row[1]
        guest, host = self._fd_guest(tid, getattr(regs, ARG_REGS[abi][0]))
        self._want_stat(tid, regs, abi, name, guest, host)
        return 0

    def _want_stat(self, tid, regs, abi, name, guest, host):
        """Ask for the exit of this stat call.  The root's files (``host``
        in the lower root) belong to root; files owned by the real user
        elsewhere (the layer, binds) to the guest's identity."""
        layout = layout_for(name, abi)
        if layout is None:
            return
        buf_i = _STAT_BUF.get(name, 1)
        owner = _ROOT_ID if self.layer.is_lower(host.rstrip("/") or "/") else self.identity
        addr = getattr(regs, ARG_REGS[abi][buf_i])
        self.exits[tid] = lambda regs: self._stat_result(tid, regs, layout, addr, guest, owner)

    def _stat_result(self, tid, regs, layout, addr, guest, owner) -> None:
        """At the exit of a stat call: the owners an identity presents."""
        if regs.rax != 0:
            return
        try:
            raw = mem.read_bytes(tid, addr, layout[0])
        except OSError:
            return
        meta = self.layer.meta.get(guest) if guest is not None else None
        new = rewrite(raw, layout, self.real, owner, meta)
        if new is not None:
            mem.write_bytes(tid, addr, new)

    def layer_stats(self) -> Dict[str, int]:
        """Counters for ``uvm run --stats``."""
        return {"layer_copied_dirs": self.layer.copied_dirs,
                "layer_copied_files": self.layer.copied_files,
                "layer_emulated_calls": self.emulated}

    def forget(self, tid: int) -> None:
        super().forget(tid)
        self._procs.pop(tid, None)

    def cleanup(self) -> None:
        super().cleanup()
        self.layer.flush()


__all__ = ["LayerNamespace", "LayerTracer", "LAYER_ROWS", "IDENTITY_ROWS"]
