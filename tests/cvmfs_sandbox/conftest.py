"""Fixtures of the CernVM-FS-in-the-sandbox tests.

- ``published`` (session): one repository, ``tmpl.uvm.test``, published with
  ``uvm publish`` from a tree built here: ``/os/demo`` is a small OS root
  (``uvm.hostroot``: bash, coreutils, python3 and their libraries) and
  ``/misc`` the seeded tree of every entry kind from ``tests/cvmfs``
  (hard links, variant symlinks, FIFOs, nested catalogs, chunked files).
  Revision 1 is tagged ``v1``; the tests that need a second revision publish
  it into their own copy of the store.
- ``server``: a loopback mirror (``tests/net/faultserver.py``) serving it and
  counting requests per path.
- ``env_for(cache)``: environment for uvm processes using that server, the
  keys and a private cache and state directory.
- ``uvm_runner``, ``test_user``: the sandbox tests' runners (root and the
  unprivileged user), re-exported from ``tests/sandbox/conftest.py``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path.insert(0, str(TESTS / "cvmfs"))
sys.path.insert(0, str(TESTS / "net"))
sys.path.insert(0, str(TESTS / "sandbox"))

from cvmfs_testlib import SMALL_CHUNKS, make_tree  # noqa: E402
from faultserver import FaultServer  # noqa: E402
from harness import _drop_privileges, _run  # noqa: E402


def _load_sandbox_conftest():
    spec = importlib.util.spec_from_file_location("_uvm_sandbox_conftest",
                                                  TESTS / "sandbox" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_sandbox = _load_sandbox_conftest()
uvm_runner = _sandbox.uvm_runner
test_user = _sandbox.test_user

FQRN = "tmpl.uvm.test"          # the OS template (default chunking)
MISC = "misc.uvm.test"          # the seeded tree of every entry kind (small chunks)
TEMPLATE_PATH = "/os/demo"
VARIANT_ENV = {"UVM_ARCH": "x86_64-test"}
BASE = Path(os.environ.get("UVM_TEST_CVMFS_SANDBOX", "/var/tmp/uvm-test-cvmfs-sandbox"))


@dataclass
class Published:
    work: Path           # world-readable working directory of the session
    store: Path          # the stratum-0 (served at /cvmfs/FQRN)
    www: Path            # the document root
    keys: Path
    source: Path         # what was published


def publish_tree(source: Path, store: Path, keys: Path, tag: Optional[str] = None,
                 now: Optional[int] = None, fqrn: str = FQRN):
    from uvm.cvmfs.publish import ChunkPolicy, publish

    chunking = SMALL_CHUNKS if fqrn == MISC else ChunkPolicy()
    return publish(str(source), fqrn, str(store), str(keys), tag=tag, chunking=chunking,
                   now=now)


@pytest.fixture(scope="session")
def published(tmp_path_factory) -> Iterator[Published]:
    from uvm.cvmfs.publish import create_keys
    from uvm.hostroot import build_root

    BASE.mkdir(parents=True, exist_ok=True)
    os.chmod(BASE, 0o755)
    work = Path(tempfile_dir(BASE))
    source = work / "src"
    build_root(str(source / TEMPLATE_PATH.lstrip("/")))
    # a marker the tests read, and a directory that stays empty
    (source / "os/demo/etc/uvm-marker").write_text("revision one\n")
    (source / "os/demo/srv/empty").mkdir(parents=True)
    misc = work / "misc-src"
    make_tree(str(misc), seed=7, n_files=120)
    www = work / "www"
    store = www / "cvmfs" / FQRN
    keys = work / "keys"
    create_keys(FQRN, str(keys))
    create_keys(MISC, str(keys))
    publish_tree(source, store, keys, tag="v1", now=1_700_000_000)
    publish_tree(misc, www / "cvmfs" / MISC, keys, fqrn=MISC)
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    yield Published(work, store, www, keys, source)
    shutil.rmtree(work, ignore_errors=True)


def tempfile_dir(base: Path) -> str:
    import tempfile

    path = tempfile.mkdtemp(prefix="s-", dir=str(base))
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def server(published) -> Iterator[FaultServer]:
    srv = FaultServer(str(published.www)).start()
    yield srv
    srv.stop()


def env_for(published: Published, server_url: str, cache: Path, **extra: str) -> Dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": "/tmp", "LC_ALL": "C", "LANG": "C", "TERM": "dumb",
        "CVMFS_SERVER_URL": server_url,
        "CVMFS_KEYS_DIR": str(published.keys),
        "CVMFS_CACHE_BASE": str(cache / "cache"),
        "CVMFS_HTTP_PROXY": "DIRECT",
        "CVMFS_TIMEOUT": "2", "CVMFS_TIMEOUT_DIRECT": "2",
        "CVMFS_BACKOFF_INIT": "0.01", "CVMFS_BACKOFF_MAX": "0.02",
        "XDG_CONFIG_HOME": str(cache / "config"),
        "XDG_CONFIG_DIRS": str(cache / "config"),
        "XDG_STATE_HOME": str(cache / "state"),
    }
    env.update(VARIANT_ENV)
    env.update(extra)
    return env


@pytest.fixture
def workdir(uvm_runner, request) -> Iterator[Path]:
    """A fresh directory owned by the runner's identity (cache, state, records)."""
    path = Path(tempfile_dir(BASE))
    os.chown(path, uvm_runner.uid, uvm_runner.gid) if os.geteuid() == 0 else None
    yield path
    shutil.rmtree(path, ignore_errors=True)


def uvm_cmd(runner, *args: str) -> List[str]:
    python = runner.python or sys.executable
    cmd = [python, "-m", "uvm", *args]
    if not runner.is_root:
        cmd = _drop_privileges(runner.uid, runner.gid) + cmd
    return cmd


def run_uvm(runner, env: Dict[str, str], *args: str, timeout: float = 120,
            input: Optional[str] = None) -> subprocess.CompletedProcess:
    return _run(uvm_cmd(runner, *args), env=env, timeout=timeout, input=input)
