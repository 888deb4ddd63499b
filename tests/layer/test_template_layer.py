"""A writable layer over a CernVM-FS template, when asked for (--keep,
--layer, --instance, -0, -i; without, a template stays read-only: EROFS):
writes land in the layer, the content of a template file is fetched before
it is copied up, and an instance keeps its changes across runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_cv = _load("_uvm_cvmfs_sandbox_conftest_layer", TESTS / "cvmfs_sandbox" / "conftest.py")
published = _cv.published
server = _cv.server
workdir = _cv.workdir
TEMPLATE = f"{_cv.FQRN}:{_cv.TEMPLATE_PATH}"


def ok(res):
    assert res.returncode == 0, f"rc={res.returncode}\nstdout:{res.stdout}\nstderr:{res.stderr}"
    return res.stdout


def test_template_with_instance(uvm_runner, published, server, workdir):
    env = _cv.env_for(published, server.url_for(), workdir, XDG_DATA_HOME=str(workdir / "data"))
    run = ["run", "--template", TEMPLATE, "--instance", "tmpl", "-0", "--"]
    res0 = _cv.run_uvm(uvm_runner, env, *run, "/bin/sh", "-c",
                         "echo more >> /etc/uvm-marker; cat /etc/uvm-marker; rm /etc/os-release; "
                         "mkdir /srv/empty/new; touch /srv/empty/new/f; python3 -c \"import os; os.chown('/srv/empty/new/f', 5, 6)\"; "
                         "ls /srv/empty; id -u")
    out = ok(res0)
    assert out.split("\n")[:4] == ["revision one", "more", "new", "0"]
    out = ok(_cv.run_uvm(uvm_runner, env, *run, "/bin/sh", "-c",
                         "cat /etc/uvm-marker; ls /etc/os-release 2>&1 | grep -c 'No such'; "
                         "stat -c %u:%g /srv/empty/new/f"))
    assert out.split("\n")[:4] == ["revision one", "more", "1", "5:6"]
    # without a layer, the template is still read-only
    res = _cv.run_uvm(uvm_runner, env, "run", "--template", TEMPLATE, "--", "/bin/sh", "-c",
                      "touch /etc/new 2>&1; cat /etc/uvm-marker")
    assert "Read-only file system" in ok(res) and res.stdout.rstrip().endswith("revision one")
