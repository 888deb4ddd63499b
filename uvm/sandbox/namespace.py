"""What the guest sees: a host directory as its root, plus bind mounts.

Data only, and pure: :meth:`Namespace.host_of` maps a canonical guest path
onto the host, :meth:`Namespace.guest_of` maps a host path back (for
results such as getcwd).  Symlinks and ``..`` are the business of
:mod:`uvm.sandbox.paths`; other backends (templates from CernVM-FS, a
writable layer) feed their directories in as a root and binds.

Defaults (see ``docs/sandbox.md``): the host's ``/proc``, ``/sys`` and
``/dev`` are bound at the same place when the root has no such directory or
an empty one, and the host's ``/tmp`` when the root has no ``/tmp``
directory.  A root with a ``/dev`` of its own (debootstrap makes one) still
gets the host's ``/dev/pts``, ``/dev/ptmx`` and ``/dev/shm``: a static copy
cannot open terminals or hold shared memory.  A user bind on the same guest
path wins over a default.
"""

from __future__ import annotations

import os
from collections import namedtuple

from uvm.errors import SandboxError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any, Iterable, List, Optional, Sequence, Tuple

DEFAULT_BINDS = ("/proc", "/sys", "/dev", "/tmp")
# Live parts of /dev, bound when the root's own /dev is used.  /dev/ptmx goes
# with /dev/pts: the kernel finds the pty instance beside the ptmx node.
LIVE_DEV_BINDS = ("/dev/pts", "/dev/ptmx", "/dev/shm")


# Not typing.NamedTuple, which needs typing and compiles each field's
# annotation at import (1-2 ms of start-up); the fields' types are below.
class Bind(namedtuple("Bind", ("host", "guest"))):
    """Host directory or file ``host`` appears at guest path ``guest``."""

    __slots__ = ()
    host: str
    guest: str


# Answers of Namespace.fast_dir.
NOT_FAST, PLAIN, FILLED, PARTIAL = 0, 1, 2, 3
# (and of a writable layer's namespace, layer_tracer.py: a copied-up directory
# that holds placeholders, where only the names it lacks are settled in C)
LAYERED = 6


def parse_bind(spec: str) -> Tuple[str, str]:
    """``HOST[:GUEST]`` as given to ``-b``: GUEST defaults to HOST."""
    host, sep, guest = spec.partition(":")
    if not host:
        raise SandboxError(f"bad bind {spec!r}", hint="use -b HOST[:GUEST]")
    return host, (guest if sep and guest else host)


def canonical_lexical(path: str) -> str:
    """Absolute guest path with ``.``, ``..`` and repeated slashes removed
    lexically (``..`` at the root stays at the root)."""
    parts: List[str] = []
    for comp in path.split("/"):
        if comp == "" or comp == ".":
            continue
        if comp == "..":
            if parts:
                parts.pop()
            continue
        parts.append(comp)
    return "/" + "/".join(parts)


def _provides(root: str, guest: str) -> bool:
    host = root.rstrip("/") + guest
    if guest == "/tmp":
        return os.path.isdir(host)
    try:
        return bool(os.listdir(host))
    except OSError:
        return False


