"""Build hook: everything else is in pyproject.toml.

``cffi_modules`` compiles ``uvm._native_codec`` from ``native/``.  The
extension is optional: if it cannot be compiled (no compiler, no zlib or
OpenSSL headers) the install goes on and uvm uses its pure-Python codec.
"""

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when the C codec won't compile."""

    def run(self) -> None:
        for ext in self.extensions:
            ext.optional = True
        super().run()


setup(
    cffi_modules=["native/build.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
