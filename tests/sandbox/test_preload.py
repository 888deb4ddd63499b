"""The library uvm preloads into programs that call realpath() or fstat()
(``native/uvm_preload.c``): one request to the tracer instead of a readlink
per component, the plain fstat system call instead of a stopped
newfstatat; the answers glibc gives natively, for 64- and 32-bit guests,
as root and as a user; invisible to ldd."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("uvm_available")]

# Both probes end with "preloaded 1" when the library is in their memory.
SAY_PRELOADED_C = r"""
#include <stdio.h>
#include <string.h>

static void say_preloaded(void)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    int preloaded = 0;
    while (maps && fgets(line, sizeof line, maps))
        preloaded |= strstr(line, "uvm_preload") != NULL;
    printf("preloaded %d\n", preloaded);
}
"""

REALPATH_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
""" + SAY_PRELOADED_C + r"""

int main(int argc, char **argv)
{
    char buf[PATH_MAX];
    for (int round = 0; round < 2; round++) /* the second: from the C fast path */
        for (int i = 1; i < argc; i++) {
            char *r = round ? canonicalize_file_name(argv[i]) : realpath(argv[i], buf);
            printf("%s -> %s\n", argv[i], r ? r : strerror(errno));
            if (round && r)
                free(r);
        }
    say_preloaded();
    return 0;
}
"""

PATHS = ["/", "/etc", "/mnt", "/mnt/f", "/mnt/d", "/mnt/d/", "/mnt/d/g", "/mnt/abs",
         "/mnt/abs/hostname", "/mnt/rel", "/mnt/up/g", "/mnt/loop1", "/mnt/dangling",
         "/mnt/nope", "/mnt/nope/x", "/mnt/f/x", "/mnt/f/", "/mnt/shut/x", "/mnt/./d/../f",
         "/mnt//d", "f", "d/g", "../mnt/f", ".", "..", "", "/../../etc"]


@pytest.fixture
def probe_dir(uvm_runner, scratch):
    """A tree of every kind of path realpath() meets, bound at /mnt."""
    (scratch / "d").mkdir()
    (scratch / "f").write_text("f\n")
    (scratch / "d/g").write_text("g\n")
    for name, target in [("abs", "/etc"), ("rel", "d/g"), ("up", "../mnt/d"),
                         ("loop1", "loop2"), ("loop2", "loop1"), ("dangling", "nope")]:
        os.symlink(target, scratch / name)
    (scratch / "shut").mkdir(mode=0)
    if not uvm_runner.is_root:
        for path in [scratch / "d", scratch / "f", scratch / "d/g", scratch / "shut"]:
            os.chown(path, uvm_runner.uid, uvm_runner.gid)
    yield scratch
    os.chmod(scratch / "shut", 0o700)


def _build(root_kind: str, where) -> None:
    subprocess.run(["gcc", "-O1", "-Wall", *(["-m32"] if root_kind == "32" else []),
                    "-o", str(where / "rp"), "-x", "c", "-"], input=REALPATH_C, text=True,
                   check=True)


@pytest.mark.parametrize("bits", ["64", "32"])
def test_realpath_answers_as_natively(uvm_runner, request, probe_dir, bits):
    root = request.getfixturevalue("host_root" if bits == "64" else "i386_root")
    _build(bits, probe_dir)
    binds = [(probe_dir, "/mnt")]
    res = uvm_runner.run(root, "/mnt/rp", *PATHS, binds=binds, cwd="/mnt")
    native = uvm_runner.native(root, "/mnt/rp", *PATHS, binds=binds, cwd="/mnt")
    assert res.returncode == 0 and native.returncode == 0, res.stderr + native.stderr
    *answers, preloaded = res.stdout.splitlines()
    *expected, _ = native.stdout.splitlines()
    assert answers == expected
    assert preloaded == "preloaded 1"  # the answers came through the library
    assert "/mnt/abs/hostname -> /etc/hostname" in answers
    assert "/mnt/loop1 -> Too many levels of symbolic links" in answers


FSTAT_C = r"""
#define _FILE_OFFSET_BITS 64
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
""" + SAY_PRELOADED_C + r"""

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY);
        struct stat a, b;
        if (fd < 0 || fstat(fd, &a) < 0 || stat(argv[i], &b) < 0) {
            printf("%s: %s\n", argv[i], strerror(errno));
            continue;
        }
        printf("%s: mode %o size %lld links %ld same %d\n", argv[i], (unsigned)a.st_mode,
               (long long)a.st_size, (long)a.st_nlink,
               a.st_ino == b.st_ino && a.st_dev == b.st_dev && a.st_mtime == b.st_mtime &&
               a.st_uid == b.st_uid && a.st_blocks == b.st_blocks);
        close(fd);
    }
    struct stat c;
    int bad = fstat(-1, &c);
    printf("bad fd: %d %s\n", bad, strerror(errno));
    say_preloaded();
    return 0;
}
"""


