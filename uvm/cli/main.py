"""Entry point: build the parser from the command modules, map errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from uvm.errors import UvmError

# One module per group of subcommands; each defines ``register(subparsers)``
# and sets ``handler`` on the parsers it adds.
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


def build_parser() -> argparse.ArgumentParser:
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
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from uvm.cli.doctor import version_line

        print(version_line())
        return 0
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="uvm: %(levelname)s: %(message)s",
    )
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


if __name__ == "__main__":
    sys.exit(main())
