#!/usr/bin/env python3
"""A worker node's own gcc compiling against headers on /cvmfs, cold.

The case of an analysis built against a software stack on CernVM-FS (ROOT
and its kind): the host is the root (``uvm run --cvmfs``), the compiler is
the host's, and ``-I/cvmfs/...`` names a tree of headers that include one
another.  A generated tree stands in for the stack: ``--headers`` headers,
each with include guards, 40 declarations and up to four ``#include`` lines
of later headers (seeded), published once under ``--work`` with the
publisher's library and served by the loopback fault server of
``tests/net`` adding ``--latency`` to every request.

Timed, median of ``--repeat`` rounds, wall clock of the whole command:

- native: ``gcc -fsyntax-only -I SRC/include job.c`` on the unpublished tree;
- cold: ``uvm run --cvmfs FQRN -- gcc -fsyntax-only -I/cvmfs/FQRN/include
  job.c`` with a new cache each round (a first run on a new machine);
- warm: the same again on the last round's cache.

    .venv/bin/python benchmarks/bench_headers.py [--repeat 5] [--latency 0.02,0.1]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "net"))
sys.path.insert(0, HERE)

from bench_templates import timed  # noqa: E402
from faultserver import FaultServer  # noqa: E402

FQRN = "headers.bench.uvm.local"
JOB = "#include <pkg/h0.h>\nint main(void) { return pkg_0_0(1); }\n"


def make_tree(src: str, count: int) -> None:
    """``count`` headers in ``src/include/pkg``, each including up to four later ones."""
    pkg = os.path.join(src, "include", "pkg")
    os.makedirs(pkg, exist_ok=True)
    rng = random.Random(3)
    for i in range(count):
        later = sorted(rng.sample(range(i + 1, count), min(4, count - i - 1)))
        lines = [f"#ifndef PKG_H{i}", f"#define PKG_H{i}"]
        lines += [f"#include <pkg/h{j}.h>" for j in later]
        lines += [f"int pkg_{i}_{k}(int);" for k in range(40)] + ["#endif", ""]
        with open(os.path.join(pkg, f"h{i}.h"), "w") as handle:
            handle.write("\n".join(lines))


def publish_once(work: str, count: int) -> str:
    from uvm.cvmfs.publish import create_keys, publish

    src = os.path.join(work, f"src-{count}")
    www = os.path.join(work, f"www-{count}")
    if not os.path.exists(os.path.join(www, "cvmfs", FQRN, ".cvmfspublished")):
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(www, ignore_errors=True)
        make_tree(src, count)
        keys = os.path.join(work, "keys")
        if not os.path.exists(os.path.join(keys, FQRN + ".pub")):
            create_keys(FQRN, keys)
        publish(src, FQRN, os.path.join(www, "cvmfs", FQRN), keys)
    return www


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--latency", default="0.02,0.1", help="seconds per request, comma list")
    parser.add_argument("--headers", type=int, default=300)
    parser.add_argument("--work", default="/var/tmp/uvm-bench-headers")
    args = parser.parse_args()
    if shutil.which("gcc") is None:
        parser.error("needs gcc on the host (./dev/setup.sh installs it)")
    os.makedirs(args.work, exist_ok=True)
    www = publish_once(args.work, args.headers)
    job_dir = tempfile.mkdtemp(prefix="job-", dir=args.work)
    with open(os.path.join(job_dir, "job.c"), "w") as handle:
        handle.write(JOB)
    native_cmd = ["gcc", "-fsyntax-only", "-I", os.path.join(args.work, f"src-{args.headers}",
                                                            "include"), "job.c"]
    uvm_cmd = [sys.executable, "-m", "uvm", "run", "--cvmfs", FQRN, "-w", job_dir, "--",
               "gcc", "-fsyntax-only", f"-I/cvmfs/{FQRN}/include", "job.c"]
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)
    print(f"| headers | latency | native | cold | warm | cold / native |\n|---|---|---|---|---|---|")
    made = []
    try:
        for latency in [float(x) for x in args.latency.split(",") if x]:
            server = FaultServer(www, latency=latency).start()
            try:
                natives, colds, warms = [], [], []
                for _ in range(args.repeat):
                    natives.append(timed(native_cmd, dict(os.environ), job_dir))
                    cache = tempfile.mkdtemp(prefix="cache-", dir=args.work)
                    made.append(cache)
                    env = {k: v for k, v in os.environ.items() if not k.startswith("CVMFS_")}
                    env.update({"CVMFS_SERVER_URL": server.url_for(),
                                "CVMFS_KEYS_DIR": os.path.join(args.work, "keys"),
                                "CVMFS_CACHE_BASE": cache,
                                "XDG_STATE_HOME": os.path.join(cache, "state"),
                                "XDG_CONFIG_HOME": os.path.join(cache, "cfg"),
                                "LANG": "C", "LC_ALL": "C"})
                    colds.append(timed(uvm_cmd, env, job_dir))
                    warms.append(timed(uvm_cmd, env, job_dir))
            finally:
                server.stop()
            native, cold, warm = map(statistics.median, (natives, colds, warms))
            print(f"| {args.headers} | {latency * 1000:.0f} ms | {native * 1000:.0f} ms | "
                  f"{cold:.2f} s | {warm * 1000:.0f} ms | {cold / native:.1f} |")
            print(f"  every round: cold {' '.join(f'{x:.2f}' for x in colds)}", file=sys.stderr)
    finally:
        for path in made + [job_dir]:
            shutil.rmtree(path, ignore_errors=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
