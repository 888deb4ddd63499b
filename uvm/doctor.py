"""Machine checks for ``uvm doctor``: what will and will not work here, and why.

Each component that depends on the machine exposes ``checks()`` returning
:class:`Check` results; this module only collects them.
"""

from __future__ import annotations

import importlib
import platform
import sys
from dataclasses import dataclass
from typing import Iterator, List

# Modules with a ``checks()`` function, in the order their results are shown.
CHECK_PROVIDERS: List[str] = ["uvm._native", "uvm.sandbox.probe", "uvm.sandbox.fastpath",
                               "uvm.cvmfs.cache"]


@dataclass(frozen=True)
class Check:
    """One finding: ``ok`` False means the named feature will not work."""

    name: str
    ok: bool
    detail: str


def _interpreter() -> Iterator[Check]:
    yield Check(
        "python",
        sys.version_info >= (3, 9),
        f"{platform.python_implementation()} {platform.python_version()} on "
        f"{platform.system()} {platform.release()} {platform.machine()}",
    )


def run_checks() -> List[Check]:
    results = list(_interpreter())
    for name in CHECK_PROVIDERS:
        results.extend(importlib.import_module(name).checks())
    return results
