"""The tracer's C hot path and the CPU placement, seen from the guest.

The C settles read-only calls on directories Python resolved before; every
answer must be the one the Python tracer gives, and whatever changes a
directory (rename, copy-up into the layer) must reach it.  The placement
keeps a sequential guest on one CPU without the guest noticing, and gives
a parallel one every CPU.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from harness import guest_env

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("uvm_available")]

# Stats, opens, readlinks and accesses of absolute paths: plain files,
# directories, absolute and relative symlinks, missing names, `..`, a bind.
PROBE = r"""
import os, sys
def show(label, fn):
    try:
        value = fn()
    except OSError as exc:
        value = "E" + str(exc.errno)
    print(label, value)
paths = ["/etc/hostname", "/etc", "/usr/bin/python3", "/usr/lib/../bin/sh", "/nope/x",
         "/etc/nope", "/etc/hostname/x", "/data/link-abs", "/data/link-rel", "/data/sub/f",
         "/data/sub", "/data/loop", "/bin/sh", "/data/sub/to-to-f", "/data/sub/dangling",
         "/data/sub/up", "/", "/etc/", "/etc/.", "/data/sub/.", "/data/sub/up/.",
         "/nope/deeper/x", "/nope/x/.", "/data/none/x", "/etc/hostname/.", "/data/sys",
         "/data/sub/sys/x", "/data/link-abs/."]
