"""The identity the guest sees (``-0``/``--root-id``, ``-i UID:GID``).

Pure helpers: parsing, and rewriting the owner/mode/rdev fields of the stat
structures the kernel fills (``struct stat`` of x86_64, ``struct stat64`` of
i386, ``struct statx``).  The tracer (``layer_tracer.py``) answers the
get*id calls and calls :func:`rewrite` at the exit of stat calls.
"""

from __future__ import annotations

import struct
from collections import namedtuple

from uvm.errors import UsageError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Optional, Tuple


# Not typing.NamedTuple (see Bind in namespace.py); the fields' types are below.
class Identity(namedtuple("Identity", ("uid", "gid"))):
    __slots__ = ()
    uid: int
    gid: int


def parse_identity(spec: str) -> Identity:
    """``UID:GID`` (or ``UID``: GID = UID)."""
    uid, sep, gid = spec.partition(":")
    try:
        u = int(uid)
        g = int(gid) if sep else u
    except ValueError:
        raise UsageError(f"bad identity {spec!r}", hint="use -i UID:GID with numbers") from None
    if not (0 <= u < 2**32 - 1 and 0 <= g < 2**32 - 1):
        raise UsageError(f"bad identity {spec!r}", hint="UID and GID are 0..4294967294")
    return Identity(u, g)


# (size, uid offset, gid offset, mode offset, mode size, rdev offset, rdev kind)
STAT64_X86_64 = (144, 28, 32, 24, 4, 40, "q")
STAT64_I386 = (96, 24, 28, 16, 4, 32, "q")
STATX = (256, 20, 24, 28, 2, 128, "x")


def layout_for(name: str, abi: int) -> Optional[Tuple]:
    if name == "statx":
        return STATX
    if abi == 0 and name in ("stat", "lstat", "fstat", "newfstatat"):
        return STAT64_X86_64
    if abi == 1 and name in ("stat64", "lstat64", "fstat64", "fstatat64"):
        return STAT64_I386
    return None


def rewrite(raw: bytes, layout: Tuple, real: Identity, fake: Identity,
            meta=None) -> Optional[bytes]:
    """The stat buffer ``raw`` as the guest should see it, or None when
    unchanged.  Files owned by the real user appear owned by the fake
    identity; ``meta`` (layer.Meta) overrides."""
    _size, uo, go, mo, msize, ro, rkind = layout
    buf = bytearray(raw)
    uid, gid = struct.unpack_from("<II", buf, uo)
    nuid = fake.uid if uid == real.uid else uid
    ngid = fake.gid if gid == real.gid else gid
    if meta is not None:
        if meta.uid != -1:
            nuid = meta.uid
        if meta.gid != -1:
            ngid = meta.gid
    changed = nuid != uid or ngid != gid
    struct.pack_into("<I", buf, uo, nuid)
    struct.pack_into("<I", buf, go, ngid)
    if meta is not None and meta.mode != -1:
        fmt = "<I" if msize == 4 else "<H"
        old = struct.unpack_from(fmt, buf, mo)[0]
        new = (meta.mode & 0o170000) | (old & 0o7777)
        if new != old:
            struct.pack_into(fmt, buf, mo, new)
            changed = True
        if meta.rdev != -1:
            major, minor = meta.rdev >> 8 & 0xFFF, (meta.rdev & 0xFF) | (meta.rdev >> 12 & 0xFFF00)
            if rkind == "x":
                struct.pack_into("<II", buf, ro, major, minor)
            else:
                struct.pack_into("<Q", buf, ro, meta.rdev)
            changed = True
    return bytes(buf) if changed else None


__all__ = ["Identity", "parse_identity", "rewrite", "layout_for"]
