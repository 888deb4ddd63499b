"""Pure guest → host translation (no tracer): namespace and resolver rules
on real temporary directory trees."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from uvm.errors import SandboxError
from uvm.sandbox.namespace import Namespace, binds_from_specs, canonical_lexical, parse_bind
from uvm.sandbox.paths import Resolver


@pytest.fixture
def tree(tmp_path: Path):
    root = tmp_path / "root"
    for d in ("bin", "etc", "usr/lib", "home/u", "tmp", "proc", "dev"):
        (root / d).mkdir(parents=True)
    (root / "etc/passwd").write_text("guest\n")
    (root / "usr/lib/libx.so").write_text("x")
    os.symlink("/usr/lib", root / "lib")                 # absolute: guest terms
    os.symlink("../usr/lib", root / "bin/rel")           # relative
    os.symlink("/../../../../etc", root / "home/u/up")   # tries to climb out
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    os.symlink("/nowhere/file", root / "dangling")
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "f").write_text("data\n")
    os.symlink("/etc", data / "to_etc")                  # inside a bind: guest /etc
    os.symlink("../..", data / "sub/up2")                # climbs out of the bind
    outside = tmp_path / "secret"
    outside.write_text("host secret\n")
    ns = Namespace(str(root), [(str(data), "/data")], default_binds=False)
    return root, data, ns


def test_parse_bind_and_specs(tmp_path):
    assert parse_bind("/a") == ("/a", "/a")
    assert parse_bind("/a:/b") == ("/a", "/b")
    with pytest.raises(SandboxError):
        parse_bind(":/b")
    (tmp_path / "d").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert binds_from_specs(["d:/data", "d"]) == [
            (str(tmp_path / "d"), "/data"), (str(tmp_path / "d"), str(tmp_path / "d"))]
    finally:
        os.chdir(cwd)


def test_canonical_lexical():
    assert canonical_lexical("/a/./b//c/../d") == "/a/b/d"
    assert canonical_lexical("/../../x") == "/x"
    assert canonical_lexical("/") == "/"


def test_namespace_refuses_bad_root_and_bind(tmp_path):
    with pytest.raises(SandboxError, match="does not exist"):
        Namespace(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("")
    with pytest.raises(SandboxError, match="not a directory"):
        Namespace(str(tmp_path / "file"))
    with pytest.raises(SandboxError, match="bind source"):
        Namespace(str(tmp_path), [(str(tmp_path / "nope"), "/x")])
    with pytest.raises(SandboxError, match="absolute"):
        Namespace(str(tmp_path), [(str(tmp_path), "rel")])


def test_host_of_and_guest_of(tree):
    root, data, ns = tree
    assert ns.host_of("/") == str(root)
    assert ns.host_of("/etc/passwd") == f"{root}/etc/passwd"
    assert ns.host_of("/data") == str(data)
    assert ns.host_of("/data/f") == f"{data}/f"
    assert ns.host_of("/database") == f"{root}/database"   # not a path prefix
    assert ns.guest_of(str(root)) == "/"
    assert ns.guest_of(f"{root}/etc") == "/etc"
    assert ns.guest_of(f"{data}/sub") == "/data/sub"
    assert ns.guest_of("/usr/bin") is None
    assert ns.guest_of(f"{root}x") is None


def test_bind_inside_bind_longest_prefix(tmp_path):
    root, a, b = tmp_path / "r", tmp_path / "a", tmp_path / "b"
    for d in (root, a, b):
        d.mkdir()
    ns = Namespace(str(root), [(str(a), "/m"), (str(b), "/m/inner")], default_binds=False)
    assert ns.host_of("/m/x") == f"{a}/x"
    assert ns.host_of("/m/inner/x") == f"{b}/x"
    assert ns.guest_of(f"{b}/x") == "/m/inner/x"


def test_default_binds(tmp_path):
    root = tmp_path / "r"
    (root / "tmp").mkdir(parents=True)
    (root / "proc").mkdir()              # empty: the host's is bound
    (root / "dev").mkdir()
    (root / "dev" / "null").write_text("")  # non-empty: the root provides /dev
    ns = Namespace(str(root))
    guests = {b.guest: b.host for b in ns.binds}
    assert guests["/proc"] == "/proc" and guests["/sys"] == "/sys"
    assert "/dev" not in guests          # provided by the root
    assert "/tmp" not in guests          # root has /tmp
    bare = Namespace(str(tmp_path / "r" / "tmp"))
    assert {b.guest for b in bare.binds} >= {"/proc", "/sys", "/dev", "/tmp"}
    assert Namespace(str(root), default_binds=False).binds == ()


def test_absolute_symlink_resolves_in_guest_root(tree):
    root, _data, ns = tree
    r = Resolver(ns)
    assert r.resolve("/lib/libx.so", "/", True) == ("/usr/lib/libx.so", f"{root}/usr/lib/libx.so")
    assert r.resolve("/bin/rel/libx.so", "/", True)[0] == "/usr/lib/libx.so"
    # final symlink: followed or not, as the call asks
    assert r.resolve("/lib", "/", True)[1] == f"{root}/usr/lib"
    assert r.resolve("/lib", "/", False)[1] == f"{root}/lib"


def test_dotdot_never_leaves_root(tree):
    root, _data, ns = tree
    r = Resolver(ns)
    assert r.resolve("/../../../../etc/passwd", "/", True)[1] == f"{root}/etc/passwd"
    assert r.resolve("../../../etc/passwd", "/home/u", True)[1] == f"{root}/etc/passwd"
    assert r.resolve("/home/u/up/passwd", "/", True)[1] == f"{root}/etc/passwd"
    assert r.resolve("..", "/", True) == ("/", str(root))


def test_relative_paths_use_base(tree):
    root, _data, ns = tree
    r = Resolver(ns)
    assert r.resolve("passwd", "/etc", True)[1] == f"{root}/etc/passwd"
    assert r.resolve("./u/../u", "/home", True) == ("/home/u", f"{root}/home/u")


def test_symlinks_inside_bind_resolve_in_guest_terms(tree):
    root, data, ns = tree
    r = Resolver(ns)
    assert r.resolve("/data/f", "/", True)[1] == f"{data}/f"
    assert r.resolve("/data/to_etc/passwd", "/", True)[1] == f"{root}/etc/passwd"
    # ../.. from /data/sub is the guest's /, not the host parent of the bind
    assert r.resolve("/data/sub/up2/etc/passwd", "/", True)[1] == f"{root}/etc/passwd"
    assert r.resolve("/data/..", "/", True) == ("/", str(root))


def test_loops_dangling_and_missing(tree):
    root, _data, ns = tree
    r = Resolver(ns)
    with pytest.raises(OSError) as exc:
        r.resolve("/loop1", "/", True)
    assert exc.value.errno == errno.ELOOP
    assert r.resolve("/loop1", "/", False)[1] == f"{root}/loop1"
    # a dangling absolute link points into the guest (open(O_CREAT) creates there)
    assert r.resolve("/dangling", "/", True)[1] == f"{root}/nowhere/file"
    # missing components: the rest is appended lexically, still inside;
    # going up from a missing one fails as in the kernel's walk
    assert r.resolve("/nope/x/y", "/", True)[1] == f"{root}/nope/x/y"
    for path in ["/nope/../../../x", "/etc/passwd/../passwd"]:
        with pytest.raises(OSError) as exc:
            r.resolve(path, "/", True)
        assert exc.value.errno == (errno.ENOENT if "nope" in path else errno.ENOTDIR)
    with pytest.raises(OSError) as exc:
        r.resolve("", "/", True)
    assert exc.value.errno == errno.ENOENT


def test_trailing_slash_is_kept_and_follows(tree):
    root, _data, ns = tree
    r = Resolver(ns)
    assert r.resolve("/lib/", "/", False)[1] == f"{root}/usr/lib/"
    assert r.resolve("/etc/passwd/", "/", True)[1] == f"{root}/etc/passwd/"


def test_cache_invalidation_after_a_change(tree):
    root, _data, ns = tree
    r = Resolver(ns)
    assert r.resolve("/home/u/x", "/", True)[1] == f"{root}/home/u/x"
    (root / "home/u").rename(root / "home/v")
    os.symlink("/etc", root / "home/u")
    r.invalidate()
    assert r.resolve("/home/u/x", "/", True)[1] == f"{root}/etc/x"


def test_proc_self_names_the_tracee(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    ns = Namespace(str(root))  # host /proc bound
    me = os.getpid()
    r = Resolver(ns, is_tracee=lambda pid: pid == me, tgid_of=lambda tid: me)
    assert r.resolve("/proc/self/status", "/", True, tid=me)[1] == f"/proc/{me}/status"
    # /proc/PID/root is the guest root, whoever PID is
    assert r.resolve("/proc/self/root/etc", "/", True, tid=me)[1] == f"{root}/etc"
    assert r.resolve("/proc/1/root", "/", True, tid=me) == ("/", str(root))
    # the caller's own fd links are left to the kernel when last
    fd = os.open("/usr", os.O_RDONLY)  # not in the guest view
    try:
        assert r.resolve(f"/proc/self/fd/{fd}", "/", True, tid=me)[1] == f"/proc/{me}/fd/{fd}"
        # walked through, an fd outside the guest view is refused
        with pytest.raises(OSError) as exc:
            r.resolve(f"/proc/self/fd/{fd}/r", "/", True, tid=me)
        assert exc.value.errno == errno.EACCES
    finally:
        os.close(fd)
    # /proc/self/cwd walked through: translated back into the guest view
    cwd = os.getcwd()
    os.chdir(root)
    try:
        (root / "here").write_text("")
        assert r.resolve("/proc/self/cwd/here", "/", True, tid=me)[1] == f"{root}/here"
    finally:
        os.chdir(cwd)


def test_other_processes_links_outside_view_refused(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    ns = Namespace(str(root))
    r = Resolver(ns, is_tracee=lambda pid: False, tgid_of=lambda tid: tid)
    with pytest.raises(OSError) as exc:
        r.resolve("/proc/1/cwd/etc/passwd", "/", True, tid=os.getpid())
    assert exc.value.errno == errno.EACCES


def test_generated_syscall_tables_match_python_ptrace():
    from uvm.sandbox import _sysnames, sysnums

    assert sysnums.generate() == {0: _sysnames.X86_64, 1: _sysnames.I386}
    assert sysnums.number(0, "openat") == 257 and sysnums.number(1, "openat") == 295
    assert sysnums.number(1, "stat64") == 195 and sysnums.number(1, "statx") == 383


def test_filter_covers_every_table_row_for_both_abis():
    from uvm.sandbox import seccomp
    from uvm.sandbox.dispatch import filter_numbers
    from uvm.sandbox.handlers import TABLE

    traced, refused, traced_if = filter_numbers()
    for abi in (0, 1):
        assert len(traced[abi]) + len(refused[abi]) + len(traced_if[abi]) >= 0.8 * len(TABLE)
    prog = seccomp.build_filter(traced, refused, traced_if)
    assert len(prog) < 4096 and prog[-1][0] == seccomp.BPF_RET_K


def test_docs_list_every_syscall_row():
    from pathlib import Path

    from uvm.sandbox.handlers import TABLE

    text = (Path(__file__).resolve().parents[2] / "docs" / "syscalls.md").read_text()
    missing = [name for name in TABLE if f"| `{name}` |" not in text]
    assert not missing


def _run_bpf(prog, arch, nr, args=None, ip=0x401000):
    """A tiny classic-BPF interpreter for the instructions the filter uses."""
    from uvm.sandbox import seccomp as sc

    data = {0: nr, 4: arch, 8: ip & 0xFFFFFFFF, 12: ip >> 32}
    for i in range(6):
        value = (args or {}).get(i, 0)
        data[16 + 8 * i] = value & 0xFFFFFFFF
        data[20 + 8 * i] = value >> 32
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == sc.BPF_LD_W_ABS:
            acc = data[k]
        elif code == sc.BPF_JEQ_K:
            pc += jt if acc == k else jf
        elif code == sc.BPF_JGE_K:
            pc += jt if acc >= k else jf
        elif code == sc.BPF_JA:
            pc += k
        elif code == sc.BPF_RET_K:
            return k
        else:
            raise AssertionError(f"unexpected BPF code {code:#x}")
        pc += 1


def test_filter_decisions_per_abi():
    import errno as E

    from uvm.sandbox import seccomp as sc
    from uvm.sandbox.arch import AUDIT_ARCH_I386, AUDIT_ARCH_X86_64
    from uvm.sandbox.dispatch import filter_numbers
    from uvm.sandbox.sysnums import number

    prog = sc.build_filter(*filter_numbers())
    x64, i386 = AUDIT_ARCH_X86_64, AUDIT_ARCH_I386
    assert _run_bpf(prog, x64, number(0, "openat")) == sc.RET_TRACE
    assert _run_bpf(prog, x64, number(0, "read")) == sc.RET_ALLOW
    assert _run_bpf(prog, x64, number(0, "fstat")) == sc.RET_ALLOW
    assert _run_bpf(prog, x64, number(0, "mount")) == sc.RET_ERRNO | E.EPERM
    assert _run_bpf(prog, x64, number(0, "io_uring_setup")) == sc.RET_ERRNO | E.ENOSYS
    assert _run_bpf(prog, x64, 0x40000000 | 2) == sc.RET_ERRNO | E.ENOSYS  # x32 open
    assert _run_bpf(prog, x64, 999) == sc.RET_ERRNO | E.ENOSYS             # unknown, new
    # i386 numbers are different: 5 is open there, read on x86_64 is 0
    assert _run_bpf(prog, i386, 5) == sc.RET_TRACE | 1  # data 1: the i386 ABI
    assert _run_bpf(prog, i386, number(1, "stat64")) == sc.RET_TRACE | 1
    assert _run_bpf(prog, i386, number(1, "statx")) == sc.RET_TRACE | 1
    assert _run_bpf(prog, i386, number(1, "socketcall")) == sc.RET_TRACE | 1
    # int $0x80 path calls from 64-bit code above 4 GiB are refused
    assert _run_bpf(prog, i386, 5, ip=0x7F0000001000) == sc.RET_ERRNO | E.ENOSYS
    assert _run_bpf(prog, i386, 20, ip=0x7F0000001000) == sc.RET_ALLOW   # getpid
    assert _run_bpf(prog, i386, 3) == sc.RET_ALLOW                         # read
    assert _run_bpf(prog, x64, 5) == sc.RET_ALLOW                          # fstat
    assert _run_bpf(prog, 0xC00000B7, 56) == sc.RET_KILL_PROCESS           # aarch64
    # sendto stops only with a destination address
    sendto = number(0, "sendto")
    assert _run_bpf(prog, x64, sendto, args={4: 0}) == sc.RET_ALLOW
    assert _run_bpf(prog, x64, sendto, args={4: 0x7FFF00001000}) == sc.RET_TRACE
    assert _run_bpf(prog, x64, sendto, args={4: 0x1000}) == sc.RET_TRACE
    assert _run_bpf(prog, i386, number(1, "sendto"), args={4: 0x1000}) == sc.RET_TRACE | 1
    assert _run_bpf(prog, x64, number(0, "sendmsg")) == sc.RET_TRACE
    # calls returning a socket address stop only when there is room for one
    assert _run_bpf(prog, x64, number(0, "recvfrom"), args={4: 0}) == sc.RET_ALLOW
    assert _run_bpf(prog, x64, number(0, "recvfrom"), args={4: 0x1000}) == sc.RET_TRACE
    assert _run_bpf(prog, x64, number(0, "accept4"), args={1: 0}) == sc.RET_ALLOW
    assert _run_bpf(prog, x64, number(0, "getsockname"), args={1: 0x1000}) == sc.RET_TRACE
    assert _run_bpf(prog, i386, number(1, "getpeername"), args={1: 0x1000}) == sc.RET_TRACE | 1


def test_anchors_pin_the_parent_directory(tmp_path):
    from uvm.sandbox.anchors import Anchors

    (tmp_path / "a/b").mkdir(parents=True)
    (tmp_path / "a/b/f").write_text("x")
    anchors = Anchors()
    try:
        name = anchors.anchored(str(tmp_path / "a/b/f"))
        assert name.startswith(f"/proc/{os.getpid()}/fd/") and name.endswith("/f")
        # the name keeps working after the path is swapped for a symlink
        (tmp_path / "a/b").rename(tmp_path / "a/old")
        os.symlink("/", tmp_path / "a/b")
        assert open(name).read() == "x"
        # a directory kept as a name (trailing slash): rename acts on it
        dirname = anchors.anchored(str(tmp_path / "a/old") + "/")
        assert dirname.endswith("/old/")
        # a fresh anchor through a symlink is refused (a race)
        anchors.retire()
        with pytest.raises(OSError) as exc:
            anchors.anchored(str(tmp_path / "a/b/etc/passwd"))
        assert exc.value.errno == errno.ELOOP
    finally:
        anchors.close()
