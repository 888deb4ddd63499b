"""Refusals on hostile machines, simulated by running uvm under a seccomp
filter: ptrace forbidden (as in a container's default profile) gives one
clear line and leaves no process behind; seccomp filtering unavailable makes
uvm fall back to stopping on every call, and say so with -v."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from harness import _drop_privileges, guest_env, uvm_command

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("uvm_available")]

_WRAPPER = textwrap.dedent("""
    import errno, os, sys
    from uvm.sandbox import seccomp as sc
    nr, code = int(sys.argv[1]), int(sys.argv[2])
    prog = [(sc.BPF_LD_W_ABS, 0, 0, 0), (sc.BPF_JEQ_K, 0, 1, nr),
            (sc.BPF_RET_K, 0, 0, sc.RET_ERRNO | code), (sc.BPF_RET_K, 0, 0, sc.RET_ALLOW)]
    sc.install(prog, no_new_privs=True)
    os.execv(sys.argv[3], sys.argv[3:])
""")


def _run_denying(uvm_runner, nr: int, code: int, args):
    cmd = [sys.executable, "-c", _WRAPPER, str(nr), str(code), *uvm_command(), "run", *args]
    if not uvm_runner.is_root:
        cmd = _drop_privileges(uvm_runner.uid, uvm_runner.gid) + cmd
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=guest_env(), timeout=60)


def test_ptrace_forbidden_is_one_clear_line(uvm_runner, host_root):
    marker = "4242.4242"
    res = _run_denying(uvm_runner, 101, 1, ["--root", str(host_root), "--", "sleep", marker])
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "ptrace is not permitted here" in lines[0] and "SYS_PTRACE" in lines[0]
    time.sleep(0.2)
    left = subprocess.run(["pgrep", "-f", marker], stdout=subprocess.PIPE, text=True)
    assert left.stdout.strip() == ""  # no guest or half-started child left


def test_without_seccomp_filters_uvm_falls_back_and_says_so(uvm_runner, host_root):
    res = _run_denying(uvm_runner, 317, 22, ["--root", str(host_root), "-v", "--",
                                             "sh", "-c", "cat /etc/hostname; cd /usr && pwd"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [(host_root / "etc/hostname").read_text().strip(), "/usr"]
    notes = [line for line in res.stderr.splitlines() if "seccomp filtering unavailable" in line]
    assert len(notes) == 1
