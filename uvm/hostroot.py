"""Build a small OS root from the programs this machine has (for ``uvm demo``).

Copies the named programs, the shared libraries they need (``ldd``), their
ELF interpreter, and optionally Python with a subset of its standard
library (the modules given, and what ``python3 -c pass`` imports), into a
directory laid out like the host (merged ``/usr`` symlinks kept), with a
minimal ``/etc`` and empty ``/dev``, ``/proc``, ``/sys``, ``/tmp``.  Nothing
here needs root or the network.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from typing import Callable, Iterable, List, Optional, Sequence, Set

DEFAULT_PROGRAMS = ("bash", "sh", "ls", "cat", "echo", "env", "id", "uname", "head", "wc",
                    "sort", "grep", "sed", "mkdir", "rm", "cp", "date", "sha256sum", "true",
                    "false", "readlink", "stat", "sleep", "touch", "tr", "cut", "printf")
DEFAULT_MODULES = ("json", "hashlib", "platform", "argparse", "subprocess", "tempfile",
                   "pathlib", "csv", "statistics", "textwrap", "struct", "zlib")


def _copy_one(src: str, root: str, seen: Set[str]) -> None:
    """Copy host path ``src`` to the same place under ``root``, symlinks kept as
    symlinks (and their targets copied too)."""
    src = os.path.abspath(src)
    if src in seen:
        return
    seen.add(src)
    # the directories on the way, as the host has them (symlinked or not)
    parent = os.path.dirname(src)
    if parent != "/":
        _copy_dir_chain(parent, root, seen)
    dest = root + src
    if os.path.lexists(dest):
        return
    if os.path.islink(src):
        target = os.readlink(src)
        os.symlink(target, dest)
        _copy_one(os.path.join(os.path.dirname(src), target), root, seen)
    elif os.path.isdir(src):
        os.makedirs(dest, exist_ok=True)
    elif os.path.isfile(src):
        shutil.copy2(src, dest)


def _copy_dir_chain(directory: str, root: str, seen: Set[str]) -> None:
    parts = directory.strip("/").split("/")
    here = ""
    for part in parts:
        here += "/" + part
        dest = root + here
        if os.path.islink(here):
            if not os.path.lexists(dest):
                os.symlink(os.readlink(here), dest)
            real = os.path.realpath(here)
            _copy_dir_chain(real, root, seen)
            continue
        if not os.path.isdir(dest):
            os.makedirs(dest, exist_ok=True)


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def ldd_closure(files: Iterable[str]) -> Set[str]:
    """Shared libraries (and the loader) that ``files`` need, by ``ldd``."""
    out: Set[str] = set()
    for path in files:
        if not _is_elf(path):
            continue
        res = subprocess.run(["ldd", path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
        for line in res.stdout.splitlines():
            line = line.strip()
            candidate = None
            if "=>" in line:
                right = line.split("=>", 1)[1].strip()
                if right.startswith("/"):
                    candidate = right.split(" (", 1)[0]
            elif line.startswith("/"):
                candidate = line.split(" (", 1)[0]
            if candidate and os.path.exists(candidate):
                out.add(candidate)
    return out


def python_files(modules: Sequence[str]) -> List[str]:
    """Files of the host Python needed for ``python3 -c pass`` and ``modules``."""
    probe = ("import sys, importlib\n"
             "for m in sys.argv[1:]:\n"
             "    try: importlib.import_module(m)\n"
             "    except Exception: pass\n"
             "print('\\n'.join(getattr(m, '__file__', None) or '' for m in list(sys.modules.values())))\n"
             "import sysconfig; print(sysconfig.get_paths()['stdlib'])\n")
    res = subprocess.run(["python3", "-c", probe, *modules], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env={"PATH": "/usr/bin:/bin"})
    lines = [line for line in res.stdout.splitlines() if line]
    stdlib = lines[-1] if lines else ""
    files: List[str] = []
    for path in lines[:-1]:
        if not path.startswith(stdlib):
            continue
        files.append(path)
        if path.endswith(".py"):
            here, name = os.path.split(path)
            files.extend(glob.glob(os.path.join(here, "__pycache__", name[:-3] + ".*.pyc")))
    # the interpreter finds its prefix through os.py (the landmark)
    files.append(os.path.join(stdlib, "os.py"))
    return sorted(set(files))


def build_root(dest: str, programs: Sequence[str] = DEFAULT_PROGRAMS,
               python: bool = True, modules: Sequence[str] = DEFAULT_MODULES,
               extra_files: Sequence[str] = (),
               progress: Optional[Callable[[str], None]] = None) -> dict:
    """Build a root at ``dest`` (created); returns counts."""
    say = progress or (lambda line: None)
    os.makedirs(dest, exist_ok=True)
    root = os.path.realpath(dest)
    seen: Set[str] = set()
    wanted: List[str] = []
    path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
    for name in programs:
        found = shutil.which(name, path=path)
        if found:
            wanted.append(found)
    if python:
        found = shutil.which("python3", path=path)
        if found:
            wanted.append(found)
            wanted.append(os.path.realpath(found))
            say("python standard library subset")
            wanted.extend(python_files(modules))
    wanted.extend(extra_files)
    say(f"{len(wanted)} files and their libraries")
    elves = [os.path.realpath(p) for p in wanted if _is_elf(os.path.realpath(p))]
    libs = ldd_closure(elves)
    for item in list(wanted) + sorted(libs):
        _copy_one(item, root, seen)
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        link = os.path.join(root, name)
        if os.path.islink("/" + name) and not os.path.lexists(link):
            os.symlink(os.readlink("/" + name), link)
            if not os.path.exists(link):  # its target was not needed
                os.unlink(link)
    for directory in ("dev", "proc", "sys", "root", "home", "mnt", "etc", "var/tmp", "tmp"):
        os.makedirs(os.path.join(root, directory), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    os.chmod(os.path.join(root, "var/tmp"), 0o1777)
    _write_etc(root)
    files = sum(len(f) for _d, _s, f in os.walk(root))
    return {"programs": len(wanted), "libraries": len(libs), "files": files}


def _write_etc(root: str) -> None:
    etc = os.path.join(root, "etc")
    uid, gid = os.getuid(), os.getgid()
    users = ["root:x:0:0:root:/root:/bin/bash"]
    groups = ["root:x:0:"]
    if uid != 0:
        users.append(f"user:x:{uid}:{gid}:user:/tmp:/bin/bash")
        groups.append(f"user:x:{gid}:")
    users.append("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin")
    groups.append("nogroup:x:65534:")
    for name, lines in (("passwd", users), ("group", groups)):
        with open(os.path.join(etc, name), "w") as handle:
            handle.write("\n".join(lines) + "\n")
    with open(os.path.join(etc, "os-release"), "w") as handle:
        handle.write('NAME="uvm demo template"\nID=uvm-demo\nPRETTY_NAME="uvm demo template '
                     f'(built from {os.uname().nodename} by uvm)"\n')
    with open(os.path.join(etc, "hostname"), "w") as handle:
        handle.write("uvm-template\n")


if __name__ == "__main__":  # pragma: no cover - by hand: python -m uvm.hostroot DEST
    print(build_root(sys.argv[1], progress=print))