@pytest.mark.parametrize("bits", ["64", "32"])
def test_fstat_answers_as_natively(uvm_runner, request, probe_dir, bits):
    """fstat() through the library (the plain fstat system call, no stop)
    gives what stat() and a native run give, for a program that does not
    call realpath()."""
    root = request.getfixturevalue("host_root" if bits == "64" else "i386_root")
    subprocess.run(["gcc", "-O1", "-Wall", *(["-m32"] if bits == "32" else []),
                    "-o", str(probe_dir / "fs"), "-x", "c", "-"], input=FSTAT_C, text=True,
                   check=True)
    paths = ["/mnt/f", "/mnt/d", "/mnt/rel", "/etc/hostname", "/", "/dev/null", "/mnt/nope"]
    binds = [(probe_dir, "/mnt")]
    res = uvm_runner.run(root, "/mnt/fs", *paths, binds=binds)
    native = uvm_runner.native(root, "/mnt/fs", *paths, binds=binds)
    assert res.returncode == 0 and native.returncode == 0, res.stderr + native.stderr
    *answers, preloaded = res.stdout.splitlines()
    assert answers == native.stdout.splitlines()[:-1]
    assert all(" same 1" in line for line in answers if "mode" in line)
    assert "bad fd: -1 Bad file descriptor" in answers
    assert preloaded == "preloaded 1"


def test_without_the_library_and_for_ldd(uvm_runner, host_root, probe_dir):
    """UVM_PRELOAD=0 gives glibc's own realpath() (through the tracer) the
    same answers; the loader's own listing (ldd, LD_TRACE_LOADED_OBJECTS)
    never shows the library."""
    _build("64", probe_dir)
    binds = [(probe_dir, "/mnt")]
    env = dict(os.environ, UVM_PRELOAD="0")
    plain = uvm_runner.run(host_root, "/mnt/rp", *PATHS, binds=binds, cwd="/mnt", env=env)
    res = uvm_runner.run(host_root, "/mnt/rp", *PATHS, binds=binds, cwd="/mnt")
    assert res.stdout.splitlines()[:-1] == plain.stdout.splitlines()[:-1]
    assert plain.stdout.splitlines()[-1] == "preloaded 0"
    listing = "LD_TRACE_LOADED_OBJECTS=1 /mnt/rp; ldd /mnt/rp"

    def libraries(out: str):
        return [re.sub(r"\s*\(0x[0-9a-f]+\)", "", line).strip() for line in out.splitlines()]

    traced = uvm_runner.run(host_root, "/bin/sh", "-c", listing, binds=binds)
    native = uvm_runner.native(host_root, "/bin/sh", "-c", listing, binds=binds)
    assert traced.returncode == 0, traced.stderr
    assert libraries(traced.stdout) == libraries(native.stdout)
    assert not any("proc" in line for line in libraries(traced.stdout))


def test_the_library_name_opens_read_only(uvm_runner, host_root):
    """The name the loader opens the library by, a descriptor of uvm's
    (/proc/<uvm>/fd/N), is let through for reading only: python3 imports
    realpath, so it gets the library, and finds that name among its
    parent's descriptors; writing through it is refused like any other."""
    code = r"""
import errno, os
readable = []
for fd in range(3, 64):
    name = f'/proc/{os.getppid()}/fd/{fd}'
    try:
        with open(name, 'rb') as f:
            readable.append(f.read(4))
    except OSError:
        continue
    for how in (os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
        try:
            os.close(os.open(name, how))
            print('written', how)
        except OSError as exc:
            print('refused', errno.errorcode[exc.errno])
print(readable)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.realpath.restype = ctypes.c_char_p
for fd in range(3, 8):  # realpath() does not name uvm's descriptors either
    if libc.realpath(f'/proc/{os.getppid()}/fd/{fd}'.encode(), None) is not None:
        print('named', fd)
"""
    res = uvm_runner.run(host_root, "python3", "-c", code)
    assert res.returncode == 0, res.stderr
    assert "named" not in res.stdout
    *refusals, readable = res.stdout.splitlines()
    # the library (64- and 32-bit), and nothing else of uvm's
    assert readable in ("[b'\\x7fELF']", "[b'\\x7fELF', b'\\x7fELF']"), res.stdout
    assert refusals == ["refused EACCES"] * 2 * readable.count("ELF")
