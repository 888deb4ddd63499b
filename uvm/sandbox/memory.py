"""Raw ptrace requests, tracee memory access and capabilities through ctypes.

Stateless and allocation-light: one shared register buffer and one read
buffer, because the tracer handles one stop at a time.  Strings are read
with process_vm_readv (page by page, so a string ending just before an
unmapped page still reads) and written with process_vm_writev.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)

PTRACE_CONT = 7
PTRACE_KILL = 8
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_GETEVENTMSG = 0x4201
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208

PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000

EVENT_FORK = 1
EVENT_VFORK = 2
EVENT_CLONE = 3
EVENT_EXEC = 4
EVENT_SECCOMP = 7
EVENT_STOP = 128

PAGE = os.sysconf("SC_PAGE_SIZE")
PATH_MAX = 4096


class Regs(ctypes.Structure):
    """x86_64 ``struct user_regs_struct`` (also what an i386 tracee shows)."""

    _fields_ = [(name, ctypes.c_ulong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
        "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags",
        "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")]


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_ptrace = _libc.ptrace
_ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
_ptrace.restype = ctypes.c_long
_vm_readv = _libc.process_vm_readv
_vm_readv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong,
                      ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong)
_vm_readv.restype = ctypes.c_ssize_t
_vm_writev = _libc.process_vm_writev
_vm_writev.argtypes = _vm_readv.argtypes
_vm_writev.restype = ctypes.c_ssize_t

REGS = Regs()
_REGS_REF = ctypes.byref(REGS)
_BUF = ctypes.create_string_buffer(PATH_MAX + PAGE + 1)
_BUF_ADDR = ctypes.addressof(_BUF)
_LOCAL = _Iovec(_BUF_ADDR, 0)
_REMOTE = _Iovec(0, 0)
_LOCAL_REF = ctypes.byref(_LOCAL)
_REMOTE_REF = ctypes.byref(_REMOTE)
_EVENTMSG = ctypes.c_ulong(0)
_EVENTMSG_REF = ctypes.byref(_EVENTMSG)
_string_at = ctypes.string_at


def _fail(what: str, pid: int) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what} on {pid}: {os.strerror(code)}")


def ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    """One ptrace request; raises OSError on failure."""
    res = _ptrace(request, pid, addr, data)
    if res == -1:
        raise _fail(f"ptrace({request:#x})", pid)
    return res


def resume(request: int, pid: int, sig: int = 0) -> bool:
    """PTRACE_CONT/SYSCALL/LISTEN; False when the tracee is already gone."""
    return _ptrace(request, pid, None, sig) != -1


def getregs(pid: int) -> Regs:
    """Registers of stopped ``pid`` in the shared :data:`REGS` buffer."""
    if _ptrace(PTRACE_GETREGS, pid, None, _REGS_REF) == -1:
        raise _fail("PTRACE_GETREGS", pid)
    return REGS


def setregs(pid: int, regs: Regs = REGS) -> None:
    if _ptrace(PTRACE_SETREGS, pid, None, ctypes.byref(regs)) == -1:
        raise _fail("PTRACE_SETREGS", pid)


def geteventmsg(pid: int) -> int:
    if _ptrace(PTRACE_GETEVENTMSG, pid, None, _EVENTMSG_REF) == -1:
        raise _fail("PTRACE_GETEVENTMSG", pid)
    return _EVENTMSG.value


def seize(pid: int, options: int) -> None:
    ptrace(PTRACE_SEIZE, pid, 0, options)


def read_cstring(pid: int, addr: int, limit: int = PATH_MAX) -> bytes:
    """NUL-terminated string at ``addr`` in ``pid``; OSError EFAULT or
    ENAMETOOLONG.  Reads 256 bytes first (most paths are short), never
    across a page boundary in one request (the next page may be unmapped)."""
    if not addr:
        raise OSError(_errno.EFAULT, "NULL pointer")
    out = b""
    want = 256
    while True:
        n = PAGE - (addr % PAGE)
        if n > want:
            n = want
        _LOCAL.len = n
        _REMOTE.base = addr
        _REMOTE.len = n
        got = _vm_readv(pid, _LOCAL_REF, 1, _REMOTE_REF, 1, 0)
        if got <= 0:
            raise OSError(_errno.EFAULT, "bad address")
        _BUF[got] = 0
        chunk = _string_at(_BUF_ADDR)
        if len(chunk) < got:
            return out + chunk if out else chunk
        out += chunk
        if len(out) >= limit:
            raise OSError(_errno.ENAMETOOLONG, "path too long")
        addr += got
        want = PAGE


_IOV_MAX = 1024


def read_heads(pid: int, addrs: list, size: int) -> list:
    """The first ``size`` bytes (fewer at a page's end) at each of
    ``addrs``, in one request per 1024: an environment's strings, checked
    for a prefix, at the cost of one system call instead of one each.  A
    head that ends at a page boundary without a NUL is read again with
    :func:`read_cstring`; OSError EFAULT when an address is bad."""
    out: list = []
    for first in range(0, len(addrs), _IOV_MAX):
        batch = addrs[first:first + _IOV_MAX]
        lens = [min(size, PAGE - addr % PAGE) for addr in batch]
        buf = ctypes.create_string_buffer(sum(lens))
        remote = (_Iovec * len(batch))(*(_Iovec(a, n) for a, n in zip(batch, lens)))
        local = _Iovec(ctypes.addressof(buf), len(buf))
        if _vm_readv(pid, ctypes.byref(local), 1, remote, len(batch), 0) != len(buf):
            raise OSError(_errno.EFAULT, "bad address")
        raw = buf.raw  # one copy: each .raw is a new bytes of the whole buffer
        at = 0
        for addr, n in zip(batch, lens):
            head = raw[at:at + n]
            at += n
            if n < size and b"\0" not in head:
                head = read_cstring(pid, addr)[:size]
            out.append(head)
    return out


def read_bytes(pid: int, addr: int, size: int) -> bytes:
    buf = ctypes.create_string_buffer(size)
    local = _Iovec(ctypes.addressof(buf), size)
    remote = _Iovec(addr, size)
    got = _vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if got != size:
        raise OSError(_errno.EFAULT, "bad address")
    return buf.raw


_WBUF = ctypes.create_string_buffer(2 * PATH_MAX + PAGE)
_WLOCAL = _Iovec(ctypes.addressof(_WBUF), 0)
_WREMOTE = _Iovec(0, 0)
_WLOCAL_REF = ctypes.byref(_WLOCAL)
_WREMOTE_REF = ctypes.byref(_WREMOTE)
_memmove = ctypes.memmove


def write_bytes(pid: int, addr: int, data: bytes) -> None:
    size = len(data)
    if size > len(_WBUF):
        src = ctypes.create_string_buffer(data, size)
        local = _Iovec(ctypes.addressof(src), size)
        got = _vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(_Iovec(addr, size)), 1, 0)
    else:
        _memmove(_WBUF, data, size)
        _WLOCAL.len = size
        _WREMOTE.base = addr
        _WREMOTE.len = size
        got = _vm_writev(pid, _WLOCAL_REF, 1, _WREMOTE_REF, 1, 0)
    if got != size:
        raise OSError(_errno.EFAULT, "cannot write tracee memory")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


_CAP_VERSION_3 = 0x20080522
_SYS_CAPGET = 125
_cap_header = _CapHeader()
_cap_data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable}


def effective_caps(tid: int) -> int:
    """The effective capability set of thread ``tid`` (capget: one system
    call, where /proc/TID/status formats a page of text)."""
    _cap_header.version = _CAP_VERSION_3
    _cap_header.pid = tid
    if _libc.syscall(_SYS_CAPGET, ctypes.byref(_cap_header), _cap_data) < 0:
        raise _fail("capget", tid)
    return _cap_data[0] | (_cap_data[3] << 32)


def read_words(pid: int, addr: int, word: int, limit: int = 1 << 16) -> list:
    """NULL-terminated array of pointers (argv-like) of ``word`` bytes each.
    Reads 16 first (most argument lists are short), never across a page
    boundary in one request."""
    out = []
    if not addr:
        return out
    fmt = "<%d%s"
    code = "Q" if word == 8 else "I"
    want = 16
    while len(out) < limit:
        n = min((PAGE - (addr % PAGE)) // word or 1, want)
        want = PAGE // word
        raw = read_bytes(pid, addr, n * word)
        for value in struct.unpack(fmt % (n, code), raw):
            if value == 0:
                return out
            out.append(value)
        addr += n * word
    raise OSError(_errno.E2BIG, "argument list too long")
