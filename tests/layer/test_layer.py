"""The writable layer: every write operation against lower files, layer
files and deleted entries; merged listings; a heavy write workload; the
root never modified.  As root and as the unprivileged user."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sandbox"))
from harness import guest_env  # noqa: E402
from layerlib import fingerprint  # noqa: E402


def ok(res):
    assert res.returncode == 0, f"rc={res.returncode}\nstdout:{res.stdout}\nstderr:{res.stderr}"
    return res.stdout


def results(out: str) -> dict:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


WRITE_OPS = r'''
import errno, os, stat
def r(name, fn):
    try:
        v = fn()
    except OSError as e:
        v = errno.errorcode[e.errno]
    print(f"{name}={v}")
def rd(p):
    with open(p) as f: return f.read().strip()
# lower files
r("write", lambda: (open("/etc/hostname", "w").write("changed\n"), rd("/etc/hostname"))[1])
r("append", lambda: (open("/etc/hosts", "a").write("+more"), rd("/etc/hosts").endswith("+more"))[1])
r("truncate", lambda: (os.truncate("/etc/gai.conf", 3), os.stat("/etc/gai.conf").st_size)[1])
r("chmod", lambda: (os.chmod("/etc/bindresvport.blacklist", 0o600), oct(os.stat("/etc/bindresvport.blacklist").st_mode & 0o777))[1])
r("utime", lambda: (os.utime("/etc/passwd", (1000000, 2000000)), os.stat("/etc/passwd").st_mtime)[1])
r("fchmod", lambda: (os.fchmod(os.open("/etc/nsswitch.conf", os.O_RDONLY), 0o640), oct(os.stat("/etc/nsswitch.conf").st_mode & 0o777))[1])
r("futimens", lambda: (os.utime(os.open("/etc/ld.so.cache", os.O_RDONLY), ns=(10**9, 3 * 10**9)), os.stat("/etc/ld.so.cache").st_mtime)[1])
r("fchown", lambda: (os.chown(os.open("/etc/skel", os.O_RDONLY), os.getuid(), os.getgid()), os.stat("/etc/skel").st_uid == os.getuid())[1])
r("rename", lambda: (os.rename("/etc/gprofng.rc", "/etc/host.conf2"), os.path.exists("/etc/gprofng.rc"), rd("/etc/host.conf2") != "")[1:])
r("unlink", lambda: (os.unlink("/etc/ld.so.conf"), "ld.so.conf" in os.listdir("/etc"))[1])
r("link", lambda: (os.link("/etc/group", "/etc/group.hard"), os.stat("/etc/group").st_ino == os.stat("/etc/group.hard").st_ino, os.stat("/etc/group").st_nlink)[1:])
r("link_write", lambda: (open("/etc/group.hard", "a").write("x:x:1:\n"), rd("/etc/group").endswith("x:x:1:"))[1])
r("symlink", lambda: (os.symlink("/etc/group", "/etc/grp-link"), os.readlink("/etc/grp-link"), rd("/etc/grp-link")[:4])[1:])
r("mkdir_lower", lambda: (os.mkdir("/usr/share/newdir"), os.path.isdir("/usr/share/newdir"))[1])
r("rmdir_lower_nonempty", lambda: os.rmdir("/etc/default"))
r("rmdir_lower_empty", lambda: (os.rmdir("/mnt"), os.path.exists("/mnt"))[1])
r("fifo", lambda: (os.mkfifo("/var/fifo"), stat.S_ISFIFO(os.stat("/var/fifo").st_mode))[1])
r("exists_excl", lambda: os.open("/etc/passwd", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
r("mkdir_exists", lambda: os.mkdir("/etc"))
# renaming a lower directory (and reading below it)
r("rename_dir", lambda: (os.rename("/usr/share/python3", "/usr/share/doc2"), os.path.exists("/usr/share/python3"), len(os.listdir("/usr/share/doc2")) == 3)[1:])
r("below_renamed", lambda: (os.chdir("/usr/share/doc2"), os.getcwd(), sorted(os.listdir("."))[:1] == sorted(os.listdir("/usr/share/doc2"))[:1])[1:])
os.chdir("/")
# layer files
r("layer_file", lambda: (open("/var/new.txt", "w").write("a"), os.rename("/var/new.txt", "/var/new2.txt"), rd("/var/new2.txt"))[2])
r("layer_link", lambda: (os.link("/var/new2.txt", "/var/new3.txt"), os.stat("/var/new3.txt").st_nlink)[1])
r("layer_unlink", lambda: (os.unlink("/var/new2.txt"), rd("/var/new3.txt"))[1])
r("layer_dir", lambda: (os.makedirs("/opt2/a/b"), os.rmdir("/opt2/a/b"), os.listdir("/opt2/a"))[2])
r("layer_rmdir_nonempty", lambda: os.rmdir("/opt2"))
# deleted entries
r("deleted_stat", lambda: os.stat("/etc/gprofng.rc"))
r("recreate", lambda: (open("/etc/gprofng.rc", "w").write("again"), rd("/etc/gprofng.rc"))[1])
r("rm_tree_then_mkdir", lambda: (os.system("rm -rf /etc/default"), os.mkdir("/etc/default"), os.listdir("/etc/default"))[2])
r("rename_over_deleted", lambda: (os.unlink("/etc/hostname"), os.rename("/etc/gprofng.rc", "/etc/hostname"), rd("/etc/hostname"))[2])
# listing: merged, no duplicates, deletions hidden
names = os.listdir("/etc")
r("etc_dups", lambda: len(names) - len(set(names)))
r("etc_has", lambda: sorted(n for n in ("group.hard", "host.conf2", "grp-link", "gprofng.rc", "ld.so.conf") if n in names))
r("exec_lower", lambda: os.system("/bin/true"))
'''


def test_write_operations(uvm_runner, own_root):
    before = fingerprint(own_root)
    out = ok(uvm_runner.run(own_root, "python3", "-c", WRITE_OPS))
    got = results(out)
    expect = {
        "write": "changed", "append": "True", "truncate": "3", "chmod": "0o600",
        "utime": "2000000.0", "fchmod": "0o640", "futimens": "3.0", "fchown": "True", "rename": "(False, True)", "unlink": "False",
        "link": "(True, 2)", "link_write": "True", "symlink": "('/etc/group', 'root')",
        "mkdir_lower": "True", "rmdir_lower_nonempty": "ENOTEMPTY", "rmdir_lower_empty": "False",
        "fifo": "True", "exists_excl": "EEXIST", "mkdir_exists": "EEXIST",
        "rename_dir": "(False, True)", "below_renamed": "('/usr/share/doc2', True)",
        "layer_file": "a", "layer_link": "2", "layer_unlink": "a", "layer_dir": "[]",
        "layer_rmdir_nonempty": "ENOTEMPTY", "deleted_stat": "ENOENT", "recreate": "again",
        "rm_tree_then_mkdir": "[]", "rename_over_deleted": "again", "etc_dups": "0",
        "etc_has": "['group.hard', 'grp-link', 'host.conf2']", "exec_lower": "0",
    }
    assert got == expect, out
    assert fingerprint(own_root) == before


def test_listing_thousands(uvm_runner, own_root):
    script = (
        "cd /many && rm f0*; for i in $(seq 1 500); do echo $i > n$i; done; "
        "echo x > f1500; mv f1999 g1999; ls | wc -l; ls | sort | uniq -d | wc -l; "
        "ls | grep -c '^f0'; cat f1500; echo $(cat f2999); ls /many | grep -c '^n'"
    )
    before = fingerprint(own_root)
    out = ok(uvm_runner.run(own_root, "sh", "-c", script)).split()
    # 3000 - 1000 (f0xxx) + 500 new; f1500 overwritten; f1999 renamed
    assert out == ["2500", "0", "0", "x", "2999", "500"]
    assert fingerprint(own_root) == before


def test_root_unchanged_by_hostile_workload(uvm_runner, own_root):
    before = fingerprint(own_root)
    script = (
        "chmod -R 777 /etc /var 2>/dev/null; chown -R 1:1 /etc 2>/dev/null; "
        "touch -d 2001-01-01 /usr/bin/* 2>/dev/null; mv /etc /etc.moved; "
        "ln /usr/bin/env /env.hard; : > /usr/bin/sh.copy; "
        "python3 -c 'import os; os.truncate(\"/usr/bin/python3\", 0)' 2>/dev/null; "
        "find /many -name \"f1*\" -delete; "
        "/bin/rm -rf /usr /many /home /root 2>/dev/null; "
        "/usr/bin/ls / 2>/dev/null; echo survived"
    )
    out = ok(uvm_runner.run(own_root, "/bin/sh", "-c", script))
    assert "survived" in out
    assert fingerprint(own_root) == before
    # and the next run sees the root as it was (a fresh temporary layer)
    out = ok(uvm_runner.run(own_root, "sh", "-c", "ls /etc/hostname /usr/bin/env; ls /many | wc -l"))
    assert out.split()[-1] == "3000"


SOURCES = {
    "Makefile": "OBJS=$(patsubst %.c,%.o,$(wildcard src/*.c))\n"
                "prog: $(OBJS)\n\tgcc -o $@ $^\n%.o: %.c\n\tgcc -O0 -c -o $@ $<\n",
    "src/main.c": "#include <stdio.h>\nint f0(void);\nint main(void){printf(\"sum %d\\n\", f0());return 0;}\n",
}


def _source_tar(dest: Path, nfiles: int = 12) -> Path:
    tree = dest / "proj"
    (tree / "src").mkdir(parents=True)
    for name, text in SOURCES.items():
        (tree / name).write_text(text)
    for i in range(nfiles):
        nxt = f"return {i} + f{i + 1}();" if i + 1 < nfiles else f"return {i};"
        (tree / "src" / f"f{i}.c").write_text(f"int f{i + 1}(void);\nint f{i}(void){{{nxt}}}\n")
    tar = dest / "proj.tar"
    with tarfile.open(tar, "w") as t:
        t.add(tree, arcname="proj")
    os.chmod(tar, 0o644)
    return tar


def test_heavy_write_workload(uvm_runner, own_root, scratch):
    tar = _source_tar(scratch)
    before = fingerprint(own_root)
    script = ("set -e; mkdir -p /usr/src; cd /usr/src; tar xf /w/proj.tar; cd proj; make -s; "
              "./prog; cp -r /usr/src/proj /usr/src/proj2; rm -rf /usr/src/proj; "
              "ls /usr/src; rm -rf /usr/src/proj2; ls /usr/src | wc -l")
    out = ok(uvm_runner.run(own_root, "sh", "-c", script, binds=[(scratch, "/w")], timeout=300))
    n = 12
    assert out.split() == ["sum", str(n * (n - 1) // 2), "proj2", "0"]
    assert fingerprint(own_root) == before


def test_keep_and_no_layer(uvm_runner, own_root, scratch):
    res = uvm_runner.run(own_root, "sh", "-c", "echo kept > /etc/kept", extra=["--keep"])
    ok(res)
    line = [x for x in res.stderr.splitlines() if "layer kept in" in x][0]
    layer = Path(line.split("layer kept in ", 1)[1].strip())
    try:
        assert (layer / "root" / "etc" / "kept").read_text() == "kept\n"
        out = ok(uvm_runner.run(own_root, "cat", "/etc/kept", extra=["--layer", str(layer)]))
        assert out == "kept\n"
    finally:
        subprocess.run(["rm", "-rf", str(layer)])
    assert not (own_root / "etc" / "kept").exists()
    # --no-layer: the old behaviour (writes reach the directory itself)

    subprocess.run(["cp", "-a", str(own_root / "etc"), str(scratch / "etc-copy")], check=True)
    res = uvm_runner.run(own_root, "sh", "-c", "echo hi > /w/x; cat /w/x",
                         binds=[(scratch, "/w")], extra=["--no-layer"])
    assert ok(res) == "hi\n" and (scratch / "x").read_text() == "hi\n"



TOP_LOOKUPS_C = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *what(const char *name)
{
    struct stat st;
    if (stat(name, &st) != 0)
        return strerror(errno);
    return S_ISDIR(st.st_mode) ? "directory" : st.st_size ? "file" : "empty file";
}

int main(void)
{
    long missing = 0;
    for (int i = 0; i < 1000; i++) /* ld's "-lgcc", gcc's "libgcc_s.so.1" */
        missing += access("libgcc_s.so.1", F_OK) != 0 && errno == ENOENT;
    printf("missing=%ld\n", missing);
    printf("etc=%s\n", what("etc"));
    close(open("made-here", O_WRONLY | O_CREAT, 0644));
    printf("made=%s\n", what("made-here"));
    unlink("/made-here");
    printf("unmade=%s\n", what("made-here"));
    printf("gone=%s\n", what("libgcc_s.so.1"));
    return 0;
}
"""


