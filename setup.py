"""Build hook: everything else is in pyproject.toml.

``cffi_modules`` compiles ``uvm._native_codec`` and ``uvm._native_fastpath``
from ``native/``.  Both are optional: if one cannot be compiled (no
compiler, no zlib or OpenSSL headers) the install goes on and uvm uses its
pure-Python codec, or its Python tracer loop for every stop.
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
    cffi_modules=["native/build.py:ffibuilder", "native/build.py:fastpath_builder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
