"""Fixtures of the layer tests: the sandbox fixtures (roots, the test user,
``uvm_runner`` as root and as the user, ``scratch``), plus

- ``own_root``: a private copy of the host root (session-scoped), for the
  workloads that try to destroy the root: the shared cached roots stay safe
  even if the layer leaks;
- ``fingerprint(root)``: every entry's name, type, mode, owner, size, link
  count, mtime and ctime (ctime changes on any write or attribute change),
  to check that a root is unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "sandbox"))
from harness import guest_env  # noqa: E402,F401


def _load_sandbox_conftest():
    spec = importlib.util.spec_from_file_location("_uvm_sandbox_conftest_layer",
                                                  TESTS / "sandbox" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_sandbox = _load_sandbox_conftest()
uvm_runner = _sandbox.uvm_runner
test_user = _sandbox.test_user
host_root = _sandbox.host_root
debian_root = _sandbox.debian_root
i386_root = _sandbox.i386_root
scratch = _sandbox.scratch


@pytest.fixture(scope="session")
def own_root(host_root, tmp_path_factory) -> Path:
    base = Path("/var/tmp/uvm-layer-tests")
    base.mkdir(exist_ok=True)
    os.chmod(base, 0o755)
    path = base / f"root-{os.getpid()}"
    subprocess.run(["cp", "-a", str(host_root), str(path)], check=True)
    # a lower directory with thousands of entries, and a hard-linked pair
    many = path / "many"
    many.mkdir()
    for i in range(3000):
        (many / f"f{i:04d}").write_text(str(i))
    (path / "etc" / "linked-a").write_text("shared\n")
    os.link(path / "etc" / "linked-a", path / "etc" / "linked-b")
    yield path
    shutil.rmtree(path, ignore_errors=True)
