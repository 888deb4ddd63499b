"""``uvm doctor``'s sandbox checks on this machine (CI runs on the same kind:
ptrace, seccomp filters, openat2 and IA32 emulation are all there)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


def test_sandbox_checks_pass_and_leave_no_process():
    import os

    from uvm.sandbox.probe import checks

    def children() -> set:
        with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
            return set(f.read().split())

    # other tests of this worker may have servers of their own running
    before = children()
    results = list(checks())
    names = [c.name for c in results]
    assert names == ["sandbox: ptrace", "sandbox: seccomp filter", "sandbox: path anchors",
                     "sandbox: 32-bit guests"]
    assert all(c.ok for c in results), results
    # every probe child was reaped: no zombie children of ours
    assert children() <= before


def test_uvm_doctor_lists_the_sandbox():
    res = subprocess.run([sys.executable, "-m", "uvm", "doctor"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=60)
    assert "sandbox: ptrace" in res.stdout and "sandbox: 32-bit guests" in res.stdout