class Namespace:
    """A guest root directory and the binds on top of it.

    ``root`` and every bind source must exist; both are made absolute and
    symlink-free on the host, so that ``guest_of`` can recognise them in the
    kernel's answers.
    """

    def __init__(
        self,
        root: str,
        binds: Iterable[Tuple[str, str]] = (),
        default_binds: bool = True,
        lazy: Optional[Any] = None,
    ) -> None:
        if not os.path.isdir(root):
            what = "does not exist" if not os.path.exists(root) else "is not a directory"
            raise SandboxError(
                f"guest root {root} {what}",
                hint="give --root a directory holding the guest's file system",
            )
        self.root = os.path.realpath(root)
        chosen: List[Bind] = []
        seen = set()
        for host, guest in binds:
            if not os.path.exists(host):
                raise SandboxError(
                    f"bind source {host} does not exist",
                    hint="create it or drop that -b option",
                )
            if not guest.startswith("/"):
                raise SandboxError(
                    f"bind target {guest!r} is not an absolute guest path",
                    hint="use -b HOST:/GUEST/PATH",
                )
            guest = canonical_lexical(guest)
            if guest == "/":
                raise SandboxError(
                    "a bind on the guest's / replaces the root", hint="use --root instead"
                )
            chosen.append(Bind(os.path.realpath(host), guest))
            seen.add(guest)
        if default_binds:
            for guest in DEFAULT_BINDS:
                if guest not in seen and not _provides(self.root, guest) and os.path.isdir(guest):
                    chosen.append(Bind(guest, guest))
            if "/dev" not in seen and all(b.guest != "/dev" for b in chosen):
                chosen.extend(Bind(guest, guest) for guest in LIVE_DEV_BINDS
                              if guest not in seen and os.path.exists(guest))
        # Later binds on the same guest path win, as with mount.
        unique = {}
        for bind in chosen:
            unique[bind.guest] = bind
        self.binds: Tuple[Bind, ...] = tuple(
            sorted(unique.values(), key=lambda b: len(b.guest), reverse=True)
        )
        # For host → guest: longest host prefix first; the root is a candidate too.
        by_host = [(b.host, b.guest) for b in self.binds]
        by_host.append((self.root, "/"))
        self._by_host: Tuple[Tuple[str, str], ...] = tuple(
            sorted(by_host, key=lambda hg: len(hg[0]), reverse=True)
        )
        self._guest_prefixes = tuple((b.guest, b.guest + "/", b.host) for b in self.binds)
        self._root_prefix = "" if self.root == "/" else self.root
        self._bind_points = frozenset(b.guest for b in self.binds)
        # Trees filled on first touch (CernVM-FS, materialize.py): every host
        # path handed out is made to exist first; ``lazy.before`` is for the tracer.
        self.lazy = lazy
        self.host_of_unmade = self.host_of  # the same, without making the path (hints)
        if lazy is not None:
            plain, ensure = self.host_of, lazy.ensure

            def host_of(guest: str) -> str:
                host = plain(guest)
                ensure(host)
                return host

            self.host_of = host_of  # type: ignore[method-assign]

    # -- guest → host --------------------------------------------------------

    def host_of(self, guest: str) -> str:
        """Host path of a canonical guest path (longest bind prefix wins)."""
        for bguest, bguest_slash, bhost in self._guest_prefixes:
            if guest == bguest:
                return bhost
            if guest.startswith(bguest_slash):
                return bhost + guest[len(bguest):] if bhost != "/" else guest[len(bguest):]
        if guest == "/":
            return self.root
        return self._root_prefix + guest

    def fast_dir(self, guest_dir: str, host_dir: str) -> int:
        """May a name in ``guest_dir`` be looked up in ``host_dir`` without
        the namespace (the tracer's C fast path does)?  :data:`PLAIN`: yes;
        :data:`FILLED`: a lazily filled directory (CernVM-FS) that is
        complete, where subdirectories and files without their content yet
        still go to the tracer; :data:`PARTIAL`: the same, still being
        filled, where a missing name goes to the tracer too (it may be made
        on lookup); :data:`NOT_FAST`: /proc, whose entries depend on who
        asks.  Bind points are the caller's concern."""
        if host_dir.startswith("/proc"):
            return NOT_FAST
        lazy = self.lazy
        if lazy is None or not (host_dir == lazy.base or host_dir.startswith(lazy.base + "/")):
            return PLAIN
        return FILLED if lazy.complete(host_dir) else PARTIAL

    def fast_self(self, guest: str, host: str) -> int:
        """May ``guest`` itself (not what a directory holds) be looked up as
        ``host`` without the namespace?  :data:`PLAIN` or :data:`FILLED` (a
        lazily filled tree: files without content still go to the tracer)
        as for :meth:`fast_dir`; :data:`NOT_FAST` for /proc and a lazily
        filled directory still being filled."""
        kind = Namespace.fast_dir(self, guest, host)
        return kind if kind in (PLAIN, FILLED) else NOT_FAST

    def fast_writes(self, guest_dir: str, host_dir: str) -> bool:
        """Is an open that creates or writes a name of ``guest_dir`` only
        its translation to ``host_dir``?  Not in a lazily filled tree (read
        only, and filled on demand) nor in /proc."""
        return self.fast_dir(guest_dir, host_dir) == PLAIN

    def fast_absent(self, guest_dir: str, host_dir: str) -> bool:
        """Is a name missing from ``host_dir`` missing from ``guest_dir`` in
        the guest's view (binds on it are the caller's concern)?"""
        return self.fast_dir(guest_dir, host_dir) in (PLAIN, FILLED)

    def is_bind_point(self, guest: str) -> bool:
        """Is ``guest`` exactly where a bind sits (a mount point)?"""
        return guest in self._bind_points

    # -- host → guest --------------------------------------------------------

    def guest_of(self, host: str) -> Optional[str]:
        """Guest path naming host path ``host``, or None when the guest cannot
        see it.  ``host`` must be absolute and canonical (as the kernel gives)."""
        for hprefix, gprefix in self._by_host:
            if hprefix == "/":
                rest = host
            elif host == hprefix:
                return gprefix
            elif host.startswith(hprefix) and host[len(hprefix)] == "/":
                rest = host[len(hprefix):]
            else:
                continue
            if gprefix == "/":
                return rest or "/"
            return gprefix + rest if rest != "/" else gprefix
        return None

    def describe(self) -> List[str]:
        lines = [f"root {self.root}"]
        lines.extend(f"bind {b.host} -> {b.guest}" for b in self.binds)
        return lines


def binds_from_specs(specs: Sequence[str]) -> List[Tuple[str, str]]:
    """Parse ``-b`` options; relative HOST paths are taken from the host cwd."""
    out = []
    for spec in specs:
        host, guest = parse_bind(spec)
        out.append((os.path.abspath(host), guest if guest != host else os.path.abspath(host)))
    return out


__all__ = ["Bind", "Namespace", "parse_bind", "binds_from_specs", "canonical_lexical"]
