"""The identity stops exist only in runs that ask for them (the filter is
generated per run), and 32-bit guests see the same fake root."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layerlib import SHARED_SCRATCH, fingerprint  # noqa: E402


def ok(res):
    assert res.returncode == 0, f"rc={res.returncode}\nstdout:{res.stdout}\nstderr:{res.stderr}"
    return res.stdout


def _stops(runner, root, scratch, name, extra):
    stats = scratch / f"{name}.json"
    ok(runner.run(root, "python3", "-c", "import os\nfor _ in range(500): os.getuid(); os.getgid()",
                  stats=stats, extra=extra))
    return json.loads(stats.read_text())["seccomp_stops"]


def test_identity_stops_only_when_asked(uvm_runner, host_root, scratch):
    plain = _stops(uvm_runner, host_root, scratch, "plain", [])
    fake = _stops(uvm_runner, host_root, scratch, "fake", ["-0"])
    assert fake >= plain + 1000


def test_i386_fake_root(uvm_runner, i386_root):
    before = fingerprint(i386_root, SHARED_SCRATCH)
    out = ok(uvm_runner.run(i386_root, "sh", "-c",
                            "id -u; touch /f; chown 5:6 /f; ls -ln /f; mknod /c c 1 3; ls -ln /c; "
                            "echo x > /etc/y; cat /etc/y; rm /etc/y; ls /etc/y 2>/dev/null; "
                            "ls -ln /bin/sh | cut -d' ' -f3,4", extra=["-0"]))
    lines = out.split("\n")
    assert lines[0] == "0"
    assert lines[1].split()[2:4] == ["5", "6"]
    assert lines[2].startswith("c") and lines[2].split()[4:6] == ["1,", "3"]
    assert lines[3] == "x" and lines[4] == "0 0"
    assert fingerprint(i386_root, SHARED_SCRATCH) == before
