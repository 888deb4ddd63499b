"""``Sandbox``: start a guest program under the tracer and wait for it.

Mechanism: fork; the child waits on a pipe while the parent attaches with
PTRACE_SEIZE (TRACESYSGOOD, fork/vfork/clone/exec events, TRACESECCOMP,
EXITKILL), then installs the seccomp filter generated from the handler
table and calls execve with the *guest* path of the program, which the
tracer translates like any other exec.  Without seccomp the child stops
itself and the tracer falls back to stopping on every system call.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time

from uvm.errors import SandboxError
from uvm.sandbox import memory as mem
from uvm.sandbox import seccomp
from uvm.sandbox.dispatch import Tracer, filter_numbers
from uvm.sandbox.loop import LoopResult, run_loop
from uvm.sandbox.namespace import Namespace
from uvm.sandbox.placement import Placement

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Dict, Mapping, Optional, Sequence, TextIO

OPTIONS = (
    mem.PTRACE_O_TRACESYSGOOD
    | mem.PTRACE_O_TRACEFORK
    | mem.PTRACE_O_TRACEVFORK
    | mem.PTRACE_O_TRACECLONE
    | mem.PTRACE_O_TRACEEXEC
    | mem.PTRACE_O_TRACESECCOMP
    | mem.PTRACE_O_EXITKILL
)

PTRACE_REFUSED = (
    "ptrace is not permitted here (container seccomp profile or Yama ptrace_scope); "
)
PTRACE_HINT = (
    "run the container with --cap-add SYS_PTRACE or a seccomp profile allowing ptrace, "
    "or set kernel.yama.ptrace_scope to 0 or 1"
)

_FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
_IGNORED = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


class CommandNotFound(SandboxError):
    exit_status = 127


class Sandbox:
    """One guest program (and its descendants) run inside ``namespace``.

    ``run()`` returns the exit status as a shell would report it (the code,
    or 128+signal); ``result`` holds the raw wait status and counters, and
    ``stats()`` a JSON-able summary.
    """

    def __init__(
        self,
        namespace: Namespace,
        argv: Sequence[str],
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        verbose: int = 0,
        log: Optional[TextIO] = None,
        wait_all: bool = False,
        use_seccomp: bool = True,
        spread: bool = False,
    ) -> None:
        if not argv:
            raise SandboxError("no command to run", hint="give one after --")
        self.ns = namespace
        self.argv = list(argv)
        self.env: Dict[str, str] = dict(os.environ if env is None else env)
        self.verbose = verbose
        self.log = log or sys.stderr
        self.wait_all = wait_all
        self.use_seccomp = use_seccomp
        tracer_class = Tracer
        if getattr(namespace, "layer", None) is not None:  # writable layer (layer_tracer.py)
            from uvm.sandbox.layer_tracer import LayerTracer as tracer_class
        self.tracer = tracer_class(namespace, verbose, self._log if verbose else None)
        # One CPU for the tracer and a guest that runs one thing at a time
        # (placement.py); ``spread``: leave CPUs to the scheduler.
        if not spread:
            self.tracer.placement = Placement(self.tracer.live_tids, self.tracer.cpu_sample)
        self.guest_cwd = cwd or self._default_cwd()
        self.result: Optional[LoopResult] = None
        self.seccomp_on = False
        self.elapsed = 0.0

    # -- helpers ------------------------------------------------------------------

    def _log(self, line: str) -> None:
        self.log.write(f"uvm: {line}\n")
        self.log.flush()

    def _default_cwd(self) -> str:
        try:
            return self.ns.guest_of(os.path.realpath(os.getcwd())) or "/"
        except OSError:
            return "/"

    def _find_command(self) -> str:
        name = self.argv[0]
        resolve = self.tracer.resolve
        if "/" in name:
            # A relative name stays relative: the child starts in the guest
            # cwd, and the exec is translated from there (as a shell would).
            _g, host = resolve(name, self.guest_cwd, True)
            if not os.path.exists(host):
                raise CommandNotFound(f"{name}: no such file in the guest root")
            return name
        for directory in self.env.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":"):
            if not directory.startswith("/"):
                continue
            guest = directory.rstrip("/") + "/" + name
            try:
                _g, host = resolve(guest, "/", True)
            except OSError:
                continue
            if os.path.isfile(host) and os.access(host, os.X_OK):
                return guest
        raise CommandNotFound(
            f"{name}: command not found in the guest root",
            hint="check PATH or give the full guest path",
        )

    # -- run -----------------------------------------------------------------------

    def run(self) -> int:
        guest_exe = self._find_command()
        try:
            _g, host_cwd = self.tracer.resolve(self.guest_cwd, "/", True)
        except OSError as exc:
            raise SandboxError(f"guest directory {self.guest_cwd}: {exc.strerror}") from None
        if not os.path.isdir(host_cwd):
            raise SandboxError(f"guest directory {self.guest_cwd} does not exist in the guest root",
                               hint="pick another with -w")
        numbers = getattr(self.tracer, "filter_numbers", filter_numbers)()
        prog = seccomp.build_filter(*numbers, tracer_pid=os.getpid(),
                                    gate_key=self.tracer.preload.key)
        no_new_privs = os.geteuid() != 0
        env_list = {k: v for k, v in self.env.items()}
        start = time.monotonic()
        placement = self.tracer.placement
        if placement is not None:
            placement.start()
        try:
            return self._trace(guest_exe, prog, no_new_privs, env_list, host_cwd, start)
        finally:
            if placement is not None:
                placement.stop()

    def _trace(self, guest_exe: str, prog, no_new_privs: bool, env_list: Dict[str, str],
               host_cwd: str, start: float) -> int:
        """Fork the guest, trace it to its end; its exit status."""
        go_r, go_w = os.pipe()
        st_r, st_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(go_w)
                os.close(st_r)
                _close_private_fds(keep=(go_r, st_w))
                for sig in (signal.SIGPIPE, signal.SIGXFSZ):
                    signal.signal(sig, signal.SIG_DFL)
                if os.read(go_r, 1) != b"g":
                    os._exit(125)
                os.close(go_r)
                os.chdir(host_cwd)
                mode = b"N"
                if self.use_seccomp:
                    try:
                        seccomp.install(prog, no_new_privs)
                        mode = b"S"
                    except OSError as exc:
                        mode = b"N" + str(exc).encode()[:200]
                os.write(st_w, mode)
                if mode[:1] == b"N":
                    os.kill(os.getpid(), signal.SIGSTOP)
                os.execve(guest_exe, self.argv, env_list)
            except OSError as exc:
                try:
                    os.write(2, f"uvm: cannot execute {self.argv[0]}: {exc.strerror}\n".encode())
                except OSError:
                    pass
                os._exit(126 if exc.errno in (errno.EACCES, errno.ENOEXEC) else 127)
            except BaseException:
                os._exit(127)
            os._exit(127)
        # parent
        os.close(go_r)
        os.close(st_w)
        try:
            mem.seize(pid, OPTIONS)
        except OSError as exc:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(go_w)
            os.close(st_r)
            if exc.errno == errno.EPERM:
                raise SandboxError(PTRACE_REFUSED + "cannot trace the guest",
                                   hint=PTRACE_HINT) from None
            raise SandboxError(f"cannot trace the guest: {exc.strerror}") from None
        os.write(go_w, b"g")
        os.close(go_w)
        mode = os.read(st_r, 256)
        os.close(st_r)
        self.seccomp_on = mode[:1] == b"S"
        fallback = not self.seccomp_on
        if fallback and self.verbose:
            why = mode[1:].decode(errors="replace") or "disabled"
            self._log(f"seccomp filtering unavailable ({why}); stopping on every system call (slow)")
        if self.verbose:
            for line in self.ns.describe():
                self._log(line)
            if self.tracer.anchors is None:
                self._log("path anchors unavailable (openat2 or /proc/PID/fd missing): "
                          "no protection against directories swapped during a call")
        saved = {}
        for sig in _IGNORED:
            saved[sig] = signal.signal(sig, signal.SIG_IGN)
        for sig in _FORWARDED:
            saved[sig] = signal.signal(sig, lambda s, _f, pid=pid: _forward(pid, s))
        try:
            self.result = run_loop(self.tracer, pid, fallback, self.wait_all,
                                   job_control=os.isatty(0))
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
            self.tracer.cleanup()
        self.elapsed = time.monotonic() - start
        status = self.result.status
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)

    def stats(self) -> dict:
        res = self.result or LoopResult()
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "tracer_cpu_s": round(usage.ru_utime + usage.ru_stime, 6),
            "tracer_max_rss_kb": usage.ru_maxrss,
            "stops": res.stops,
            "seccomp_stops": res.seccomp_stops,
            "translated_paths": self.tracer.translated + res.fast_rewritten,
            "fast_path_stops": res.fast_stops,
            "fast_path_events": res.fast_events,
            "processes": res.processes,
            "threads": res.threads,
            "max_live_tracees": res.max_tracees,
            "killed_leftovers": res.killed_leftovers,
            "seccomp": self.seccomp_on,
            "cpu_spreads": self.tracer.placement.spreads if self.tracer.placement else 0,
            "elapsed_s": round(self.elapsed, 6),
            "status": res.status,
            **(self.tracer.layer_stats() if hasattr(self.tracer, "layer_stats") else {}),
        }

    def write_stats(self, path: str) -> None:
        import json

        with open(path, "w") as f:
            json.dump(self.stats(), f, indent=1, sort_keys=True)
            f.write("\n")


def _close_private_fds(keep: Sequence[int]) -> None:
    """In the forked guest, before anything waits: close uvm's own
    descriptors (close-on-exec ones, which its exec would close anyway).
    Background downloads hold an object's ``flock`` through one; a child
    keeping a copy until its exec would hold the lock too, and the tracer,
    handling that very exec, would wait for it forever.  Descriptors the
    user passed to uvm (inheritable) stay for the guest."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                if not os.get_inheritable(fd):
                    os.close(fd)
            except OSError:
                pass  # the listing's own descriptor, gone already


def _forward(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def reraise_status(status: int) -> int:
    """Make the calling process end as the guest did: re-raise its fatal
    signal (without a core dump), else return the exit code."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (ImportError, ValueError, OSError):
            pass
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.WEXITSTATUS(status)


def run(root: str, argv: Sequence[str], binds=(), **kwargs) -> int:
    """Library entry point: run ``argv`` with ``root`` as /; returns the exit
    status (code, or 128+signal)."""
    return Sandbox(Namespace(root, binds), argv, **kwargs).run()
