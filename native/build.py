"""cffi builders (API mode) for ``uvm._native_codec`` and ``uvm._native_fastpath``.

``setup.py`` names ``native/build.py:ffibuilder`` and
``native/build.py:fastpath_builder`` in ``cffi_modules``, so ``pip install
.`` (or ``-e .``) compiles both extensions; there is no manual step.  The
codec links the system zlib and OpenSSL libcrypto, and libdeflate when its
headers are installed (``UVM_NO_LIBDEFLATE=1`` builds without it); the
tracer's fast path needs only libc.  There is no other way to build them:
after editing the C, run ``./dev/setup.sh`` (or ``pip install -e .``) again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent


def _have_libdeflate() -> bool:
    if os.environ.get("UVM_NO_LIBDEFLATE"):
        return False
    if shutil.which("pkg-config"):
        ok = subprocess.run(
            ["pkg-config", "--exists", "libdeflate"], check=False
        ).returncode == 0
        if ok:
            return True
    return any(Path(d, "libdeflate.h").exists() for d in ("/usr/include", "/usr/local/include"))


def _cdef(header: str) -> str:
    """The header minus preprocessor lines cffi cannot read (comments are fine)."""
    lines = []
    for line in (HERE / header).read_text().splitlines():
        if line.startswith("#") and not line.startswith("#define"):
            continue
        lines.append(line)
    return "\n".join(lines)


def _builder(module: str, name: str, **link) -> FFI:
    """An API-mode builder for ``native/<name>.c`` with its header ``<name>.h``."""
    ffi = FFI()
    ffi.cdef(_cdef(name + ".h"))
    ffi.set_source(
        module,
        f'#include "{name}.h"\n',
        # Relative to the project root, where setup.py runs.
        sources=[f"native/{name}.c"],
        include_dirs=[str(HERE)],
        extra_compile_args=["-O2", "-Wall", "-Wextra"],
        **link,
    )
    return ffi


LIBDEFLATE = _have_libdeflate()

ffibuilder = _builder(
    "uvm._native_codec", "uvm_codec",
    libraries=["z", "crypto"] + (["deflate"] if LIBDEFLATE else []),
    define_macros=[("UVM_HAVE_LIBDEFLATE", "1")] if LIBDEFLATE else [],
)
fastpath_builder = _builder("uvm._native_fastpath", "uvm_fastpath")
