"""The library uvm preloads into guest programs (``native/uvm_preload.c``):
read-only path calls (open, stat, access, readlink) and realpath() served
in the guest from the tracer's table, with no stop; the plain fstat system
call instead of a stopped newfstatat; the answers glibc gives natively, for
64- and 32-bit guests, as root and as a user; invisible to ldd; its gate
lets nothing but reads through."""

from __future__ import annotations

import json
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

PATHS = ["/", "/etc", "/mnt", "/mnt/f", "/mnt/d", "/mnt/d/", "/mnt/d/g", "/mnt/abs", "/mnt/same",
         "/mnt/abs/hostname", "/mnt/rel", "/mnt/up/g", "/mnt/loop1", "/mnt/dangling",
         "/mnt/nope", "/mnt/nope/x", "/mnt/f/x", "/mnt/f/", "/mnt/shut/x", "/mnt/./d/../f",
         "/mnt//d", "f", "d/g", "../mnt/f", ".", "..", "", "/../../etc",
         # ".." after a directory, a symlink, a file, a missing or shut name
         "/mnt/d/../d/g", "/mnt/d/..", "/mnt/abs/../mnt/f", "/mnt/up/../f", "/mnt/f/../f",
         "/mnt/d/g/..", "/mnt/nope/../f", "/mnt/shut/..", "/mnt/shut/", "/mnt/shut/.",
         "/mnt/loop1/../f", "/mnt/d/./../../.."]


@pytest.fixture
def probe_dir(uvm_runner, scratch):
    """A tree of every kind of path realpath() meets, bound at /mnt."""
    (scratch / "d").mkdir()
    (scratch / "f").write_text("f\n")
    (scratch / "d/g").write_text("g\n")
    os.setxattr(scratch / "d/g", "user.uvm", b"xg")  # what getxattr finds
    for name, target in [("abs", "/etc"), ("rel", "d/g"), ("up", "../mnt/d"), ("same", "f"),
                         ("loop1", "loop2"), ("loop2", "loop1"), ("dangling", "nope")]:
        os.symlink(target, scratch / name)
    (scratch / "shut").mkdir(mode=0)
    if not uvm_runner.is_root:
        for path in [scratch / "d", scratch / "f", scratch / "d/g", scratch / "shut"]:
            os.chown(path, uvm_runner.uid, uvm_runner.gid)
    yield scratch
    os.chmod(scratch / "shut", 0o700)


def _build(source: str, where, name: str, bits: str = "64") -> None:
    """Compile C ``source`` into ``where/name`` for the guest's ABI."""
    subprocess.run(["gcc", "-O1", "-Wall", *(["-m32"] if bits == "32" else []),
                    "-o", str(where / name), "-x", "c", "-"], input=source, text=True,
                   check=True)


def _probe_paths(uvm_runner, request, probe_dir, bits: str, source: str) -> list:
    """The probe built from ``source`` asked about every path of PATHS
    under uvm and natively: uvm's answers, once they equal the native ones
    and came through the library."""
    root = request.getfixturevalue("host_root" if bits == "64" else "i386_root")
    _build(source, probe_dir, "probe", bits)
    binds = [(probe_dir, "/mnt")]
    res = uvm_runner.run(root, "/mnt/probe", *PATHS, binds=binds, cwd="/mnt")
    native = uvm_runner.native(root, "/mnt/probe", *PATHS, binds=binds, cwd="/mnt")
    assert res.returncode == 0 and native.returncode == 0, res.stderr + native.stderr
    *answers, preloaded = res.stdout.splitlines()
    assert answers == native.stdout.splitlines()[:-1]
    assert preloaded == "preloaded 1"
    return answers


@pytest.mark.parametrize("bits", ["64", "32"])
def test_realpath_answers_as_natively(uvm_runner, request, probe_dir, bits):
    answers = _probe_paths(uvm_runner, request, probe_dir, bits, REALPATH_C)
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
    _build(FSTAT_C, probe_dir, "fs", bits)
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
    _build(REALPATH_C, probe_dir, "rp")
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


