"""The per-stop driver: read the registers, run the call's handler, write
the registers back, or turn the call into an error.

Handlers only decide; this module owns the register snapshot, the scratch
area below the tracee's stack pointer where translated strings go, and the
-errno conversion.  :meth:`Tracer.enter` is the hot path: one GETREGS, one
string read, one translation, one string write, one SETREGS, and no exit
stop for any call in the table.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import struct

from uvm import log as uvm_log
from uvm.sandbox import anchors as _anchors
from uvm.sandbox import execve as _execve
from uvm.sandbox import fastpath as _fastpath
from uvm.sandbox import memory as mem
from uvm.sandbox import placement as _placement
from uvm.sandbox import preload as _preload
from uvm.sandbox import startsets as _startsets
from uvm.sandbox.arch import ABI_I386, ABI_NAMES, ARG_REGS, RED_ZONE, WORD_SIZE
from uvm.sandbox.handlers import (
    AT_EMPTY_PATH,
    NOFOLLOW_TWIN,
    O_CREAT,
    O_EXCL,
    O_NOFOLLOW,
    TABLE,
)
from uvm.sandbox.namespace import FILLED, LAYERED, NOT_FAST, PLAIN, Namespace, canonical_lexical
from uvm.sandbox.paths import _MAGIC, Resolver
from uvm.sandbox.sysnums import NAMES, NUMBERS

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

log = uvm_log.get(__name__)

SETREGS = 1
_MASK64 = 0xFFFFFFFFFFFFFFFF
_AT_FDCWD32 = 0xFFFFFF9C
_SKIP = _MASK64  # orig_rax of a skipped call
AF_UNIX = 1
SOCKADDR_UN_PATH = 108
SYS_BIND, SYS_CONNECT, SYS_SENDTO, SYS_SENDMSG, SYS_SENDMMSG = 2, 3, 11, 16, 20
SYS_ACCEPT, SYS_GETSOCKNAME, SYS_GETPEERNAME, SYS_RECVFROM, SYS_ACCEPT4 = 5, 6, 7, 12, 18
# readlinkat() on this descriptor number (EBADF natively) is realpath() of
# the preloaded library (native/uvm_preload.c: UVM_REALPATH_FD).
REALPATH_FD32 = -0x7576 & 0xFFFFFFFF
MAX_PROC_HOPS = 8  # /proc magic links followed in a row by realpath()
_LOADER_REPORTS = (b"LD_TRACE_LOADED_OBJECTS=", b"LD_DEBUG=")
OPEN_HOW_SIZE, OPEN_HOW_MAX = 24, 4096  # struct open_how: its size now, and a page
SOCKET_NAMES_KEPT = 4096  # socket names bound for the guest, remembered to give back
# sendmmsg messages translated per call: their copy goes below the stack
# pointer, and the kernel may send fewer than asked (the caller sees how many).
MMSG_MAX = 64


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _named_library(library: bytes, path: str) -> bytes:
    """The preloaded library's name for the loader, with the name the kernel
    would have given the process after a ``?``: the file name of the path the
    guest executed (a script's, not its interpreter's), which the library
    sets (native/uvm_preload.c) where the kernel named the process after
    the loader.  The tracer (and the C) give the kernel the library's name
    alone.  Not for a name the loader would split (space, colon)."""
    name = _enc(path.rpartition("/")[2])[:15]  # TASK_COMM_LEN, less the NUL
    if not name or b" " in name or b":" in name or b"\t" in name:
        return library
    return library + b"?" + name


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _dec(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class Tracer:
    """Translation state shared by all tracees of one sandbox run."""

    def __init__(self, ns: Namespace, verbose: int = 0, logfn: Optional[Callable[[str], None]] = None,
                 anchor: bool = True) -> None:
        self.ns = ns
        self.tracees: Dict[int, int] = {}  # tid -> tgid (0 until known)
        self.resolver = Resolver(ns, is_tracee=self.tracees.__contains__, tgid_of=self.tgid_of)
        self.resolve = self.resolver.resolve
        self.verbose = verbose
        self.logfn = logfn or (lambda line: log.info("%s", line))
        self.exe: Dict[int, str] = {}  # tgid -> guest path of the program
        self.pending_exe: Dict[int, Tuple[str, str]] = {}  # tid -> (program, name given)
        self.last: Dict[int, Tuple[int, int, Dict[int, str]]] = {}  # tid -> (rip, sp, {addr: guest})
        self.stops = 0
        self.translated = 0
        self.sock_dir: Optional[str] = None
        self._sock_links: Dict[str, str] = {}
        # sun_path the kernel was given at a bind -> the guest's own name
        self._bound_names: Dict[bytes, bytes] = {}
        self.handlers: Tuple[Dict[int, Tuple], Dict[int, Tuple]] = ({}, {})
        for abi in (0, 1):
            numbers = NUMBERS[abi]
            for name, row in TABLE.items():
                nr = numbers.get(name)
                if nr is None or row[0] == "refuse":
                    continue
                self.handlers[abi][nr] = (getattr(self, "_k_" + row[0]), name) + row[1:]
        self._cursor = 0
        # Calls whose exit must be seen: tid -> what to do then (with the
        # exit's registers); the loop resumes them with PTRACE_SYSCALL.
        self.exits: Dict[int, Callable[[mem.Regs], None]] = {}
        self._pinned = False
        self._translated = ""  # what the kernel will look up for the last _translate
        self._kernel_name = ""  # ... and the name it gets for it
        self._given = ""        # ... and the guest's own
        # tid -> the O_PATH descriptor its last PIN_BY_DESCRIPTOR call named
        self._pin_fds: Dict[int, int] = {}
        self.fallback = False  # set by the loop when every call stops
        # Translated paths reach the kernel through directory descriptors of
        # the tracer (anchors.py) so that a swapped directory cannot redirect
        # them.  As root, only for tracees that can still reach the tracer's
        # /proc entry (CAP_SYS_PTRACE); an unprivileged guest always can.
        self.anchors = _anchors.Anchors() if anchor and _anchors.available() else None
        self._root_mode = os.geteuid() == 0
        self._creds: Dict[int, bool] = {}
        self._bind_points = frozenset(b.guest for b in ns.binds)
        # The tracer's own memory and descriptors stay out of the guest's
        # reach (the filter refuses process_vm_*, pidfd_open and ptrace on it).
        self._tracer_proc = f"/proc/{os.getpid()}/"
        # CernVM-FS trees (materialize.py): content before open/exec, EROFS for writes.
        self._lazy = getattr(ns, "lazy", None)
        self._tracer_private = re.compile(
            rf"/proc/{os.getpid()}/(?:task/\d+/)?(?:mem|fd|map_files|fdinfo)(?:/|\Z)")
        # The library preloaded into programs that make the calls it serves
        # (preload.py), per ELF class (64-bit: True), by the name the
        # guest's loader opens: a descriptor of the tracer, like the anchors.
        # With the C fast path, it shares the fast path's table and the
        # filter lets its calls through with the key (``preload.key``).
        self.preload = _preload.Preload(
            enabled=self.anchors is not None,
            table_size=0 if verbose or self.anchors is None else _fastpath.table_size())
        self._preload_paths = frozenset(_dec(name) for name in self.preload.names.values())
        # Names that never take the one-name shortcut of _translate: ".",
        # "..", and every bind's last component (a bind may sit on it).
        self._not_simple = frozenset({"", ".", ".."} | {b.guest.rpartition("/")[2] for b in ns.binds})
        # The C hot path (fastpath.py), made by the loop when seccomp works.
        self.fast: Optional[_fastpath.FastPath] = None
        # CPU placement (placement.py), set by the runner; and the answer to
        # sched_getaffinity while it may keep the guest on one CPU.
        self.placement: Optional[_placement.Placement] = None
        self._affinity: Optional[_placement.AffinityAnswer] = None

    def start_fast_path(self) -> Optional[_fastpath.FastPath]:
        """Make the C fast path for this run, or None: it needs the
        anchors (it hands the kernel the same names), and ``-v`` logs every
        translation, which only Python does."""
        if self.anchors is None or self.verbose:
            return None
        self.fast = _fastpath.create(self._not_simple - {"", ".", ".."},
                                     relative_ok=self._lazy is None, check_caps=self._root_mode,
                                     table_fd=self.preload.table_fd, key=self.preload.key)
        if self.fast is not None:
            self.anchors.on_retire = self.fast.clear
            self.preload.seal_table()
            for name in self.preload.names.values():
                self.fast.pass_through(name)
        return self.fast

    # -- bookkeeping ---------------------------------------------------------------

    def tgid_of(self, tid: int) -> int:
        tgid = self.tracees.get(tid)
        if tgid:
            return tgid
        try:
            with open(f"/proc/{tid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Tgid:"):
                        tgid = int(line.split()[1])
                        break
        except OSError:
            tgid = tid
        tgid = tgid or tid
        if tid in self.tracees:
            self.tracees[tid] = tgid
        return tgid

    def forked(self, parent: int, child: int) -> None:
        """A new tracee: it keeps a CPU affinity its parent chose itself, and
        its parent's credentials (fork copies them; a later set*id or capset
        is a "creds" row, which forgets them)."""
        known = self._creds.get(parent)
        if known is not None:
            self._creds[child] = known
        if self.placement is not None:
            self.placement.inherit(parent, child)
            if self.fast is not None and self.placement.chose(child):
                self.fast.know(child, own=True)

    def cpu_sample(self, tracer_tid: int, limit: int, runnable: bool) -> Tuple[int, int, int]:
        """For the CPU placement's thread: ``placement.sample`` of the live
        tracees, by the C when there is a fast path."""
        fast = self.fast
        if fast is not None:
            return fast.sample(tracer_tid, limit, runnable)
        return _placement.sample(self.live_tids(), tracer_tid, limit, runnable)

    def live_tids(self) -> List[int]:
        """Every live tracee, for the CPU placement's thread: Python's, and
        those the C saw born that Python has not adopted yet."""
        tids = list(self.tracees)
        if self.fast is not None:
            tracees = self.tracees
            tids.extend(tid for tid in self.fast.known() if tid not in tracees)
        return tids

    def leave(self, tid: int) -> None:
        """The exit stop of a call that asked for one (:attr:`exits`).  A
        guest that unmapped the call's memory meanwhile keeps what the
        kernel wrote; a tracee that is gone is the loop's business."""
        action = self.exits.pop(tid, None)
        if action is not None:
            try:
                action(mem.getregs(tid))
            except ProcessLookupError:
                raise
            except OSError:
                pass

    def forget(self, tid: int) -> None:
        self.exits.pop(tid, None)
        pinned = self._pin_fds.pop(tid, None)
        if pinned is not None:
            os.close(pinned)
        if self.fast is not None:
            self.fast.forget(tid)
        self.tracees.pop(tid, None)
        self._creds.pop(tid, None)
        self.last.pop(tid, None)
        self.pending_exe.pop(tid, None)
        self.exe.pop(tid, None)

    def exec_done(self, tgid: int, former_tid: int) -> None:
        """``tgid`` runs a new program: the guest names of its executable and
        AT_EXECFN; as root, what it may reach is asked again (exec clears
        the capabilities of a process whose uid is not 0)."""
        pending = self.pending_exe.pop(former_tid, None)
        if self._root_mode:
            self._creds.pop(tgid, None)
            self._creds.pop(former_tid, None)
            if self.fast is not None:
                self.fast.forget_creds()
        if former_tid != tgid:
            self.forget(former_tid)
            self.tracees[tgid] = tgid
        self.last.pop(tgid, None)
        if pending is not None:
            self.exe[tgid] = pending[0]
            if pending[1]:
                try:
                    self._fix_execfn(tgid, pending[1])
                except OSError:
                    pass

    def _fix_execfn(self, tgid: int, given: str) -> None:
        """Make AT_EXECFN name what the guest executed, not the host path
        the kernel was given (in place: only when it fits)."""
        regs = mem.getregs(tgid)
        abi = 1 if regs.cs == 0x23 else 0
        word = WORD_SIZE[abi]
        sp = regs.rsp & (_MASK64 if abi == 0 else 0xFFFFFFFF)
        code = "<Q" if word == 8 else "<I"
        argc = struct.unpack(code, mem.read_bytes(tgid, sp, word))[0]
        addr = sp + word * (argc + 2)
        envc = len(mem.read_words(tgid, addr, word))
        addr += word * (envc + 1)
        # The auxiliary vector, a page at a time (the stack's mapping ends on
        # a page boundary): (key, value) words up to AT_NULL.
        pair = 2 * word
        for _chunk in range(8):
            n = max(1, (mem.PAGE - addr % mem.PAGE) // pair)
            words = struct.unpack(f"<{2 * n}{code[1]}", mem.read_bytes(tgid, addr, n * pair))
            for key, value in zip(words[::2], words[1::2]):
                if key == 0:
                    return
                if key == 31:  # AT_EXECFN
                    old = mem.read_cstring(tgid, value)
                    new = _enc(given)
                    if len(new) <= len(old):
                        mem.write_bytes(tgid, value, new + b"\0")
                    return
            addr += n * pair

    # -- the hot path ------------------------------------------------------------------

    def enter(self, tid: int) -> None:
        """Handle a stop at the entry of a system call in the table."""
        self.stops += 1
        regs = mem.getregs(tid)
        abi = 1 if regs.cs == 0x23 else 0
        if abi == 0 and regs.rip < 0x100000000 and self._compat_call(tid, regs):
            # int $0x80 from 64-bit code at a low address (non-PIE): its
            # 32-bit pointers cannot reach the scratch space; refuse.
            regs.orig_rax = _SKIP
            regs.rax = (-errno.ENOSYS) & _MASK64
            mem.setregs(tid, regs)
            return
        row = self.handlers[abi].get(regs.orig_rax)
        if row is None:
            return
        self._cursor = (regs.rsp & (_MASK64 if abi == 0 else 0xFFFFFFFF)) - RED_ZONE[abi] - 64
        try:
            if row[0](tid, regs, abi, row):
                mem.setregs(tid, regs)
        except OSError as exc:
            code = exc.errno or errno.EIO
            if self.verbose:
                self.logfn(f"[{tid}] {row[1]} -> -{errno.errorcode.get(code, code)}")
            regs.orig_rax = _SKIP
            regs.rax = (-code) & _MASK64
            mem.setregs(tid, regs)

    def _invalidate(self, dirs_moved: bool = False) -> None:
        """After a call that may change what a path names: drop the cached
        resolutions; when a directory may have been moved or removed, start
        a new generation of directory anchors too."""
        self.resolver.invalidate()
        if self.fast is not None:
            self.fast.clear()
        if dirs_moved and self.anchors is not None:
            self.anchors.retire()

    def _may_anchor(self, tid: int) -> bool:
        if not self._root_mode:
            return True
        ok = self._creds.get(tid)
        if ok is None:
            try:
                ok = bool(mem.effective_caps(tid) & (1 << 19))  # CAP_SYS_PTRACE
            except OSError:
                ok = False
            self._creds[tid] = ok
        return ok

    def _may_anchor_after_exec(self, tid: int, st: os.stat_result) -> bool:
        """Will the program ``tid`` is about to execute still reach the
        tracer's descriptors (the preloaded library's name)?  As root, only
        with an effective uid of 0: exec clears the capabilities of any
        other uid (and a set-user-ID program changes it)."""
        if not self._may_anchor(tid):
            return False
        if not self._root_mode:
            return True
        if st.st_mode & stat.S_ISUID:
            return False
        try:
            with open(f"/proc/{tid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        return line.split()[2] == b"0"
        except OSError:
            pass
        return False

    def _kernel_path(self, tid: int, host: str) -> str:
        """The name the kernel gets for ``host``: anchored on a directory
        descriptor of the tracer where possible (see anchors.py)."""
        if self.anchors is None or host.startswith("/proc/") or not self._may_anchor(tid):
            return host
        try:
            return self.anchors.anchored(host)
        except OSError as exc:
            raise _err(_anchors.errno_for_race(exc)) from None

    def _k_getaffinity(self, tid, regs, abi, row):
        placement = self.placement
        if placement is None or not placement.active:
            return 0
        _fn, _name, pid_i, len_i, mask_i = row
        args = ARG_REGS[abi]
        pid = getattr(regs, args[pid_i]) & 0xFFFFFFFF
        if (pid and pid not in self.tracees) or placement.chose(pid or tid):
            return 0  # not a guest, or its own choice: the kernel's answer is the truth
        if self._affinity is None:
            self._affinity = _placement.AffinityAnswer(placement.allowed)
        res, data = self._affinity.reply(getattr(regs, args[len_i]) & 0xFFFFFFFF, WORD_SIZE[abi])
        if data:
            mem.write_bytes(tid, getattr(regs, args[mask_i]) & (_MASK64 if abi == 0 else 0xFFFFFFFF), data)
        regs.orig_rax = _SKIP
        regs.rax = res & _MASK64
        return SETREGS

    def _k_setaffinity(self, tid, regs, abi, row):
        if self.placement is not None:
            pid = getattr(regs, ARG_REGS[abi][row[2]]) & 0xFFFFFFFF
            self.placement.chose_own(pid or tid)
            if self.fast is not None and (pid or tid) in self.tracees:
                self.fast.know(pid or tid, own=True)
        return 0

    def _publish(self, path: str, guest: str, host: str, kernel: str, follow: bool) -> None:
        """Teach the C fast path the directory of ``path`` (absolute, or one
        name relative to a directory), when its translation was the plain
        one: the cached directory, the same last component on the host, an
        anchored name.  Also "/", a directory named as "dir/" or "dir/.",
        and a final symlink followed into another directory (as an exact
        path with its target's name)."""
        head, slash, last = path.rpartition("/")
        if path == "/" or (slash and last in ("", ".")):
            self._publish_itself(head, guest, host.rstrip("/") or "/")
            return
        gdir, _, glast = guest.rpartition("/")
        hdir, _, hlast = host.rpartition("/")
        gdir = gdir or "/"
        if glast != hlast or not kernel.startswith(self.anchors.prefix):
            return
        fd = self.anchors.fd_of(hdir)
        if fd is None:
            return
        if glast != last or (slash and self.resolver.cached_dir(head) != gdir):
            itself = self.ns.fast_self(guest, host) if follow and slash else NOT_FAST
            if itself and glast not in self._not_simple:
                self.fast.publish_exact(_enc(path), fd, len(hdir), 0 if itself == PLAIN else itself,
                                        _enc(glast))
            return
        kind = self.ns.fast_dir(gdir, hdir)
        # The entry's own host directory must be the directory's (a layer
        # maps each entry of a copied-up directory to where it comes from);
        # if not, this one path may still be served as it is.
        if not kind or self.ns.host_of(gdir) != hdir:
            itself = self.ns.fast_self(guest, host) if slash else NOT_FAST
            if itself:
                self.fast.publish_exact(_enc(path), fd, len(hdir), 0 if itself == PLAIN else itself)
            return
        lazy = 0 if kind == PLAIN else kind  # the C's "filled" codes: see fastpath.py
        if slash and lazy and self.ns.fast_dir(guest, host) == FILLED:
            # a complete shadow directory: stat and open need nothing more
            self.fast.publish_exact(_enc(path), fd, len(hdir))
        if slash:
            self.fast.publish(_enc(head), fd, len(hdir), lazy, _enc(gdir),
                              self.ns.fast_writes(gdir, hdir))
            if kind == LAYERED:
                # the layer's own entry (a placeholder maps elsewhere), or
                # one still absent: served as it is
                self.fast.publish_exact(_enc(path), fd, len(hdir))
            elif last in self._not_simple and guest not in self._bind_points:
                # a name that is a bind point elsewhere, not here
                self.fast.publish_exact(_enc(path), fd, len(hdir), lazy)
        else:
            self.fast.publish_dir(fd, len(hdir), lazy)
            if kind == PLAIN and gdir != "/":
                self._publish_parent_dir(gdir, hdir)

    def _publish_parent_dir(self, gdir: str, hdir: str) -> None:
        """The plain directory above ``gdir`` too, by identity: the C takes
        a directory below a published plain one for plain, so a walk by
        descriptors (tar, find) reaches Python once per two levels at most
        instead of once per directory."""
        gparent = gdir.rpartition("/")[0] or "/"
        hparent = hdir.rpartition("/")[0] or "/"
        if self.ns.host_of(gparent) != hparent or self.ns.fast_dir(gparent, hparent) != PLAIN:
            return
        fd = self._dir_fd(hparent)
        if fd is not None:
            self.fast.publish_dir(fd, len(hparent), 0)

    def _from_cwd(self, tid: int, base: str, path: str) -> str:
        """Relative ``path`` from the cwd, guest directory ``base``, as a
        path from the guest's /; the cwd is published, so that the C joins
        the two the same way (``from_cwd`` in native/uvm_fastpath.c)."""
        self.fast.publish_cwd(_enc(os.readlink(f"/proc/{tid}/cwd")), _enc(base))
        return base + "/" + path if base != "/" else "/" + path

    def _dir_fd(self, host: str) -> Optional[int]:
        """The tracer's descriptor of directory ``host`` (anchored now if
        need be), or None when it cannot have one."""
        try:
            self.anchors.anchored(host + "/.")
        except OSError:
            return None
        return self.anchors.fd_of(host)

    def _publish_itself(self, head: str, guest: str, host: str) -> None:
        """A directory named by itself ("/", "dir/", "dir/."): published as
        the head it is, with a descriptor of its own, when plain or complete."""
        if guest.startswith("/proc") or self.ns.host_of(guest) != host:
            return
        # "dir/." becomes the head of dir's entries, "/" only itself
        kind = self.ns.fast_dir(guest, host)
        if (kind not in (PLAIN, FILLED)) if head else not self.ns.fast_self(guest, host):
            return
        fd = self._dir_fd(host)
        if fd is None:
            return
        if head:
            self.fast.publish(_enc(head), fd, len(host), 0 if kind == PLAIN else kind,
                              _enc(guest))
        else:
            self.fast.publish_exact(b"/", fd, len(host))

    def _publish_missing(self, path: str) -> None:
        """Teach the C fast path that the head of ``path`` does not exist,
        when the walk stopped at a name absent from a plain or complete
        directory with no bind at or below it (a missing directory on the
        way to a bind is not missing in the guest's view)."""
        head = path.rpartition("/")[0]
        missing = self.resolver.missing_in(head) if head else None
        if missing is None:
            return
        parent, name = missing
        below = parent + "/" + name if parent != "/" else "/" + name
        if any(b == below or b.startswith(below + "/") for b in self._bind_points):
            return
        hparent = self.ns.host_of(parent)
        if not self.ns.fast_absent(parent, hparent) or self.ns.host_of(below) != hparent + "/" + name:
            return
        try:
            if not self.anchors.anchored(hparent + "/" + name).startswith(self.anchors.prefix):
                return
        except OSError:
            return
        fd = self.anchors.fd_of(hparent)
        if fd is not None:
            self.fast.publish_missing(_enc(head), fd, _enc(name))

    def _k_creds(self, tid, regs, abi, row):
        self._creds.clear()
        if self.fast is not None:
            self.fast.forget_creds()
        return 0

    def _compat_call(self, tid: int, regs) -> bool:
        """Is the call at this stop an i386 one made from 64-bit code?"""
        if self.fallback:
            try:
                return mem.read_bytes(tid, regs.rip - 2, 2) == b"\xcd\x80"
            except OSError:
                return False
        return mem.geteventmsg(tid) == 1

    # -- helpers for handlers ------------------------------------------------------------

    def _read_path(self, tid: int, regs, ptr: int) -> str:
        rec = self.last.get(tid)
        if rec is not None and rec[0] == regs.rip and rec[1] == regs.rsp:
            # Same instruction, same stack pointer, and a pointer into our
            # scratch space below it (where no live guest data can be): a
            # call restarted after a signal, whose copy may have been
            # overwritten by the signal frame.  Translate the guest's path
            # again.
            guest = rec[2].get(ptr)
            if guest is not None:
                return guest
        if self.fast is not None:
            mine = self.fast.restarted(tid, regs.rip, regs.rsp, ptr)
            if mine is not None:
                return _dec(mine)
        return _dec(mem.read_cstring(tid, ptr))

    def _base(self, tid: int, path: str, dirfd: int) -> str:
        if path[:1] == "/":
            return "/"
        dirfd &= 0xFFFFFFFF
        if dirfd == _AT_FDCWD32:
            host = os.readlink(f"/proc/{tid}/cwd")
            return self.ns.guest_of(host) or "/"
        if dirfd >= 0x80000000:
            raise _err(errno.EBADF)
        try:
            host = os.readlink(f"/proc/{tid}/fd/{dirfd}")
        except OSError:
            raise _err(errno.EBADF) from None
        if not host.startswith("/"):
            raise _err(errno.ENOTDIR)
        guest = self.ns.guest_of(host)
        if guest is None:
            raise _err(errno.EACCES)
        return guest

    def _put(self, tid: int, data: bytes) -> int:
        """Copy ``data`` below the stack pointer; returns its tracee address."""
        cursor = (self._cursor - len(data)) & ~15
        mem.write_bytes(tid, cursor, data)
        self._cursor = cursor
        return cursor

    def _put_path(self, tid: int, regs, abi: int, idx: int, guest_given: str, host: str) -> None:
        addr = self._put(tid, _enc(host) + b"\0")
        setattr(regs, ARG_REGS[abi][idx], addr)
        rec = self.last.get(tid)
        if rec is None or rec[0] != regs.rip or rec[1] != regs.rsp:
            self.last[tid] = (regs.rip, regs.rsp, {addr: guest_given})
        else:
            rec[2][addr] = guest_given
        self.translated += 1

    def _translate(self, tid: int, regs, abi: int, path_i: int, dirfd_i: int, follow: bool,
                   name: str, busy: bool = False, flags: int = 0) -> int:
        """Translate the path in argument ``path_i``; returns SETREGS, or 0
        when the kernel can be left to resolve it as it is.  ``busy``: the
        call would move or remove its path, which must not be a bind point
        (EBUSY, as for a mount point)."""
        args = ARG_REGS[abi]
        path = self._read_path(tid, regs, getattr(regs, args[path_i]))
        self._pinned = False
        self._translated = self._kernel_name = ""
        self._given = path
        library, named, _process = path.partition("?")
        if library in self._preload_paths and name in ("open", "openat") \
                and not flags & (os.O_ACCMODE | O_CREAT | os.O_TRUNC):  # as the loader opens it
            if not named:
                return 0
            self._put_path(tid, regs, abi, path_i, path, library)  # (see _named_library)
            return SETREGS
        if path and path[0] != "/" and "/" not in path and path not in self._not_simple \
                and self._lazy is None:
            # One plain name below the cwd or a dirfd, which the guest opened
            # through translated paths: the kernel's lookup is the guest's,
            # unless the name is a symlink to follow (absolute targets
            # resolve in the guest) or where a bind may sit on it.
            dirfd = (getattr(regs, args[dirfd_i]) if dirfd_i >= 0 else _AT_FDCWD32) & 0xFFFFFFFF
            where = f"/proc/{tid}/cwd/{path}" if dirfd == _AT_FDCWD32 else f"/proc/{tid}/fd/{dirfd}/{path}"
            self._translated = self._kernel_name = where
            if not follow:
                return 0
            try:
                simple = os.lstat(where).st_mode & 0o170000 != 0o120000
            except OSError:
                simple = True
            if simple:
                self._pinned = True
                return 0
        base = self._base(tid, path, getattr(regs, args[dirfd_i]) if dirfd_i >= 0 else _AT_FDCWD32)
        try:
            guest, host = self.resolve(path, base, follow, tid)
        except FileNotFoundError:
            if self.fast is not None and path[:1] == "/":
                self._publish_missing(path)
            raise
        if self._lazy is not None:
            self._lazy.before(name, host, flags)
        if self.fast is not None and path[0] == "/":
            self._publish_missing(path)
        if busy and guest in self._bind_points:
            raise _err(errno.EBUSY)
        if host.startswith(self._tracer_proc) and self._tracer_private.match(host):
            raise _err(errno.EACCES)
        if self.verbose:
            self.logfn(f"[{tid}] {name}({path!r}) -> {host}")
        kernel = self._kernel_path(tid, host)
        self._translated = host
        self._kernel_name = kernel
        self._put_path(tid, regs, abi, path_i, path, kernel)
        if self.fast is not None and not busy:
            # (not from a call that moves or removes: "dir/" may be what goes)
            if path[0] == "/" or "/" not in path:
                self._publish(path, guest, host, kernel, follow)
            dirfd = (getattr(regs, args[dirfd_i]) if dirfd_i >= 0 else _AT_FDCWD32) & 0xFFFFFFFF
            if path[0] != "/" and dirfd == _AT_FDCWD32 and not base.startswith("/proc"):
                # (tar's "proj/src/f.c", a compiler's "-o f.o")
                self._publish(self._from_cwd(tid, base, path), guest, host, kernel, follow)
        # The final component was checked (not a symlink, or resolved): the
        # kernel must not follow a symlink raced into its place (_pin_*).
        self._pinned = follow and not host.startswith("/proc/")
        return SETREGS

    # -- handler kinds (see handlers.py) ---------------------------------------------------

    def _removing(self, rmdir: bool) -> None:
        """Before an unlink or rmdir of the path just translated runs: forget
        what it may change.  A directory takes cached resolutions (and
        anchors) with it; a file only when it is a symlink that a cached
        resolution may have gone through (a compiler removes many
        temporary files)."""
        if not rmdir and self._translated:
            try:
                if not stat.S_ISLNK(os.lstat(self._translated).st_mode):
                    return
            except OSError:
                return  # nothing there: the call fails and changes nothing
        self._invalidate(rmdir)

    def _pin_by_descriptor(self, tid: int, regs, abi: int, path_i: int) -> int:
        """For a call of :data:`PIN_BY_DESCRIPTOR` whose final component was
        checked: name to the kernel the checked object itself, an O_PATH
        descriptor the tracer opens without following, so that a symlink
        raced into its place is not followed (ELOOP, as with O_NOFOLLOW).
        The descriptor stays open until the thread's next such call (a
        restarted call still finds it).  These calls never create their
        path, so a failure here is the call's own."""
        if not self._pinned or not self._kernel_name or self.anchors is None \
                or not self._may_anchor(tid):
            return 0
        self._put_path(tid, regs, abi, path_i, self._given,
                       self._pinned_name(tid, self._kernel_name))
        return SETREGS

    def _pinned_name(self, tid: int, kernel: str) -> str:
        """``/proc/<tracer>/fd/N`` of ``kernel``'s object, opened without
        following; the thread's previous one is closed."""
        try:
            fd = os.open(kernel, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise _err(exc.errno) from None
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            os.close(fd)
            raise _err(errno.ELOOP)
        old = self._pin_fds.pop(tid, None)
        if old is not None:
            os.close(old)
        self._pin_fds[tid] = fd
        return f"{self._tracer_proc}fd/{fd}"

    def _k_path(self, tid, regs, abi, row):
        _fn, name, idx, follow, mutates = row
        res = self._translate(tid, regs, abi, idx, -1, follow, name, busy=mutates)
        if mutates:
            self._removing(name == "rmdir")
        if follow and self._pinned:
            nofollow = _NOFOLLOW_TWIN[abi].get(regs.orig_rax)
            if nofollow is not None:
                regs.orig_rax = nofollow
                return SETREGS
            if name in PIN_BY_DESCRIPTOR:
                return self._pin_by_descriptor(tid, regs, abi, idx) or res
        return res

    def _k_open(self, tid, regs, abi, row):
        _fn, name, idx, flags_i = row
        flags = getattr(regs, ARG_REGS[abi][flags_i]) if flags_i >= 0 else 0
        follow = not (flags & O_NOFOLLOW or flags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL)
        res = self._translate(tid, regs, abi, idx, -1, follow, name, flags=flags)
        return self._pin_open(tid, regs, abi, row, flags_i, flags, res)

    def _pin_open(self, tid, regs, abi, row, flags_i, flags, res):
        """Add O_NOFOLLOW when the final component was checked; creat
        becomes open(O_CREAT|O_WRONLY|O_TRUNC|O_NOFOLLOW)."""
        if not self._pinned:
            return res
        args = ARG_REGS[abi]
        if flags_i < 0:  # creat(path, mode) -> open(path, flags, mode)
            setattr(regs, args[2], getattr(regs, args[1]))
            setattr(regs, args[1], 0o1101 | O_NOFOLLOW)
            regs.orig_rax = NUMBERS[abi]["open"]
        else:
            setattr(regs, args[flags_i], flags | O_NOFOLLOW)
        return SETREGS

    def _k_openat(self, tid, regs, abi, row):
        _fn, name, dirfd_i, idx, flags_i = row
        flags = getattr(regs, ARG_REGS[abi][flags_i])
        follow = not (flags & O_NOFOLLOW or flags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL)
        res = self._translate(tid, regs, abi, idx, dirfd_i, follow, name, flags=flags)
        return self._pin_open(tid, regs, abi, row, flags_i, flags, res)

    def _k_openat2(self, tid, regs, abi, row):
        _fn, name, dirfd_i, idx, how_i = row
        args = ARG_REGS[abi]
        size = getattr(regs, args[how_i + 1]) & 0xFFFFFFFF
        if not OPEN_HOW_SIZE <= size <= OPEN_HOW_MAX:
            raise _err(errno.EINVAL if size < OPEN_HOW_SIZE else errno.E2BIG)  # as the kernel
        how = mem.read_bytes(tid, getattr(regs, args[how_i]), size)
        flags, _mode, resolve = struct.unpack_from("<QQQ", how)
        if resolve:
            raise _err(errno.ENOSYS)  # RESOLVE_* would be judged on host paths
        follow = not (flags & O_NOFOLLOW or flags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL)
        res = self._translate(tid, regs, abi, idx, dirfd_i, follow, name, flags=flags)
        if not (follow and self._pinned):
            return res
        # pinned as openat: O_NOFOLLOW, in a copy of the guest's open_how
        setattr(regs, args[how_i], self._put(tid, struct.pack("<Q", flags | O_NOFOLLOW) + how[8:]))
        return SETREGS

    def _k_at(self, tid, regs, abi, row):
        _fn, name, dirfd_i, idx, flags_i, follow, toggle, mutates = row
        args = ARG_REGS[abi]
        ptr = getattr(regs, args[idx])
        flags = getattr(regs, args[flags_i]) if flags_i >= 0 else 0
        if not ptr and name.startswith("utimensat"):
            return 0  # futimens(fd)
        if flags & AT_EMPTY_PATH and dirfd_i >= 0:
            path = self._read_path(tid, regs, ptr)
            if not path:
                return 0  # operates on the descriptor itself
        if flags & toggle:
            follow = not follow
        res = self._translate(tid, regs, abi, idx, dirfd_i, follow, name, busy=mutates)
        if mutates:
            self._removing(bool(getattr(regs, args[2]) & 0x200))
        if follow and self._pinned and flags_i >= 0 and toggle:
            setattr(regs, args[flags_i], flags | toggle)
            return SETREGS
        if follow and name in PIN_BY_DESCRIPTOR:
            return self._pin_by_descriptor(tid, regs, abi, idx) or res
        return res

    def _k_two(self, tid, regs, abi, row):
        _fn, name, old_i, new_i, follow_old = row
        moves = name == "rename"
        self._invalidate(moves)
        return (self._translate(tid, regs, abi, old_i, -1, follow_old, name, busy=moves)
                | self._translate(tid, regs, abi, new_i, -1, False, name, busy=moves))

    def _k_two_at(self, tid, regs, abi, row):
        _fn, name, odfd, old_i, ndfd, new_i, flags_i, follow_flag = row
        flags = getattr(regs, ARG_REGS[abi][flags_i]) if flags_i >= 0 else 0
        if flags & AT_EMPTY_PATH and name == "linkat":
            path = self._read_path(tid, regs, getattr(regs, ARG_REGS[abi][old_i]))
            if not path:
                return self._translate(tid, regs, abi, new_i, ndfd, False, name)
        moves = name != "linkat"
        self._invalidate(moves)
        return (self._translate(tid, regs, abi, old_i, odfd, bool(flags & follow_flag), name, busy=moves)
                | self._translate(tid, regs, abi, new_i, ndfd, False, name, busy=moves))

    def _k_symlink(self, tid, regs, abi, row):
        _fn, name, _target_i, dirfd_i, idx = row
        self._invalidate()
        return self._translate(tid, regs, abi, idx, dirfd_i, False, name)

    def _k_readlink(self, tid, regs, abi, row):
        _fn, name, dirfd_i, idx, buf_i, size_i = row
        args = ARG_REGS[abi]
        if dirfd_i >= 0 and getattr(regs, args[dirfd_i]) & 0xFFFFFFFF == REALPATH_FD32:
            return self._realpath(tid, regs, abi, idx, buf_i, size_i)
        path = self._read_path(tid, regs, getattr(regs, args[idx]))
        base = self._base(tid, path, getattr(regs, args[dirfd_i]) if dirfd_i >= 0 else _AT_FDCWD32)
        _guest, host = self.resolve(path, base, False, tid)
        if self.fast is not None and path[:1] == "/":
            self._publish_missing(path)
        if host.startswith(self._tracer_proc) and self._tracer_private.match(host):
            raise _err(errno.EACCES)
        answer = self._proc_link(tid, host)
        if answer is None:
            if self.verbose:
                self.logfn(f"[{tid}] {name}({path!r}) -> {host}")
            kernel = self._kernel_path(tid, host)
            self._put_path(tid, regs, abi, idx, path, kernel)
            if self.fast is not None and path[:1] == "/":
                self._publish(path, _guest, host, kernel, False)
            return SETREGS
        size = getattr(regs, args[size_i]) & 0xFFFFFFFF
        if size == 0 or size >= 0x80000000:
            raise _err(errno.EINVAL)
        return self._answer_string(tid, regs, getattr(regs, args[buf_i]), _enc(answer)[:size],
                                   f"{name}({path!r}) = {answer!r} (emulated)")

    def _answer_string(self, tid: int, regs, buf: int, data: bytes, told: str) -> int:
        """Skip the call: the guest finds ``data`` in its buffer and its
        length as the result (readlink's way)."""
        mem.write_bytes(tid, buf, data)
        if self.verbose:
            self.logfn(f"[{tid}] {told}")
        regs.orig_rax = _SKIP
        regs.rax = len(data)
        return SETREGS

    @staticmethod
    def _loader_reports(tid: int, envp: int, word: int) -> bool:
        """Does the environment make the loader list or log what it loads
        (ldd's LD_TRACE_LOADED_OBJECTS, LD_DEBUG)?  Then nothing is
        preloaded, so that the list is the program's own."""
        size = max(len(prefix) for prefix in _LOADER_REPORTS)
        heads = mem.read_heads(tid, mem.read_words(tid, envp, word), size) if envp else ()
        return any(head.startswith(_LOADER_REPORTS) for head in heads)

    def _realpath(self, tid, regs, abi, idx, buf_i, size_i) -> int:
        """realpath() of the preloaded library (native/uvm_preload.c): the
        guest's canonical path of the path, or the error realpath() gives
        (the path, or a directory on the way, missing, not a directory,
        not searchable, a loop), in one stop instead of a readlink per
        component."""
        args = ARG_REGS[abi]
        path = self._read_path(tid, regs, getattr(regs, args[idx]))
        base = self._base(tid, path, _AT_FDCWD32)
        if self._tracer_private.match(canonical_lexical(path if path[:1] == "/" else f"{base}/{path}")):
            raise _err(errno.EACCES)  # as glibc's readlink of it: uvm's descriptors are not the guest's
        if "/../" in path or path.endswith("/..") or path[:3] == "../" or path == "..":
            path, base = self._without_dotdot(path if path[:1] == "/" else f"{base}/{path}", tid), "/"
        guest, host = self.resolve(path, base, True, tid)
        if self._lazy is not None:
            self._lazy.before("newfstatat", host)
        if self.fast is not None and path and "/" not in path and not base.startswith("/proc"):
            path = self._from_cwd(tid, base, path)  # ld's "-lgcc"
        if self.fast is not None and path[:1] == "/":  # the next ones with this head: in C
            self._publish_missing(path)
            if not host.startswith("/proc/"):
                self._publish(path, guest, host, self._kernel_path(tid, host), True)
        for _hop in range(MAX_PROC_HOPS):  # /proc/PID/{exe,cwd,root,fd/N}, as readlink gives them
            target = self._proc_link(tid, host) if guest.startswith("/proc/") else None
            if target is None:
                break
            if not target.startswith("/"):
                raise _err(errno.ENOENT)  # pipe:[N], socket:[N]: no path
            guest, host = self.resolve(target, "/", True, tid)
            if self._lazy is not None:
                self._lazy.before("newfstatat", host)
        os.lstat(host)  # the path's own errors (not searchable, not a directory, ...)
        data = _enc(guest)
        if len(data) >= getattr(regs, args[size_i]) & 0xFFFFFFFF:
            raise _err(errno.ENAMETOOLONG)
        return self._answer_string(tid, regs, getattr(regs, args[buf_i]), data,
                                   f"realpath({path!r}) = {guest!r}")

    def _without_dotdot(self, path: str, tid: int) -> str:
        """Absolute ``path`` with each ".." applied as glibc's realpath()
        does: to the canonical path of the directory before it, which must
        be one, without searching it.  Each such directory is published
        under the key the C's ``t_clean`` (native/uvm_table.h) looks it up
        by, so that the next realpath of this shape is the guest's own."""
        so_far = ""
        for name in path.split("/"):
            if name in ("", "."):
                continue
            if name != "..":
                so_far += "/" + name
                continue
            if not so_far:
                continue
            guest, host = self.resolve(so_far, "/", True, tid)
            if not stat.S_ISDIR(os.stat(host).st_mode):
                raise _err(errno.ENOTDIR)
            if self.fast is not None:
                self._publish_itself(so_far, guest, host)
            so_far = guest.rpartition("/")[0]
        if path.endswith(("/", "/.")) and so_far:
            so_far += "/"  # still asks for a directory
        return so_far or "/"

    def _proc_link(self, tid: int, host: str) -> Optional[str]:
        """Guest answer for readlink of a /proc link naming a host path."""
        if not host.startswith("/proc/"):
            return None
        if host == "/proc/self":
            return str(self.tgid_of(tid))
        if host == "/proc/thread-self":
            return f"{self.tgid_of(tid)}/task/{tid}"
        m = _MAGIC.match(host)
        if m is None:
            return None
        kind = m.group(2)
        if kind == "root":
            return "/"
        owner = int(m.group(1))
        if kind == "exe":
            guest = self.exe.get(owner) or self.exe.get(self.tgid_of(owner))
            if guest is not None:
                return guest
        try:
            target = os.readlink(host)
        except OSError as exc:
            raise _err(exc.errno or errno.ENOENT) from None
        if not target.startswith("/"):
            return target
        deleted = target.endswith(" (deleted)")
        guest = self.ns.guest_of(target[:-10] if deleted else target)
        if guest is None:
            return target
        return guest + (" (deleted)" if deleted else "")

    def _k_getcwd(self, tid, regs, abi, row):
        args = ARG_REGS[abi]
        host = os.readlink(f"/proc/{tid}/cwd")
        guest = self.ns.guest_of(host)
        if guest is None:
            guest = "(unreachable)" + host
        elif self.fast is not None:
            self.fast.publish_cwd(_enc(host), _enc(guest))
        data = _enc(guest) + b"\0"
        if len(data) > (getattr(regs, args[1]) & 0xFFFFFFFF):
            raise _err(errno.ERANGE)
        mem.write_bytes(tid, getattr(regs, args[0]), data)
        regs.orig_rax = _SKIP
        regs.rax = len(data)
        return SETREGS

    # -- exec ------------------------------------------------------------------------------

    def _prefetch_named(self, tid: int, program: str, argv: List[int]) -> None:
        """A cold link or compile opens the files its command line names, and
        those the files name (linker scripts, headers), one after another:
        have the shadow trees fetch them in waves meanwhile."""
        linker = _startsets.is_linker(program)
        if not linker and not _startsets.is_compiler(program):
            return
        try:  # a hint: whatever goes wrong, the exec goes on
            heads = mem.read_heads(tid, [ptr for ptr in argv if ptr], 1024)
            args = [os.fsdecode(head.partition(b"\0")[0]) for head in heads if b"\0" in head]
            if linker:
                dirs = _startsets.linker_dirs(args)
                self._lazy.prefetch(_startsets.linker_inputs(args), self.ns.host_of_unmade,
                                    lambda path, data, _on_host: _startsets.linker_script_inputs(
                                        data, path.rpartition("/")[0], dirs))
            else:
                plan = _startsets.compile_plan(program, args, self._base(tid, ".", _AT_FDCWD32))
                self._lazy.prefetch([(source,) for source in plan.sources],
                                    self.ns.host_of_unmade,
                                    lambda path, data, on_host: _startsets.include_candidates(
                                        plan, path, data, on_host),
                                    follow_max=1 << 20)
        except Exception as err:
            log.debug("no prefetch for %s: %s", program, err)

    def _k_exec(self, tid, regs, abi, row):
        _fn, name, dirfd_i, path_i, argv_i, envp_i, flags_i = row
        args = ARG_REGS[abi]
        word = WORD_SIZE[abi]
        flags = getattr(regs, args[flags_i]) if flags_i >= 0 else 0
        path = self._read_path(tid, regs, getattr(regs, args[path_i]))
        if not path:
            if not flags & AT_EMPTY_PATH or dirfd_i < 0:
                raise _err(errno.ENOENT)
            host = os.readlink(f"/proc/{tid}/fd/{getattr(regs, args[dirfd_i]) & 0xFFFFFFFF}")
            path = self.ns.guest_of(host) or ""
            if not path:
                raise _err(errno.EACCES)
        base = self._base(tid, path, getattr(regs, args[dirfd_i]) if dirfd_i >= 0 else _AT_FDCWD32)
        if flags & 0x100 and path[:1] != "":  # AT_SYMLINK_NOFOLLOW
            g, h = self.resolve(path, base, False, tid)
            if os.path.islink(h):
                raise _err(errno.ELOOP)
        def resolve(p: str, first=[True]) -> Tuple[str, str]:
            # the program from its base; then interpreters and the loader,
            # nearly always absolute (a relative one from the cwd)
            if first[0]:
                b = base
            elif p[:1] == "/":
                b = "/"
            elif path[:1] != "/":
                b = base
            else:
                b = self._base(tid, ".", _AT_FDCWD32)
            first[0] = False
            g, h = self.resolve(p, b, True, tid)
            if self._lazy is not None:
                self._lazy.before("execve", h)
            return g, h

        argv_ptr = getattr(regs, args[argv_i])
        argv: List = mem.read_words(tid, argv_ptr, word) if argv_ptr else []
        def preload(host: str, st: os.stat_result) -> Optional[bytes]:
            is_64 = _execve.wants_preload(host, st) if self.preload.names else None
            if is_64 is None or not self._may_anchor_after_exec(tid, st) \
                    or self._loader_reports(tid, getattr(regs, args[envp_i]), word):
                return None
            return _named_library(self.preload.names[is_64], path)

        host, new_argv, guest_prog, changed = _execve.plan_exec(path, argv, resolve, preload)
        if self._lazy is not None:
            self._prefetch_named(tid, guest_prog, argv)
        if self.verbose:
            self.logfn(f"[{tid}] {name}({path!r}) -> {host}" + (
                f" argv {[a if isinstance(a, bytes) else '…' for a in new_argv]}" if changed else ""))
        envp = getattr(regs, args[envp_i])
        # One block below the stack pointer: the host path, the new strings,
        # then the pointer array; written with a single process_vm_writev.
        host_b = _enc(self._kernel_path(tid, host)) + b"\0"
        strings = [item + b"\0" for item in new_argv if not isinstance(item, int)]
        nptr = len(new_argv) + 1
        size = len(host_b) + sum(len(x) for x in strings)
        size = (size + 15) & ~15
        top = (self._cursor - size - nptr * word) & ~15
        self._cursor = top
        host_addr = top + nptr * word
        cursor = host_addr + len(host_b)
        ptrs = []
        for item in new_argv:
            if isinstance(item, int):
                ptrs.append(item)
            else:
                ptrs.append(cursor)
                cursor += len(item) + 1
        ptrs.append(0)
        block = struct.pack("<%d%s" % (nptr, "Q" if word == 8 else "I"), *ptrs) + host_b + b"".join(strings)
        mem.write_bytes(tid, top, block)
        argv_addr = top
        if host.startswith("/proc/"):
            # a /proc magic link (fexecve-like): the kernel must follow it
            regs.orig_rax = NUMBERS[abi]["execve"]
            setattr(regs, args[0], host_addr)
            setattr(regs, args[1], argv_addr)
            setattr(regs, args[2], envp)
        else:
            # execveat(AT_FDCWD, path, argv, envp, AT_SYMLINK_NOFOLLOW): a
            # symlink raced into the checked program's place is not followed.
            regs.orig_rax = NUMBERS[abi]["execveat"]
            setattr(regs, args[0], _AT_FDCWD32 if abi else (-100) & _MASK64)
            setattr(regs, args[1], host_addr)
            setattr(regs, args[2], argv_addr)
            setattr(regs, args[3], envp)
            setattr(regs, args[4], 0x100)
        # ld.so, run explicitly, sets AT_EXECFN itself; the tracer fixes it
        # for programs the kernel runs directly.
        self.pending_exe[tid] = (guest_prog, "" if changed else path)
        if self.fast is not None:
            # the exec event needs Python at once only to fix AT_EXECFN (a
            # program the kernel runs directly); its bookkeeping can wait
            self.fast.exec_settles(tid, changed)
        self.translated += 1
        return SETREGS

    # -- AF_UNIX sockets -------------------------------------------------------------------

    def _sun_path(self, tid: int, addr: int, length: int, bind: bool,
                  pin: bool = False) -> Optional[bytes]:
        """Translated sockaddr_un for the one at ``addr``, or None to leave it;
        ``pin`` (connect): the checked socket itself (:meth:`_pin_by_descriptor`)."""
        if not addr or length <= 2 or length > 2 + SOCKADDR_UN_PATH:
            return None
        raw = mem.read_bytes(tid, addr, length)
        if struct.unpack_from("<H", raw)[0] != AF_UNIX or raw[2] == 0:
            return None  # not AF_UNIX, or an abstract socket
        given = raw[2:].split(b"\0", 1)[0]
        path = _dec(given)
        base = self._base(tid, path, _AT_FDCWD32)
        _guest, host = self.resolve(path, base, not bind, tid)
        if self.verbose:
            self.logfn(f"[{tid}] {'bind' if bind else 'connect'}(unix:{path!r}) -> {host}")
        kernel = self._kernel_path(tid, host)
        if pin and not host.startswith("/proc/") and self.anchors is not None \
                and self._may_anchor(tid):
            kernel = self._pinned_name(tid, kernel)
        data = _enc(kernel)
        if len(data) >= SOCKADDR_UN_PATH:
            data = _enc(self._short_socket_path(host))
        if bind and data != given:
            names = self._bound_names
            if len(names) >= SOCKET_NAMES_KEPT:
                del names[next(iter(names))]
            names[data] = given
        return struct.pack("<H", AF_UNIX) + data + b"\0"

    def _short_socket_path(self, host: str) -> str:
        """sun_path holds 107 bytes: reach long host paths through a short
        symlink to their directory, made in a private temporary directory."""
        import tempfile

        if self.sock_dir is None:
            self.sock_dir = tempfile.mkdtemp(prefix="uvm-sock-")
        head, _, tail = host.rpartition("/")
        link = self._sock_links.get(head)
        if link is None:
            link = os.path.join(self.sock_dir, str(len(self._sock_links)))
            os.symlink(head or "/", link)
            self._sock_links[head] = link
        short = link + "/" + tail
        if len(_enc(short)) >= SOCKADDR_UN_PATH:
            raise _err(errno.ENAMETOOLONG)
        return short

    def _k_sock(self, tid, regs, abi, row):
        _fn, name, addr_i, len_i, bind = row
        args = ARG_REGS[abi]
        new = self._sun_path(tid, getattr(regs, args[addr_i]), getattr(regs, args[len_i]) & 0xFFFFFFFF,
                             bind, pin=name == "connect")
        if new is None:
            return 0
        setattr(regs, args[addr_i], self._put(tid, new))
        setattr(regs, args[len_i], len(new))
        self.translated += 1
        return SETREGS

    def _k_sendto(self, tid, regs, abi, row):
        return self._k_sock(tid, regs, abi, (None, "sendto", row[2], row[3], False))

    def _k_sendmsg(self, tid, regs, abi, row):
        args = ARG_REGS[abi]
        msg = getattr(regs, args[1])
        if not msg:
            return 0
        size, fmt = (56, "<QI") if abi == 0 else (28, "<II")
        header = mem.read_bytes(tid, msg, size)
        name, namelen = struct.unpack_from(fmt, header)
        new = self._sun_path(tid, name, namelen, False)
        if new is None:
            return 0
        name_addr = self._put(tid, new)
        header = struct.pack(fmt, name_addr, len(new)) + header[struct.calcsize(fmt):]
        setattr(regs, args[1], self._put(tid, header))
        self.translated += 1
        return SETREGS

    def _k_sendmmsg(self, tid, regs, abi, row):
        args = ARG_REGS[abi]
        mask = _MASK64 if abi == 0 else 0xFFFFFFFF
        new = self._mmsg(tid, abi, getattr(regs, args[1]) & mask, getattr(regs, args[2]) & 0xFFFFFFFF)
        if new is None:
            return 0
        setattr(regs, args[1], new[0])
        setattr(regs, args[2], new[1])
        return SETREGS

    def _mmsg(self, tid: int, abi: int, vec: int, vlen: int) -> Optional[Tuple[int, int]]:
        """sendmmsg's vector with AF_UNIX destinations translated: (address
        of a copy below the stack, messages in it), or None when no message
        names a path.  The kernel writes each message's ``msg_len`` into the
        copy; they are copied back into the guest's vector at the exit."""
        if not vec or not vlen:
            return None
        vlen = min(vlen, MMSG_MAX)
        size, fmt, len_off = (64, "<QI", 56) if abi == 0 else (32, "<II", 28)
        raw = bytearray(mem.read_bytes(tid, vec, size * vlen))
        changed = False
        for i in range(vlen):
            name, namelen = struct.unpack_from(fmt, raw, i * size)
            sun = self._sun_path(tid, name, namelen, False)
            if sun is not None:
                struct.pack_into(fmt, raw, i * size, self._put(tid, sun), len(sun))
                changed = True
        if not changed:
            return None
        copy = self._put(tid, bytes(raw))
        self.translated += 1

        def copy_back(regs) -> None:
            sent = regs.rax & (_MASK64 if abi == 0 else 0xFFFFFFFF)
            if not 0 < sent <= vlen:
                return  # an error, or nothing sent
            done = mem.read_bytes(tid, copy, size * sent)
            for i in range(sent):
                at = i * size + len_off
                mem.write_bytes(tid, vec + at, done[at:at + 4])

        self.exits[tid] = copy_back
        return copy, vlen

    def _k_sockname(self, tid, regs, abi, row):
        args = ARG_REGS[abi]
        mask = _MASK64 if abi == 0 else 0xFFFFFFFF
        self._give_back_name(tid, abi, getattr(regs, args[row[2]]) & mask,
                             getattr(regs, args[row[3]]) & mask)
        return 0

    def _give_back_name(self, tid: int, abi: int, addr: int, lenp: int) -> None:
        """The kernel reports a socket's name as the string it was bound
        with: for a name this tracer bound for the guest, that is a host
        path, which the call's exit replaces with the guest's own name (the
        length as the kernel counts it, the copy cut to the guest's room)."""
        if not addr or not lenp or not self._bound_names:
            return
        room = struct.unpack("<i", mem.read_bytes(tid, lenp, 4))[0]
        if room <= 2:
            return
        mask = _MASK64 if abi == 0 else 0xFFFFFFFF

        def give_back(regs) -> None:
            if regs.rax & mask > mask - 4096:
                return  # the call failed
            size = struct.unpack("<i", mem.read_bytes(tid, lenp, 4))[0]
            if min(size, room) <= 2:
                return
            raw = mem.read_bytes(tid, addr, min(size, room))
            if struct.unpack_from("<H", raw)[0] != AF_UNIX:
                return
            given = self._bound_name(raw[2:].split(b"\0", 1)[0], size)
            if given is None:
                return
            name = struct.pack("<H", AF_UNIX) + given + b"\0"
            mem.write_bytes(tid, addr, name[:room])
            mem.write_bytes(tid, lenp, struct.pack("<i", len(name)))

        self.exits[tid] = give_back

    def _bound_name(self, seen: bytes, size: int) -> Optional[bytes]:
        """The guest's name for the kernel's ``seen`` (cut short when the
        guest gave less room than ``size``, the kernel's full length)."""
        names = self._bound_names
        if len(seen) + 3 >= size:
            return names.get(seen)
        cut = [given for kernel, given in names.items()
               if len(kernel) + 3 == size and kernel.startswith(seen)]
        return cut[0] if len(cut) == 1 else None

    def _k_socketcall(self, tid, regs, abi, row):
        call = regs.rbx & 0xFFFFFFFF
        argp = regs.rcx & 0xFFFFFFFF
        if call in (SYS_ACCEPT, SYS_GETSOCKNAME, SYS_GETPEERNAME, SYS_ACCEPT4):
            _fd, addr, lenp = struct.unpack("<3I", mem.read_bytes(tid, argp, 12))
            self._give_back_name(tid, abi, addr, lenp)
            return 0
        if call == SYS_RECVFROM:
            values = struct.unpack("<6I", mem.read_bytes(tid, argp, 24))
            self._give_back_name(tid, abi, values[4], values[5])
            return 0
        if call == SYS_SENDMMSG:
            values = list(struct.unpack("<4I", mem.read_bytes(tid, argp, 16)))
            new = self._mmsg(tid, abi, values[1], values[2])
            if new is None:
                return 0
            values[1], values[2] = new
            regs.rcx = self._put(tid, struct.pack("<4I", *values))
            return SETREGS
        if call == SYS_SENDTO:
            values = list(struct.unpack("<6I", mem.read_bytes(tid, argp, 24)))
            new = self._sun_path(tid, values[4], values[5], False)
            if new is None:
                return 0
            values[4], values[5] = self._put(tid, new), len(new)
            regs.rcx = self._put(tid, struct.pack("<6I", *values))
            self.translated += 1
            return SETREGS
        if call == SYS_SENDMSG:
            values = list(struct.unpack("<3I", mem.read_bytes(tid, argp, 12)))
            if not values[1]:
                return 0
            header = mem.read_bytes(tid, values[1], 28)
            name, namelen = struct.unpack_from("<II", header)
            new = self._sun_path(tid, name, namelen, False)
            if new is None:
                return 0
            header = struct.pack("<II", self._put(tid, new), len(new)) + header[8:]
            values[1] = self._put(tid, header)
            regs.rcx = self._put(tid, struct.pack("<3I", *values))
            self.translated += 1
            return SETREGS
        if call not in (SYS_BIND, SYS_CONNECT):
            return 0
        fd, addr, length = struct.unpack("<III", mem.read_bytes(tid, argp, 12))
        new = self._sun_path(tid, addr, length, call == SYS_BIND, pin=call == SYS_CONNECT)
        if new is None:
            return 0
        new_addr = self._put(tid, new)
        regs.rcx = self._put(tid, struct.pack("<III", fd, new_addr, len(new)))
        self.translated += 1
        return SETREGS

    def cleanup(self) -> None:
        for fd in self._pin_fds.values():
            os.close(fd)
        self._pin_fds.clear()
        if self.anchors is not None:
            self.anchors.close()
        if self.sock_dir:
            import shutil

            shutil.rmtree(self.sock_dir, ignore_errors=True)


# Calls that follow a final symlink and have no twin that does not: the
# kernel gets the checked object as an O_PATH descriptor (_pin_by_descriptor).
# (access, faccessat and statfs, which only read metadata, are settled by the
# C fast path as well and stay unpinned; see docs/syscalls.md.)
PIN_BY_DESCRIPTOR = frozenset({"chdir", "chmod", "fchmodat", "truncate", "truncate64",
                               "utime", "utimes", "futimesat"})

# Calls that follow a final symlink -> their twin that does not (same arguments).
_NOFOLLOW_TWIN = tuple(
    {NUMBERS[abi][a]: NUMBERS[abi][b] for a, b in NOFOLLOW_TWIN.items()
     if a in NUMBERS[abi] and b in NUMBERS[abi]}
    for abi in (0, 1))


def filter_numbers(
    table: Optional[Dict[str, tuple]] = None,
) -> Tuple[Dict[int, List[int]], Dict[int, Dict[int, int]], Dict[int, Dict[int, int]]]:
    """(traced numbers, refused number -> errno, traced-if-argument-set
    number -> argument) per ABI, from ``table`` (default: the handler table)."""
    traced: Dict[int, List[int]] = {0: [], 1: []}
    refused: Dict[int, Dict[int, int]] = {0: {}, 1: {}}
    traced_if: Dict[int, Dict[int, int]] = {0: {}, 1: {}}
    for abi in (0, 1):
        numbers = NUMBERS[abi]
        for name, row in (TABLE if table is None else table).items():
            nr = numbers.get(name)
            if nr is None:
                continue
            if row[0] == "refuse":
                refused[abi][nr] = row[1]
            elif row[0] in ("sendto", "sockname"):
                traced_if[abi][nr] = row[1]
            else:
                traced[abi].append(nr)
    return traced, refused, traced_if


def refused_errno(abi: int, nr: int) -> Optional[int]:
    """For the no-seccomp fallback: errno of a refused call, if it is one."""
    name = NAMES[abi].get(nr)
    row = TABLE.get(name) if name else None
    return row[1] if row and row[0] == "refuse" else None


__all__ = ["Tracer", "filter_numbers", "refused_errno", "ABI_I386", "ABI_NAMES"]
