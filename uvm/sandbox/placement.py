"""Which CPUs the tracer and its tracees run on.

Every stop wakes the tracer, and every resume wakes the tracee.  When the
two sit on different CPUs, each wake-up is an inter-processor interrupt to
a CPU that has usually gone idle, and on a virtual machine an idle virtual
CPU has halted and must be brought back by the hypervisor.  On the 2-core
development VM, ten gcc runs (W3) took 1.6-2.0 s with the tracer and the
guest on one CPU and 3.2-5.0 s left to the scheduler (native: 0.8 s), and
even ``make -j2`` of 40 files was faster on one CPU (2.4 s against 2.7 s),
because the single tracer serialises the stops anyway.

So while the guest runs one thing at a time, uvm keeps the tracer and every
tracee on one CPU; when that CPU is short for a while (the tracees and the
tracer spend more than half of each sample's 10 ms waiting in the run
queue, three samples running: a parallel build, or another program on the
machine), it gives them back every CPU the job was allowed, and takes them
back to one CPU when at most one tracee has been runnable for a while
(waiting longer each time the CPU turned out to be short).  Two tracees
merely runnable at once is not enough: a pipeline such as ``tar | wc``
hands its data over on one CPU three times faster than across two (W5:
0.6 s against 1.7-1.9 s).  The guest does not see this: ``sched_getaffinity`` is answered with
the CPUs uvm itself was given (so ``nproc`` and ``make -j$(nproc)`` behave
as without uvm), and a process that sets its own affinity is never moved
again.  ``uvm run --spread`` turns all of this off.

The sampling thread runs on the job's other CPUs, reads /proc in C (the
fast path's ``fast_sample``) and looks every 40 ms while all is quiet: on
the development VM, a wake-up every 10 ms on the guest's CPU, with the
reading in Python, made W3 4-6% slower.
"""

from __future__ import annotations

import os
import threading

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Callable, Iterable, List, Optional, Set, Tuple

SAMPLE_S = 0.01
SAMPLE_MAX_S = 0.04  # the period while gathered and uncontended
SPREAD_AFTER = 3     # consecutive contended samples
CONTENDED = 0.5      # run-queue delay per sample, as a share of it
GATHER_AFTER = 10    # consecutive samples with at most one runnable tracee
GATHER_MAX = 400     # the longest wait before gathering again (4 s)
MAX_SAMPLED = 64     # more tracees than this: spread, stop sampling


def _runnable(tid: int) -> bool:
    try:
        with open(f"/proc/{tid}/stat", "rb") as f:
            raw = f.read(512)
    except OSError:
        return False
    end = raw.rfind(b")")
    return end > 0 and raw[end + 2:end + 3] == b"R"


def _run_delay(tid: int) -> int:
    """Nanoseconds ``tid`` has spent runnable but waiting for a CPU."""
    try:
        with open(f"/proc/{tid}/schedstat", "rb") as f:
            return int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def sample(tids: List[int], tracer_tid: int, limit: int,
           runnable: bool) -> Tuple[int, int, int]:
    """(tracees, runnable ones if asked, nanoseconds they and the tracer
    waited for a CPU) read from /proc: the pure-Python tracer's sampler.
    The C fast path's (``FastPath.sample``) reads the same files without
    taking Python's lock from the tracer."""
    if len(tids) > limit:
        return len(tids), 0, 0
    ready = sum(1 for tid in tids if _runnable(tid)) if runnable else 0
    return len(tids), ready, sum(_run_delay(tid) for tid in [tracer_tid, *tids])


def _current_cpu() -> Optional[int]:
    try:
        with open("/proc/thread-self/stat", "rb") as f:
            raw = f.read()
        return int(raw[raw.rfind(b")") + 2:].split()[36])
    except (OSError, ValueError, IndexError):
        return None


