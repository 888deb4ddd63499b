"""Identity under uvm: the guest keeps the caller's uid and its permissions.

uvm does not fake root: run as the unprivileged test user, the guest is that
user, the kernel's permission checks apply as they would under native chroot
with the same identity, and what it creates on the host belongs to it.  Each
check compares uvm with native chroot (``--userspec`` for the user).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("uvm_available")

PERMISSION_PROBE = r"""
id -u; id -g
echo x > /mnt/ro/file 2>/dev/null && echo wrote-ro || echo ro-denied
mkdir /mnt/ro/sub 2>/dev/null && echo mkdir-ok || echo mkdir-denied
rmdir /mnt/ro/sub 2>/dev/null
touch /etc/uvm-probe-$1 2>/dev/null && { echo etc-writable; rm -f /etc/uvm-probe-$1; } || echo etc-denied
kill -0 1 2>/dev/null && echo kill-1-ok || echo kill-1-denied
echo mine > /mnt/own/new-$1 && echo created
"""


def _prepare(scratch: Path, uid: int, gid: int) -> None:
    ro = scratch / "ro"
    ro.mkdir()
    (ro / "file").write_text("read-only\n")
    os.chmod(ro / "file", 0o444)
    os.chmod(ro, 0o755)
    own = scratch / "own"
    own.mkdir()
    os.chown(own, uid, gid)


def test_identity_and_permissions_match_native(uvm_runner, host_root, scratch):
    _prepare(scratch, uvm_runner.uid, uvm_runner.gid)
    binds = [(scratch, "/mnt")]
    native = uvm_runner.native(host_root, "/bin/sh", "-c", PERMISSION_PROBE, "probe", "n",
                               binds=binds)
    (scratch / "ro" / "file").write_text("read-only\n")
    # --no-layer: the root itself, as the kernel's permission checks see it
    # (the default writable layer takes writes into the root on its own terms).
    under_uvm = uvm_runner.run(host_root, "/bin/sh", "-c", PERMISSION_PROBE, "probe", "u",
                               binds=binds, extra=["--no-layer"])
    assert native.returncode == 0, native.stderr
    assert under_uvm.stdout == native.stdout, under_uvm.stderr
    lines = under_uvm.stdout.split()
    assert lines[:2] == [str(uvm_runner.uid), str(uvm_runner.gid)]
    if uvm_runner.is_root:
        assert "wrote-ro" in lines
    else:
        assert {"ro-denied", "mkdir-denied", "etc-denied", "kill-1-denied"} <= set(lines)
    created = scratch / "own" / "new-u"
    assert created.read_text() == "mine\n"
    assert (created.stat().st_uid, created.stat().st_gid) == (uvm_runner.uid, uvm_runner.gid)


def test_guest_cannot_gain_privileges(uvm_runner, host_root):
    """No capability survives into the guest of an unprivileged caller."""
    res = uvm_runner.run(host_root, "/bin/sh", "-c",
                         "grep -E '^(Uid|CapEff|NoNewPrivs)' /proc/self/status")
    assert res.returncode == 0, res.stderr
    fields = dict(line.split(":", 1) for line in res.stdout.strip().splitlines())
    assert fields["Uid"].split()[0] == str(uvm_runner.uid)
    if not uvm_runner.is_root:
        assert int(fields["CapEff"].strip(), 16) == 0
