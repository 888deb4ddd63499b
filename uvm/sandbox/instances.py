"""Named instances: writable layers kept across runs, one per name.

An instance is a layer directory ``$XDG_DATA_HOME/uvm/instances/NAME``
(default ``~/.local/share/uvm/instances/NAME``) plus ``.uvm/instance.json``
recording the root it belongs to.  A run holds an exclusive ``flock`` on
``.uvm/lock`` for its whole duration: a second run of the same instance is
refused (not queued), with the pid of the holder in the message.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import time
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional

from uvm.errors import LayerError
from uvm.sandbox.layer import Layer
from uvm.sandbox.trees import remove_tree

if TYPE_CHECKING:
    import tarfile  # export only: kept out of every run's start-up

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
INFO = ".uvm/instance.json"
LOCK = ".uvm/lock"


def instances_base() -> str:
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "uvm", "instances")


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise LayerError(f"bad instance name {name!r}",
                         hint="use letters, digits, '.', '_' and '-' (not first)")
    return name


class Instance:
    """One named instance (the directory may not exist yet)."""

    def __init__(self, name: str, base: Optional[str] = None) -> None:
        self.name = check_name(name)
        self.path = os.path.join(base or instances_base(), name)
        self._lock_fd: Optional[int] = None

    @property
    def exists(self) -> bool:
        return os.path.isfile(os.path.join(self.path, INFO))

    def info(self) -> Dict:
        try:
            with open(os.path.join(self.path, INFO)) as f:
                return json.load(f)
        except FileNotFoundError:
            raise LayerError(f"no instance named {self.name}",
                             hint="see uvm instance list") from None

    def _write_info(self, info: Dict) -> None:
        tmp = os.path.join(self.path, INFO + ".new")
        with open(tmp, "w") as f:
            json.dump(info, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, os.path.join(self.path, INFO))

    def lock(self) -> None:
        """Exclusive use for one run; LayerError when another run holds it."""
        os.makedirs(os.path.join(self.path, ".uvm"), exist_ok=True)
        fd = os.open(os.path.join(self.path, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LayerError(f"instance {self.name} is in use by another uvm run (pid {holder})",
                                 hint="wait for it to end; two runs of one instance are refused") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def in_use(self) -> bool:
        try:
            fd = os.open(os.path.join(self.path, LOCK), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)

    def open_layer(self, root: str, what: str, identity=None, prepare=None) -> Layer:
        """Lock the instance and open its layer over ``root`` (created on the
        first run; later runs must name the same root)."""
        root = os.path.realpath(root)
        self.lock()
        try:
            if self.exists:
                info = self.info()
                if info.get("root") != root:
                    raise LayerError(
                        f"instance {self.name} belongs to {info.get('what') or info.get('root')}, "
                        f"not {what}",
                        hint=f"run it with that root, or pick another name (uvm instance rm {self.name})")
            else:
                info = {"name": self.name, "root": root, "what": what,
                        "created": time.time(), "runs": 0}
            layer = Layer(self.path, root, prepare=prepare)
            info["runs"] = info.get("runs", 0) + 1
            info["last_run"] = time.time()
            if identity is not None:
                info["identity"] = [identity.uid, identity.gid]
            self._write_info(info)
            return layer
        except BaseException:
            self.unlock()
            raise

    def remove(self) -> None:
        self.info()
        if self.in_use():
            raise LayerError(f"instance {self.name} is in use by a uvm run",
                             hint="wait for it to end")
        remove_tree(self.path)

    def size(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except OSError:
                    pass
        return total

    # -- export --------------------------------------------------------------------------

    def export(self, out: str) -> int:
        """Write the layer alone (what the instance changed) as a tar file:
        new and modified objects as they are; a deleted lower name as an
        empty file ``.wh.NAME`` in its directory (the overlayfs/OCI
        convention).  Returns the number of members."""
        info = self.info()
        if self.in_use():
            raise LayerError(f"instance {self.name} is in use by a uvm run",
                             hint="export it after the run")
        layer = Layer(self.path, info["root"])
        ident = info.get("identity")
        real = (os.getuid(), os.getgid())
        count = 0
        try:
            import tarfile

            with tarfile.open(out, "w") as tar:
                for kind, guest, host in layer.changes():
                    name = guest.lstrip("/")
                    if kind == "deleted":
                        head, _, tail = name.rpartition("/")
                        ti = tarfile.TarInfo((head + "/" if head else "") + ".wh." + tail)
                        ti.mtime = int(time.time())
                        tar.addfile(ti)
                        count += 1
                        continue
                    for ti, src in _members(tar, host, name, kind == "entry"):
                        _own(ti, layer.meta.get("/" + ti.name), real, ident)
                        if ti.isreg():
                            with open(src, "rb") as f:
                                tar.addfile(ti, f)
                        else:
                            tar.addfile(ti)
                        count += 1
        finally:
            layer._journal.close()
        return count


def _members(tar: tarfile.TarFile, host: str, name: str, recurse: bool) -> Iterator:
    """TarInfo and source of ``host`` as ``name``; a lower directory moved
    to a new name (``recurse``) comes with everything below it."""
    ti = tar.gettarinfo(host, arcname=name)
    ti.uname = ti.gname = ""
    yield ti, host
    if recurse and ti.isdir():
        for dirpath, dirnames, filenames in os.walk(host):
            dirnames.sort()
            for entry in sorted(dirnames) + sorted(filenames):
                full = os.path.join(dirpath, entry)
                sub = tar.gettarinfo(full, arcname=name + full[len(host):])
                sub.uname = sub.gname = ""
                yield sub, full


def _own(ti: tarfile.TarInfo, meta, real, ident) -> None:
    if ident is not None:
        if ti.uid == real[0]:
            ti.uid = ident[0]
        if ti.gid == real[1]:
            ti.gid = ident[1]
    if meta is None:
        return
    if meta.uid != -1:
        ti.uid = meta.uid
    if meta.gid != -1:
        ti.gid = meta.gid
    if meta.mode != -1 and (stat.S_ISCHR(meta.mode) or stat.S_ISBLK(meta.mode)):
        import tarfile

        ti.type = tarfile.CHRTYPE if stat.S_ISCHR(meta.mode) else tarfile.BLKTYPE
        ti.devmajor = os.major(meta.rdev) if meta.rdev != -1 else 0
        ti.devminor = os.minor(meta.rdev) if meta.rdev != -1 else 0
        ti.size = 0


def list_instances(base: Optional[str] = None) -> List[Instance]:
    base = base or instances_base()
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if _NAME.match(name):
            inst = Instance(name, base)
            if inst.exists:
                out.append(inst)
    return out


__all__ = ["Instance", "instances_base", "list_instances", "check_name"]
