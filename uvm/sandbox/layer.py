"""The writable layer: a host directory that holds what the guest changed in
a read-only root, and the decisions that keep the root untouched.

No ptrace here (the tracer side is ``layer_tracer.py``).  Model, in guest
terms (``docs/layer.md``):

- the layer's data is a host tree ``LAYER/root`` mirroring the guest tree;
  its metadata (origins, fake ownership) is a journal ``LAYER/.uvm/journal``
  of JSON lines, loaded into memory at start, written through on every
  change and compacted when the layer is closed (a run's temporary layer,
  removed at its end, keeps it in memory only);
- a guest directory is either *pure lower* (reached through a placeholder of
  one of its ancestors: the kernel lists and resolves the lower directory)
  or *copied up*: a complete layer directory that holds every name of the
  merged view.  Each name that still stands for a lower object is a
  *placeholder* (an empty directory, an empty regular file, a copy of a
  symlink, a FIFO) with an *origin* record naming the lower object.  Deleted names are simply absent: no whiteouts are needed
  inside complete directories, and a listing is plain kernel getdents of
  the layer directory.  The guest's ``/`` is copied up when the layer is
  created;
- :meth:`Layer.host_of` maps a guest path: the first prefix that has an
  origin leads into the lower root (the rest appended), otherwise the path
  lives in the layer;
- a write inside a directory copies it (and its ancestors) up first; a
  write to a file that is still a placeholder copies its content up first
  (data, mode, times, xattrs; ownership when uvm runs as root).

Origins are stored relative to the lower root; ``.uvm/layer.json`` records
the root the layer belongs to.
"""

from __future__ import annotations

import errno
import os
import stat

from uvm.errors import LayerError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Callable, Dict, Iterator, Optional, TextIO, Tuple

JOURNAL = ".uvm/journal"
INFO = ".uvm/layer.json"
DATA = "root"


def _err(code: int, what: str = "") -> OSError:
    return OSError(code, os.strerror(code), what or None)


def parent_of(guest: str) -> str:
    return guest.rpartition("/")[0] or "/"


class Meta:
    """Fake attributes of one guest path (fake root): ownership, and for
    device nodes (kept as empty regular files) the type and rdev."""

    __slots__ = ("uid", "gid", "mode", "rdev")

    def __init__(self, uid: int = -1, gid: int = -1, mode: int = -1, rdev: int = -1) -> None:
        self.uid, self.gid, self.mode, self.rdev = uid, gid, mode, rdev

    def as_list(self):
        return [self.uid, self.gid, self.mode, self.rdev]


