#!/usr/bin/env python3
"""Publish throughput and stat lookup rate on a generated tree of >= 20,000 files.

1. A seeded tree (``--files`` files of 0-8 KiB in ``--files/100`` directories,
   a ``.cvmfscatalog`` marker in every tenth directory, a few 1-8 MiB files)
   is published into a fresh stratum-0 store with the default 4/8/16 MiB
   chunking; printed: files/s and MB/s (of source bytes), catalogs written.
2. The store is opened with :class:`Repository` through the plain local
   source (no network, so the figures are about catalogs and the entry
   cache), and ``--lookups`` random existing paths are ``stat``-ed:
   - cold: a fresh repository, every path looked up once (SQLite queries,
     nested catalogs loaded on first use);
   - warm: the same paths again, several rounds (bounded LRU hits).
   Goal: warm >= 50,000 lookups/s.

    .venv/bin/python benchmarks/bench_publish.py [--files 20000] [--lookups 20000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from uvm._native import BACKEND  # noqa: E402
from uvm.cvmfs.publish import create_keys, publish  # noqa: E402
from uvm.cvmfs.repository import Repository  # noqa: E402

FQRN = "bench.uvm.local"


def make_tree(root: str, files: int, seed: int) -> tuple:
    rng = random.Random(seed)
    dirs = [root]
    for index in range(max(1, files // 100)):
        path = os.path.join(rng.choice(dirs), f"dir{index}")
        os.mkdir(path)
        dirs.append(path)
        if index % 10 == 5:
            open(os.path.join(path, ".cvmfscatalog"), "w").close()
    paths, total = [], 0
    for index in range(files):
        path = os.path.join(rng.choice(dirs), f"file{index}.txt")
        size = rng.randrange(0, 8192)
        data = (b"%d " % index) * (size // 8) + rng.randbytes(size % 64)
        with open(path, "wb") as handle:
            handle.write(data)
        paths.append(path)
        total += len(data)
    for index in range(4):
        path = os.path.join(root, f"large{index}.bin")
        data = rng.randbytes(1 << 20) * (1 + 2 * index)
        with open(path, "wb") as handle:
            handle.write(data)
        total += len(data)
    return paths, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--warm-rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="bench-publish-")
    try:
        src, store, keys = (os.path.join(work, name) for name in ("src", "store", "keys"))
        os.mkdir(src)
        paths, total = make_tree(src, args.files, args.seed)
        create_keys(FQRN, keys)
        print(f"codec backend: {BACKEND}")
        print(f"tree: {len(paths)} small files + 4 large, {total / 1e6:.1f} MB")

        start = time.perf_counter()
        result = publish(src, FQRN, store, keys)
        elapsed = time.perf_counter() - start
        print(f"publish: {elapsed:.2f} s, {result.files / elapsed:,.0f} files/s, "
              f"{result.file_bytes / elapsed / 1e6:.1f} MB/s, {result.catalogs} catalogs, "
              f"{result.new_objects} objects")

        start = time.perf_counter()
        again = publish(src, FQRN, store, keys)
        elapsed = time.perf_counter() - start
        print(f"republish unchanged: {elapsed:.2f} s, {again.new_objects} new objects")

        rng = random.Random(args.seed + 1)
        sample = ["/" + os.path.relpath(rng.choice(paths), src) for _ in range(args.lookups)]
        with Repository.open(FQRN, servers=store, keys=keys,
                             state_dir=os.path.join(work, "state")) as repo:
            start = time.perf_counter()
            for path in sample:
                repo.stat(path)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(args.warm_rounds):
                for path in sample:
                    repo.stat(path)
            warm = time.perf_counter() - start
        print(f"lookups cold: {len(sample) / cold:,.0f}/s ({len(sample)} random paths)")
        rate = len(sample) * args.warm_rounds / warm
        print(f"lookups warm: {rate:,.0f}/s (goal >= 50,000/s: {'met' if rate >= 50_000 else 'MISSED'})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
