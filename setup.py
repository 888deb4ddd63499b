"""Build hook: everything else is in pyproject.toml.

``cffi_modules`` compiles ``uvm._native_codec`` and ``uvm._native_fastpath``
from ``native/``; ``native/uvm_preload.c`` becomes ``uvm/uvm_preload_64.so``
and ``uvm_preload_32.so``, the library the tracer preloads into guest
programs that call realpath() or fstat().  All are optional: if one cannot be compiled
(no compiler, no zlib or OpenSSL headers, no 32-bit multilib) the install
goes on and uvm uses its pure-Python codec, its Python tracer loop for
every stop, or glibc's own realpath() and fstat().
"""

import os
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

PRELOAD_FLAGS = ["-O2", "-fPIC", "-shared", "-nostdlib", "-fno-stack-protector", "-fno-builtin",
                 "-fno-tree-loop-distribute-patterns",
                 "-Wall", "-Wextra", "-Wl,-z,now", "-Wl,--hash-style=both"]


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when the C won't compile."""

    def run(self) -> None:
        for ext in self.extensions:
            ext.optional = True
        super().run()
        package = "uvm" if self.inplace else os.path.join(self.build_lib, "uvm")
        os.makedirs(package, exist_ok=True)
        for bits in ("64", "32"):
            out = os.path.join(package, f"uvm_preload_{bits}.so")
            cmd = [os.environ.get("CC", "cc"), f"-m{bits}", *PRELOAD_FLAGS, "-o", out,
                   os.path.join("native", "uvm_preload.c")]
            if subprocess.run(cmd, check=False).returncode != 0:
                print(f"warning: {out} not built; guests keep glibc's realpath() and fstat()",
                      file=sys.stderr)


setup(
    cffi_modules=["native/build.py:ffibuilder", "native/build.py:fastpath_builder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
