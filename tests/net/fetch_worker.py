"""Child process for the multi-process tests: fetch objects, print what was read.

Usage: ``fetch_worker.py LISTFILE [--slow]``; settings come from ``CVMFS_*``
environment variables through :mod:`uvm.config`, as in a real run.  Each
line of LISTFILE is ``<hash> <size>``; for every object the worker prints
``<hash> <sha1 of the bytes read>``; ``--prefetch`` first fetches all of
them in parallel.
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
            fetcher.prefetch(wanted)  # warms the cache; paths may be evicted again
        for item in wanted:
            with fetcher.open_object(*item) as obj:
                print(item[0], hashlib.sha1(obj.read()).hexdigest(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