class Placement:
    """The CPU policy of one run; :meth:`start` before forking the guest."""

    def __init__(self, tracees: Callable[[], Iterable[int]],
                 sampler: Callable[[int, int, bool], Tuple[int, int, int]]) -> None:
        self.allowed: Set[int] = set(os.sched_getaffinity(0))
        self.active = len(self.allowed) > 1
        self._tracees = tracees
        self._sample = sampler  # as sample(): (tracees, runnable, delay)
        self._own: Set[int] = set()  # tids that chose their affinity themselves
        self._home: Set[int] = set()
        self._gathered = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._tracer_tid = 0
        self.spreads = 0

    def start(self) -> None:
        """Gather the tracer (and, by inheritance, the guest) on its CPU."""
        if not self.active:
            return
        cpu = _current_cpu()
        self._home = {cpu if cpu in self.allowed else min(self.allowed)}
        self._tracer_tid = threading.get_native_id()
        os.sched_setaffinity(0, self._home)
        self._gathered = True
        self._thread = threading.Thread(target=self._watch, name="uvm-placement", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.active:
            try:
                os.sched_setaffinity(0, self.allowed)
            except OSError:
                pass

    def chose_own(self, tid: int) -> None:
        """``tid`` set its own affinity: leave it where it put itself."""
        self._own.add(tid)

    def chose(self, tid: int) -> bool:
        return tid in self._own

    def inherit(self, parent: int, child: int) -> None:
        """A child starts with its parent's affinity, chosen or not."""
        if parent in self._own:
            self._own.add(child)

    def _watch(self) -> None:
        # off the home CPU: a wake-up there would interrupt the guest
        others = self.allowed - self._home
        if others:
            os.sched_setaffinity(0, others)  # this thread only
        busy = calm = 0
        patience = GATHER_AFTER
        last_delay = 0
        period = SAMPLE_S
        while not self._stop.wait(period):
            # how many are runnable matters only to gather them again
            count, runnable, delay = self._sample(self._tracer_tid, MAX_SAMPLED,
                                                  not self._gathered)
            if count > MAX_SAMPLED:
                runnable, delay = 2, last_delay
            waited = delay - last_delay if last_delay else 0
            last_delay = delay
            contended = waited > CONTENDED * period * 1e9
            # Every wake-up costs 50-100 us of CPU on a VM: while all is
            # quiet, look less often (a contention is seen 30 ms later).
            period = SAMPLE_S if contended or not self._gathered else min(2 * period, SAMPLE_MAX_S)
            if contended:
                busy, calm = busy + 1, 0
            else:
                busy = 0
                calm = calm + 1 if runnable <= 1 else 0
            if self._gathered and busy >= SPREAD_AFTER:
                self._move(self.allowed)
                self._gathered = False
                self.spreads += 1
                patience = min(2 * patience, GATHER_MAX)
                calm = 0
            elif not self._gathered and calm >= patience:
                self._move(self._home)
                self._gathered = True

    def _move(self, cpus: Set[int]) -> None:
        for tid in [self._tracer_tid, *self._tracees()]:
            if tid in self._own:
                continue
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass  # gone, or a guest that became another user


def _possible_cpus() -> int:
    """nr_cpu_ids: one more than the highest possible CPU number."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            spec = f.read().strip()
        return max(int(part.split("-")[-1]) for part in spec.split(",")) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def _native_mask_size() -> int:
    """Bytes the kernel copies out for a 64-bit sched_getaffinity."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    buf = ctypes.create_string_buffer(8192)
    size = libc.syscall(ctypes.c_long(204), ctypes.c_long(0), ctypes.c_long(8192), buf)
    return size if size > 0 else 8 * ((_possible_cpus() + 63) // 64)


class AffinityAnswer:
    """What ``sched_getaffinity`` returns to the guest: the CPUs uvm was
    given, with the kernel's own length rules and checks."""

    def __init__(self, allowed: Iterable[int]) -> None:
        self._bits = sum(1 << cpu for cpu in allowed)
        self._cpus = _possible_cpus()
        self._native = _native_mask_size()

    def reply(self, length: int, word: int) -> "tuple[int, bytes]":
        """(result, bytes to copy out): result is -errno or the byte count."""
        if length * 8 < self._cpus or length % word:
            return -22, b""  # EINVAL, as the kernel checks
        size = self._native if word == 8 else 4 * ((self._cpus + 31) // 32)
        size = min(length, size)
        return size, self._bits.to_bytes(max(size, (self._bits.bit_length() + 7) // 8), "little")[:size]
