"""``uvm publish``: write a directory tree as a new revision of a stratum-0 store."""

from __future__ import annotations

import argparse

from uvm.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "publish",
        help="publish a directory tree as a CernVM-FS repository (rootless stratum 0)",
        description="Publish SRC as the next revision of repository FQRN in STORE, which "
        "any static web server can then serve as http://HOST/cvmfs/FQRN.",
    )
    parser.add_argument("src", metavar="SRC", help="directory tree to publish")
    parser.add_argument("--repo", required=True, metavar="FQRN", help="repository name")
    parser.add_argument("--to", required=True, metavar="STORE", help="stratum-0 directory")
    parser.add_argument("--keys", required=True, metavar="KEYDIR",
                        help="directory holding FQRN.masterkey, FQRN.key and FQRN.crt")
    parser.add_argument("--tag", metavar="NAME", help="also tag the new revision NAME")
    parser.add_argument("--description", metavar="TEXT", help="description of the tag")
    parser.add_argument("--hash-algorithm", default="sha1", choices=["sha1", "shake128"],
                        help="content hash algorithm (default sha1)")
    parser.add_argument("--whitelist-days", type=int, default=30, metavar="N",
                        help="whitelist lifetime in days (default 30)")
    parser.add_argument("--autocatalogs", action="store_true",
                        help="split large directory trees into nested catalogs automatically")
    parser.add_argument("--autocatalog-max", type=int, default=100_000, metavar="N",
                        help="most entries a catalog takes before a subtree is split off")
    parser.add_argument("--chunk-sizes", metavar="MIN,AVG,MAX",
                        help="content-defined chunk sizes in bytes (default 4,8,16 MiB)")
    parser.add_argument("--no-chunking", action="store_true", help="never chunk files")
    parser.set_defaults(handler=_publish)


def _policy(args: argparse.Namespace):
    from uvm.cvmfs.publish.chunking import NO_CHUNKING, ChunkPolicy

    if args.no_chunking:
        return NO_CHUNKING
    if not args.chunk_sizes:
        return ChunkPolicy()
    try:
        low, avg, high = (int(part) for part in args.chunk_sizes.split(","))
        return ChunkPolicy(low, avg, high)
    except ValueError:
        raise UsageError(
            "--chunk-sizes wants MIN,AVG,MAX bytes with 32 <= MIN < AVG < MAX") from None


def _publish(args: argparse.Namespace) -> int:
    from uvm.cvmfs.hashing import Algorithm
    from uvm.cvmfs.publish import publish

    result = publish(
        args.src, args.repo, args.to, args.keys, tag=args.tag, description=args.description,
        algorithm=Algorithm.from_name(args.hash_algorithm), whitelist_days=args.whitelist_days,
        chunking=_policy(args), autocatalogs=args.autocatalogs,
        autocatalog_max=args.autocatalog_max,
    )
    if not args.quiet:
        print(f"published {args.repo} revision {result.revision}: root catalog {result.root_hash}, "
              f"{result.catalogs} catalog(s), {result.entries} entries, "
              f"{result.new_objects} new object(s) ({result.new_bytes} bytes)")
    return 0
