"""A guest that tries to leave its root stays inside: one test per trick.

A sentinel file with a random token lives on the host, outside every guest
root, beside the per-test scratch directories (so that a ``..`` taken on the
host side of a bind would find it).  The guest is told the sentinel's host
path and tries to read it by each trick; the token must never appear in its
output, except in the positive control where the sentinel's directory is
bound into the guest.  Each trick is a bash snippet using coreutils (so that
it runs in every root, the 32-bit one too) or, where it needs system calls
the shell cannot make (openat on a directory descriptor, rename's errno), a
Python program.

Snippet conventions: ``refused CMD``: CMD must fail; ``expect WANT CMD``: CMD
must print WANT; each prints ``OK[...]``, ``ESCAPE[...]`` or ``WRONG[...]``,
and a snippet ends with ``DONE``.  Bound scratch: ``/mnt``; the root's own
writable directory: ``/w``; a unique name: ``$T``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import roots
from harness import SCRATCH_BASE, native_chroot

needs_uvm = pytest.mark.usefixtures("uvm_available")

HOSTNAME = roots.GUEST_HOSTNAME

PRELUDE = r"""
S=$1 T=$2
refused() {
    if out=$("$@" 2>&1); then echo "ESCAPE[$label] $*: $out"; else echo "OK[$label] $*"; fi
}
expect() {
    want=$1; shift
    out=$("$@" 2>&1)
    if [ "$out" = "$want" ]; then echo "OK[$label] $*"; else echo "WRONG[$label] $*: got <$out> want <$want>"; fi
}
"""

TRICKS = {
    # `..` past the root, from the root and from below it.
    "dotdot": r"""
label=dotdot
refused cat "$S"
refused cat "/../../../../../..$S"
refused cat "/tmp/../../../../../..$S"
refused ls "$(dirname "$S")"
expect uvm-guest cat /../../../etc/hostname
expect uvm-guest cat /etc/../../../../etc/hostname
cd / && cd .. && cd ../../.. && expect / /bin/pwd && expect "$(ls /)" ls
cd /
""",
    # /proc/self/root, /proc/PID/root and /proc/self/cwd are magic links the
    # kernel would follow to the host's root.
    "proc-root": r"""
label=proc-root
expect / readlink /proc/self/root
refused cat "/proc/self/root$S"
refused cat "/proc/self/root/../../..$S"
expect uvm-guest cat /proc/self/root/etc/hostname
expect "$(ls /)" ls /proc/self/root/
expect / readlink /proc/$$/root
refused cat "/proc/$$/root$S"
expect uvm-guest cat /proc/$$/root/etc/hostname
cd /etc
expect /etc readlink /proc/self/cwd
refused cat "/proc/self/cwd/../../../..$S"
expect uvm-guest cat /proc/self/cwd/../../etc/hostname
cd /
""",
    # Absolute symlinks resolve inside the guest root, wherever they live: in
    # the root itself (/w) and in a host directory bound into it (/mnt).
    "abs-symlink": r"""
label=abs-symlink
for d in /w/abs-$T /mnt/abs-$T; do
    mkdir -p $d
    ln -s /etc/hostname $d/host; expect uvm-guest cat $d/host
    ln -s /etc $d/etc; expect uvm-guest cat $d/etc/hostname
    ln -s "$S" $d/sentinel; refused cat $d/sentinel
    ln -s "$(dirname "$S")" $d/sdir; refused cat $d/sdir/token; refused ls $d/sdir/
    ln -s / $d/top; refused cat "$d/top/../../..$S"; expect uvm-guest cat $d/top/../../etc/hostname
    ln -s $d/top $d/chain; expect uvm-guest cat $d/chain/etc/hostname
    expect / readlink $d/top
done
rm -rf /w/abs-$T
""",
    # Relative symlinks climbing far past the root stop at it.
    "rel-symlink": r"""
label=rel-symlink
for d in /w/rel-$T/a/b /mnt/rel-$T/a/b; do
    mkdir -p $d
    ln -s ../../../../../../../../../..$S $d/up; refused cat $d/up
    ln -s ../../../../../../../../../etc/hostname $d/host; expect uvm-guest cat $d/host
    ln -s ../../../../../../../../.. $d/top; expect "$(ls /)" ls $d/top/; refused cat "$d/top$S"
done
rm -rf /w/rel-$T
""",
    # `..` out of a bind leads to the bind's guest parent, not its host one
    # (the sentinel's directory is a host sibling of the bound scratch dir).
    "bind-dotdot": r"""
label=bind-dotdot
expect uvm-guest cat /mnt/../etc/hostname
refused cat "/mnt/../$(basename "$(dirname "$S")")/token"
cd /mnt && cd .. && expect / /bin/pwd && expect "$(ls /)" ls
cd /mnt && refused cat "../$(basename "$(dirname "$S")")/token"
cd /
""",
    # A directory descriptor opened before a chdir, used through
    # /proc/self/fd/N (which the kernel follows as a magic link).
    "proc-fd": r"""
