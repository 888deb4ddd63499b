"""Entry point: build the parser from the command modules, map errors to exit codes."""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys

from uvm import log as uvm_log
from uvm.errors import UvmError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import List, Optional

# One module per subcommand, named after it; each defines
# ``register(subparsers)`` and sets ``handler`` on the parser it adds.
COMMAND_MODULES = [
    "uvm.cli.doctor",
    "uvm.cli.keys",
    "uvm.cli.publish",
    "uvm.cli.repo",
    "uvm.cli.run",
    "uvm.cli.config",
    "uvm.cli.cache",
    "uvm.cli.templates",
    "uvm.cli.demo",
    "uvm.cli.instance",
]


# Top-level options that take a value (the command name is the first other word).
_VALUED = ("--log-level", "--config")


def _command_modules(argv: Optional[List[str]]) -> List[str]:
    """Only the named command's module when it is known (importing and
    registering all of them is 30-40 ms of every ``uvm run``), else all
    (help, errors and suggestions list every command)."""
    words = iter(sys.argv[1:] if argv is None else argv)
    for word in words:
        if word in _VALUED:
            next(words, None)
        elif not word.startswith("-"):
            module = "uvm.cli." + word
            return [module] if module in COMMAND_MODULES else COMMAND_MODULES
    return COMMAND_MODULES


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uvm",
        description="User-mode CernVM: run programs inside OS environments "
        "preserved on CernVM-FS, without root.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only print errors"
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="library log level (default: warning)",
    )
    parser.add_argument(
        "--config", metavar="FILE",
        help="read this TOML configuration file after the system and user ones "
        "(CVMFS_* environment variables still win)",
    )
    subparsers = parser.add_subparsers(metavar="COMMAND")
    for name in _command_modules(argv):
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.version:
        from uvm.cli.doctor import version_line

        print(version_line())
        return 0
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return 2
    uvm_log.configure(args.log_level, "uvm: %(levelname)s: %(message)s")
    if not gc.isenabled():  # entry() paused it: what exists now lives until exit
        gc.freeze()
        gc.enable()
    try:
        status = args.handler(args)
    except UvmError as err:
        print(f"uvm: error: {err.one_line()}", file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:
        print("uvm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        print(f"uvm: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    return int(status or 0)


def entry() -> None:
    """The ``uvm`` command: :func:`main`, then out without the interpreter's
    teardown, which spends about 20 ms freeing what the process is about to
    lose anyway, at the end of every run.  Nothing uvm needs happens at exit:
    the cache and the layer are consistent at every step, and a download
    still running in the background is as if the process were killed (its
    partial file is never served).  Output is flushed first.

    The cyclic garbage collector is paused until the command's handler
    starts, and then skips the objects made before (modules, the parser),
    which all live until exit anyway: its passes over them were 3-5 ms of
    every command."""
    gc.disable()
    status = main()
    uvm_log.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = status or 1
    os._exit(status)


if __name__ == "__main__":
    entry()