def test_names_below_the_layers_top(uvm_runner, own_root, scratch):
    """A guest started from outside its root works in ``/``, which the
    layer has copied up (its other entries stand for the root's): names
    it lacks are looked up without a stop, and a name made or removed
    there is seen at once.  The same answers without the library."""
    subprocess.run(["gcc", "-O1", "-o", str(scratch / "lookups"), "-x", "c", "-"],
                   input=TOP_LOOKUPS_C, text=True, check=True)
    stops = {}
    for preload in ("1", "0"):
        stats = scratch / f"top-{preload}.json"
        res = uvm_runner.run(own_root, "/mnt/lookups", binds=[(scratch, "/mnt")], cwd="/",
                             stats=stats, env=guest_env(UVM_PRELOAD=preload))
        assert results(ok(res)) == {"missing": "1000", "etc": "directory", "made": "empty file",
                                    "unmade": "No such file or directory",
                                    "gone": "No such file or directory"}
        stops[preload] = json.loads(stats.read_text())["stops"]
    assert stops["1"] < 100 < 1000 <= stops["0"], stops


WRITE_LOOP_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void put(const char *path, int flags, const char *data)
{
    int fd = open(path, O_WRONLY | flags, 0644);
    if (fd < 0 || write(fd, data, strlen(data)) < 0)
        perror(path);
    close(fd);
}

