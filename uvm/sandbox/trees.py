"""Removing trees that uvm made read-only on purpose.

Writable layers and CernVM-FS shadow trees keep the guest's directory modes
(a published ``dr-xr-xr-x`` stays so), so a plain ``rmtree`` cannot empty
them.  Imported by every run that removes a temporary layer: nothing heavy.
"""

from __future__ import annotations

import os
import shutil


def remove_tree(path: str) -> None:
    """``rm -rf`` that also enters directories made read-only."""

    def onerror(func, target, _exc):
        parent = os.path.dirname(target)
        try:
            os.chmod(parent, 0o700)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, 0o700)
        except OSError:
            pass
        try:
            func(target)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            shutil.rmtree(target, onerror=onerror)

    for dirpath, dirnames, _files in os.walk(path):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            try:
                if not os.path.islink(full):
                    os.chmod(full, 0o700)
            except OSError:
                pass
    shutil.rmtree(path, onerror=onerror)
