"""``uvm demo``: build, publish, serve and run a template on this machine."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="build a template from this machine, publish, serve and run it",
        description="Show the whole product with no network beyond loopback: a small OS "
        "template is built from this machine's programs (bash, coreutils, python3), "
        "published as a CernVM-FS repository, served on 127.0.0.1 and run with "
        "`uvm run --template`, cold and warm.")
    parser.add_argument("--dir", metavar="DIR",
                        help="work directory (kept; default: a temporary one, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD",
                        help="the command to run in the template (default: a short tour)")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from uvm.demo import run_demo

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    return run_demo(args.dir, command or None, keep=args.keep, say=say)