PATH_CALLS_C = r"""
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
""" + SAY_PRELOADED_C + r"""

static void said(const char *call, const char *path, int ok, const char *what)
{
    printf("%s %s: %s\n", call, path, ok ? what : strerror(errno));
}

static void described(const char *call, const char *path, int ok, const struct stat *st)
{
    char what[160];
    int dir = S_ISDIR(st->st_mode); /* a directory may be the layer's copy */
    snprintf(what, sizeof what, "mode %o size %lld links %ld ino %llu dev %llx mtime %lld.%09ld",
             (unsigned)st->st_mode, dir ? 0LL : (long long)st->st_size, (long)st->st_nlink,
             dir ? 0ULL : (unsigned long long)st->st_ino,
             dir ? 0ULL : (unsigned long long)st->st_dev, (long long)st->st_mtim.tv_sec,
             (long)st->st_mtim.tv_nsec);
    said(call, path, ok, what);
}

static void opened(const char *call, const char *path, int fd)
{
    char head[64] = "";
    if (fd >= 0) {
        ssize_t n = read(fd, head, 2);
        head[n > 0 ? n : 0] = '\0';
        if (n < 0)
            snprintf(head, sizeof head, "read: %s", strerror(errno));
        close(fd);
    }
    said(call, path, fd >= 0, head);
}

int main(int argc, char **argv)
{
    int mnt = open("/mnt", O_RDONLY | O_DIRECTORY);
    for (int round = 0; round < 2; round++) /* the second: from a warm table */
        for (int i = 1; i < argc; i++) {
            const char *p = argv[i];
            struct stat st;
            char target[256];
            described("stat", p, stat(p, &st) == 0, &st);
            described("lstat", p, lstat(p, &st) == 0, &st);
            described("fstatat-mnt", p, fstatat(mnt, p, &st, 0) == 0, &st);
            opened("open", p, open(p, O_RDONLY));
            opened("open-nofollow", p, open(p, O_RDONLY | O_NOFOLLOW));
            opened("openat-mnt", p, openat(mnt, p, O_RDONLY));
            said("access", p, access(p, R_OK) == 0, "ok");
            FILE *f = fopen(p, "re");
            char line[8] = "";
            said("fopen", p, f != NULL, f && fgets(line, 3, f) ? line : "");
            if (f)
                fclose(f);
            ssize_t n = readlink(p, target, sizeof target - 1);
            target[n > 0 ? n : 0] = '\0';
            said("readlink", p, n >= 0, target);
            struct statx sx;
            st.st_mode = 0;
            for (int follow = 0; follow < 2; follow++)
                if (statx(follow ? mnt : AT_FDCWD, p, follow ? 0 : AT_SYMLINK_NOFOLLOW,
                          STATX_BASIC_STATS, &sx) == 0) {
                    st.st_mode = sx.stx_mode;
                    st.st_size = (off_t)sx.stx_size;
                    st.st_nlink = sx.stx_nlink;
                    st.st_ino = sx.stx_ino;
                    st.st_dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
                    st.st_mtim.tv_sec = sx.stx_mtime.tv_sec;
                    st.st_mtim.tv_nsec = sx.stx_mtime.tv_nsec;
                    described(follow ? "statx-mnt" : "statx-nofollow", p, 1, &st);
                } else
                    said(follow ? "statx-mnt" : "statx-nofollow", p, 0, "");
            n = getxattr(p, "user.uvm", target, sizeof target - 1);
            target[n > 0 ? n : 0] = '\0';
            said("getxattr", p, n >= 0, target);
            n = lgetxattr(p, "user.uvm", target, sizeof target - 1);
            target[n > 0 ? n : 0] = '\0';
            said("lgetxattr", p, n >= 0, target);
        }
    say_preloaded();
    return 0;
}
"""


@pytest.mark.parametrize("bits", ["64", "32", "32-time64"])
def test_path_calls_answer_as_natively(uvm_runner, request, probe_dir, bits):
    """stat, lstat, fstatat, statx, open (following or not), openat,
    access, readlink, getxattr, lgetxattr and fopen for reading, which the
    library serves without a stop once the tracer has resolved a directory,
    give what they give natively on every kind of path: symlinks absolute,
    relative, looping and dangling, missing names, ENOTDIR, an unsearchable
    directory, relative names, binds.  Also a 32-bit program built with
    64-bit time (glibc's stat is then __stat64_time64)."""
    source = PATH_CALLS_C
    if bits == "32-time64":
        bits, source = "32", "#define _TIME_BITS 64\n" + PATH_CALLS_C
    answers = _probe_paths(uvm_runner, request, probe_dir, bits, source)
    assert "readlink /mnt/abs: /etc" in answers
    root = request.getfixturevalue("host_root" if bits == "64" else "i386_root")
    assert "open /mnt/abs/hostname: " + (root / "etc/hostname").read_text()[:2] in answers


STAT_LOOP_C = r"""
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

int main(void)
{
    struct stat st;
    struct statx sx;
    char value[8];
    long seen = 0;
    for (int i = 0; i < 1000; i++) {
        seen += stat("/mnt/d/g", &st) == 0 && st.st_size == 2;
        int fd = open("/etc/hostname", O_RDONLY);
        seen += fd >= 0;
        close(fd);
        seen += access("/mnt/f", R_OK) == 0;
        seen += statx(AT_FDCWD, "/mnt/f", 0, STATX_SIZE, &sx) == 0 && sx.stx_size == 2;
        seen += lgetxattr("/mnt/d/g", "user.uvm", value, sizeof value) == 2;
    }
    printf("%ld\n", seen);
    return 0;
}
"""


