"""The demos of ``demos/`` run unattended and succeed (exit status 0).

``aleph.sh`` gets the test suite's cached Debian root (``tests/sandbox/roots.py``,
debootstrap minbase with gcc) through ``UVM_DEBIAN_ROOT`` instead of running
debootstrap itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sandbox"))

import roots  # noqa: E402


def _run(script: str, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full.update(env)
    res = subprocess.run([str(REPO / "demos" / script)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=full, timeout=600,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"{script} exited {res.returncode}:\n{res.stdout[-4000:]}"
    return res


def test_grid_worker():
    out = _run("grid-worker.sh").stdout
    assert "selector v3:" in out and "grid-worker demo: ok" in out


def test_time_machine():
    out = _run("time-machine.sh").stdout
    assert "result 1000.00" in out and "result 1070.00" in out
    assert "time-machine demo: ok" in out


def test_aleph():
    try:
        debian = roots.debian_root()
    except RuntimeError as exc:
        pytest.fail(f"cannot build the Debian root: {exc}", pytrace=False)
    out = _run("aleph.sh", UVM_DEBIAN_ROOT=str(debian)).stdout
    assert "ALPHA events: 1000" in out and "aleph demo: ok" in out
