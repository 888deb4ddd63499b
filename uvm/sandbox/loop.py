"""The wait loop: every ptrace stop of every tracee comes through here.

Seccomp stops go to :meth:`Tracer.enter` and the tracee continues with
PTRACE_CONT (no exit stop); with the C fast path (``fastpath.py``) the wait
itself is in C, which settles the read-only calls it was taught, fork
events, first stops and signals of known tracees (the children it saw born
are adopted here before the next stop is handled), and returns every other
stop here.  Fork/vfork/clone children are attached by the
kernel (options) and start with a PTRACE_EVENT_STOP that is simply resumed;
signals are re-injected unchanged; group-stops are parked with
PTRACE_LISTEN so that job control works.  Without seccomp filtering
(``fallback``) every system call stops twice (PTRACE_SYSCALL).
"""

from __future__ import annotations

import os
import signal

from uvm.sandbox import memory as mem
from uvm.sandbox.dispatch import Tracer, refused_errno
from uvm.sandbox.sysnums import HIGHEST_KNOWN

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Optional, Set

_WALL = 0x40000000
_STOP_SIGNALS = frozenset((signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU))
_TTY_STOPS = frozenset((signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU))
_SYSCALL_TRAP = signal.SIGTRAP | 0x80


class LoopResult:
    """The main program's raw wait status and the loop's counters."""

    def __init__(self) -> None:
        self.status = 0
        self.stops = 0
        self.seccomp_stops = 0
        self.processes = 1
        self.threads = 1
        self.killed_leftovers = 0
        self.max_tracees = 1
        self.fast_stops = 0
        self.fast_rewritten = 0
        self.fast_events = 0


def run_loop(tracer: Tracer, main: int, fallback: bool, wait_all: bool,
             job_control: bool = False) -> LoopResult:
    """Trace until the main program ends (and, with ``wait_all``, until every
    tracee has).  Returns the main program's wait status and counters."""
    restart = mem.PTRACE_SYSCALL if fallback else mem.PTRACE_CONT
    tracer.fallback = fallback
    resume = mem.resume
    fast = None if fallback else tracer.start_fast_path()
    if fast is not None:
        wait = fast.wait
    else:
        def wait():
            return os.waitpid(-1, _WALL)
    enter = tracer.enter
    tracees = tracer.tracees
    # Calls whose exit the tracer must see (Tracer.exits): tid -> action.
    exits = tracer.exits
    tracees[main] = main
    fresh: Set[int] = {main} if fallback else set()
    insys: Set[int] = set()
    res = LoopResult()
    main_status: Optional[int] = None
    stops = 0

    def adopt(parent: int, child: int, event: int) -> None:
        if event != mem.EVENT_CLONE:
            res.processes += 1
        if child not in tracees:
            tracees[child] = 0
            res.threads += 1
        if fast is not None:
            fast.know(child)
        tracer.forked(parent, child)
        if len(tracees) > res.max_tracees:
            res.max_tracees = len(tracees)

    if fast is not None:
        fast.know(main)
    while tracees:
        try:
            tid, status = wait()
        except ChildProcessError:
            break
        if fast is not None and fast.born:
            for parent, child, event in fast.take_births():
                if event == mem.EVENT_EXEC:
                    tracer.exec_done(parent, child)
                else:
                    adopt(parent, child, event)
        stops += 1
        if status & 0xFF == 0x7F:
            sig = (status >> 8) & 0xFF
            event = status >> 16
            # A tracee can be killed while it sits in a stop (SIGKILL, or a
            # sibling thread's exit_group): ptrace then fails with ESRCH and
            # its exit is reported by the next waitpid.
            if event == mem.EVENT_SECCOMP:
                try:
                    enter(tid)
                except ProcessLookupError:
                    continue
                resume(mem.PTRACE_SYSCALL if tid in exits else restart, tid, 0)
                continue
            if sig == _SYSCALL_TRAP:
                try:
                    if tid in exits:
                        insys.discard(tid)
                        tracer.leave(tid)
                    elif tid in insys:
                        insys.discard(tid)
                    else:
                        insys.add(tid)
                        _fallback_enter(tracer, tid)
                except ProcessLookupError:
                    continue
                resume(restart, tid, 0)
                continue
            if tid not in tracees:
                tracees[tid] = 0
                res.threads += 1
                if fast is not None:
                    fast.know(tid)
                if event == mem.EVENT_STOP:
                    resume(restart, tid, 0)
                    continue
            if event:
                if event in (mem.EVENT_FORK, mem.EVENT_VFORK, mem.EVENT_CLONE):
                    try:
                        child = mem.geteventmsg(tid)
                    except OSError:
                        child = 0
                    if child:
                        if child not in tracees:
                            fresh.add(child)
                        adopt(tid, child, event)
                    elif event != mem.EVENT_CLONE:
                        res.processes += 1
                elif event == mem.EVENT_EXEC:
                    try:
                        former = mem.geteventmsg(tid)
                    except OSError:
                        former = tid
                    tracer.exec_done(tid, former)
                    if former != tid:
                        if former in insys:
                            insys.discard(former)
                            insys.add(tid)
                        fresh.discard(former)
                elif event == mem.EVENT_STOP:
                    if tid in fresh:
                        fresh.discard(tid)
                    elif sig in _STOP_SIGNALS:
                        resume(mem.PTRACE_LISTEN, tid, 0)
                        if job_control and tid == main and sig in _TTY_STOPS:
                            os.kill(os.getpid(), signal.SIGSTOP)
                        continue
                resume(restart, tid, 0)
                continue
            # signal-delivery-stop: pass it on unchanged
            resume(restart, tid, sig)
            continue
        # exited or killed
        tracer.forget(tid)
        fresh.discard(tid)
        insys.discard(tid)
        if tid == main:
            main_status = status
            if not wait_all:
                for other in list(tracees):
                    try:
                        os.kill(other, signal.SIGKILL)
                        res.killed_leftovers += 1
                    except OSError:
                        tracees.pop(other, None)
    res.status = main_status if main_status is not None else 0
    if fast is not None:
        res.fast_stops, res.fast_rewritten, res.fast_events = fast.counts()
    res.stops = stops + res.fast_stops + res.fast_events
    res.seccomp_stops = tracer.stops + res.fast_stops
    return res


def _fallback_enter(tracer: Tracer, tid: int) -> None:
    """Entry of any system call when every call stops (no seccomp)."""
    regs = mem.getregs(tid)
    abi = 1 if regs.cs == 0x23 else 0
    if abi == 0 and tracer._compat_call(tid, regs):
        abi = 1
    nr = regs.orig_rax
    if abi == 1 and regs.cs != 0x23 and (nr in tracer.handlers[1] or nr == 102):
        regs.orig_rax = 0xFFFFFFFFFFFFFFFF
        regs.rax = (-38) & 0xFFFFFFFFFFFFFFFF
        mem.setregs(tid, regs)
        return
    code = refused_errno(abi, nr)
    if code is None and HIGHEST_KNOWN < nr < 0xFFFFFFFF:
        code = 38  # ENOSYS: newer than uvm knows, as the filter does
    if code is not None:
        regs.orig_rax = 0xFFFFFFFFFFFFFFFF
        regs.rax = (-code) & 0xFFFFFFFFFFFFFFFF
        mem.setregs(tid, regs)
        return
    if regs.orig_rax in tracer.handlers[abi]:
        tracer.enter(tid)
