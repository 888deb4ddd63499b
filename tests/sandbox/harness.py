"""Running commands in guest roots: under uvm (as root or the test user) and
under native chroot (the baseline).  Used by conftest.py, the tests and
benchmarks/bench_sandbox.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
SCRATCH_BASE = Path(os.environ.get("UVM_TEST_SCRATCH", "/var/tmp/uvm-test-scratch"))
GUEST_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
DEFAULT_TIMEOUT = 180


def _python() -> str:
    """The interpreter that runs uvm: the venv's, which the test user can run."""
    return sys.executable


def uvm_command() -> list[str]:
    return [_python(), "-m", "uvm"]


def guest_env(**extra: str) -> dict[str, str]:
    """A small, fixed environment for uvm and the guest (the host's passes)."""
    env = {"PATH": GUEST_PATH, "HOME": "/tmp", "LC_ALL": "C", "LANG": "C",
           "TERM": "dumb"}
    env.update(extra)
    return env


Bind = tuple  # (host_path, guest_path)


def _run(cmd: Sequence[str], *, input: Optional[str] = None, timeout: float,
         env: Optional[dict] = None, cwd: str = "/") -> subprocess.CompletedProcess:
    stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
    proc = subprocess.Popen(list(cmd), stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(list(cmd), timeout, out, err) from None
    finally:
        # Nothing the command started may outlive it (its session).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def _drop_privileges(uid: int, gid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


def native_chroot(root: Path | str, cmd: Sequence[str], *, binds: Iterable[Bind] = (),
                  cwd: str = "/", user: Optional[tuple[int, int]] = None,
                  env: Optional[dict] = None, input: Optional[str] = None,
                  timeout: float = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess:
    """Run cmd under native chroot (as root, or as uid:gid after chroot).

    /dev, /proc and /sys of the host, and the binds (host, guest), are mounted
    in a private mount namespace that dies with the command: nothing is left
    mounted in the cached root.  Guest mount points must exist in the root.
    """
    if os.geteuid() != 0:
        raise PermissionError("native chroot needs root")
    root = str(root)
    script = ['set -e']
    for host, guest in [("/dev", "/dev"), ("/proc", "/proc"), ("/sys", "/sys")] + list(binds):
        script.append(f'mount --rbind "{host}" "{root}{guest}"')
    userspec = [f"--userspec={user[0]}:{user[1]}"] if user else []
    inner = ["chroot", *userspec, root, "/bin/sh", "-c", 'cd "$0" && exec "$@"', cwd, *cmd]
    script.append('exec "$@"')
    full = ["unshare", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", "\n".join(script), "native-chroot", *inner]
    return _run(full, input=input, timeout=timeout,
                env=env if env is not None else guest_env())


@dataclass
class UvmRunner:
    """Runs ``uvm run`` (and the native baseline) as root or as the test user."""

    mode: str                 # "root" or "user"
    uid: int
    gid: int
    python: str = ""          # interpreter that runs uvm (default: this one)

    @property
    def is_root(self) -> bool:
        return self.mode == "root"

    def command(self, root: Path | str, cmd: Sequence[str], *,
                binds: Iterable[Bind] = (), cwd: Optional[str] = None,
                clean_env: bool = False, env_vars: Iterable[str] = (),
                verbose: bool = False, wait_all: bool = False,
                stats: Optional[Path | str] = None,
                extra: Sequence[str] = ()) -> list[str]:
        args = [self.python or _python(), "-m", "uvm", "run", "--root", str(root)]
        for host, guest in binds:
            args += ["-b", f"{host}:{guest}" if guest else str(host)]
        if cwd:
            args += ["-w", cwd]
        if clean_env:
            args.append("--clean-env")
        for kv in env_vars:
            args += ["--env", kv]
        if verbose:
            args.append("-v")
        if wait_all:
            args.append("--wait-all")
        if stats:
            args += ["--stats", str(stats)]
        args += [*extra, "--", *cmd]
        if not self.is_root:
            args = _drop_privileges(self.uid, self.gid) + args
        return args

    def run(self, root: Path | str, *cmd: str, input: Optional[str] = None,
            timeout: float = DEFAULT_TIMEOUT, env: Optional[dict] = None,
            **options) -> subprocess.CompletedProcess:
        """``uvm run --root ROOT [options] -- CMD``; returns the CompletedProcess."""
        return _run(self.command(root, cmd, **options), input=input,
                    timeout=timeout, env=env if env is not None else guest_env())

    def native(self, root: Path | str, *cmd: str, binds: Iterable[Bind] = (),
               cwd: str = "/", input: Optional[str] = None,
               timeout: float = DEFAULT_TIMEOUT,
               env: Optional[dict] = None) -> subprocess.CompletedProcess:
        """The same command under native chroot, with the runner's identity."""
        return native_chroot(root, cmd, binds=binds, cwd=cwd, input=input,
                             timeout=timeout, env=env,
                             user=None if self.is_root else (self.uid, self.gid))

    def make_scratch(self, tag: str = "t") -> Path:
        """A fresh host directory this runner's identity owns."""
        SCRATCH_BASE.mkdir(parents=True, exist_ok=True)
        os.chmod(SCRATCH_BASE, 0o1777)
        path = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=SCRATCH_BASE))
        os.chmod(path, 0o755)
        if not self.is_root:
            os.chown(path, self.uid, self.gid)
        return path


