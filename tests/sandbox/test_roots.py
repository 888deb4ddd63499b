"""Checks of the harness itself: the guest roots work under native chroot.

No uvm here: if one of these fails, the sandbox tests that use the root would
fail for reasons that are not the sandbox's.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
from pathlib import Path

import pytest

import roots
from harness import guest_env, native_chroot

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="native chroot needs root")


def sh(root, script, **kw):
    return native_chroot(root, ["/bin/sh", "-c", script], **kw)


def ok(res):
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


# ---------------------------------------------------------------- host_root


def test_host_root_names_itself(host_root):
    out = ok(sh(host_root, "cat /etc/os-release"))
    assert f'NAME="{roots.OS_RELEASE_NAME}"' in out
    assert ok(sh(host_root, "cat /etc/hostname")).strip() == roots.GUEST_HOSTNAME


def test_host_root_tools_run(host_root):
    script = (
        "set -e; bash -c 'echo bash $BASH_VERSINFO'; /bin/true; env true;"
        "printf 'b\\na\\n' | sort | tr '\\n' ' '; echo;"
        "find /bench -name 'w*.sh' | sort | wc -l;"
        "echo hello | grep -c hell; echo abc | sed s/b/X/;"
        "tar cf - /bench 2>/dev/null | gzip -c | gzip -dc | tar tf - | wc -l")
    out = ok(sh(host_root, script)).split("\n")
    assert out[0].startswith("bash 5")
    assert out[1].strip() == "a b"
    assert out[2] == "5"
    assert out[3] == "1" and out[4] == "aXc"
    assert int(out[5]) >= 7


def test_host_root_python_has_stdlib_and_regression_tests(host_root):
    out = ok(sh(host_root, "python3 -c 'import sys, json, decimal, sqlite3, email.parser, "
                           "http.client, argparse, test.test_os, test.test_posix, "
                           "test.test_shutil, test.test_stat; print(sys.version_info[:2], sys.prefix)'"))
    assert out.strip() == "(3, 11) /usr"


def test_host_root_gcc_compiles_hello(host_root):
    out = ok(sh(host_root, "cd /tmp && gcc -O0 -o h$$ /bench/hello.c -lm && ./h$$ 4 && rm h$$"))
    assert out == "hello, world 12 2.000000\n"


def test_host_root_has_a_static_and_a_dynamic_probe(host_root):
    static = host_root / "usr/local/bin/static-probe"
    dynamic = host_root / "usr/local/bin/dynamic-probe"
    assert "statically linked" in subprocess.check_output(["file", str(static)], text=True)
    assert "dynamically linked" in subprocess.check_output(["file", str(dynamic)], text=True)
    assert ok(native_chroot(host_root, ["static-probe"], cwd="/tmp")) == "static ok /tmp 64 static-probe\n"
    assert ok(native_chroot(host_root, ["dynamic-probe"])) == "static ok / 64 dynamic-probe\n"


def test_host_root_has_the_workloads(host_root):
    repo_workloads = Path(roots.WORKLOADS)
    for path in repo_workloads.iterdir():
        assert (host_root / "bench" / path.name).read_bytes() == path.read_bytes()


def test_roots_are_usable_by_the_test_user(host_root, test_user):
    """The unprivileged user can run programs in the root and write its scratch dirs."""
    out = ok(native_chroot(host_root, ["/bin/sh", "-c",
                                       "id -u; python3 -c 'print(42)'; "
                                       "touch /tmp/u$$ /w/u$$ && rm /tmp/u$$ /w/u$$ && echo w"],
                           user=(test_user.uid, test_user.gid)))
    assert out.split() == [str(test_user.uid), "42", "w"]


def test_native_chroot_binds_and_leaves_no_mount(host_root, tmp_path):
    (tmp_path / "f").write_text("bound\n")
    os.chmod(tmp_path, 0o755)
    out = ok(native_chroot(host_root, ["cat", "/w/f"], binds=[(str(tmp_path), "/w")]))
    assert out == "bound\n"
    assert not (host_root / "w/f").exists()
    with open("/proc/self/mountinfo") as f:
        assert str(host_root) not in f.read()


# ---------------------------------------------------------------- i386_root


def test_i386_root_is_32_bit(i386_root):
    for rel in ("bin/bash", "bin/ls", "usr/local/bin/dynamic-probe", "usr/local/bin/hello"):
        out = subprocess.check_output(["file", "-L", str(i386_root / rel)], text=True)
        assert "ELF 32-bit" in out and "Intel 80386" in out, out
    out = subprocess.check_output(["file", str(i386_root / "usr/local/bin/static-probe")], text=True)
    assert "ELF 32-bit" in out and "statically linked" in out


def test_i386_root_runs_under_chroot(i386_root):
    out = ok(sh(i386_root, "echo $BASH_VERSION; ls /usr/local/bin | wc -l; static-probe; "
                           "dynamic-probe; hello 9", ))
    lines = out.splitlines()
    assert lines[1].strip() == "3"
    assert lines[2] == "static ok / 32 static-probe"
    assert lines[3] == "static ok / 32 dynamic-probe"
    assert lines[4] == "hello, world 12 3.000000"
    ok(native_chroot(i386_root, ["/bin/bash", "-c", "exit 0"]))


# ---------------------------------------------------------------- debian_root


def test_apt_mirror_comes_from_the_apt_config():
    mirror = roots.apt_mirror()
    assert mirror.startswith(("http://", "https://", "file:/"))
    assert "security" not in mirror


@pytest.mark.slow
def test_debian_root_is_bookworm_with_the_workload_tools(debian_root):
    out = ok(sh(debian_root, "grep ^VERSION_CODENAME= /etc/os-release; "
                             "gcc --version | head -1; make --version | head -1; "
                             "python3 -c 'import sys; print(sys.version_info[:2])'"))
    lines = out.splitlines()
    assert lines[0] == "VERSION_CODENAME=bookworm"
    assert lines[1].startswith("gcc")
    assert lines[2].startswith("GNU Make")
    assert lines[3] == "(3, 11)"


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["w1", "w2", "w3", "w4", "w5"])
def test_debian_root_runs_the_workloads(debian_root, workload):
    ok(native_chroot(debian_root, [f"/bench/{workload}.sh"]))


# ---------------------------------------------------------------- cache


def _build_counting(args):
    cache, marker = args
    roots.CACHE_DIR = Path(cache)

    def build(d):
        with open(marker, "a") as f:
            f.write("built\n")
        (d / "x").write_text("1")

    return str(roots.cached_root("demo", {"v": 1}, build))


def test_cached_root_is_built_once_by_concurrent_callers(tmp_path):
    marker = tmp_path / "marker"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        paths = pool.map(_build_counting, [(str(tmp_path / "cache"), str(marker))] * 4)
    assert len(set(paths)) == 1
    assert marker.read_text() == "built\n"
    built = Path(paths[0])
    assert (built / "x").read_text() == "1"
    assert built.stat().st_mode & 0o777 == 0o755
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == [built.name]