class Layer:
    """One writable layer over the lower root ``lower`` (a host directory).

    ``path`` is the layer directory (created when missing).  Raises
    :class:`LayerError` when it cannot be used.  ``durable=False``: a new
    layer that nobody will open again (a run's temporary one), kept in
    memory only: no journal, no ``.uvm`` (and no json module to import).
    """

    def __init__(self, path: str, lower: str,
                 prepare: Optional[Callable[[str], None]] = None, durable: bool = True) -> None:
        self.path = os.path.realpath(path)
        self.lower = os.path.realpath(lower)
        if self.lower == "/":
            raise LayerError("a writable layer over the host's / is not supported",
                             hint="use --no-layer with --root /")
        if self.path == self.lower or self.path.startswith(self.lower + "/"):
            raise LayerError(f"layer {self.path} lies inside the root {self.lower}",
                             hint="keep the layer outside the guest root")
        self.top = os.path.join(self.path, DATA)
        # called with a lower host path before its listing or content is
        # read (a lazily filled CernVM-FS shadow tree fills it then)
        self.prepare = prepare
        # (real uid, gid) when an identity is presented: copies record owners
        self.record_owners: Optional[Tuple[int, int]] = None
        self.origin: Dict[str, str] = {}  # guest path -> lower-relative path ("/usr/lib")
        self.meta: Dict[str, Meta] = {}
        # directories holding a placeholder (see holds_placeholders), or None
        self._holders: Optional[set] = None
        self._dirty = False
        self._moved: Optional[list] = None
        self._euid = os.geteuid()
        self._journal: Optional[TextIO] = None
        if durable:
            fresh = self._open_store()
        else:
            os.makedirs(self.path, exist_ok=True)
            fresh = True
            os.mkdir(self.top)
        if fresh:
            self._fill("/", self.lower)
            self._copy_attrs(self.lower, self.top, os.stat(self.lower))  # its mtime too
        self._lower_prefix = self.lower + "/"
        self._top_prefix = self.top + "/"
        self.copied_dirs = 0
        self.copied_files = 0

    # -- the store ------------------------------------------------------------------

    def _open_store(self) -> bool:
        """Check (or record) the root the layer belongs to, load its journal
        and open it for appending; True when the layer is new."""
        import json

        os.makedirs(os.path.join(self.path, ".uvm"), exist_ok=True)
        fresh = not os.path.isdir(self.top)
        info_path = os.path.join(self.path, INFO)
        if fresh:
            os.mkdir(self.top)
            with open(info_path, "w") as f:
                json.dump({"lower": self.lower}, f)
        else:
            try:
                with open(info_path) as f:
                    was = json.load(f).get("lower")
            except (OSError, ValueError):
                was = None
            if was is not None and was != self.lower:
                raise LayerError(f"layer {self.path} belongs to root {was}, not {self.lower}",
                                 hint="use another layer directory")
            self._load()
        self._journal = open(os.path.join(self.path, JOURNAL), "a", encoding="utf-8",
                             errors="surrogateescape")
        return fresh

    def _load(self) -> None:
        import json

        try:
            with open(os.path.join(self.path, JOURNAL), encoding="utf-8",
                      errors="surrogateescape") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a torn last line
                    self._apply(rec)
        except FileNotFoundError:
            pass

    def _apply(self, rec) -> None:
        self._holders = None
        op = rec[0]
        if op == "o":
            self.origin[rec[1]] = rec[2]
        elif op == "c":  # copied up: no origin any more
            self.origin.pop(rec[1], None)
        elif op == "-":
            self.origin.pop(rec[1], None)
            self.meta.pop(rec[1], None)
        elif op == "m":
            self.meta[rec[1]] = Meta(*rec[2])
        elif op == "mv":
            self._move(rec[1], rec[2])
        self._moved = None

    def _write(self, rec) -> None:
        self._holders = None  # every change of an origin is journaled
        if self._journal is not None:
            import json

            self._journal.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self._dirty = True

    def flush(self) -> None:
        """Hand the journal's new records to the kernel (after each change
        made for the guest: a killed tracer loses nothing already done)."""
        if self._dirty:
            self._journal.flush()
            self._dirty = False

    def close(self) -> None:
        """Compact the journal (the current records only) and close it."""
        if self._journal is None or self._journal.closed:
            return
        import json

        self._journal.close()
        tmp = os.path.join(self.path, JOURNAL + ".new")
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
            for guest, rel in self.origin.items():
                f.write(json.dumps(["o", guest, rel], ensure_ascii=False) + "\n")
            for guest, m in self.meta.items():
                f.write(json.dumps(["m", guest, m.as_list()], ensure_ascii=False) + "\n")
        os.replace(tmp, os.path.join(self.path, JOURNAL))

    # -- guest -> host --------------------------------------------------------------

    def host_of(self, guest: str) -> str:
        """Host path of canonical guest path ``guest`` (root territory only)."""
        if guest == "/":
            return self.top
        origin = self.origin
        i = 0
        while True:
            j = guest.find("/", i + 1)
            if j < 0:
                rel = origin.get(guest)
                return self.top + guest if rel is None else self.lower + rel
            rel = origin.get(guest[:j])
            if rel is not None:
                return self.lower + rel + guest[j:]
            i = j

    def guest_of(self, host: str) -> Optional[str]:
        """Guest path of a host path in the layer or the lower root, or None."""
        if host.startswith(self._top_prefix):
            return host[len(self.top):]
        if host == self.top:
            return "/"
        if host.startswith(self._lower_prefix) or host == self.lower:
            rel = host[len(self.lower):] or "/"
            # Usually the guest path is the lower path; a lower directory
            # renamed in the layer is found through its origin record.
            guest = rel
            if self.host_of(guest) == host:
                return guest
            moved = self._moved
            if moved is None:  # origins whose guest name differs: renamed ones
                moved = self._moved = [(g, r) for g, r in self.origin.items() if g != r]
            for g, r in moved:
                if rel == r or rel.startswith(r + "/"):
                    return g + rel[len(r):]
            return guest
        return None

    def holds_placeholders(self, guest_dir: str) -> bool:
        """Does layer directory ``guest_dir`` hold a name that stands for a
        lower object?  A directory the guest made (an unpacked tarball, a
        build tree) holds none: a lookup in it is a plain lookup in the
        layer, which the tracer's C fast path may do."""
        holders = self._holders
        if holders is None:
            holders = self._holders = {parent_of(g) for g in self.origin}
        return guest_dir in holders

    def is_lower(self, host: str) -> bool:
        return host.startswith(self._lower_prefix) or host == self.lower

    def exists(self, guest: str) -> bool:
        try:
            os.lstat(self.host_of(guest))
            return True
        except OSError:
            return False

    # -- copy-up ----------------------------------------------------------------------

    def _fill(self, guest: str, lower_dir: str) -> None:
        """Create placeholders in layer directory ``guest`` for every entry of
        host directory ``lower_dir``."""
        base = self.top + (guest if guest != "/" else "")
        rel_base = lower_dir[len(self.lower):]
        self._moved = None
        if self.prepare is not None:
            self.prepare(lower_dir)
        write = self._write
        origin = self.origin
        with os.scandir(lower_dir) as it:
            for entry in it:
                name = entry.name
                g = (guest if guest != "/" else "") + "/" + name
                dst = base + "/" + name
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                fmt = stat.S_IFMT(st.st_mode)
                if fmt == stat.S_IFLNK:
                    os.symlink(os.readlink(entry.path), dst)
                elif fmt == stat.S_IFIFO:
                    os.mkfifo(dst, 0o600)
                elif fmt == stat.S_IFDIR:
                    os.mkdir(dst, 0o700)
                else:
                    os.close(os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                rel = rel_base + "/" + name
                origin[g] = rel
                write(["o", g, rel])

    def copy_up_dir(self, guest: str) -> str:
        """Make guest directory ``guest`` a complete layer directory (and its
        ancestors); returns its layer path.  OSError ENOENT/ENOTDIR when
        there is no such directory."""
        rel = self.origin.get(guest)
        if rel is None:
            host = self.host_of(guest)
            if host.startswith(self._top_prefix) or host == self.top:
                if not os.path.isdir(host):
                    raise _err(errno.ENOTDIR if os.path.lexists(host) else errno.ENOENT, guest)
                return host
            # below a placeholder: copy the parent up, then this one
            self.copy_up_dir(parent_of(guest))
            rel = self.origin.get(guest)
            if rel is None:
                return self.copy_up_dir(guest)
        src = self.lower + rel
        st = os.lstat(src)
        if not stat.S_ISDIR(st.st_mode):
            raise _err(errno.ENOTDIR, guest)
        dst = self.top + guest
        self._fill(guest, src)
        del self.origin[guest]
        self._write(["c", guest])
        self._copy_attrs(src, dst, st)
        self._keep_owner(guest, st)
        self.copied_dirs += 1
        return dst

    def _keep_owner(self, guest: str, st: os.stat_result) -> None:
        """Under an identity, a copy keeps the apparent owner of the root's
        object (a root file owned by the real user belongs to root)."""
        real = self.record_owners
        if real is None or guest in self.meta:
            return
        uid = 0 if st.st_uid == real[0] else st.st_uid
        gid = 0 if st.st_gid == real[1] else st.st_gid
        self.set_meta(guest, uid, gid)

    def _copy_attrs(self, src: str, dst: str, st: os.stat_result) -> None:
        try:
            if self._euid == 0:
                os.lchown(dst, st.st_uid, st.st_gid)
            os.chmod(dst, stat.S_IMODE(st.st_mode))
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        except OSError:
            pass
        try:
            for name in os.listxattr(src, follow_symlinks=False):
                try:
                    os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False),
                                follow_symlinks=False)
                except OSError:
                    pass
        except OSError:
            pass

    def ensure_parent(self, guest: str) -> None:
        """Copy up the directory that holds ``guest``."""
        self.copy_up_dir(parent_of(guest))

    def copy_up(self, guest: str) -> str:
        """Bring the object at ``guest`` into the layer (directories:
        complete; files: content).  Returns its layer path."""
        rel = self.origin.get(guest)
        if rel is None:
            host = self.host_of(guest)
            if not self.is_lower(host):
                return host
            self.ensure_parent(guest)
            rel = self.origin.get(guest)
            if rel is None:
                return self.host_of(guest)
        src = self.lower + rel
        st = os.lstat(src)
        if stat.S_ISDIR(st.st_mode):
            return self.copy_up_dir(guest)
        dst = self.top + guest
        if stat.S_ISLNK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            if stat.S_ISFIFO(st.st_mode):
                self._copy_attrs(src, dst, st)
            elif self._euid == 0:
                os.lchown(dst, st.st_uid, st.st_gid)
        elif stat.S_ISREG(st.st_mode):
            if self.prepare is not None:
                self.prepare(src)
            tmp = dst + ".uvm-copyup"
            import shutil

            with open(src, "rb") as fi, open(tmp, "wb") as fo:
                shutil.copyfileobj(fi, fo, 1 << 20)
            self._copy_attrs(src, tmp, st)
            os.replace(tmp, dst)
        else:  # a device or socket: an empty placeholder stands for it
            self._copy_attrs(src, dst, st)
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                self.set_meta(guest, mode=st.st_mode, rdev=st.st_rdev)
        del self.origin[guest]
        self._write(["c", guest])
        self._keep_owner(guest, st)
        self.copied_files += 1
        return dst

    # -- operations the tracer emulates -----------------------------------------------

    def _lower_dir_empty(self, rel: str) -> bool:
        if self.prepare is not None:
            self.prepare(self.lower + rel)
        with os.scandir(self.lower + rel) as it:
            for _ in it:
                return False
        return True

    def _forget(self, guest: str) -> None:
        if self.origin.pop(guest, None) is not None or self.meta.pop(guest, None) is not None:
            self._write(["-", guest])

    def unlink(self, guest: str) -> None:
        self.ensure_parent(guest)
        os.unlink(self.top + guest)
        self._forget(guest)

    def rmdir(self, guest: str) -> None:
        self.ensure_parent(guest)
        rel = self.origin.get(guest)
        if rel is not None:
            if not stat.S_ISDIR(os.lstat(self.lower + rel).st_mode):
                raise _err(errno.ENOTDIR)
            if not self._lower_dir_empty(rel):
                raise _err(errno.ENOTEMPTY)
        os.rmdir(self.top + guest)
        self._forget(guest)
        self._drop_below(guest)

    def _drop_below(self, guest: str) -> None:
        prefix = guest + "/"
        for table in (self.origin, self.meta):
            gone = [g for g in table if g.startswith(prefix)]
            for g in gone:
                del table[g]
                self._write(["-", g])

    def _move(self, old: str, new: str) -> None:
        """Records of ``old`` and everything below it move to ``new``."""
        self._moved = None
        for table in (self.origin, self.meta):
            table.pop(new, None)
            prefix = new + "/"
            for g in [g for g in table if g.startswith(prefix)]:
                del table[g]
            if old in table:
                table[new] = table.pop(old)
            prefix = old + "/"
            moved = [g for g in table if g.startswith(prefix)]
            for g in moved:
                table[new + g[len(old):]] = table.pop(g)

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        self.ensure_parent(old)
        self.ensure_parent(new)
        src, dst = self.top + old, self.top + new
        rel = self.origin.get(new)
        if rel is not None and not flags & RENAME_EXCHANGE:
            if os.path.isdir(src) and not os.path.islink(src) \
                    and stat.S_ISDIR(os.lstat(self.lower + rel).st_mode) \
                    and not self._lower_dir_empty(rel):
                raise _err(errno.ENOTEMPTY)
        if flags:
            _renameat2(src, dst, flags)
        else:
            os.rename(src, dst)
        if old == new:
            return
        if flags & RENAME_EXCHANGE:
            tmp = "\0swap"
            self._move(old, tmp)
            self._move(new, old)
            self._move(tmp, new)
        else:
            self._move(old, new)
        if flags & RENAME_EXCHANGE:
            for a, b in ((old, "\0swap"), (new, old), ("\0swap", new)):
                self._write(["mv", a, b])
        else:
            self._write(["mv", old, new])

    def link(self, old: str, new: str) -> None:
        self.ensure_parent(new)
        src = self.copy_up(old) if old in self.origin or self.is_lower(self.host_of(old)) \
            else self.top + old
        os.link(src, self.top + new, follow_symlinks=False)

    # -- fake attributes -----------------------------------------------------------------

    def set_meta(self, guest: str, uid: int = -1, gid: int = -1, mode: int = -1,
                 rdev: int = -1) -> None:
        m = self.meta.get(guest)
        if m is None:
            m = self.meta[guest] = Meta()
        if uid != -1:
            m.uid = uid
        if gid != -1:
            m.gid = gid
        if mode != -1:
            m.mode = mode
        if rdev != -1:
            m.rdev = rdev
        self._write(["m", guest, m.as_list()])

    # -- export ---------------------------------------------------------------------------

    def changes(self) -> Iterator[Tuple[str, str, str]]:
        """What the layer changed, as (kind, guest path, host path): "dir"
        (a directory of the layer), "entry" (a new or modified object, or a
        lower object now at another name: host path to take it from),
        "deleted" (a lower name that is gone from the merged view)."""
        lower = self.lower
        for dirpath, dirnames, filenames in os.walk(self.top):
            gdir = dirpath[len(self.top):] or "/"
            base = "" if gdir == "/" else gdir
            lower_dir = lower + base
            if os.path.isdir(lower_dir) and not os.path.islink(lower_dir):
                try:
                    lower_names = os.listdir(lower_dir)
                except OSError:
                    lower_names = []
                present = set(dirnames) | set(filenames)
                for name in sorted(lower_names):
                    if name not in present:
                        yield "deleted", base + "/" + name, ""
            keep = []
            for name in sorted(dirnames):
                g = base + "/" + name
                rel = self.origin.get(g)
                if rel is None:
                    keep.append(name)
                    yield "dir", g, dirpath + "/" + name
                elif rel != g:
                    yield "entry", g, lower + rel
            dirnames[:] = keep
            for name in sorted(filenames):
                g = base + "/" + name
                rel = self.origin.get(g)
                if rel is None:
                    yield "entry", g, dirpath + "/" + name
                elif rel != g:
                    yield "entry", g, lower + rel


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def _renameat2(src: str, dst: str, flags: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(-100, os.fsencode(src), -100, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise _err(code)


__all__ = ["Layer", "Meta", "parent_of", "RENAME_EXCHANGE", "RENAME_NOREPLACE"]
