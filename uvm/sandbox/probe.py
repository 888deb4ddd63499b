"""``uvm doctor`` checks for the sandbox: can this machine trace, filter and
run 32-bit guests?  Each check forks a short-lived child and never leaves a
process behind."""

from __future__ import annotations

import errno
import os
import signal
from typing import Iterator


def _probe_child(install_filter: bool) -> str:
    """Fork a child, seize it, optionally install the filter in it, and let
    it exit.  Returns "" on success or the reason for failure."""
    from uvm.sandbox import memory as mem
    from uvm.sandbox import seccomp
    from uvm.sandbox.dispatch import filter_numbers
    from uvm.sandbox.runner import OPTIONS

    prog = seccomp.build_filter(*filter_numbers()) if install_filter else None
    go_r, go_w = os.pipe()
    st_r, st_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(go_w)
            os.close(st_r)
            os.read(go_r, 1)
            if prog is not None:
                try:
                    seccomp.install(prog, os.geteuid() != 0)
                    os.write(st_w, b"S")
                except OSError as exc:
                    os.write(st_w, ("N" + str(exc)).encode())
                    code = 1
            os.getcwd()  # a call the filter sends to the tracer
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(st_w)
    reason = ""
    try:
        mem.seize(pid, OPTIONS)
    except OSError as exc:
        reason = ("ptrace is not permitted here (container seccomp profile or Yama ptrace_scope)"
                  if exc.errno == errno.EPERM else f"PTRACE_SEIZE failed: {exc.strerror}")
        os.kill(pid, signal.SIGKILL)
    os.write(go_w, b"g")
    os.close(go_w)
    if not reason:
        answer = os.read(st_r, 200) if prog is not None else b"S"
        if answer[:1] != b"S":
            reason = answer[1:].decode(errors="replace") or "the child died"
    os.close(st_r)
    saw_seccomp = False
    while True:
        try:
            wpid, status = os.waitpid(pid, 0x40000000)
        except ChildProcessError:
            break
        if os.WIFSTOPPED(status):
            if status >> 16 == mem.EVENT_SECCOMP:
                saw_seccomp = True
            mem.resume(mem.PTRACE_CONT, pid, 0 if status >> 16 else os.WSTOPSIG(status))
            continue
        break
    if prog is not None and not reason and not saw_seccomp:
        reason = "the filter did not stop the child for the tracer"
    return reason


def _i386_exec() -> str:
    """Can the kernel run 32-bit programs (IA32 emulation)?"""
    try:
        with open("/proc/sys/abi/vsyscall32") as f:
            f.read()
    except OSError:
        pass
    # The kernel config is not always readable; ask for a 32-bit personality
    # check through binfmt: an ELF32 header execve fails with ENOEXEC when
    # IA32 emulation is missing.  We build the tiniest i386 ELF in memory.
    import tempfile
    import struct

    code = bytes([0xB8, 1, 0, 0, 0, 0xBB, 0, 0, 0, 0, 0xCD, 0x80])  # exit(0)
    ehdr = struct.pack("<4sBBBB8xHHIIIIIHHHHHH", b"\x7fELF", 1, 1, 1, 0, 2, 3, 1,
                       0x08048000 + 84, 52, 0, 0, 52, 32, 1, 0, 0, 0)
    phdr = struct.pack("<IIIIIIII", 1, 0, 0x08048000, 0x08048000, 84 + len(code),
                       84 + len(code), 5, 0x1000)
    with tempfile.NamedTemporaryFile(prefix="uvm-probe-", delete=False) as f:
        f.write(ehdr + phdr + code)
        path = f.name
    try:
        os.chmod(path, 0o700)
        pid = os.fork()
        if pid == 0:
            try:
                os.execv(path, [path])
            finally:
                os._exit(99)
        _pid, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return ""
        return "the kernel cannot run i386 programs (no IA32 emulation)"
    except OSError as exc:
        return f"cannot test 32-bit execution: {exc.strerror}"
    finally:
        os.unlink(path)


def checks() -> Iterator["object"]:
    from uvm.doctor import Check

    why = _probe_child(False)
    yield Check("sandbox: ptrace", not why, why or "PTRACE_SEIZE with fork/exec/seccomp events works")
    if why:
        return
    why = _probe_child(True)
    yield Check("sandbox: seccomp filter", not why,
                why or "only path system calls stop the tracer")
    from uvm.sandbox import anchors

    ok = anchors.available()
    yield Check("sandbox: path anchors", ok,
                "translated paths reach the kernel through the tracer's directory "
                "descriptors (no symlink-swap races)" if ok else
                "openat2 or /proc/PID/fd missing (Linux < 5.6?): a directory swapped "
                "for a symlink during a call could redirect it")
    why = _i386_exec()
    yield Check("sandbox: 32-bit guests", not why, why or "i386 programs run on this kernel")
