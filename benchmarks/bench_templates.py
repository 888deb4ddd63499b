#!/usr/bin/env python3
"""Template runs: cold and warm cache against ``uvm run --root`` on the same tree.

The test suite's Debian root (``tests/sandbox/roots.py``: debootstrap
minbase of bookworm with gcc, make, python3) is published once with
``uvm publish``'s library (the store is kept under ``--work`` and reused
while the root is unchanged), served by the loopback fault server of
``tests/net`` adding ``--latency`` to every request (0 and 20 ms), and run:

- cold: ``uvm run --template FQRN:/ -- CMD`` with an empty cache (no
  objects, no shadow tree), one fresh cache per round; requests and bytes
  served are counted;
- warm: the same again on the filled cache and shadow tree;
- root: ``uvm run --root ROOT -- CMD`` on the unpacked tree.

Wall-clock time of the whole ``uvm`` command (Python start included), median
of ``--repeat`` rounds.

    .venv/bin/python benchmarks/bench_templates.py [--repeat 5] [--latency 0,0.02]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "net"))
sys.path.insert(0, os.path.join(REPO, "tests", "sandbox"))

from faultserver import FaultServer  # noqa: E402

import roots  # noqa: E402

FQRN = "bench.uvm.local"
WORKLOADS = {
    "python3 -c pass": ["python3", "-c", "pass"],
    "sh -c true": ["/bin/sh", "-c", "true"],
    "gcc hello": ["/bin/sh", "-c", "cd /tmp && printf 'int main(){return 0;}' > b$$.c && "
                  "gcc -o b$$ b$$.c && ./b$$ && rm -f b$$ b$$.c"],
}


def publish_once(root: str, work: str) -> str:
    from uvm.cvmfs.publish import create_keys, publish

    tag = os.path.basename(root.rstrip("/"))
    www = os.path.join(work, f"www-{tag}")
    store = os.path.join(www, "cvmfs", FQRN)
    if not os.path.exists(os.path.join(store, ".cvmfspublished")):
        shutil.rmtree(www, ignore_errors=True)
        create_keys(FQRN, os.path.join(work, "keys")) if not os.path.exists(
            os.path.join(work, "keys", FQRN + ".pub")) else None
        started = time.monotonic()
        publish(root, FQRN, store, os.path.join(work, "keys"))
        print(f"published {root} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return www


def env_for(work: str, url: str, cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVMFS_")}
    env.update({"CVMFS_SERVER_URL": url, "CVMFS_KEYS_DIR": os.path.join(work, "keys"),
                "CVMFS_CACHE_BASE": cache, "XDG_STATE_HOME": os.path.join(cache, "state"),
                "XDG_CONFIG_HOME": os.path.join(cache, "cfg"), "LANG": "C", "LC_ALL": "C",
                "PATH": "/usr/local/bin:/usr/bin:/bin"})
    return env


def timed(cmd, env) -> float:
    started = time.monotonic()
    res = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    elapsed = time.monotonic() - started
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {res.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--latency", default="0,0.02", help="seconds per request, comma list")
    parser.add_argument("--work", default="/var/tmp/uvm-bench-templates")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    root = str(roots.debian_root())
    www = publish_once(root, args.work)
    uvm = [sys.executable, "-m", "uvm"]
    names = [n for n in args.workloads.split(",") if n]
    print("| workload | latency | cold (requests, MB) | warm | --root | warm / --root |")
    print("|---|---|---|---|---|---|")
    for latency in [float(x) for x in args.latency.split(",")]:
        server = FaultServer(www, latency=latency).start()
        try:
            url = server.url_for()
            for name in names:
                cmd = WORKLOADS[name]
                colds, requests, sizes = [], [], []
                warm_cache = None
                for _ in range(args.repeat):
                    cache = tempfile.mkdtemp(prefix="cache-", dir=args.work)
                    before_hits = server.total()
                    before_bytes = _bytes(www, server)
                    colds.append(timed(uvm + ["run", "--template", f"{FQRN}:/", "--", *cmd],
                                       env_for(args.work, url, cache)))
                    requests.append(server.total() - before_hits)
                    sizes.append(_bytes(www, server) - before_bytes)
                    if warm_cache is None:
                        warm_cache = cache
                    else:
                        shutil.rmtree(cache, ignore_errors=True)
                env = env_for(args.work, url, warm_cache)
                warms, plain = [], []
                for _ in range(args.repeat):
                    warms.append(timed(uvm + ["run", "--template", f"{FQRN}:/", "--", *cmd], env))
                    plain.append(timed(uvm + ["run", "--root", root, "--", *cmd], env))
                shutil.rmtree(warm_cache, ignore_errors=True)
                cold, warm, base = (statistics.median(x) for x in (colds, warms, plain))
                print(f"| `{name}` | {latency * 1000:.0f} ms | {cold:.2f} s "
                      f"({statistics.median(requests):.0f}, {statistics.median(sizes) / 1e6:.1f}) "
                      f"| {warm * 1000:.0f} ms | {base * 1000:.0f} ms | {warm / base:.2f} |",
                      flush=True)
        finally:
            server.stop()
    return 0


def _bytes(www: str, server: FaultServer) -> int:
    total = 0
    for path, n in list(server.hits.items()):
        local = os.path.join(www, path.lstrip("/"))
        try:
            total += n * os.path.getsize(local)
        except OSError:
            pass
    return total


if __name__ == "__main__":
    sys.exit(main())
