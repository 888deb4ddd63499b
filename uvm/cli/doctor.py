"""``uvm doctor`` and the ``--version`` line."""

from __future__ import annotations

import argparse

from uvm import __version__


def version_line() -> str:
    from uvm._native import BACKEND  # lazy: loading the codec is not free

    return f"uvm {__version__} (codec: {BACKEND})"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check what will and will not work on this machine"
    )
    parser.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from uvm.doctor import run_checks

    results = run_checks()
    for check in results:
        mark = "ok  " if check.ok else "FAIL"
        print(f"{mark} {check.name}: {check.detail}")
    return 0 if all(check.ok for check in results) else 1
