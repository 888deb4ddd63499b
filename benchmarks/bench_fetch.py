#!/usr/bin/env python3
"""Cold fetch over a slow link, sequential versus parallel; warm cache versus a plain directory.

A tree of ``--files`` files (default 5,000, about ``--size-mb`` 200 MB, half
random and half repetitive bytes) is published with ``uvm publish``'s
library, served by the loopback fault server of ``tests/net`` with
``--latency`` (20 ms) added to every request, and read back:

The server (``tests/net/faultserver.py``) runs in its own process.

- cold, sequential: ``Fetcher.fetch_object`` on each file in turn, into an
  empty cache;
- cold, parallel: ``Fetcher.prefetch`` (``--parallel`` threads, default the
  ``parallel_downloads`` setting), into another empty cache;
- warm: the same files read from the plain source directory, from the
  cache's files by path (what a guest does once a file is materialized),
  and through the fetcher (cache lookup + open + read); best of
  ``--repeat`` alternating rounds (the machine is shared: the best round is
  the least disturbed one).

Both cold runs include the walk of the catalogs only once, outside the timed
part; every object really is downloaded, inflated and verified.

    .venv/bin/python benchmarks/bench_fetch.py [--files 5000] [--size-mb 200] [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS_NET = os.path.join(os.path.dirname(HERE), "tests", "net")

from uvm import config  # noqa: E402
from uvm._native import BACKEND  # noqa: E402
from uvm.cvmfs.client import open_repository, subtree_objects  # noqa: E402
from uvm.cvmfs.fetcher import Fetcher  # noqa: E402
from uvm.cvmfs.publish import create_keys, publish  # noqa: E402

FQRN = "bench.uvm.local"


def make_tree(root: str, files: int, total: int, seed: int = 7) -> int:
    """Files of varied size adding up to about ``total`` bytes; returns the real total."""
    rng = random.Random(seed)
    mean = total / files
    written = 0
    text = b"".join(b"line %d of some repetitive library text\n" % i for i in range(4096))
    for index in range(files):
        directory = os.path.join(root, f"d{index % 50:02d}", f"s{index % 7}")
        os.makedirs(directory, exist_ok=True)
        size = max(1, int(rng.expovariate(1 / mean)))
        if index % 2:
            data = rng.randbytes(size)
        else:
            data = (text * (size // len(text) + 1))[:size - 8] + index.to_bytes(8, "little")
        with open(os.path.join(directory, f"f{index}"), "wb") as f:
            f.write(data)
        written += len(data)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--size-mb", type=float, default=200)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--parallel", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="500 files, 20 MB")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    if args.quick:
        args.files, args.size_mb = 500, 20

    work = tempfile.mkdtemp(prefix="uvm-bench-fetch-", dir=args.workdir)
    server = None
    try:
        src = os.path.join(work, "src")
        total = make_tree(src, args.files, int(args.size_mb * 1e6))
        keydir = os.path.join(work, "keys")
        create_keys(FQRN, keydir)
        stratum = os.path.join(work, "www")
        t0 = time.monotonic()
        publish(src, FQRN, os.path.join(stratum, "cvmfs", FQRN), keydir, ttl=3600)
        publish_s = time.monotonic() - t0
        server = subprocess.Popen(
            [sys.executable, os.path.join(TESTS_NET, "faultserver.py"), stratum,
             "--latency", str(args.latency)], stdout=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/cvmfs/{FQRN}"

        def environ(cache: str) -> dict:
            return {
                "HOME": work, "XDG_CONFIG_HOME": os.path.join(work, "none"),
                "XDG_STATE_HOME": os.path.join(work, "state"),
                "CVMFS_SERVER_URL": url, "CVMFS_HTTP_PROXY": "DIRECT",
                "CVMFS_KEYS_DIR": keydir, "CVMFS_CACHE_BASE": cache,
                "CVMFS_QUOTA_LIMIT": "0",
            }

        def cold(name: str, parallel: bool):
            cache = os.path.join(work, name)
            cfg = config.load(environ=environ(cache), system_files=[])
            repo = open_repository(FQRN, cfg, state_dir=os.path.join(work, "state", name))
            wanted = subtree_objects(repo)
            fetcher: Fetcher = repo.source
            before = fetcher.transport.requests_sent
            start = time.monotonic()
            if parallel:
                fetcher.prefetch(wanted, parallel=args.parallel)
            else:
                for item in wanted:
                    fetcher.fetch_object(*item)
            elapsed = time.monotonic() - start
            requests = fetcher.transport.requests_sent - before
            return repo, wanted, elapsed, requests

        print(f"tree: {args.files} files, {total / 1e6:.0f} MB; published in {publish_s:.1f} s; "
              f"codec {BACKEND}; latency {args.latency * 1000:.0f} ms per request")
        seq_repo, wanted, seq_s, seq_req = cold("cache-seq", parallel=False)
        seq_repo.close()
        print(f"cold sequential: {seq_s:6.2f} s  {len(wanted)} objects, {seq_req} requests, "
              f"{total / 1e6 / seq_s:6.1f} MB/s")
        par_repo, wanted, par_s, par_req = cold("cache-par", parallel=True)
        threads = args.parallel or par_repo.source._parallel
        print(f"cold parallel:   {par_s:6.2f} s  {len(wanted)} objects, {par_req} requests, "
              f"{total / 1e6 / par_s:6.1f} MB/s ({threads} threads)")
        print(f"  parallel speed-up: {seq_s / par_s:.1f}x (goal >= 8x)")

        # warm: the same files through the fetcher and from the plain directory
        fetcher: Fetcher = par_repo.source
        plain = [os.path.join(d, n) for d, _, names in os.walk(src) for n in names]

        def read_plain() -> int:
            n = 0
            for path in plain:
                with open(path, "rb") as f:
                    n += len(f.read())
            return n

        def read_cached() -> int:
            n = 0
            for item in wanted:
                with open(fetcher.fetch_object(*item), "rb") as f:
                    n += len(f.read())
            return n

        cache_paths = [fetcher.fetch_object(*item) for item in wanted]

        def read_cache_files() -> int:
            n = 0
            for path in cache_paths:
                with open(path, "rb") as f:
                    n += len(f.read())
            return n

        read_plain(), read_cached(), read_cache_files()  # page cache warm for all
        runs = {read_plain: [], read_cache_files: [], read_cached: []}
        for _ in range(args.repeat):
            for fn, sink in runs.items():
                start = time.perf_counter()
                fn()
                sink.append(time.perf_counter() - start)
        plain_m, files_m, cached_m = (min(t) for t in runs.values())
        print(f"warm plain dir:          {plain_m * 1000:7.1f} ms for {len(plain)} files")
        print(f"warm cache files:        {files_m * 1000:7.1f} ms (open+read of cached paths)")
        print(f"warm fetcher + read:     {cached_m * 1000:7.1f} ms (lookup, then open+read)")
        print(f"  warm ratio cache files/plain:   {files_m / plain_m:.3f} (goal <= 1.10)")
        print(f"  warm ratio fetcher+read/plain:  {cached_m / plain_m:.3f}; lookup "
              f"{(cached_m - files_m) / len(wanted) * 1e6:.1f} us per object")
        par_repo.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
