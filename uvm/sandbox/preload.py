"""The library preloaded into guest programs (``native/uvm_preload.c``).

The tracer hands the guest's loader ``--preload /proc/<tracer>/fd/N`` for
programs that import the calls the library serves (execve.py).  Each run
gets its own copy of the library in a sealed memfd, with two things written
into its ``uvm_config``:

- the name of the run's table of published directories (a memfd the C
  fast path writes and the library maps read-only, ``native/uvm_table.h``);
- the run's key, which the seccomp filter's gate (seccomp.py) needs in the
  sixth argument register to let the library's read-only calls through
  without a stop.

Without the C fast path (``-v``, ``UVM_TRACER=python``, not built) the
copies carry no table and no key, and the library asks the tracer as before:
realpath() in one stop, fstat() in none.  ``UVM_PRELOAD=0`` preloads nothing.
"""

from __future__ import annotations

import fcntl
import mmap
import os

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Dict, Optional

_MAGIC = b"uvm-preload-cfg1"  # uvm_config in uvm_preload.c: magic, key (8), table name (64)
_F_SEAL_FUTURE_WRITE = 0x10
_SEALED = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def _library(bits: str) -> Optional[bytes]:
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        with open(os.path.join(package, f"uvm_preload_{bits}.so"), "rb") as f:
            return f.read()
    except OSError:
        return None


def configure(image: bytes, key: int, table: str) -> bytes:
    """``image`` with ``key`` and ``table`` written into its uvm_config."""
    at = image.find(_MAGIC)
    name = table.encode()
    if at < 0 or image.find(_MAGIC, at + 1) >= 0 or len(name) >= 64:
        raise ValueError("uvm: the preloaded library has no single uvm_config")
    config = _MAGIC + key.to_bytes(8, "little") + name.ljust(64, b"\0")
    return image[:at] + config + image[at + len(config):]


def _sealed_memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, data)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALED)
        with mmap.mmap(fd, len(data), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_EXEC):
            pass  # a loader must map it executable (vm.memfd_noexec may forbid it)
    except OSError:
        os.close(fd)
        raise
    return fd


class Preload:
    """The run's copies of the library, by ELF class (64-bit: True), named
    as the guest's loader opens them; and, with ``table_size``, the run's
    table (a memfd of that many bytes) and key.  None unless ``enabled``
    (the guest must reach the tracer's descriptors)."""

    def __init__(self, enabled: bool, table_size: int = 0) -> None:
        self.names: Dict[bool, bytes] = {}
        self.table_fd = -1
        self.key = 0
        if not enabled or os.environ.get("UVM_PRELOAD", "").strip() == "0":
            return
        images = {is_64: _library(bits) for is_64, bits in ((True, "64"), (False, "32"))}
        if table_size and any(images.values()):
            self.table_fd = os.memfd_create("uvm-table", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            os.ftruncate(self.table_fd, table_size)
            while not (self.key & 0xFFFFFFFF and self.key >> 32):
                self.key = int.from_bytes(os.urandom(8), "little")
        pid = os.getpid()
        for is_64, image in images.items():
            if image is None:
                continue
            if self.key:
                image = configure(image, self.key, f"/proc/{pid}/fd/{self.table_fd}")
            try:
                fd = _sealed_memfd(f"uvm_preload_{64 if is_64 else 32}.so", image)
            except OSError:
                continue
            self.names[is_64] = f"/proc/{pid}/fd/{fd}".encode()
        if not self.names:
            self.key = 0

    def seal_table(self) -> None:
        """No writable mapping of the table from now on (the fast path has
        its own): a guest cannot change what another guest reads."""
        if self.table_fd >= 0:
            fcntl.fcntl(self.table_fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | _F_SEAL_FUTURE_WRITE)
