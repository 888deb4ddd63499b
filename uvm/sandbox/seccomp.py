"""The seccomp-bpf filter, generated from the handler table.

For each ABI (checked through ``seccomp_data.arch``; x32 numbers refused)
the filter returns SECCOMP_RET_TRACE for the calls the tracer translates,
SECCOMP_RET_ERRNO for the calls the table refuses outright (so they cost no
stop), ENOSYS for numbers newer than uvm knows, and RET_ALLOW for the rest.
An unknown architecture kills the process.

With the run's key, the read-only calls of the preloaded library
(``native/uvm_preload.c``, :data:`GATED`), which carry the key in their
sixth argument register, are allowed without a stop: the library has translated
their paths from the tracer's own table.  openat passes the gate only
without write or create flags.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from uvm.sandbox.arch import (
    ABI_I386,
    ABI_X86_64,
    AUDIT_ARCH_I386,
    AUDIT_ARCH_X86_64,
    X32_SYSCALL_BIT,
)
from uvm.sandbox.sysnums import HIGHEST_KNOWN

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Dict, Iterable, List, Tuple

    Insn = Tuple[int, int, int, int]

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_JSET_K = 0x45
BPF_JA = 0x05
BPF_RET_K = 0x06

RET_KILL_PROCESS = 0x80000000
RET_TRACE = 0x7FF00000
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000

PR_SET_NO_NEW_PRIVS = 38
SYS_SECCOMP = 317
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2

_OFF_NR = 0
_OFF_ARCH = 4
_OFF_IP = 8
_OFF_ARGS = 16


_TRACE = ("trace",)  # placeholder, resolved by _resolve_trace


# The calls of the preloaded library's gate, and openat's flags it refuses
# (O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_TMPFILE).
GATED = ("openat", "newfstatat", "fstatat64", "statx", "faccessat", "readlinkat", "getxattr",
         "lgetxattr")
_OPEN_WRITES = 3 | 0o100 | 0o1000 | 0o20000000


def _gate(numbers: Dict[str, int], key: int, compat: bool) -> List[Insn]:
    """Allow GATED calls whose sixth argument is ``key`` (for the i386 ABI
    its low 32 bits, made from 32-bit code only)."""
    lo, hi = (key & 0xFFFFFFFF, 0) if compat else (key & 0xFFFFFFFF, key >> 32)
    prog: List[Insn] = []
    for name in GATED:
        nr = numbers.get(name)
        if nr is None:
            continue
        tests: List[Insn] = [
            (BPF_LD_W_ABS, 0, 0, _OFF_ARGS + 8 * 5),
            (BPF_JEQ_K, 0, 1, lo),  # jf patched below: to the reload
            (BPF_LD_W_ABS, 0, 0, _OFF_ARGS + 8 * 5 + 4),
            (BPF_JEQ_K, 0, 1, hi),
        ]
        if compat:
            tests += [(BPF_LD_W_ABS, 0, 0, _OFF_IP + 4), (BPF_JEQ_K, 0, 1, 0)]
        if name == "openat":
            tests += [(BPF_LD_W_ABS, 0, 0, _OFF_ARGS + 8 * 2), (BPF_JSET_K, 1, 0, _OPEN_WRITES)]
        check = tests + [(BPF_RET_K, 0, 0, RET_ALLOW)]
        # every failed test jumps to the reload of the number after the block
        check = [(code, jt, len(check) - i - 1, k) if code == BPF_JEQ_K else
                 (code, len(check) - i - 1, jf, k) if code == BPF_JSET_K else (code, jt, jf, k)
                 for i, (code, jt, jf, k) in enumerate(check)]
        prog.append((BPF_JEQ_K, 0, len(check) + 1, nr))
        prog.extend(check)
        prog.append((BPF_LD_W_ABS, 0, 0, _OFF_NR))
    return prog


def _abi_block(traced: Iterable[int], refused: Dict[int, int],
               traced_if: Dict[int, int] = None, compat: bool = False,
               deny_pid: Dict[int, Tuple[int, int]] = None,
               gate: List[Insn] = ()) -> List[Insn]:
    """One ABI's decisions.  For the i386 ABI (``compat``) every stop goes
    through a last check: a path call made with ``int $0x80`` from 64-bit
    code (instruction pointer above 4 GiB) is refused with ENOSYS (its
    pointers are truncated to 32 bits, and the tracer's scratch space above
    the stack cannot be reached), and stops carry data 1 so that the tracer
    can tell an i386 call made from a low 64-bit code address."""
    prog: List = [(BPF_LD_W_ABS, 0, 0, _OFF_NR)]
    # Calls refused when an argument names one pid (the tracer's).
    for nr, (arg, pid) in sorted((deny_pid or {}).items()):
        prog.extend([
            (BPF_JEQ_K, 0, 4, nr),
            (BPF_LD_W_ABS, 0, 0, _OFF_ARGS + 8 * arg),
            (BPF_JEQ_K, 0, 1, pid),
            (BPF_RET_K, 0, 0, RET_ERRNO | errno.EPERM),
            (BPF_LD_W_ABS, 0, 0, _OFF_NR),
        ])
    prog.extend(gate)
    for nr in sorted(traced):
        prog.append((BPF_JEQ_K, 0, 1, nr))
        prog.append(_TRACE)
    for nr, code in sorted(refused.items()):
        prog.append((BPF_JEQ_K, 0, 1, nr))
        prog.append((BPF_RET_K, 0, 0, RET_ERRNO | code))
    # Calls traced only when an argument (a pointer) is not NULL.
    for nr, arg in sorted((traced_if or {}).items()):
        low = _OFF_ARGS + 8 * arg
        prog.extend([
            (BPF_JEQ_K, 0, 6, nr),
            (BPF_LD_W_ABS, 0, 0, low),
            (BPF_JEQ_K, 0, 2, 0),
            (BPF_LD_W_ABS, 0, 0, low + 4),
            (BPF_JEQ_K, 1, 0, 0),
            _TRACE,
            (BPF_RET_K, 0, 0, RET_ALLOW),
        ])
    prog.append((BPF_JGE_K, 0, 1, HIGHEST_KNOWN + 1))
    prog.append((BPF_RET_K, 0, 0, RET_ERRNO | errno.ENOSYS))
    prog.append((BPF_RET_K, 0, 0, RET_ALLOW))
    if not compat:
        return [(BPF_RET_K, 0, 0, RET_TRACE) if insn is _TRACE else insn for insn in prog]
    check = len(prog)
    prog.extend([
        (BPF_LD_W_ABS, 0, 0, _OFF_IP + 4),
        (BPF_JEQ_K, 0, 1, 0),
        (BPF_RET_K, 0, 0, RET_TRACE | 1),
        (BPF_RET_K, 0, 0, RET_ERRNO | errno.ENOSYS),
    ])
    return [(BPF_JA, 0, 0, check - i - 1) if insn is _TRACE else insn
            for i, insn in enumerate(prog)]


# Calls that would let the guest reach into the tracer's memory or
# descriptors: name -> the argument holding the target pid.
TRACER_PID_ARG = {"process_vm_readv": 0, "process_vm_writev": 0, "pidfd_open": 0,
                  "ptrace": 1}


def build_filter(traced: Dict[int, Iterable[int]], refused: Dict[int, Dict[int, int]],
                 traced_if: Dict[int, Dict[int, int]] = None,
                 tracer_pid: int = 0, gate_key: int = 0) -> List[Insn]:
    """BPF program: ``traced[abi]`` numbers stop the tracee, ``refused[abi]``
    maps numbers to the errno they fail with, ``traced_if[abi]`` maps
    numbers to the argument that must be non-NULL for a stop; calls that
    target ``tracer_pid`` with another process's memory or descriptors
    (:data:`TRACER_PID_ARG`) get EPERM; with ``gate_key``, the preloaded
    library's read-only calls carrying it are allowed (:func:`_gate`)."""
    from uvm.sandbox.sysnums import NUMBERS

    traced_if = traced_if or {ABI_X86_64: {}, ABI_I386: {}}
    deny = {abi: {} for abi in (ABI_X86_64, ABI_I386)}
    if tracer_pid:
        for abi in deny:
            for name, arg in TRACER_PID_ARG.items():
                if name in NUMBERS[abi]:
                    deny[abi][NUMBERS[abi][name]] = (arg, tracer_pid)
    gates = {abi: _gate(NUMBERS[abi], gate_key, abi == ABI_I386) if gate_key else []
             for abi in (ABI_X86_64, ABI_I386)}
    block64 = _abi_block(traced[ABI_X86_64], refused[ABI_X86_64], traced_if[ABI_X86_64],
                         deny_pid=deny[ABI_X86_64], gate=gates[ABI_X86_64])
    block32 = _abi_block(traced[ABI_I386], refused[ABI_I386], traced_if[ABI_I386], compat=True,
                         deny_pid=deny[ABI_I386], gate=gates[ABI_I386])
    # Layout: [0] ld arch, [1] jeq x86_64 ? next : ja-to-i386, ...
    prog: List[Insn] = [
        (BPF_LD_W_ABS, 0, 0, _OFF_ARCH),
        (BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (BPF_JA, 0, 0, 3 + len(block64)),
        (BPF_LD_W_ABS, 0, 0, _OFF_NR),
        (BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        (BPF_RET_K, 0, 0, RET_ERRNO | errno.ENOSYS),
    ]
    prog.extend(block64)
    prog.append((BPF_JEQ_K, 1, 0, AUDIT_ARCH_I386))
    prog.append((BPF_RET_K, 0, 0, RET_KILL_PROCESS))
    prog.extend(block32)
    return prog


def pack(prog: List[Insn]) -> bytes:
    return b"".join(struct.pack("<HBBI", *insn) for insn in prog)


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(prog: List[Insn], no_new_privs: bool) -> None:
    """Install ``prog`` on the calling process (the forked child, before
    exec).  Raises OSError when seccomp filtering is unavailable."""
    libc = ctypes.CDLL(None, use_errno=True)
    if no_new_privs and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"PR_SET_NO_NEW_PRIVS: {os.strerror(code)}")
    raw = ctypes.create_string_buffer(pack(prog))
    fprog = _Fprog(len(prog), ctypes.addressof(raw))
    libc.syscall.restype = ctypes.c_long
    for flags in (SECCOMP_FILTER_FLAG_SPEC_ALLOW, 0):
        res = libc.syscall(
            ctypes.c_long(SYS_SECCOMP), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
            ctypes.c_long(flags), ctypes.byref(fprog),
        )
        if res == 0:
            return
        code = ctypes.get_errno()
        if code != errno.EINVAL or flags == 0:
            raise OSError(code, f"seccomp filter: {os.strerror(code)}")