label=proc-fd
exec 3< /
exec 4< /mnt
cd /etc
expect / readlink /proc/self/fd/3
expect /mnt readlink /proc/self/fd/4
expect uvm-guest cat /proc/self/fd/3/etc/hostname
refused cat "/proc/self/fd/3/../../../..$S"
refused cat "/proc/self/fd/3$S"
expect uvm-guest cat /proc/self/fd/4/../etc/hostname
refused cat "/proc/self/fd/4/../$(basename "$(dirname "$S")")/token"
exec 3<&- 4<&-
cd /
""",
    # mv across a bind: the kernel says EXDEV and mv copies; wherever the
    # file lands, it is inside the root (checked from the host too).
    "rename-bind": r"""
label=rename-bind
echo moved > /mnt/mv-$T
mv /mnt/mv-$T /w/mv-$T && expect moved cat /w/mv-$T
echo moved2 > /mnt/mv2-$T
mv /mnt/mv2-$T /../../../w/mv2-$T && expect moved2 cat /w/mv2-$T
ln -s /w /mnt/wlink-$T
echo moved3 > /mnt/mv3-$T
mv /mnt/mv3-$T /mnt/wlink-$T/mv3-$T && expect moved3 cat /w/mv3-$T
""",
}


def _outcome(res, token):
    out = res.stdout + res.stderr
    assert token not in out, f"the guest read the sentinel:\n{out}"
    bad = [line for line in res.stdout.splitlines() if line.startswith(("ESCAPE", "WRONG"))]
    assert not bad, "\n".join(bad) + f"\n--- stderr:\n{res.stderr[-2000:]}"
    assert res.stdout.rstrip().endswith("DONE"), (
        f"the probe did not finish (exit {res.returncode}):\n{res.stdout}\n{res.stderr[-2000:]}")
    return [line for line in res.stdout.splitlines() if line.startswith("OK[")]


@pytest.fixture
def sentinel():
    """A host file outside every root, readable by everyone, with a random token."""
    SCRATCH_BASE.mkdir(parents=True, exist_ok=True)
    os.chmod(SCRATCH_BASE, 0o1777)
    token = "uvm-sentinel-" + secrets.token_hex(16)
    directory = SCRATCH_BASE / f"sentinel-{secrets.token_hex(4)}"
    directory.mkdir()
    os.chmod(directory, 0o755)
    (directory / "token").write_text(token + "\n")
    os.chmod(directory / "token", 0o644)
    yield directory / "token", token
    shutil.rmtree(directory, ignore_errors=True)


def _run_tricks(uvm_runner, root, scratch, sentinel, names):
    path, token = sentinel
    unique = secrets.token_hex(4)
    script = PRELUDE + "".join(TRICKS[n] for n in names) + "echo DONE\n"
    res = uvm_runner.run(root, "/bin/bash", "-c", script, "escape", str(path), unique,
                         binds=[(scratch, "/mnt")])
    try:
        oks = _outcome(res, token)
    finally:
        for leftover in root.joinpath("w").glob(f"*{unique}*"):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()
    return res, oks, unique


@needs_uvm
@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_trick_in_host_root(uvm_runner, host_root, scratch, sentinel, trick):
    res, oks, unique = _run_tricks(uvm_runner, host_root, scratch, sentinel, [trick])
    assert oks, res.stdout
    if trick == "rename-bind":
        # Nothing landed on the host outside the root and the bind.
        assert not any(Path("/w").glob(f"*{unique}*"))
        assert not list(Path("/tmp").glob(f"mv*-{unique}"))


@needs_uvm
@pytest.mark.parametrize("which", ["i386", "debian"])
def test_all_tricks_in_other_roots(uvm_runner, request, scratch, sentinel, which):
    """The same tricks in the 32-bit root and in the debootstrapped one."""
    root = request.getfixturevalue(f"{which}_root")
    _res, oks, _unique = _run_tricks(uvm_runner, root, scratch, sentinel, sorted(TRICKS))
    assert len(oks) > 50


@needs_uvm
def test_all_tricks_without_the_writable_layer(uvm_runner, host_root, scratch, sentinel):
    """The tests above run with uvm's default writable layer; the same tricks
    with --no-layer (writes straight into the root) take the plain path."""
    path, token = sentinel
    unique = secrets.token_hex(4)
    script = PRELUDE + "".join(TRICKS[n] for n in sorted(TRICKS)) + "echo DONE\n"
    res = uvm_runner.run(host_root, "/bin/bash", "-c", script, "escape", str(path), unique,
                         binds=[(scratch, "/mnt")], extra=["--no-layer"])
    try:
        assert len(_outcome(res, token)) > 50
    finally:
        for leftover in host_root.joinpath("w").glob(f"*{unique}*"):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


@needs_uvm
def test_bind_is_the_only_way_to_the_sentinel(uvm_runner, host_root, sentinel):
    """Positive control: bound into the guest, the sentinel is readable."""
    path, token = sentinel
    res = uvm_runner.run(host_root, "/bin/cat", "/mnt/token", f"{path.parent}/token",
                         binds=[(path.parent, "/mnt")])
    assert res.stdout == token + "\n", res.stderr
    assert res.returncode != 0          # ... and only at its guest path


DIRFD_PROBE = r"""
import errno, os, sys
S = sys.argv[1]
sdir = os.path.basename(os.path.dirname(S))
results = []

