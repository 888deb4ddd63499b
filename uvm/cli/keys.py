"""``uvm keys create``: the key files a repository is published with."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="create repository signing keys")
    commands = parser.add_subparsers(metavar="ACTION")
    create = commands.add_parser(
        "create",
        help="master key pair, repository key and self-signed certificate "
        "(FQRN.masterkey, FQRN.pub, FQRN.key, FQRN.crt)",
    )
    create.add_argument("fqrn", metavar="FQRN", help="repository name, e.g. demo.uvm.local")
    create.add_argument("--dir", required=True, metavar="KEYDIR", help="where to write the keys")
    create.set_defaults(handler=_create)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def _create(args: argparse.Namespace) -> int:
    from uvm.cvmfs.publish.keys import create_keys

    paths = create_keys(args.fqrn, args.dir)
    if not args.quiet:
        print(f"created {paths.masterkey}, {paths.pub}, {paths.key} and {paths.crt}")
        print(f"readers need only {paths.pub}; keep {paths.masterkey} offline if you can")
    return 0