def test_served_calls_take_no_stop(uvm_runner, host_root, probe_dir):
    """5,000 path calls (stat, open, access, statx, lgetxattr) in
    directories the tracer has resolved cost a handful of stops with the
    library, one stop each without it (UVM_PRELOAD=0), with the same
    answers."""
    _build(STAT_LOOP_C, probe_dir, "loop")
    stops = {}
    for preload in ("1", "0"):
        stats = uvm_runner.make_scratch("stats") / "stats.json"
        res = uvm_runner.run(host_root, "/mnt/loop", binds=[(probe_dir, "/mnt")], stats=stats,
                             env=dict(os.environ, UVM_PRELOAD=preload))
        assert (res.returncode, res.stdout) == (0, "5000\n"), res.stderr
        stops[preload] = json.loads(stats.read_text())["stops"]
    assert stops["1"] < 100 < 5000 <= stops["0"], stops


GATE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The key, as a guest that means harm finds it: in the library's
 * configuration, mapped in its own memory. */
static unsigned long long find_key(void)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    unsigned long lo, hi;
    while (maps && fgets(line, sizeof line, maps))
        if (strstr(line, "uvm_preload") && sscanf(line, "%lx-%lx", &lo, &hi) == 2)
            for (char *p = (char *)lo; p + 24 <= (char *)hi; p++)
                if (memcmp(p, "uvm-preload-cfg1", 16) == 0) {
                    unsigned long long key;
                    memcpy(&key, p + 16, 8);
                    if (key)
                        return key;
                }
    return 0;
}

int main(int argc, char **argv)
{
    unsigned long long key = find_key();
    printf("key %s, secret %s\n", key ? "found" : "missing",
           access(argv[2], R_OK) == 0 ? "there" : strerror(errno)); /* the library is loaded */
    /* with the key, and a wrong one: writes and creations are the tracer's */
    unsigned long long keys[2] = {key, key ^ 1};
    for (int i = 0; i < 2; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s.%d", argv[1], i);
        long fd = syscall(SYS_openat, AT_FDCWD, name, O_WRONLY | O_CREAT, 0644, 0L, keys[i]);
        printf("created %d: %s\n", i, fd >= 0 ? "yes" : strerror(errno));
    }
    /* without the key, a read goes through the tracer as always */
    long fd = syscall(SYS_openat, AT_FDCWD, argv[2], O_RDONLY, 0, 0L, key ^ 1);
    char buf[16] = "";
    printf("read: %s\n", fd >= 0 && read((int)fd, buf, 11) > 0 ? buf : strerror(errno));
    return 0;
}
"""


def test_the_gate_lets_only_reads_through(uvm_runner, host_root, probe_dir):
    """The filter lets the library's calls through by the run's key, which a
    guest can find in its own memory: with it, an openat that writes or
    creates still stops and is translated (the file appears in the guest's
    directory, not at the same path on the host); with a wrong key every
    call is translated as always."""
    _build(GATE_C, probe_dir, "gate")
    (probe_dir / "secret").write_text("guest's own\n")
    res = uvm_runner.run(host_root, "/mnt/gate", "/mnt/made", "/mnt/secret",
                         binds=[(probe_dir, "/mnt")])
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["key found, secret there", "created 0: yes",
                                       "created 1: yes", "read: guest's own"]
    assert (probe_dir / "made.0").exists() and (probe_dir / "made.1").exists()
    assert not os.path.exists("/mnt/made.0")


def test_a_guest_that_drops_root(uvm_runner, test_user, debian_root):
    """Under uvm run as root, a guest that becomes another user (setpriv,
    as su or a daemon would) loses the capability to reach uvm's
    descriptors at its next exec: its programs start without the library
    and their paths are translated without uvm's descriptors, with the
    answers a native run gives.  (Run as the user, the same command keeps
    its uid.)"""
    code = ("import os; print(os.getuid(), open('/etc/hostname').read().strip(), "
            "os.path.realpath('/usr/bin/python3'), sorted(os.listdir('/usr/lib'))[:3])")
    groups = "--clear-groups" if uvm_runner.is_root else "--keep-groups"
    cmd = ["setpriv", f"--reuid={test_user.uid}", f"--regid={test_user.gid}", groups,
           "--", "python3", "-c", code]
    res = uvm_runner.run(debian_root, *cmd)
    native = uvm_runner.native(debian_root, *cmd)
    assert native.returncode == 0, native.stderr
    assert (res.returncode, res.stdout, res.stderr) == (0, native.stdout, "")