for rnd in range(3):
    for p in paths:
        show("stat " + p, lambda: (os.stat(p).st_size, oct(os.stat(p).st_mode)))
        show("lstat " + p, lambda: oct(os.lstat(p).st_mode))
        show("link " + p, lambda: os.readlink(p))
        show("access " + p, lambda: os.access(p, os.R_OK))
        show("read " + p, lambda: open(p, "rb").read(64))
        show("fstat " + p, lambda: os.fstat(os.open(p, os.O_RDONLY)).st_size)
    for d in ("/etc", "/data", "/data/sub", "/usr/bin"):
        os.chdir(d)
        fd = os.open(".", os.O_RDONLY)
        for name in ("hostname", "link-abs", "link-rel", "f", "loop", "sh", "nope", ".."):
            show("rel " + d + " " + name, lambda: (os.stat(name).st_size, oct(os.lstat(name).st_mode)))
            show("at " + d + " " + name, lambda: os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
            show("open " + d + " " + name, lambda: open(name, "rb").read(16))
        os.close(fd)
        show("cwd " + d, os.getcwd)
"""


def _data_dir(uvm_runner):
    data = uvm_runner.make_scratch("fast")
    (data / "sub").mkdir()
    (data / "sub" / "f").write_text("in the bind\n")
    os.symlink("/etc/hostname", data / "link-abs")  # resolves in the guest root
    os.symlink("sub/f", data / "link-rel")
    os.symlink("loop", data / "loop")
    os.symlink("f", data / "sub" / "to-f")           # followed in the directory by the C
    os.symlink("to-f", data / "sub" / "to-to-f")
    os.symlink("nothing", data / "sub" / "dangling")
    os.symlink("..", data / "sub" / "up")
    (data / "sys").write_text("a name that is a bind point elsewhere\n")
    if not uvm_runner.is_root:
        for path in (data / "sub", data / "sub" / "f"):
            os.chown(path, uvm_runner.uid, uvm_runner.gid)
        for name in ("to-f", "to-to-f", "dangling", "up"):
            os.lchown(data / "sub" / name, uvm_runner.uid, uvm_runner.gid)
    return data


def _run(uvm_runner, root, tracer, *cmd, binds=(), extra=(), stats=None):
    env = guest_env()
    env["UVM_TRACER"] = tracer
    res = subprocess.run(uvm_runner.command(root, cmd, binds=binds, extra=extra, stats=stats),
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.parametrize("layer", [True, False], ids=["layer", "no-layer"])
def test_c_and_python_tracers_give_the_same_answers(uvm_runner, host_root, layer):
    data = _data_dir(uvm_runner)
    extra = () if layer else ("--no-layer",)
    stats = uvm_runner.make_scratch("stats") / "stats.json"
    fast = _run(uvm_runner, host_root, "c", "python3", "-c", PROBE, binds=[(data, "/data")],
                extra=extra, stats=stats)
    slow = _run(uvm_runner, host_root, "python", "python3", "-c", PROBE, binds=[(data, "/data")],
                extra=extra)
    assert fast == slow
    assert "link /data/link-abs /etc/hostname" in fast.splitlines()
    assert "in the bind" in fast and "E2" in fast and "E20" in fast and "E40" in fast
    assert (host_root / "etc/hostname").read_text().strip()[:20] in fast
    counts = json.loads(stats.read_text())
    assert counts["fast_path_stops"] > 0  # the C really answered some of them


def test_c_tracer_forgets_a_renamed_directory(uvm_runner, host_root):
    data = _data_dir(uvm_runner)
    script = (
        "import os\n"
        "for _ in range(3): print(os.path.exists('/data/sub/f'))\n"
        "os.rename('/data/sub', '/data/moved')\n"
        "print(os.path.exists('/data/sub/f'), open('/data/moved/f').read().strip())\n"
        "os.mkdir('/data/sub'); open('/data/sub/g', 'w').write('new')\n"
        "print(os.path.exists('/data/sub/f'), open('/data/sub/g').read())\n"
    )
    out = _run(uvm_runner, host_root, "c", "python3", "-c", script, binds=[(data, "/data")])
    assert out.split() == ["True", "True", "True", "False", "in", "the", "bind", "False", "new"]


def test_c_tracer_reads_a_file_copied_up_into_the_layer(uvm_runner, host_root):
    """The C knew /etc as the lower root's; after a write it is the layer's."""
    script = (
        "import os\n"
        "os.chdir('/etc')\n"
        "for _ in range(3): before = open('/etc/hostname').read(), open('hostname').read()\n"
        "open('/etc/hostname', 'w').write('rewritten\\n')\n"
        "print(repr(before[0]), repr(before[1]), repr(open('/etc/hostname').read()),\n"
        "      repr(open('hostname').read()), os.stat('hostname').st_size)\n"
    )
    out = _run(uvm_runner, host_root, "c", "python3", "-c", script)
    original = (host_root / "etc/hostname").read_text()
    assert out.strip() == f"{original!r} {original!r} 'rewritten\\n' 'rewritten\\n' 10"
    assert (host_root / "etc/hostname").read_text() == original  # the root is untouched


# Read-only calls the C answers without the kernel or from what Python
# taught it: paths below missing directories, getcwd, a directory named as
# "dir/.", a symlink followed into another directory.  Every change, by the
# guest or by the host meanwhile, must be seen at once.
CHANGES = r"""
import os, sys
def probe(path):
    try:
        st = os.stat(path)
        return "size%d" % st.st_size
    except OSError as exc:
        return "E%d" % exc.errno
def show(*values):
    print(*values, flush=True)
show(*[probe("/data/later/f") for _ in range(3)])
os.mkdir("/data/later"); open("/data/later/f", "w").write("made")
show(probe("/data/later/f"))
show(*[probe("/data/hostmade/f") for _ in range(3)])
show(*[probe("/deep/x/y") for _ in range(3)], probe("/deep/er/bound/f"))
os.chdir("/data/sub")
show(*[os.getcwd() for _ in range(3)])
os.rename("/data/sub", "/data/moved")
show(os.getcwd(), *[probe("/data/sub/.") for _ in range(2)])
show(*[probe("/data/link") for _ in range(3)])
os.unlink("/data/link"); os.symlink("/etc/hostname", "/data/link")
show(probe("/data/link"))
os.mkdir("/data/d"); show(*[probe("/data/d/.") for _ in range(3)]); os.rmdir("/data/d")
show(probe("/data/d/."), probe("/data/d/"))
os.symlink("/data/moved", "/data/via")
show(*[probe("/data/via/f") for _ in range(3)])
os.unlink("/data/via")
show(probe("/data/via/f"))
show("ready")
sys.stdin.readline()  # the host makes data/hostmade/f and renames data/moved
show(probe("/data/hostmade/f"), os.getcwd())
"""


@pytest.mark.parametrize("layer", [True, False], ids=["layer", "no-layer"])
def test_c_answers_follow_changes_by_guest_and_host(uvm_runner, host_root, layer):
    data = _data_dir(uvm_runner)
    bound = uvm_runner.make_scratch("bound")
    (bound / "f").write_text("bound")
    os.symlink("moved/f", data / "link")  # dangling until the guest renames sub
    if not uvm_runner.is_root:
        os.lchown(data / "link", uvm_runner.uid, uvm_runner.gid)
    env = guest_env()
    env["UVM_TRACER"] = "c"
    cmd = uvm_runner.command(host_root, ["python3", "-c", CHANGES],
                             binds=[(data, "/data"), (bound, "/deep/er/bound")],
                             extra=() if layer else ("--no-layer",))
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env) as proc:
        lines = []
        for line in proc.stdout:
            lines.append(line.split())
            if line.strip() == "ready":
                (data / "hostmade").mkdir()
                (data / "hostmade" / "f").write_text("host")
                os.rename(data / "moved", data / "again")
                proc.stdin.write("go\n")
                proc.stdin.flush()
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    hostname = len((host_root / "etc/hostname").read_bytes())
    assert lines == [
        ["E2", "E2", "E2"], ["size4"],
        ["E2", "E2", "E2"],
        ["E2", "E2", "E2", "size5"],
        ["/data/sub"] * 3, ["/data/moved", "E2", "E2"],
        ["size12"] * 3, [f"size{hostname}"],
        [lines[8][0]] * 3, ["E2", "E2"],
        ["size12"] * 3, ["E2"],
        ["ready"], ["size4", "/data/again"],
    ]


# Forks, threads and signals: the C resumes births, first stops and
# signals of the tracees it knows; the guest and uvm's counts must not see
# the difference.
FAMILY = r"""
import os, signal, subprocess, threading
got = []
signal.signal(signal.SIGUSR1, lambda *a: got.append("usr1"))
os.kill(os.getpid(), signal.SIGUSR1)
threads = [threading.Thread(target=lambda: os.stat("/etc")) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
codes = []
for i in range(6):
    pid = os.fork()
    if pid == 0:
        if i == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        os._exit(i)
    codes.append(os.waitpid(pid, 0)[1])
out = subprocess.run(["/bin/sh", "-c", "trap 'echo hup' HUP; kill -HUP $$; echo $((6*7))"],
                     capture_output=True, text=True).stdout.split()
print(got, codes, out)
"""


def test_c_and_python_loops_see_the_same_family(uvm_runner, host_root):
    runs = {}
    for tracer in ("c", "python"):
        stats = uvm_runner.make_scratch("stats") / f"{tracer}.json"
        out = _run(uvm_runner, host_root, tracer, "python3", "-c", FAMILY, extra=("--no-layer",),
                   stats=stats)
        runs[tracer] = (out, json.loads(stats.read_text()))
    (out, fast), (slow_out, slow) = runs["c"], runs["python"]
    assert out == slow_out
    assert out.strip() == "['usr1'] [0, 256, 512, 768, 1024, 15] ['hup', '42']"
    for key in ("processes", "threads"):
        assert fast[key] == slow[key], key
    assert fast["processes"] == 1 + 6 + 1  # python3, its six forks, sh (kill is a builtin)
    assert fast["threads"] == fast["processes"] + 4
    assert fast["fast_path_events"] > 0


def test_c_tracer_forgets_a_root_file_removed_in_the_layer(uvm_runner, host_root):
    """/etc copied up, /etc/hostname still the lower root's file (the C knows
    it there): once the guest removes it, it is gone, though the root keeps it."""
    script = (
        "import os\n"
        "open('/etc/uvm-new', 'w').write('x')\n"
        "seen = [os.path.exists('/etc/hostname') for _ in range(3)]\n"
        "os.unlink('/etc/hostname')\n"
        "print(seen, os.path.exists('/etc/hostname'), os.path.exists('/etc/uvm-new'))\n"
    )
    out = _run(uvm_runner, host_root, "c", "python3", "-c", script)
    assert out.strip() == "[True, True, True] False True"
    assert (host_root / "etc/hostname").exists()


LAYER_DIRS = r"""
import os
def probe(path):
    try:
        return "size%d" % os.stat(path).st_size
    except OSError as exc:
        return "E%d" % exc.errno
os.makedirs("/usr/src/proj")                 # a directory of the layer's own
open("/usr/src/proj/a.c", "w").write("int a;")
open("/etc/uvm-new", "w").write("x")          # /etc copied up: it holds placeholders
out = [probe("/usr/src/proj/a.c") for _ in range(3)]
out += [probe("/etc/later/x") for _ in range(3)]
os.rename("/etc/hostname", "/usr/src/proj/hostname")  # a root file moves into it
out.append(probe("/usr/src/proj/hostname") == probe("/usr/src/proj/hostname") != "E2")
os.unlink("/usr/src/proj/a.c")
out += [probe("/usr/src/proj/a.c"), probe("/etc/hostname")]
os.mkdir("/etc/later"); open("/etc/later/x", "w").write("later")
out.append(probe("/etc/later/x"))
print(*out)
"""


def test_c_tracer_in_the_layers_own_and_copied_up_directories(uvm_runner, host_root):
    """A directory the guest made in the layer is served by the C; names
    missing from a copied-up one too; moves, removals and new names are
    seen at once, and the root stays untouched."""
    out = _run(uvm_runner, host_root, "c", "python3", "-c", LAYER_DIRS)
    assert out.split() == ["size6"] * 3 + ["E2"] * 3 + ["True", "E2", "E2", "size5"]
    assert (host_root / "etc/hostname").exists()
    assert not (host_root / "usr/src/proj").exists()


AFFINITY = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(128)
for size in (1, 8, 128):
    res = libc.syscall(204, 0, size, buf)
    print(size, res, ctypes.get_errno() if res < 0 else buf.raw[:res].hex())
print(sorted(os.sched_getaffinity(0)))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to place on one")
def test_guest_sees_every_cpu_while_kept_on_one(uvm_runner, host_root):
    """nproc and make -j$(nproc) see what they would without uvm, with the
    kernel's own answers to odd buffer sizes."""
    inside = _run(uvm_runner, host_root, "c", "python3", "-c", AFFINITY)
    outside = subprocess.run(["python3", "-c", AFFINITY], capture_output=True, text=True,
                             check=True).stdout
    assert inside == outside


SPIN = r"""
import os, sys, time
def allowed():
    return open('/proc/self/status').read().split('Cpus_allowed_list:')[1].split()[0]
if sys.argv[1] != "-":
    os.sched_setaffinity(0, {int(sys.argv[1])})
for _ in range(2):
    if os.fork() == 0:
        # free: busy until given more than one CPU; pinned: busy for 2 s
        deadline = time.monotonic() + (60 if sys.argv[1] == "-" else 2)
        while time.monotonic() < deadline and (sys.argv[1] != "-" or allowed().isdigit()):
            pass
        print(allowed(), flush=True)
        os._exit(0)
os.wait(); os.wait()
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
@pytest.mark.parametrize("tracer", ["c", "python"])
def test_parallel_guest_gets_every_cpu_and_pinned_one_stays(uvm_runner, host_root, tracer):
    """Two busy processes: uvm stops keeping them on one CPU.  A process
    pinned by the guest itself (taskset) is never moved.  Both tracers:
    each samples the tracees its own way."""
    allowed = subprocess.run(["sh", "-c", "grep Cpus_allowed_list /proc/self/status"],
                             capture_output=True, text=True, check=True).stdout.split()[1]
    out = _run(uvm_runner, host_root, tracer, "python3", "-c", SPIN, "-")
    assert out.split() == [allowed, allowed]
    one = str(min(os.sched_getaffinity(0)))
    pinned = _run(uvm_runner, host_root, tracer, "python3", "-c", SPIN, one)
    assert pinned.split() == [one, one]
