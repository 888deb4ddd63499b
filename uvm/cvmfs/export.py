"""Write a repository subtree to a local directory, as published.

Modes, mtimes (with nanoseconds), symlinks (raw targets, variant ones
unexpanded), hard-link groups (re-created as hard links) and FIFOs are
reproduced.  Ownership is not (a rootless export cannot chown), and device
nodes and sockets, which need privileges or a live process, are reported
as skipped.  Directory modes and times are set after their content.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from uvm.cvmfs.catalog import DirEntry, encode_path
from uvm.errors import CvmfsError


@dataclass
class ExportReport:
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    specials: int = 0
    skipped: List[str] = field(default_factory=list)


def _ns(entry: DirEntry) -> int:
    return entry.mtime * 1_000_000_000 + (entry.mtime_ns or 0)


def _host(path: str) -> bytes:
    return encode_path(path)


def export(repo, path: str, dest: str) -> ExportReport:
    """Export ``path`` of ``repo`` (a :class:`Repository`) to ``dest``."""
    report = ExportReport()
    top = repo.stat(path)
    if os.path.lexists(dest) and not (top.is_dir and os.path.isdir(dest) and not os.listdir(dest)):
        raise CvmfsError(f"export destination {dest} already exists",
                         hint="choose a new or empty directory")
    directories: List[Tuple[bytes, DirEntry]] = []
    linked: Dict[Tuple[str, int], bytes] = {}

    def write_one(entry: DirEntry, target: bytes) -> None:
        if entry.is_dir:
            os.makedirs(target, mode=0o700, exist_ok=True)
            directories.append((target, entry))
            report.directories += 1
        elif entry.is_symlink:
            os.symlink(_host(entry.symlink), target)
            os.utime(target, ns=(_ns(entry), _ns(entry)), follow_symlinks=False)
            report.symlinks += 1
        elif entry.is_regular:
            key = (entry.path.rsplit("/", 1)[0], entry.hardlink_group)
            if entry.hardlink_group and key in linked:
                os.link(linked[key], target)
                report.hardlinks += 1
                return
            repo.prefetch(entry.path or "/")  # verified before a byte is written
            with repo.open(entry.path or "/") as src, open(target, "wb") as out:
                while True:
                    piece = src.read(1 << 20)
                    if not piece:
                        break
                    out.write(piece)
            os.chmod(target, stat.S_IMODE(entry.mode))
            os.utime(target, ns=(_ns(entry), _ns(entry)))
            if entry.hardlink_group:
                linked[key] = target
            report.files += 1
        elif stat.S_ISFIFO(entry.mode):
            os.mkfifo(target, stat.S_IMODE(entry.mode))
            os.utime(target, ns=(_ns(entry), _ns(entry)))
            report.specials += 1
        else:
            kind = stat.filemode(entry.mode)[0]
            report.skipped.append(f"{entry.path} ({kind}: needs privileges)")

    if not top.is_dir:
        write_one(top, os.fsencode(dest))
        return report
    write_one(top, os.fsencode(dest))
    for dirpath, dirs, others in repo.walk(path):
        base = os.path.join(os.fsencode(dest), _host(os.path.relpath(dirpath, top.path or "/")))
        for entry in dirs + others:
            write_one(entry, os.path.normpath(os.path.join(base, _host(entry.name))))
    for target, entry in reversed(directories):
        os.chmod(target, stat.S_IMODE(entry.mode))
        os.utime(target, ns=(_ns(entry), _ns(entry)))
    return report