def refused(what, fn):
    try:
        fn()
    except OSError as exc:
        results.append(f"OK refused {what}: {errno.errorcode.get(exc.errno)}")
    else:
        results.append(f"ESCAPE {what}")

def expect(what, want, fn):
    got = fn()
    results.append(f"OK {what}" if got == want else f"WRONG {what}: {got!r} != {want!r}")

root_listing = sorted(os.listdir("/"))
etc = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
mnt = os.open("/mnt", os.O_RDONLY | os.O_DIRECTORY)
os.chdir("/tmp")
up = os.open("../../../../..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=etc)
expect("openat(etc, ../../..) is /", root_listing, lambda: sorted(os.listdir(up)))
refused("openat(etc, ../../..S)", lambda: os.open("../../../../.." + S, os.O_RDONLY, dir_fd=etc))
refused("openat(top, S[1:])", lambda: os.open(S.lstrip("/"), os.O_RDONLY, dir_fd=up))
refused("stat(etc, ../..S)", lambda: os.stat("../../.." + S, dir_fd=etc))
expect("openat(mnt, ../etc/hostname)", b"uvm-guest\n",
       lambda: os.read(os.open("../etc/hostname", os.O_RDONLY, dir_fd=mnt), 100))
refused("openat(mnt, ../sentinel dir)", lambda: os.open(f"../{sdir}/token", os.O_RDONLY, dir_fd=mnt))
os.fchdir(etc)
os.chdir("../../../..")
expect("fchdir + chdir(..) stops at /", "/", os.getcwd)
expect("listing after fchdir", root_listing, lambda: sorted(os.listdir(".")))
os.fchdir(mnt)
expect("getcwd in a bind", "/mnt", os.getcwd)
os.chdir("..")
expect("chdir(..) out of a bind", "/", os.getcwd)
expect("listing above a bind", root_listing, lambda: sorted(os.listdir(".")))
print("\n".join(results))
print("DONE")
"""

RENAME_PROBE = r"""
import errno, os, sys
T = sys.argv[1]

def attempt(what, src, dst, op=os.rename):
    with open(src, "w") as f:
        f.write(what)
    try:
        op(src, dst)
    except OSError as exc:
        print(f"{what} {errno.errorcode.get(exc.errno)}")
    else:
        print(f"{what} moved")

attempt("rename", f"/mnt/a-{T}", f"/w/a-{T}")
attempt("rename-dotdot", f"/mnt/b-{T}", f"/../../../w/b-{T}")
os.symlink("/w", f"/mnt/wlink-{T}")
attempt("rename-symlink", f"/mnt/c-{T}", f"/mnt/wlink-{T}/c-{T}")
attempt("link", f"/mnt/d-{T}", f"/w/d-{T}", os.link)
os.mkdir(f"/mnt/dir-{T}")
try:
    os.rename(f"/mnt/dir-{T}", f"/w/dir-{T}")
    print("rename-dir moved")
except OSError as exc:
    print(f"rename-dir {errno.errorcode.get(exc.errno)}")
print("DONE")
"""


@needs_uvm
def test_directory_fd_opened_before_chdir(uvm_runner, host_root, scratch, sentinel):
    path, token = sentinel
    res = uvm_runner.run(host_root, "python3", "-c", DIRFD_PROBE, str(path),
                         binds=[(scratch, "/mnt")])
    assert token not in res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines and lines[-1] == "DONE", res.stdout + res.stderr
    bad = [line for line in lines if not line.startswith("OK") and line != "DONE"]
    assert not bad, "\n".join(bad)


@needs_uvm
def test_rename_and_link_across_a_bind(uvm_runner, host_root, scratch):
    """EXDEV, as natively; a file that moves anyway must stay inside the root."""
    unique = secrets.token_hex(4)
    try:
        res = uvm_runner.run(host_root, "python3", "-c", RENAME_PROBE, unique,
                             binds=[(scratch, "/mnt")])
        lines = res.stdout.splitlines()
        assert lines and lines[-1] == "DONE", res.stdout + res.stderr
        outcome = dict(line.split(" ", 1) for line in lines[:-1])
        for what, result in outcome.items():
            assert result in ("EXDEV", "moved"), f"{what}: {result}"
        for letter, what in zip("abcd", ["rename", "rename-dotdot", "rename-symlink", "link"]):
            landed = host_root / "w" / f"{letter}-{unique}"
            assert landed.exists() == (outcome[what] == "moved"), what
        # Under native chroot /mnt is a mount and every one is EXDEV; without
        # mounts the host's rename may succeed, which is fine if it stays inside.
        assert not list(Path("/w").glob(f"*{unique}")) if Path("/w").is_dir() else True
        assert not list(Path("/tmp").glob(f"*-{unique}"))
    finally:
        for leftover in host_root.joinpath("w").glob(f"*-{unique}"):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


@pytest.mark.parametrize("which", ["i386", "debian"])
def test_shell_tricks_hold_under_native_chroot_in_other_roots(request, sentinel, which):
    """The snippets work with the other roots' tools (as root, natively)."""
    from harness import UvmRunner
    root = request.getfixturevalue(f"{which}_root")
    runner = UvmRunner("root", 0, 0)
    scratch = runner.make_scratch("native")
    path, token = sentinel
    unique = secrets.token_hex(4)
    try:
        script = PRELUDE + "".join(TRICKS[n] for n in sorted(TRICKS)) + "echo DONE\n"
        res = runner.native(root, "/bin/bash", "-c", script, "escape", str(path), unique,
                            binds=[(scratch, "/mnt")])
        assert len(_outcome(res, token)) > 50
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for leftover in root.joinpath("w").glob(f"*{unique}*"):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


@pytest.mark.parametrize("mode", ["root", "user"])
def test_tricks_hold_under_native_chroot(host_root, test_user, sentinel, mode):
    """The expectations above are right: native chroot passes every trick."""
    from harness import UvmRunner
    runner = UvmRunner(mode, *((0, 0) if mode == "root" else (test_user.uid, test_user.gid)))
    scratch = runner.make_scratch("native")
    path, token = sentinel
    unique = secrets.token_hex(4)
    try:
        script = PRELUDE + "".join(TRICKS[n] for n in sorted(TRICKS)) + "echo DONE\n"
        res = runner.native(host_root, "/bin/bash", "-c", script, "escape", str(path), unique,
                            binds=[(scratch, "/mnt")])
        assert len(_outcome(res, token)) > 50
        res = runner.native(host_root, "python3", "-c", DIRFD_PROBE, str(path),
                            binds=[(scratch, "/mnt")])
        assert res.stdout.splitlines()[-1:] == ["DONE"], res.stdout + res.stderr
        assert all(line.startswith("OK") for line in res.stdout.splitlines()[:-1]), res.stdout
        res = runner.native(host_root, "python3", "-c", RENAME_PROBE, unique + "p",
                            binds=[(scratch, "/mnt")])
        assert res.stdout.split() == ["rename", "EXDEV", "rename-dotdot", "EXDEV",
                                      "rename-symlink", "EXDEV", "link", "EXDEV",
                                      "rename-dir", "EXDEV", "DONE"], res.stdout + res.stderr
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for leftover in host_root.joinpath("w").glob(f"*{unique}*"):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


# ---------------------------------------------------------------- other ABIs
#
# The kernel takes i386 system calls (int $0x80) from a 64-bit process and
# 64-bit ones (a far jump to the 64-bit code segment) from a 32-bit process;
# the seccomp filter sees each with its own architecture, and the tracer must
# read each with that ABI's numbers and registers.  x32 calls (number with
# bit 30) are refused by kernels without x32 support, and must not open
# host paths where it exists.

INT80_C = r"""#include <stdio.h>
#include <string.h>
#include <unistd.h>
static char path[4096];
static char buf[256];
static void show(const char *what, long fd) {
    printf("%s %ld", what, fd);
    if (fd >= 0) {
        long n = read((int)fd, buf, sizeof buf - 1);
        if (n > 0) { buf[n] = 0; printf(" read %s", buf); }
        close((int)fd);
    }
    printf("\n");
}
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        long r;
        strncpy(path, argv[i], sizeof path - 1);
        /* i386 ABI from a 64-bit process: open = 5, openat = 295 */
        __asm__ volatile ("int $0x80" : "=a"(r) : "a"(5L), "b"(path), "c"(0L), "d"(0L) : "memory");
        show("int80-open", r);
        __asm__ volatile ("int $0x80" : "=a"(r) : "a"(295L), "b"(-100L), "c"(path), "d"(0L) : "memory");
        show("int80-openat", r);
        /* x32 ABI: openat | __X32_SYSCALL_BIT */
        register long r10 __asm__("r10") = 0;
        __asm__ volatile ("syscall" : "=a"(r) : "a"(0x40000000L | 257L), "D"(-100L), "S"(path), "d"(0L), "r"(r10) : "rcx", "r11", "memory");
        show("x32-openat", r);
    }
    return 0;
}
"""

GATE_C = r"""/* A 32-bit program that makes 64-bit system calls through a far jump to the
   64-bit code segment ("heaven's gate"): openat(AT_FDCWD, path, O_RDONLY). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static char path[4096];
static char buf[256];
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        int r;
        strncpy(path, argv[i], sizeof path - 1);
        __asm__ volatile (
            "pushl $0x33\n\t"
            "pushl $1f\n\t"
            "lret\n\t"
            "1:\n\t"
            ".byte 0xb8\n\t.long 257\n\t"       /* mov $257, %eax (openat) */
            ".byte 0xbf\n\t.long -100\n\t"      /* mov $-100, %edi */
            ".byte 0xbe\n\t.long path\n\t"      /* mov $path, %esi */
            ".byte 0x31, 0xd2\n\t"              /* xor %edx, %edx */
            ".byte 0x0f, 0x05\n\t"              /* syscall */
            ".byte 0x6a, 0x23\n\t"              /* push $0x23 */
            ".byte 0x68\n\t.long 2f\n\t"        /* push $2f */
            ".byte 0x48, 0xcb\n\t"              /* lretq */
            "2:\n\t"
            : "=a"(r) : : "ecx", "edx", "esi", "edi", "memory");
        printf("gate-openat %d", r);
        if (r >= 0) {
            int n = read(r, buf, sizeof buf - 1);
            if (n > 0) { buf[n] = 0; printf(" read %s", buf); }
            close(r);
        }
        printf("\n");
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def abi_programs():
    """int80 (64-bit, static, non-PIE) and gate (32-bit, static, non-PIE)."""
    SCRATCH_BASE.mkdir(parents=True, exist_ok=True)
    os.chmod(SCRATCH_BASE, 0o1777)
    directory = Path(tempfile.mkdtemp(prefix="abi-", dir=SCRATCH_BASE))
    os.chmod(directory, 0o755)
    (directory / "int80.c").write_text(INT80_C)
    (directory / "gate.c").write_text(GATE_C)
    for out, flags, src in [("int80", [], "int80.c"), ("gate", ["-m32"], "gate.c")]:
        subprocess.run(["gcc", *flags, "-O1", "-static", "-no-pie", "-o",
                        str(directory / out), str(directory / src)], check=True)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _check_abi_output(res, token, calls):
    out = res.stdout + res.stderr
    assert token not in out, f"the guest read the sentinel through another ABI:\n{out}"
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines] == calls, res.stdout + res.stderr
    for line in lines:
        fields = line.split()
        if len(fields) > 2:         # "<call> <fd> read <content>"
            assert fields[3] == roots.GUEST_HOSTNAME, f"not the guest's file: {line}"


@needs_uvm
def test_i386_system_calls_from_a_64_bit_guest(uvm_runner, host_root, sentinel, abi_programs):
    """int $0x80 open/openat of /etc/hostname and of the sentinel's host path."""
    path, token = sentinel
    res = uvm_runner.run(host_root, "/mnt/int80", "/etc/hostname", str(path),
                         binds=[(abi_programs, "/mnt")])
    _check_abi_output(res, token, ["int80-open", "int80-openat", "x32-openat"] * 2)


@needs_uvm
def test_64_bit_system_calls_from_a_32_bit_guest(uvm_runner, i386_root, sentinel, abi_programs):
    path, token = sentinel
    res = uvm_runner.run(i386_root, "/mnt/gate", "/etc/hostname", str(path),
                         binds=[(abi_programs, "/mnt")])
    _check_abi_output(res, token, ["gate-openat"] * 2)


def test_abi_probes_natively(host_root, i386_root, sentinel, abi_programs):
    """Under native chroot both probes read the guest's /etc/hostname."""
    path, token = sentinel
    res = native_chroot(host_root, ["/mnt/int80", "/etc/hostname", str(path)],
                        binds=[(abi_programs, "/mnt")])
    _check_abi_output(res, token, ["int80-open", "int80-openat", "x32-openat"] * 2)
    assert res.stdout.count(f"read {roots.GUEST_HOSTNAME}") == 2
    res = native_chroot(i386_root, ["/mnt/gate", "/etc/hostname", str(path)],
                        binds=[(abi_programs, "/mnt")])
    _check_abi_output(res, token, ["gate-openat"] * 2)
    assert res.stdout.count(f"read {roots.GUEST_HOSTNAME}") == 1


# ---------------------------------------------------------------- races
#
# A path is translated while the guest is stopped, and resolved by the kernel
# after it resumes: if another guest process swaps a component of that path
# (a directory on the way, or the last component) for a symlink in between,
# the kernel must not follow it on the host.  Native chroot resolves
# everything in the kernel and has no window.

RACE_PROBE = r"""
import os, sys, time
S, base, dur, mode = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
os.makedirs(base, exist_ok=True)
d = base + "/d"
pid = os.fork()
if pid == 0:
    end = time.time() + dur
    while time.time() < end:
        try:
            if mode == "dir":        # a directory on the path <-> an absolute symlink to /
                os.mkdir(d); os.rmdir(d); os.symlink("/", d); os.unlink(d)
            elif mode == "rel":      # ... <-> a relative symlink climbing past the root
                os.mkdir(d); os.rmdir(d); os.symlink("../../../../../../../..", d); os.unlink(d)
            else:                    # the last component: a file <-> an absolute symlink to S
                                     # (named by an absolute path, or as one name below the cwd)
                with open(d, "w") as f:
                    f.write("plain\n")
                os.unlink(d); os.symlink(S, d); os.unlink(d)
        except OSError:
            pass
    os._exit(0)
hits = tries = 0
target = d if mode.startswith("last") else d + S
if mode == "last-relative":                 # one plain name below the cwd
    os.chdir(base)
    target = "d"
end = time.time() + dur
while time.time() < end:
    tries += 1
    try:
        with open(target) as f:
            data = f.read().strip()
        if data not in ("", "plain"):
            print("ESCAPE", data)
            hits += 1
            break
    except OSError:
        pass
os.waitpid(pid, 0)
print("tries", tries, "hits", hits)
"""
RACE_SECONDS = 3


def _race(run, token, path, unique, mode):
    res = run("python3", "-c", RACE_PROBE, str(path), f"/w/race-{unique}", str(RACE_SECONDS),
              mode)
    out = res.stdout + res.stderr
    assert "tries" in res.stdout, out
    assert token not in out and "ESCAPE" not in out, (
        f"a path component swapped for a symlink ({mode}) during the call let the "
        f"guest read the sentinel:\n{out}")


RACE_MODES = ["dir", "rel", "last", "last-relative"]


@needs_uvm
@pytest.mark.slow
@pytest.mark.parametrize("mode", RACE_MODES)
def test_symlink_swap_race(uvm_runner, host_root, sentinel, mode):
    path, token = sentinel
    unique = secrets.token_hex(4)
    try:
        _race(lambda *cmd: uvm_runner.run(host_root, *cmd), token, path, unique, mode)
    finally:
        shutil.rmtree(host_root / "w" / f"race-{unique}", ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("mode", RACE_MODES)
def test_symlink_swap_race_natively(host_root, sentinel, mode):
    path, token = sentinel
    unique = secrets.token_hex(4)
    try:
        _race(lambda *cmd: native_chroot(host_root, cmd), token, path, unique, mode)
    finally:
        shutil.rmtree(host_root / "w" / f"race-{unique}", ignore_errors=True)


PIN_PROBE = r"""
import os, sys, time
victim, base, dur, op = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
os.makedirs(base, exist_ok=True)
d = base + "/d"
pid = os.fork()
if pid == 0:  # the last component: a file <-> an absolute symlink to the victim
    end = time.time() + dur
    while time.time() < end:
        try:
            open(d, "w").close(); os.unlink(d); os.symlink(victim, d); os.unlink(d)
        except OSError:
            pass
    os._exit(0)
def openat2():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    how = (ctypes.c_uint64 * 3)(0, 0, 0)  # O_RDONLY, no RESOLVE_* flags
    fd = libc.syscall(437, -100, d.encode(), ctypes.byref(how), 24)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "openat2")
    with os.fdopen(fd) as f:
        if f.read() == "keep me\n":
            print("ESCAPE")
calls = {"truncate": lambda: os.truncate(d, 0), "chmod": lambda: os.chmod(d, 0o600),
         "utime": lambda: os.utime(d, (1, 1)), "openat2": openat2}
tries = done = 0
end = time.time() + dur
while time.time() < end:
    tries += 1
    try:
        calls[op](); done += 1
    except OSError:
        pass
os.waitpid(pid, 0)
print("tries", tries, "done", done)
"""


@needs_uvm
@pytest.mark.slow
@pytest.mark.parametrize("op", ["truncate", "chmod", "utime", "openat2"])
def test_symlink_swap_race_on_calls_that_always_follow(uvm_runner, host_root, op):
    """truncate, chmod and utime have no form that does not follow a final
    symlink (openat2 takes its flags from memory): a symlink raced into the
    checked name's place must not lead the call to a host file of the
    user's outside the root."""
    unique = secrets.token_hex(4)
    victim = SCRATCH_BASE / f"victim-{unique}"
    SCRATCH_BASE.mkdir(parents=True, exist_ok=True)
    victim.write_text("keep me\n")
    os.chmod(victim, 0o644)
    os.chown(victim, uvm_runner.uid, uvm_runner.gid)
    os.utime(victim, (1_000_000_000, 1_000_000_000))
    try:
        res = uvm_runner.run(host_root, "python3", "-c", PIN_PROBE, str(victim),
                             f"/w/pin-{unique}", str(RACE_SECONDS), op)
        assert "tries" in res.stdout and "ESCAPE" not in res.stdout, res.stdout + res.stderr
        assert int(res.stdout.split()[3]) > 0, res.stdout  # the call did run on the file
        st = victim.stat()
        assert (victim.read_text(), oct(st.st_mode & 0o7777), int(st.st_mtime)) == \
            ("keep me\n", "0o644", 1_000_000_000), f"{op} through a raced symlink reached the host"
    finally:
        victim.unlink()
        shutil.rmtree(host_root / "w" / f"pin-{unique}", ignore_errors=True)


UNIX_PROBE = r"""
import socket, sys
sock_path, bound = sys.argv[1], sys.argv[2]
for p in [sock_path, "/../../.." + sock_path, "/proc/self/root" + sock_path, bound]:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_UNIX, kind)
        try:
            s.connect(p)
            if kind == socket.SOCK_STREAM:
                print("connected", p, s.recv(100).decode().strip())
            else:
                print("connected-dgram", p)
        except OSError as exc:
            print("refused", p, exc.errno)
        s.close()
print("DONE")
"""


@needs_uvm
def test_unix_socket_outside_the_root(uvm_runner, host_root, sentinel):
    """connect() to a host socket by its host path fails; through a bind it works."""
    import socket
    import threading
    path, token = sentinel
    sock_path = path.parent / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    os.chmod(sock_path, 0o777)
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.sendall(token.encode() + b"\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        res = uvm_runner.run(host_root, "python3", "-c", UNIX_PROBE, str(sock_path), "/mnt/sock",
                             binds=[(path.parent, "/mnt")])
    finally:
        stop.set()
        thread.join()
        server.close()
    lines = res.stdout.splitlines()
    assert lines[-1:] == ["DONE"], res.stdout + res.stderr
    outside = [line for line in lines if str(sock_path) in line]
    assert len(outside) == 6 and all(line.startswith("refused") for line in outside), res.stdout
    assert f"connected /mnt/sock {token}" in lines     # the bind is the way in


BIND_POINT_PROBE = r"""
import os, sys
T = sys.argv[1]
for op, args in [("rename", ("/mnt", f"/w/moved-{T}")), ("rmdir", ("/mnt",)),
                 ("rename", ("/mnt/inner", f"/w/inner-{T}"))]:
    try:
        getattr(os, op)(*args)
        print(op, args[0], "done")
    except OSError as exc:
        print(op, args[0], exc.errno)
print("DONE")
"""


@needs_uvm
def test_a_bind_point_cannot_be_moved_or_removed(uvm_runner, host_root, scratch):
    """Like a mount point (EBUSY natively), a bind's guest path stays put: the
    guest must not move or delete the host directory behind it."""
    import errno
    unique = secrets.token_hex(4)
    empty = scratch / "empty"
    empty.mkdir()
    os.chmod(empty, 0o777)
    (empty / "inner").mkdir()               # an ordinary directory inside the bind
    os.chmod(empty / "inner", 0o777)
    try:
        res = uvm_runner.run(host_root, "python3", "-c", BIND_POINT_PROBE, unique,
                             binds=[(empty, "/mnt")])
        lines = res.stdout.splitlines()
        assert lines[-1:] == ["DONE"], res.stdout + res.stderr
        assert empty.is_dir(), f"the bind's host directory was moved or removed: {lines}"
        assert lines[0] == f"rename /mnt {errno.EBUSY}", lines
        assert lines[1] == f"rmdir /mnt {errno.EBUSY}", lines
        assert lines[2] == "rename /mnt/inner done" or lines[2].endswith(str(errno.EXDEV)), lines
    finally:
        for leftover in host_root.joinpath("w").glob(f"*-{unique}"):
            shutil.rmtree(leftover, ignore_errors=True)


def test_a_bind_point_natively(host_root, scratch_root):
    """The native baseline of the test above: EBUSY for the mount point itself."""
    import errno
    empty = scratch_root
    (empty / "inner").mkdir()
    res = native_chroot(host_root, ["python3", "-c", BIND_POINT_PROBE, "native"],
                        binds=[(empty, "/mnt")])
    lines = res.stdout.splitlines()
    assert lines[:2] == [f"rename /mnt {errno.EBUSY}", f"rmdir /mnt {errno.EBUSY}"], res.stdout + res.stderr
    assert lines[2] == f"rename /mnt/inner {errno.EXDEV}"
    assert empty.is_dir()


@pytest.fixture
def scratch_root():
    from harness import UvmRunner
    path = UvmRunner("root", 0, 0).make_scratch("native")
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- the tracer
#
# The first guest process is a child of the tracer (uvm) and runs with the
# same uid: unless uvm prevents it, the guest can write the tracer's memory
# through /proc/PID/mem (writes there ignore page protections) or read and
# write it with process_vm_readv/writev, or take its descriptors with
# pidfd_getfd, and so run anything with uvm's view of the host.

TRACER_PROBE = r"""
import ctypes, os
ppid = os.getppid()
print("parent", open(f"/proc/{ppid}/comm").read().strip())
def attempt(what, fn):
    try:
        r = fn()
        print(what, "ok" if r is None or r >= 0 else f"refused {ctypes.get_errno()}")
    except OSError as exc:
        print(what, "refused", exc.errno)
attempt("mem-write", lambda: open(f"/proc/{ppid}/mem", "r+b", buffering=0).close())
attempt("mem-read", lambda: open(f"/proc/{ppid}/mem", "rb", buffering=0).close())
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
try:
    start = int(open(f"/proc/{ppid}/maps").readline().split("-")[0], 16)
except (OSError, ValueError):
    start = 0x400000
buf = ctypes.create_string_buffer(16)
local, remote = iovec(ctypes.cast(buf, ctypes.c_void_p), 16), iovec(start, 16)
attempt("process_vm_readv", lambda: libc.process_vm_readv(
    ppid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
pidfd = libc.syscall(434, ppid, 0)          # pidfd_open
attempt("pidfd_getfd", lambda: -1 if pidfd < 0 else libc.syscall(438, pidfd, 0, 0))
print("DONE")
"""


@needs_uvm
def test_guest_cannot_reach_into_the_tracer(uvm_runner, host_root):
    res = uvm_runner.run(host_root, "python3", "-c", TRACER_PROBE)
    lines = res.stdout.splitlines()
    assert lines[-1:] == ["DONE"], res.stdout + res.stderr
    reached = [line for line in lines[1:-1] if line.endswith(" ok")]
    assert not reached, f"the guest ({uvm_runner.mode}) reaches the tracer {lines[0]}: {reached}"


UNTRACED_PROBE = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
CLONE_UNTRACED, SIGCHLD = 0x00800000, 17
pid = libc.syscall(56, CLONE_UNTRACED | SIGCHLD, 0, 0, 0, 0)     # clone, fork-like
if pid == 0:
    out = []
    for p in [sys.argv[1], "/etc/hostname"]:
        try:
            fd = os.open(p, os.O_RDONLY)
            out.append("read " + os.read(fd, 200).decode().strip())
        except OSError as exc:
            out.append(f"refused {exc.errno}")
    os.write(1, ("\n".join(out) + "\n").encode())
    os._exit(0)
os.waitpid(pid, 0)
print("DONE")
"""


@needs_uvm
def test_untraced_child_gets_nothing(uvm_runner, host_root, sentinel):
    """clone(CLONE_UNTRACED) escapes the tracer's automatic attach; the child
    keeps the seccomp filter, whose trapped calls then fail without a tracer."""
    path, token = sentinel
    res = uvm_runner.run(host_root, "python3", "-c", UNTRACED_PROBE, str(path))
    out = res.stdout + res.stderr
    assert token not in out, out
    lines = res.stdout.splitlines()
    assert lines[-1:] == ["DONE"], out
    for line in lines[:-1]:
        assert line.startswith("refused") or line == f"read {roots.GUEST_HOSTNAME}", out


PLAIN_WALK_PROBE = r"""
import os, sys
rel = sys.argv[1].lstrip("/").split("/")
def walk(start, names):
    fd = os.open(start, os.O_RDONLY | os.O_DIRECTORY)
    for name in names:
        fd = os.open(name, os.O_RDONLY, dir_fd=fd)
    return fd
root_listing = sorted(os.listdir("/"))
for start, names in [("/proc/self", ["root"]), ("/proc", ["self", "root"]),
                     ("/proc", [str(os.getppid()), "root"]), ("/proc", [str(os.getpid()), "cwd"]),
                     ("/proc/self", ["cwd"]), ("/", [".."])]:
    try:
        fd = walk(start, names)
    except OSError as exc:
        print("refused", start, names, exc.errno)
        continue
    try:
        listing = sorted(os.listdir(fd))
        print("same-as-/" if listing == root_listing else f"OTHER {listing[:8]}", start, names)
    except OSError as exc:
        print("unlistable", start, names, exc.errno)
    try:
        t = walk(start, names + rel)
        print("ESCAPE", start, names, os.read(t, 200))
    except OSError as exc:
        print("refused-sentinel", start, names, exc.errno)
print("DONE")
"""


@needs_uvm
def test_plain_name_walk_through_proc_magic_links(uvm_runner, host_root, sentinel):
    """openat one name at a time from /proc: self -> root (or the tracer's
    root, or cwd) is the guest's /, and the sentinel stays out of reach."""
    path, token = sentinel
    res = uvm_runner.run(host_root, "python3", "-c", PLAIN_WALK_PROBE, str(path), cwd="/")
    out = res.stdout + res.stderr
    assert token not in out, out
    lines = res.stdout.splitlines()
    assert lines[-1:] == ["DONE"], out
    bad = [line for line in lines if line.startswith(("ESCAPE", "OTHER"))]
    assert not bad, out

