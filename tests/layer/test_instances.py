"""Named instances and the guest identity (-0, -i): persistence across
runs, export, refusal of a second run and of another root; fake root
(chown, mknod, dpkg -i, useradd) remembered by the instance.  As root and
as the unprivileged user."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile

from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sandbox"))
from harness import _drop_privileges, guest_env, uvm_command  # noqa: E402
from layerlib import SHARED_SCRATCH, fingerprint  # noqa: E402


def ok(res):
    assert res.returncode == 0, f"rc={res.returncode}\nstdout:{res.stdout}\nstderr:{res.stderr}"
    return res.stdout


def _uvm(runner, env, *args, timeout=120):
    cmd = [runner.python or sys.executable, "-m", "uvm", *args]
    if not runner.is_root:
        cmd = _drop_privileges(runner.uid, runner.gid) + cmd
    return subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, cwd="/")


def test_instance_persistence_export_and_refusals(uvm_runner, own_root, scratch):
    env = guest_env(XDG_DATA_HOME=str(scratch / "data"))
    before = fingerprint(own_root)
    inst = ["--instance", "box1"]
    ok(uvm_runner.run(own_root, "sh", "-c",
                      "echo edited > /etc/hostname; rm /etc/gai.conf; mkdir -p /opt/tool; "
                      "echo v1 > /opt/tool/conf; ln -s /opt/tool/conf /etc/tool.conf; "
                      "mv /usr/share/python3 /usr/share/py3", env=env, extra=inst))
    out = ok(uvm_runner.run(own_root, "sh", "-c",
                            "cat /etc/hostname /etc/tool.conf; ls /etc/gai.conf 2>&1 | grep -c 'No such';"
                            "ls /usr/share/py3 | wc -l", env=env, extra=inst))
    assert out.split() == ["edited", "v1", "1", "3"]
    # another root: refused with a clear message
    other = scratch / "other-root"
    other.mkdir()
    res = uvm_runner.run(other, "true", env=env, extra=inst)
    assert res.returncode == 1 and "instance box1 belongs to" in res.stderr
    # two runs at once: the second is refused
    first = subprocess.Popen(uvm_runner.command(own_root, ["sh", "-c", "echo started; sleep 30"],
                                                extra=inst),
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "started"
        res = uvm_runner.run(own_root, "true", env=env, extra=inst)
        assert res.returncode == 1 and "in use by another uvm run" in res.stderr, res.stderr
    finally:
        first.kill()
        first.wait()
    # list, show, export (whiteouts for deletions), rm
    listed = ok(_uvm(uvm_runner, env, "instance", "list"))
    assert listed.startswith("box1\t") and str(own_root) in listed
    assert "runs      3" in ok(_uvm(uvm_runner, env, "instance", "show", "box1"))
    tar_path = scratch / "layer.tar"
    ok(_uvm(uvm_runner, env, "instance", "export", "box1", "-o", str(tar_path)))
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
        assert tar.extractfile("etc/hostname").read() == b"edited\n"
        assert tar.getmember("etc/tool.conf").issym()
    assert {"etc/hostname", "etc/.wh.gai.conf", "opt/tool/conf", "usr/share/.wh.python3",
            "usr/share/py3"} <= names
    assert not any(n.startswith("usr/bin") for n in names)  # only what changed
    ok(_uvm(uvm_runner, env, "instance", "rm", "box1"))
    assert ok(_uvm(uvm_runner, env, "instance", "list")) == ""
    assert fingerprint(own_root) == before


def test_fake_root_remembered(uvm_runner, own_root, scratch):
    env = guest_env(XDG_DATA_HOME=str(scratch / "data"))
    before = fingerprint(own_root)
    inst = ["--instance", "fr", "-0"]
    out = ok(uvm_runner.run(own_root, "sh", "-c",
                            "id -u; id -g; id -G; touch /etc/f; chown 12:34 /etc/f; "
                            "mknod /etc/null2 c 1 3; chmod 640 /etc/f; "
                            "stat -c '%u:%g %a' /etc/f; stat -c '%F %t,%T %u' /etc/null2; "
                            "stat -c %u:%g /etc/passwd /usr/bin/env", env=env, extra=inst))
    assert out.split() == ["0", "0", "0", "12:34", "640", "character", "special", "file",
                           "1,3", "0", "0:0", "0:0"]
    # the next run of the instance remembers
    out = ok(uvm_runner.run(own_root, "sh", "-c", "stat -c '%u:%g' /etc/f; stat -c %F /etc/null2",
                            env=env, extra=inst))
    assert out.split() == ["12:34", "character", "special", "file"]
    # another identity
    out = ok(uvm_runner.run(own_root, "sh", "-c",
                            "id -u; id -g; touch /tmp2; stat -c %u:%g /tmp2; "
                            "echo >> /etc/hosts; stat -c %u:%g /etc/hosts /etc/passwd",
                            env=env, extra=["-i", "1234:567"]))
    # new files are the identity's; the root's files stay root's, copied up or not
    assert out.split() == ["1234", "567", "1234:567", "0:0", "0:0"]
    assert fingerprint(own_root) == before


def test_dpkg_install_as_fake_root(uvm_runner, debian_root, scratch):
    pkg = scratch / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr" / "bin").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: hello-uvm\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: uvm tests <uvm@example.org>\nDescription: a tiny package\n")
    (pkg / "DEBIAN" / "postinst").write_text(
        "#!/bin/sh\nset -e\nmkdir -p /var/lib/hello-uvm\nchown root:root /var/lib/hello-uvm\n"
        "echo postinst ran > /var/lib/hello-uvm/state\n")
    (pkg / "usr" / "bin" / "hello-uvm").write_text("#!/bin/sh\necho hello from the package\n")
    os.chmod(pkg / "DEBIAN" / "postinst", 0o755)
    os.chmod(pkg / "usr" / "bin" / "hello-uvm", 0o755)
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(scratch / "h.deb")],
                   check=True, stdout=subprocess.DEVNULL)
    os.chmod(scratch / "h.deb", 0o644)
    env = guest_env(XDG_DATA_HOME=str(scratch / "data"))
    before = fingerprint(debian_root, SHARED_SCRATCH)
    inst = ["--instance", "deb", "-0"]
    out = ok(uvm_runner.run(debian_root, "sh", "-c",
                            "dpkg -i /w/h.deb >/dev/null && hello-uvm && "
                            "cat /var/lib/hello-uvm/state && stat -c %U /usr/bin/hello-uvm && "
                            "useradd -m bob && id -u bob && stat -c %U /home/bob",
                            binds=[(scratch, "/w")], env=env, extra=inst, timeout=150))
    assert out.split("\n")[:4] == ["hello from the package", "postinst ran", "root", "1000"] \
        or out.split("\n")[:3] == ["hello from the package", "postinst ran", "root"], out
    assert out.split()[-1] == "bob"
    out = ok(uvm_runner.run(debian_root, "sh", "-c", "dpkg -s hello-uvm | grep Status; hello-uvm",
                            env=env, extra=inst))
    assert out.split("\n")[:2] == ["Status: install ok installed", "hello from the package"]
    # apt-get (its methods drop to the _apt user and check that they did)
    out = ok(uvm_runner.run(debian_root, "sh", "-c",
                            "apt-get remove -y hello-uvm >/dev/null 2>&1 && ! test -e /usr/bin/hello-uvm && "
                            "apt-get install -y /w/h.deb >/dev/null 2>&1 && hello-uvm; "
                            "su -s /bin/sh nobody -c 'id -u'",
                            binds=[(scratch, "/w")], env=env, extra=inst, timeout=150))
    assert out.split() == ["hello", "from", "the", "package", "65534"]
    assert fingerprint(debian_root, SHARED_SCRATCH) == before

