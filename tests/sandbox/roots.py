"""Guest roots for the sandbox tests and benchmarks, built from this machine.

Three builders, each cached on disk across runs under ``CACHE_DIR``
(``/var/tmp/uvm-test-roots``, override with ``UVM_TEST_ROOTS``) in a directory
``<name>-<key>`` whose key hashes everything the builder reads (this file, the
versions of the host packages it copies, the workloads).  A root is built in a
temporary directory beside its final place and renamed once complete, under an
flock, so that two pytest-xdist workers asking at once build it once.  Roots
are world-readable: the tests run uvm as an unprivileged user too.

- ``host_root()``: assembled from host packages (``dpkg -L``) and the shared
  libraries their ELF files need: bash, dash, coreutils, findutils, grep, sed,
  tar, gzip, python3.11 with its stdlib and regression tests, gcc with binutils
  and the libc development files; a static and a dynamic test program; a
  minimal /etc; ``/bench`` with the reference workloads.
- ``i386_root()``: a 32-bit guest unpacked from Debian i386 packages
  (``apt-get download`` + ``dpkg -x``; ``dev/setup.sh`` adds the architecture)
  plus 32-bit test programs built with ``gcc -m32``.
- ``debian_root()``: ``debootstrap --variant=minbase`` of bookworm with gcc,
  make and python3, from the mirror that apt on this machine uses.

Every root has ``/tmp`` and ``/w`` (mode 1777, scratch space shared by tests,
which use unique names there), an empty ``/mnt`` (where tests bind their own
host directories) and empty ``/dev``, ``/proc`` and ``/sys``.
Run ``python tests/sandbox/roots.py host|i386|debian`` to build one by hand.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = REPO / "benchmarks" / "workloads"
CACHE_DIR = Path(os.environ.get("UVM_TEST_ROOTS", "/var/tmp/uvm-test-roots"))
OS_RELEASE_NAME = "uvm-test-root"
GUEST_HOSTNAME = "uvm-guest"
COMPLETE = ".uvm-root-complete"
# The unprivileged user the tests run uvm as (conftest creates it with these
# ids); every root knows it in /etc/passwd.
TEST_USER, TEST_UID, TEST_GID = "uvmtest", 4242, 4242
# Bump a builder's version when its output changes (part of the cache key).
BUILDER_VERSION = {"host": 2, "i386": 2, "debian": 2}

# Host packages whose files make up host_root (libraries they need are added
# from the ELF closure).  The optional ones are copied when installed.
HOST_PACKAGES = [
    "bash", "dash", "coreutils", "findutils", "grep", "sed", "tar", "gzip",
    "python3-minimal", "python3.11-minimal", "libpython3.11-minimal",
    "libpython3.11-stdlib", "python3.11",
    "gcc", "gcc-12", "cpp", "cpp-12", "libgcc-12-dev", "binutils",
    "binutils-x86-64-linux-gnu", "binutils-common", "libbinutils",
    "libc6", "libc6-dev", "libc-dev-bin", "linux-libc-dev", "libcrypt-dev",
    "libc-bin", "libgcc-s1",
]
HOST_PACKAGES_OPTIONAL = ["libpython3.11-testsuite", "make", "diffutils"]
SKIP_PREFIXES = (
    "/usr/share/doc/", "/usr/share/man/", "/usr/share/info/",
    "/usr/share/locale/", "/usr/share/lintian/", "/usr/share/bug/",
)

# i386 packages unpacked into i386_root; libraries they need beyond these are
# found from the ELF files' DT_NEEDED and added (see _i386_missing_packages).
I386_PACKAGES = [
    "libc6", "libgcc-s1", "gcc-12-base", "bash", "dash", "coreutils",
    "libtinfo6", "libselinux1", "libpcre2-8-0", "libacl1", "libattr1",
    "libgmp10", "libcap2",
]

STATIC_PROBE_C = r"""
#include <stdio.h>
#include <unistd.h>
#include <sys/utsname.h>
int main(int argc, char **argv) {
    char cwd[4096];
    struct utsname u;
    uname(&u);
    printf("static ok %s %d %s\n", getcwd(cwd, sizeof cwd) ? cwd : "?",
           (int)(8 * sizeof(void *)), argv[0]);
    return argc > 1 ? 3 : 0;
}
"""


# ---------------------------------------------------------------- cache


def _digest(parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _workloads_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(WORKLOADS.iterdir()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def cached_root(name: str, key_parts: object,
                build: Callable[[Path], None]) -> Path:
    """Return CACHE_DIR/<name>-<key>, building it with build(tmpdir) if absent."""
    final = CACHE_DIR / f"{name}-{_digest(key_parts)}"
    if (final / COMPLETE).exists():
        return final
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(CACHE_DIR, 0o755)
    with open(CACHE_DIR / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / COMPLETE).exists():
            return final
        # Older builds of the same root (another key) are dead weight now.
        for old in CACHE_DIR.glob(f"{name}-*"):
            shutil.rmtree(old, ignore_errors=True)
        for old in CACHE_DIR.glob(f".{name}-*.tmp*"):
            shutil.rmtree(old, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", suffix=".tmp",
                                    dir=CACHE_DIR))
        try:
            started = time.monotonic()
            build(tmp)
            seconds = time.monotonic() - started
            os.chmod(tmp, 0o755)
            (tmp / COMPLETE).write_text(json.dumps(
                {"name": name, "key": key_parts, "build_seconds": round(seconds, 1)},
                sort_keys=True, default=str) + "\n")
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def build_seconds(root: Path) -> float | None:
    """How long the cached root took to build (recorded at build time)."""
    try:
        return json.loads((Path(root) / COMPLETE).read_text())["build_seconds"]
    except (OSError, ValueError, KeyError):
        return None


# ---------------------------------------------------------------- helpers


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    try:
        return subprocess.run(cmd, **kw)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{' '.join(cmd)} failed ({exc.returncode}):\n"
                           f"{exc.stdout}\n{exc.stderr}") from None


def _installed_versions(packages: Iterable[str]) -> dict[str, str]:
    out = {}
    for pkg in packages:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Status}\t${Version}", pkg],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if res.returncode == 0 and res.stdout.startswith("install ok installed"):
            out[pkg] = res.stdout.split("\t", 1)[1]
    return out


def _make_skeleton(root: Path, *, merged_usr: bool = True) -> None:
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/local/bin", "etc",
              "root", "home", "var/lib", "run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    if merged_usr:
        for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            if os.path.islink("/" + d) or d in ("bin", "sbin", "lib"):
                (root / "usr" / d).mkdir(parents=True, exist_ok=True)
                os.symlink("usr/" + d, root / d)
    _scratch_dirs(root)


def _scratch_dirs(root: Path) -> None:
    for d in ("tmp", "w"):
        (root / d).mkdir(exist_ok=True)
        os.chmod(root / d, 0o1777)
    for d in ("dev", "proc", "sys", "mnt"):
        (root / d).mkdir(exist_ok=True)


class _Copier:
    """Copies host paths into a root at the same guest path, with symlinks."""

    def __init__(self, root: Path):
        self.root = root
        self.done: set[str] = set()

    def dest(self, host_path: str) -> Path:
        parent = os.path.realpath(os.path.dirname(host_path))
        return self.root / parent.lstrip("/") / os.path.basename(host_path)

    def add(self, host_path: str) -> None:
        host_path = os.path.normpath(host_path)
        if host_path in self.done or host_path == "/":
            return
        self.done.add(host_path)
        if not os.path.lexists(host_path):
            return
        # Directory symlinks on the way (/lib -> usr/lib) exist in the root too.
        prefix = ""
        for part in os.path.dirname(host_path).strip("/").split("/"):
            if not part:
                continue
            prefix += "/" + part
            if os.path.islink(prefix):
                self.add(prefix)
        dest = self.dest(host_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if os.path.islink(host_path):
            target = os.readlink(host_path)
            if not os.path.lexists(dest):
                os.symlink(target, dest)
            self.add(target if target.startswith("/")
                     else os.path.join(os.path.dirname(host_path), target))
        elif os.path.isdir(host_path):
            if not dest.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copystat(host_path, dest)
        elif os.path.isfile(host_path):
            if not os.path.lexists(dest):
                shutil.copy2(host_path, dest)

    def add_tree(self, host_dir: str) -> None:
        for dirpath, dirnames, filenames in os.walk(host_dir):
            self.add(dirpath)
            for name in dirnames + filenames:
                self.add(os.path.join(dirpath, name))


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _elf_files(root: Path) -> list[Path]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if not path.is_symlink() and path.is_file() and _is_elf(path):
                out.append(path)
    return out


_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def _ldd_closure(files: Iterable[Path]) -> set[str]:
    libs: set[str] = set()
    for path in files:
        res = subprocess.run(["ldd", str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        if res.returncode != 0:
            continue            # static, or not a loadable object
        for line in res.stdout.splitlines():
            m = _LDD_LINE.search(line)
            if m and "not found" not in line:
                libs.add(m.group(1))
    return libs


def _write_etc(root: Path) -> None:
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    passwd = ["root:x:0:0:root:/root:/bin/bash",
              "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"]
    group = ["root:x:0:", "nogroup:x:65534:"]
    for name, uid, gid in [(TEST_USER, TEST_UID, TEST_GID)]:
        passwd.append(f"{name}:x:{uid}:{gid}:{name}:/tmp:/bin/sh")
        group.append(f"{name}:x:{gid}:")
    (etc / "passwd").write_text("\n".join(passwd) + "\n")
    (etc / "group").write_text("\n".join(group) + "\n")
    (etc / "os-release").write_text(
        f'NAME="{OS_RELEASE_NAME}"\nID={OS_RELEASE_NAME}\n'
        f'PRETTY_NAME="uvm test root (assembled from host binaries)"\n')
    (etc / "hostname").write_text(GUEST_HOSTNAME + "\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    (etc / "nsswitch.conf").write_text(
        "passwd: files\ngroup: files\nshadow: files\nhosts: files\n")


def _install_bench(root: Path) -> None:
    bench = root / "bench"
    bench.mkdir(exist_ok=True)
    for path in WORKLOADS.iterdir():
        shutil.copy2(path, bench / path.name)
        os.chmod(bench / path.name, 0o755 if path.suffix == ".sh" else 0o644)


def _chmod_world_readable(root: Path) -> None:
    """Make every file readable and every directory searchable by others."""
    _run(["chmod", "-R", "a+rX", str(root)])
    for d in ("tmp", "w"):
        if (root / d).is_dir():
            os.chmod(root / d, 0o1777)


# ---------------------------------------------------------------- host_root


def _build_host_root(root: Path) -> None:
    _make_skeleton(root)
    copier = _Copier(root)
    packages = HOST_PACKAGES + [
        p for p in HOST_PACKAGES_OPTIONAL if _installed_versions([p])]
    for pkg in packages:
        listing = _run(["dpkg", "-L", pkg]).stdout.splitlines()
        for path in listing:
            if path and not path.startswith(SKIP_PREFIXES) and path != "/.":
                copier.add(path)
    for path in ("/usr/bin/cc", "/usr/bin/c99", "/usr/bin/python3",
                 "/usr/bin/env", "/bin/true", "/bin/sh"):
        copier.add(path)
    # The shared libraries of everything copied, then of those libraries.
    seen: set[str] = set()
    todo = _elf_files(root)
    while todo:
        libs = _ldd_closure(todo) - seen
        seen |= libs
        for lib in sorted(libs):
            copier.add(lib)
        todo = [copier.dest(os.path.realpath(lib)) for lib in libs]
    _write_etc(root)
    # Test programs: static and dynamic, built with the host gcc.
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(STATIC_PROBE_C)
        _run(["gcc", "-O1", "-static", "-o",
              str(root / "usr/local/bin/static-probe"), str(src)])
        _run(["gcc", "-O1", "-o", str(root / "usr/local/bin/dynamic-probe"),
              str(src)])
    _install_bench(root)
    _run(["ldconfig", "-r", str(root)])
    _chmod_world_readable(root)


def host_root() -> Path:
    key = {"builder": BUILDER_VERSION["host"], "workloads": _workloads_digest(),
           "packages": _installed_versions(HOST_PACKAGES + HOST_PACKAGES_OPTIONAL)}
    missing = [p for p in HOST_PACKAGES if p not in key["packages"]]
    if missing:
        raise RuntimeError(f"host_root needs the host packages {missing}: "
                           "run ./dev/setup.sh")
    return cached_root("host", key, _build_host_root)


# ---------------------------------------------------------------- i386_root


def _apt_download(packages: list[str], dest: Path) -> list[Path]:
    """apt-get download pkg:i386 ... into dest; return the .deb files."""
    res = subprocess.run(["apt-get", "download", "-q"] + [f"{p}:i386" for p in packages],
                         cwd=dest, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    if res.returncode != 0:
        hint = ""
        if "i386" not in _run(["dpkg", "--print-foreign-architectures"]).stdout:
            hint = " (apt does not know i386: run ./dev/setup.sh)"
        raise RuntimeError(f"apt-get download of i386 packages failed{hint}:\n"
                           f"{res.stderr}")
    return sorted(dest.glob("*.deb"))


def _needed(path: Path) -> list[str]:
    res = subprocess.run(["readelf", "-d", str(path)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", res.stdout)


def _i386_missing_packages(root: Path) -> set[str]:
    """Packages providing the sonames that ELF files in root need but lack."""
    have = {p.name for d in ("usr/lib/i386-linux-gnu", "usr/lib", "lib")
            for p in (root / d).glob("*.so*")}
    missing = set()
    checked: set[str] = set()
    for path in _elf_files(root):
        if "/gconv/" in str(path):
            continue            # iconv modules link each other by path
        for soname in _needed(path):
            if soname in have or soname in checked or soname.startswith("ld-linux"):
                continue
            checked.add(soname)
            # The 64-bit twin of the library names the package on the host.
            res = subprocess.run(["dpkg", "-S", f"/usr/lib/x86_64-linux-gnu/{soname}"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True)
            if res.returncode != 0:
                res = subprocess.run(["dpkg", "-S", f"/lib/x86_64-linux-gnu/{soname}"],
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"i386_root: no package known for {soname} "
                                   f"(needed by {path})")
            missing.add(res.stdout.split(":", 1)[0].strip())
    return missing


def _build_i386_root(root: Path) -> None:
    _make_skeleton(root)
    debs_dir = Path(tempfile.mkdtemp(prefix="debs-", dir=root.parent))
    os.chmod(debs_dir, 0o755)
    try:
        wanted = set(I386_PACKAGES)
        done: set[str] = set()
        while wanted - done:
            batch = sorted(wanted - done)
            for deb in _apt_download(batch, debs_dir):
                _run(["dpkg-deb", "-x", str(deb), str(root)])
                deb.unlink()
            done |= set(batch)
            wanted |= _i386_missing_packages(root)
    finally:
        shutil.rmtree(debs_dir, ignore_errors=True)
    for d in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        shutil.rmtree(root / d, ignore_errors=True)
    if not (root / "bin/sh").exists():
        os.symlink("dash", root / "usr/bin/sh")
    _write_etc(root)
    (root / "etc/os-release").write_text(
        f'NAME="{OS_RELEASE_NAME}"\nID={OS_RELEASE_NAME}\n'
        f'PRETTY_NAME="uvm test root (Debian i386 packages)"\n')
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(STATIC_PROBE_C)
        local = root / "usr/local/bin"
        _run(["gcc", "-m32", "-O1", "-static", "-o", str(local / "static-probe"), str(src)])
        _run(["gcc", "-m32", "-O1", "-o", str(local / "dynamic-probe"), str(src)])
        _run(["gcc", "-m32", "-O1", "-o", str(local / "hello"),
              str(WORKLOADS / "hello.c"), "-lm"])
    _run(["ldconfig", "-r", str(root)])
    _chmod_world_readable(root)


def i386_root() -> Path:
    key = {"builder": BUILDER_VERSION["i386"], "workloads": _workloads_digest(),
           "gcc": _installed_versions(["gcc-12", "libc6-dev-i386"]),
           "packages": I386_PACKAGES}
    return cached_root("i386", key, _build_i386_root)


# ---------------------------------------------------------------- debian_root


def apt_mirror() -> str:
    """The Debian mirror apt on this machine uses for the main archive."""
    candidates: list[tuple[str, str]] = []   # (uri, suites)
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in Path(path).read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if fields.get("types", "").split()[:1] == ["deb"] and "uris" in fields:
                for uri in fields["uris"].split():
                    candidates.append((uri, fields.get("suites", "")))
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        if os.path.exists(path):
            for line in Path(path).read_text().splitlines():
                parts = line.split()
                if parts[:1] == ["deb"]:
                    parts = [p for p in parts[1:] if not p.startswith("[")]
                    if len(parts) >= 2:
                        candidates.append((parts[0], parts[1]))
    for uri, suites in candidates:
        if "bookworm" in suites.split() and "security" not in uri:
            return uri
    for uri, suites in candidates:
        if "security" not in uri and "security" not in suites:
            return uri
    raise RuntimeError("no Debian mirror found in /etc/apt/sources.list*")


DEBIAN_INCLUDE = "gcc,libc6-dev,make,python3"


def _build_debian_root(root: Path, arch: str) -> None:
    cmd = ["debootstrap", "--variant=minbase", f"--include={DEBIAN_INCLUDE}",
           f"--arch={arch}", "bookworm", str(root), apt_mirror()]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    if res.returncode != 0:
        log = root / "debootstrap/debootstrap.log"
        tail = log.read_text()[-3000:] if log.exists() else ""
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{tail}")
    # Keep the root small and deterministic.
    _run(["chroot", str(root), "apt-get", "clean"])
    for d in ("var/lib/apt/lists",):
        for p in (root / d).glob("*_*"):
            p.unlink()
    (root / "etc/hostname").write_text(GUEST_HOSTNAME + "\n")
    with open(root / "etc/passwd", "a") as f:
        f.write(f"{TEST_USER}:x:{TEST_UID}:{TEST_GID}:{TEST_USER}:/tmp:/bin/sh\n")
    with open(root / "etc/group", "a") as f:
        f.write(f"{TEST_USER}:x:{TEST_GID}:\n")
    _scratch_dirs(root)
    _install_bench(root)
    _chmod_world_readable(root)


def debian_root(arch: str = "amd64") -> Path:
    if os.geteuid() != 0:
        raise RuntimeError("debian_root is built with debootstrap, which needs root")
    if not shutil.which("debootstrap"):
        raise RuntimeError("debootstrap is missing: run ./dev/setup.sh")
    key = {"builder": BUILDER_VERSION["debian"], "workloads": _workloads_digest(),
           "arch": arch, "include": DEBIAN_INCLUDE,
           "debootstrap": _installed_versions(["debootstrap"])}
    name = "debian" if arch == "amd64" else f"debian-{arch}"
    return cached_root(name, key, lambda d: _build_debian_root(d, arch))


# ---------------------------------------------------------------- CLI

BUILDERS = {"host": host_root, "i386": i386_root, "debian": debian_root,
            "debian-i386": lambda: debian_root("i386")}


def main(argv: list[str]) -> int:
    for name in argv or ["host"]:
        started = time.monotonic()
        root = BUILDERS[name]()
        print(f"{name}: {root} ({time.monotonic() - started:.1f} s here, "
              f"built in {build_seconds(root)} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
