"""Child process for the multi-process tests: fetch objects, print what was read.

Usage: ``fetch_worker.py LISTFILE [--slow]``; settings come from ``CVMFS_*``
environment variables through :mod:`uvm.config`, as in a real run.  Each
line of LISTFILE is ``<hash> <size>``; for every object the worker prints
``<hash> <sha1 of the bytes read from the returned path>``.
"""

from __future__ import annotations

import hashlib
import sys

from uvm import config
from uvm.cvmfs.fetcher import Fetcher
from uvm.cvmfs.hashing import ContentHash, Suffix

FQRN = "test.uvm.local"


def main() -> int:
    wanted = []
    with open(sys.argv[1]) as f:
        for line in f:
            text, size = line.split()
            wanted.append((ContentHash.parse(text), Suffix.NONE, int(size), True))
    settings = config.load().settings(FQRN)
    with Fetcher.from_settings(FQRN, settings) as fetcher:
        if "--prefetch" in sys.argv:
            paths = fetcher.prefetch(wanted)
        else:
            paths = [fetcher.fetch_object(*item) for item in wanted]
        for (h, _, _, _), path in zip(wanted, paths):
            with open(path, "rb") as obj:
                print(h, hashlib.sha1(obj.read()).hexdigest(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
