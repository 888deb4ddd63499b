"""The same kind of checks in a full Debian root (debootstrap minbase with
gcc, make and python3), as root and as the test user."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("uvm_available")]


def _ok(res):
    assert res.returncode == 0, f"rc={res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_debian_basics_match_native(uvm_runner, debian_root):
    script = ("cat /etc/debian_version; . /etc/os-release; echo $ID; "
              "dpkg-query -W -f '${Package}\\n' bash; cd /usr/share/doc && pwd; "
              "readlink -f /bin/sh; id -u")
    got = _ok(uvm_runner.run(debian_root, "bash", "-lc", script))
    if uvm_runner.is_root:
        want = _ok(uvm_runner.native(debian_root, "bash", "-lc", script))
        assert got == want
    assert got.splitlines()[1] == "debian"


def test_debian_gcc_make_python(uvm_runner, debian_root, scratch):
    (scratch / "Makefile").write_text("all: hi\n\t./hi > out.txt\nhi: hi.c\n\tgcc -O1 -o $@ $<\n")
    (scratch / "hi.c").write_text('#include <stdio.h>\n#include <math.h>\n'
                                  'int main(void){printf("%.1f\\n", sqrt(2.0)*10);return 0;}\n')
    _ok(uvm_runner.run(debian_root, "make", "-C", "/mnt", "-s", binds=[(scratch, "/mnt")]))
    assert (scratch / "out.txt").read_text() == "14.1\n"
    out = _ok(uvm_runner.run(debian_root, "python3", "-c",
                             "import json, sqlite3, ssl, os; print(os.path.realpath('/proc/self/exe'))"))
    assert out.strip().startswith("/usr/bin/python3")


def test_terminals_and_shared_memory_in_a_root_with_its_own_dev(uvm_runner, debian_root):
    """debootstrap's static /dev cannot open a pty or hold POSIX shared memory;
    the host's live /dev/pts, /dev/ptmx and /dev/shm make both work."""
    code = ("import os, multiprocessing\n"
            "master, slave = os.openpty()\n"
            "print(os.ttyname(slave).rsplit('/', 1)[0])\n"
            "lock = multiprocessing.Lock()\n"
            "with lock: print('locked')\n")
    out = _ok(uvm_runner.run(debian_root, "python3", "-c", code))
    assert out.split() == ["/dev/pts", "locked"]
