"""Fixtures of the sandbox tests: guest roots, the test user, uvm runners.

- ``host_root``, ``i386_root``, ``debian_root``: cached guest roots
  (``roots.py``), built once per machine; session-scoped.
- ``test_user``: the unprivileged user (``uvmtest``, uid 4242) the tests run
  uvm as; created with useradd when missing.
- ``uvm_runner``: parametrized over ``["root", "user"]``: ``.run(root, *cmd)``
  runs ``uvm run --root ROOT ... -- CMD`` as root or as the test user, and
  ``.native(root, *cmd)`` runs the same command under native chroot with the
  same identity (the baseline the sandbox must match).
- ``scratch``: a fresh host directory per test, writable by the runner's
  identity, to bind into the guest.
- ``native_chroot(root, cmd, ...)`` (in ``harness.py``): the baseline runner
  itself (needs root).

Every sandbox test that takes ``uvm_runner`` runs twice: as root and as the
unprivileged user.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import tempfile
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import roots  # noqa: E402
from harness import (REPO, UvmRunner, _drop_privileges, _python,  # noqa: E402,F401
                     guest_env, native_chroot, uvm_command)

# ---------------------------------------------------------------- roots


def _root_fixture(builder):
    try:
        return builder()
    except RuntimeError as exc:
        pytest.fail(f"cannot build the guest root: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def host_root() -> Path:
    return _root_fixture(roots.host_root)


@pytest.fixture(scope="session")
def i386_root() -> Path:
    return _root_fixture(roots.i386_root)


@pytest.fixture(scope="session")
def debian_root() -> Path:
    return _root_fixture(roots.debian_root)


# ---------------------------------------------------------------- user


@dataclass(frozen=True)
class TestUser:
    name: str
    uid: int
    gid: int
    python: str = ""    # the interpreter the user runs uvm with


def _ensure_user() -> TestUser:
    name, uid, gid = roots.TEST_USER, roots.TEST_UID, roots.TEST_GID
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if os.geteuid() != 0:
            pytest.skip(f"the test user {name} does not exist and only root can create it")
        # Two xdist workers may get here at once: one useradd at a time.
        with open("/var/tmp/.uvm-test-useradd.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entry = _useradd(name, uid)
    if (entry.pw_uid, entry.pw_gid) != (uid, gid):
        pytest.fail(f"user {name} exists with uid:gid {entry.pw_uid}:{entry.pw_gid}, "
                    f"the test roots expect {uid}:{gid}", pytrace=False)
    return TestUser(name, uid, gid)


def _useradd(name: str, uid: int):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        res = subprocess.run(
            ["useradd", "--uid", str(uid), "--user-group", "--no-create-home",
             "--home-dir", "/tmp", "--shell", "/bin/sh", name],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if res.returncode != 0 and "already exists" not in res.stdout:
            pytest.fail(f"useradd {name} failed: {res.stdout}", pytrace=False)
        return pwd.getpwnam(name)


def _probe(user: TestUser, python: str) -> subprocess.CompletedProcess:
    return subprocess.run(_drop_privileges(user.uid, user.gid) + [python, "-m", "uvm", "--version"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd="/", env=guest_env())


def _mirror_venv() -> Path:
    """A world-readable copy of the venv and the uvm package, for the test user.

    Used when the clone is not reachable by other users (a checkout under a
    mode-700 home, say): the copy's editable-install finder is pointed at the
    copied package.  Returns the copy's python.
    """
    base = Path(tempfile.mkdtemp(prefix="uvm-test-venv-", dir="/var/tmp"))
    shutil.copytree(sys.prefix, base / "venv", symlinks=True)
    shutil.copytree(REPO / "uvm", base / "uvm", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for finder in (base / "venv").glob("lib/python*/site-packages/__editable__*finder.py"):
        finder.write_text(finder.read_text().replace(str(REPO / "uvm"), str(base / "uvm")))
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    return base / "venv" / "bin" / "python"


def _python_for_user(user: TestUser) -> str:
    """An interpreter the user can run uvm with; fail clearly if there is none."""
    res = _probe(user, _python())
    if res.returncode == 0 and not os.environ.get("UVM_TEST_FORCE_MIRROR"):
        return _python()
    mode_hint = []
    p = REPO
    while p != p.parent:
        mode = p.stat().st_mode & 0o777
        if not mode & 0o005:
            mode_hint.append(f"{p} is mode {mode:o}")
        p = p.parent
    if os.geteuid() == 0:
        mirror = str(_mirror_venv())
        res2 = _probe(user, mirror)
        if res2.returncode == 0:
            return mirror
        res = res2
    pytest.fail(
        f"the unprivileged test user {user.name} cannot run uvm "
        f"(python -m uvm --version exited {res.returncode}): {res.stdout.strip()[-500:]}\n"
        f"{'; '.join(mode_hint) or 'directory modes look fine'}. The repository and "
        f"its .venv must be readable and searchable by other users "
        f"(chmod o+rX on the clone and its parents).", pytrace=False)


@pytest.fixture(scope="session")
def test_user() -> TestUser:
    user = _ensure_user()
    python = _python_for_user(user)
    yield TestUser(user.name, user.uid, user.gid, python)
    if python != _python():
        shutil.rmtree(Path(python).parents[2], ignore_errors=True)


# ---------------------------------------------------------------- runners


@pytest.fixture(params=["root", "user"])
def uvm_runner(request) -> UvmRunner:
    if request.param == "root":
        if os.geteuid() != 0:
            pytest.skip("running as root needs root")
        return UvmRunner("root", 0, 0)
    user = request.getfixturevalue("test_user")
    if os.geteuid() != 0:
        if os.geteuid() == user.uid:
            return UvmRunner("user", user.uid, user.gid, user.python)
        pytest.skip("switching to the test user needs root")
    return UvmRunner("user", user.uid, user.gid, user.python)


@pytest.fixture
def scratch(uvm_runner, request) -> Path:
    path = uvm_runner.make_scratch(request.node.name[:40].replace("/", "_").replace("[", "-").replace("]", ""))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def uvm_available():
    """Skip-free check that `uvm run` exists: fail with a clear message if not."""
    res = subprocess.run([*uvm_command(), "run", "--help"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        pytest.fail(f"`uvm run` is not available yet: {res.stdout.strip()[-300:]}",
                    pytrace=False)