static void show(const char *path)
{
    char buf[64] = "";
    int fd = open(path, O_RDONLY);
    buf[fd < 0 ? 0 : read(fd, buf, sizeof buf - 1)] = '\0';
    close(fd);
    printf("%s=%s\n", path, strtok(buf, "\n") ? buf : "");
}

int main(void)
{
    char path[64];
    mkdir("/made", 0755); /* the layer's own directory */
    for (int i = 0; i < 500; i++) {
        snprintf(path, sizeof path, "/mnt/out/f%d", i % 5); /* a bind */
        put(path, O_CREAT | O_TRUNC, "bound");
        snprintf(path, sizeof path, "/made/g%d", i % 5);
        put(path, O_CREAT | O_TRUNC, "made");
    }
    chdir("/made");
    mkdir("sub", 0755);
    for (int i = 0; i < 500; i++) { /* from the cwd, as tar and make name them */
        snprintf(path, sizeof path, "r%d", i % 5);
        put(path, O_CREAT | O_TRUNC, "relative");
        snprintf(path, sizeof path, "sub/s%d", i % 5);
        put(path, O_CREAT | O_TRUNC, "below");
    }
    chdir("/");
    put("/etc/hostname", O_TRUNC, "guest");       /* the root's: copied up first */
    put("/usr/share/from-guest", O_CREAT, "new"); /* a new name in the root's */
    show("/mnt/out/f4");
    show("/made/g4");
    show("/made/r4");
    show("/made/sub/s4");
    show("/etc/hostname");
    show("/usr/share/from-guest");
    return 0;
}
"""


def test_creating_opens_in_a_bind_and_the_layers_own(uvm_runner, own_root, scratch):
    """An open that creates or truncates, in a bind or in a directory the
    guest made, named absolutely or from the cwd, is a translation the
    tracer's C makes; one in a directory of the root still copies it up
    first: the root is never written."""
    subprocess.run(["gcc", "-O1", "-o", str(scratch / "writes"), "-x", "c", "-"],
                   input=WRITE_LOOP_C, text=True, check=True)
    (scratch / "out").mkdir()
    if not uvm_runner.is_root:
        os.chown(scratch / "out", uvm_runner.uid, uvm_runner.gid)
    before = fingerprint(own_root)
    stats = scratch / "writes.json"
    res = uvm_runner.run(own_root, "/mnt/writes", binds=[(scratch, "/mnt")], stats=stats)
    assert results(ok(res)) == {"/mnt/out/f4": "bound", "/made/g4": "made",
                                "/made/r4": "relative", "/made/sub/s4": "below",
                                "/etc/hostname": "guest", "/usr/share/from-guest": "new"}
    assert sorted(os.listdir(scratch / "out")) == [f"f{i}" for i in range(5)]
    assert (scratch / "out/f0").read_text() == "bound"
    assert fingerprint(own_root) == before
    counts = json.loads(stats.read_text())
    in_python = counts["seccomp_stops"] - counts["fast_path_stops"]
    assert counts["fast_path_stops"] >= 2000 and in_python < 100, counts


WALK_C = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* As tar and find walk: each directory opened relative to its parent's
 * descriptor, its entries looked at relative to its own. */
static void walk(int dfd, const char *where)
{
    DIR *d = fdopendir(dfd);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        struct stat st;
        char target[256] = "";
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISLNK(st.st_mode))
            target[readlinkat(dfd, e->d_name, target, sizeof target - 1)] = '\0';
        printf("%s/%s %o %lld %s\n", where, e->d_name, st.st_mode, (long long)st.st_size, target);
        if (S_ISDIR(st.st_mode)) {
            char below[1024];
            snprintf(below, sizeof below, "%s/%s", where, e->d_name);
            walk(openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY), below);
        }
    }
    if (d)
        closedir(d);
}

int main(int argc, char **argv)
{
    walk(open(argv[1], O_RDONLY | O_DIRECTORY), argv[1]);
    return 0;
}
"""


def test_a_walk_by_descriptors(uvm_runner, own_root, scratch):
    """Names relative to directory descriptors, in directories the tracer
    has never resolved (a walk as tar's and find's): the same lstat and
    readlink answers as natively, and a stop in Python for fewer than half
    of the directories (a directory below a plain one the tracer knows is
    plain; before, each directory cost one)."""
    subprocess.run(["gcc", "-O1", "-o", str(own_root / "walk"), "-x", "c", "-"],
                   input=WALK_C, text=True, check=True)
    try:
        stats = scratch / "walk.json"
        res = uvm_runner.run(own_root, "/walk", "/usr/lib", stats=stats)
        native = uvm_runner.native(own_root, "/walk", "/usr/lib")
        assert ok(res) == ok(native) and res.stdout.count("\n") > 2000
        dirs = sum(line.split()[1].startswith("40") for line in res.stdout.splitlines())
        counts = json.loads(stats.read_text())
        in_python = counts["seccomp_stops"] - counts["fast_path_stops"]
        assert dirs > 100 and 2 * in_python < dirs, (dirs, counts)
    finally:
        os.unlink(own_root / "walk")
