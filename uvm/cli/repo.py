"""``uvm repo info|ls|cat|export``: read a repository with every signature and hash checked.

With ``--server`` the repository is read directly from there; without it,
through the configured client (``CVMFS_SERVER_URL`` or the built-in domain
mirrors, proxies, the shared cache).  Master keys come from ``--keys`` or
``CVMFS_PUBLIC_KEY`` (colon list, wins as in the stock client) or
``CVMFS_KEYS_DIR``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import stat
import sys
from typing import Optional, Tuple

from uvm.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("repo", help="inspect and export CernVM-FS repositories")
    commands = parser.add_subparsers(metavar="ACTION")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--server", metavar="URL",
                         help="base URL(s) or directory, ';'-separated (default $CVMFS_SERVER_URL)")
        sub.add_argument("--keys", metavar="KEYS",
                         help="directory of master *.pub keys or a .pub file "
                         "(default $CVMFS_PUBLIC_KEY, $CVMFS_KEYS_DIR, /etc/cvmfs/keys)")
        choice = sub.add_mutually_exclusive_group()
        choice.add_argument("--tag", metavar="NAME", help="read the revision with this tag")
        choice.add_argument("--date", metavar="ISO8601",
                            help="read the newest revision published at or before this time")
        choice.add_argument("--root-hash", metavar="HASH", help="read this root catalog")
        sub.add_argument("--state-dir", metavar="DIR",
                         help="where the newest manifest seen is remembered (rollback protection)")

    info = commands.add_parser("info", help="revision, root hash, publish time, TTL, tags")
    info.add_argument("fqrn", metavar="FQRN")
    common(info)
    info.set_defaults(handler=_info)

    ls = commands.add_parser("ls", help="list a directory like ls -la")
    ls.add_argument("target", metavar="FQRN[:/path]")
    common(ls)
    ls.set_defaults(handler=_ls)

    cat = commands.add_parser("cat", help="print a file")
    cat.add_argument("target", metavar="FQRN:/path")
    common(cat)
    cat.set_defaults(handler=_cat)

    export = commands.add_parser(
        "export", help="write a subtree to DEST with modes, mtimes, symlinks and hardlinks")
    export.add_argument("target", metavar="FQRN[:/path]")
    export.add_argument("dest", metavar="DEST")
    common(export)
    export.set_defaults(handler=_export)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def _split_target(target: str) -> Tuple[str, str]:
    fqrn, _, path = target.partition(":")
    if not fqrn:
        raise UsageError(f"{target!r} names no repository", hint="write FQRN:/path")
    return fqrn, path or "/"


def _open(args: argparse.Namespace, fqrn: str):
    """An explicit ``--server`` is read directly; otherwise the configured
    client (mirrors, proxies, shared cache, offline use) serves the reads."""
    if args.server:
        from uvm.cvmfs.repository import Repository

        keys: Optional[str] = args.keys or os.environ.get("CVMFS_PUBLIC_KEY") or \
            os.environ.get("CVMFS_KEYS_DIR")
        return Repository.open(fqrn, servers=args.server, keys=keys, tag=args.tag,
                               date=args.date, root_hash=args.root_hash,
                               state_dir=args.state_dir)
    from uvm import config as config_mod
    from uvm.cvmfs.client import open_repository

    environ = dict(os.environ)
    if args.keys:  # replaces whatever the environment says about keys
        environ.pop("CVMFS_PUBLIC_KEY", None)
        environ.pop("CVMFS_KEYS_DIR", None)
        environ["CVMFS_PUBLIC_KEY" if os.path.isfile(args.keys) else "CVMFS_KEYS_DIR"] = args.keys
    config = config_mod.load(args.config, environ)
    return open_repository(fqrn, config, tag=args.tag, date=args.date,
                           root_hash=args.root_hash, state_dir=args.state_dir)


def _time(timestamp: Optional[int]) -> str:
    if timestamp is None:
        return "unknown"
    return _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _info(args: argparse.Namespace) -> int:
    with _open(args, args.fqrn) as repo:
        algorithm = repo.algorithm.name.lower()
        print(f"repository:     {repo.fqrn}")
        print(f"revision:       {repo.revision}")
        print(f"root catalog:   {repo.root_hash}")
        print(f"published:      {_time(repo.published)}")
        print(f"TTL:            {repo.ttl} s")
        print(f"hash algorithm: {algorithm}")
        if repo.manifest.revision != repo.revision:
            print(f"newest:         revision {repo.manifest.revision}")
        tags = repo.tags()
        print(f"tags:           {len(tags)}")
        for tag in tags:
            print(f"  {tag.name:<24} revision {tag.revision:<6} {_time(tag.timestamp)}"
                  + (f"  {tag.description}" if tag.description else ""))
    return 0


def _quote(name: str) -> str:
    """A name fit for one output line: control characters escaped as ``ls -b`` does."""
    if name.isprintable():
        return name
    out = []
    for char in name:
        if char.isprintable():
            out.append(char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif 0xDC80 <= ord(char) <= 0xDCFF:  # an undecodable byte
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            out.append(f"\\x{ord(char):02x}" if ord(char) < 256 else f"\\u{ord(char):04x}")
    return "".join(out)


def _ls_line(repo, entry, name: str) -> str:
    when = _dt.datetime.fromtimestamp(entry.mtime, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    if entry.rdev:
        size = f"{os.major(entry.rdev)}, {os.minor(entry.rdev)}"
    else:
        size = str(entry.st_size)
    line = (f"{stat.filemode(entry.mode)} {entry.linkcount:>3} {entry.uid:>5} {entry.gid:>5} "
            f"{size:>10} {when} {_quote(name)}")
    if entry.is_symlink:
        line += " -> " + _quote(repo.readlink(entry.path or "/"))
    return line


def _ls(args: argparse.Namespace) -> int:
    fqrn, path = _split_target(args.target)
    with _open(args, fqrn) as repo:
        entry = repo.stat(path)
        if not entry.is_dir:
            print(_ls_line(repo, entry, entry.name))
            return 0
        lines = [_ls_line(repo, entry, ".")]
        parent = path.rstrip("/").rsplit("/", 1)[0] or "/"
        lines.append(_ls_line(repo, repo.stat(parent), ".."))
        for child in repo.scandir(path):
            lines.append(_ls_line(repo, child, child.name))
        print(f"total {len(lines) - 2}")
        print("\n".join(lines))
    return 0


def _cat(args: argparse.Namespace) -> int:
    fqrn, path = _split_target(args.target)
    with _open(args, fqrn) as repo:
        repo.prefetch(path)  # every chunk verified before the first byte goes out
        _copy_out(repo, path)
    return 0


def _copy_out(repo, path: str) -> None:
    with repo.open(path) as handle:
        out = sys.stdout.buffer
        while True:
            piece = handle.read(1 << 20)
            if not piece:
                break
            out.write(piece)
        out.flush()


def _export(args: argparse.Namespace) -> int:
    from uvm.cvmfs.export import export

    fqrn, path = _split_target(args.target)
    with _open(args, fqrn) as repo:
        report = export(repo, path, args.dest)
    if not args.quiet:
        dirs = "directory" if report.directories == 1 else "directories"
        print(f"exported {report.files} file(s), {report.directories} {dirs}, "
              f"{report.symlinks} symlink(s), {report.hardlinks} hard link(s) to {args.dest}")
    for skipped in report.skipped:  # even with -q: the copy is incomplete
        print(f"uvm: warning: not exported: {skipped}", file=sys.stderr)
    return 0
