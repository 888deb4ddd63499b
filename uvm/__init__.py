"""uvm: a user-mode CernVM.

Runs unmodified programs, without root, inside operating-system environments
preserved on CernVM-FS.  The library has two entry points, mirrored by the
command line: :mod:`uvm.cvmfs` (read and publish repositories) and
:mod:`uvm.sandbox` (run programs under a translated root).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
