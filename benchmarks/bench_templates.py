#!/usr/bin/env python3
"""Template runs: cold and warm cache against ``uvm run --root`` on the same tree.

The test suite's Debian root (``tests/sandbox/roots.py``: debootstrap
minbase of bookworm with gcc, make, python3) is published once with
``uvm publish``'s library (the store is kept under ``--work`` and reused
while the root is unchanged), served by the loopback fault server of
``tests/net`` adding ``--latency`` to every request (0 and 20 ms), and run:

- cold, no cache: ``uvm run --template FQRN:/ -- CMD`` where
  ``CVMFS_CACHE_BASE`` does not exist yet (no cache, no shadow tree, no
  state: a first run on a new machine), one fresh base per round; requests
  and bytes served are counted;
- cold, empty cache: the same on a cache that ``uvm cache info`` has just
  set up (directories, quota database) and that holds nothing;
- warm: the same again on the filled cache and shadow tree;
- past the TTL: the same with the cache's verified manifest made an hour
  old first (``_age_manifest``), as a job started every few minutes meets
  it: one round trip for manifest and whitelist, found unchanged;
- root: ``uvm run --root ROOT -- CMD`` on the unpacked tree;
- cold, no cache, with a prefetch list (``python3 -c pass`` only): the
  files a first cold start fetched (``uvm run --record-prefetch``, at 0 ms),
  published as ``.uvm-prefetch`` at the top of a second repository made
  from a hard-linked copy of the same root (both kept under ``--work``).

Wall-clock time of the whole ``uvm`` command (Python start included), median
of ``--repeat`` rounds; the load average is printed before and after.  The
caches of all rounds (and the recording run's) are removed only at the
end: on a file system without a journal (the development VM's), ext4 skips
inodes freed in the last minute (six while their inode table block is not
yet written back) when it allocates new ones, so a removal of thousands of
files makes every file created next to them 5-10 times slower to create
(measured: 300 creates took 15-20 ms in a quiet directory, 150-200 ms next
to a fresh removal).  So each round's cache is also made in a block group
of its own (``_fresh_dir``: ext4's ``chattr +T`` on the directory holding
them), as on a machine that never ran uvm.

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
    "gcc stdio": ["/bin/sh", "-c", "cd /tmp && printf '#include <stdio.h>\\nint main(void)"
                  "{puts(\"hi\");return 0;}\\n' > s$$.c && gcc -o s$$ s$$.c && ./s$$ >/dev/null "
                  "&& rm -f s$$ s$$.c"],
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


LISTED = {"python3 -c pass"}  # workloads also timed with a prefetch list
LISTED_FQRN = "listed.bench.uvm.local"


def publish_listed(root: str, work: str, www: str, cmd, made: list) -> str:
    """A repository of ``root`` plus the prefetch list a cold ``cmd`` records
    (the directories to remove at the end go to ``made``)."""
    import hashlib

    listed = os.path.join(work, "prefetch.txt")
    server = FaultServer(www).start()
    try:
        cache = tempfile.mkdtemp(prefix="record-", dir=work)
        timed([sys.executable, "-m", "uvm", "run", "--template", f"{FQRN}:/",
               "--record-prefetch", listed, "--", *cmd],
              env_for(work, server.url_for(), cache))
        made.append(cache)
    finally:
        server.stop()
    with open(listed, "rb") as handle:
        text = handle.read()
    lines = sorted(set(line for line in text.splitlines() if not line.startswith(b"#")))
    key = hashlib.sha1(b"\n".join(lines) + root.encode()).hexdigest()[:12]
    listed_www = os.path.join(work, f"www-listed-{key}")
    store = os.path.join(listed_www, "cvmfs", LISTED_FQRN)
    if not os.path.exists(os.path.join(store, ".cvmfspublished")):
        from uvm.cvmfs.publish import create_keys, publish

        source = os.path.join(work, "src-listed")
        shutil.rmtree(source, ignore_errors=True)
        subprocess.run(["cp", "-al", root, source], check=True)
        with open(os.path.join(source, ".uvm-prefetch"), "wb") as handle:
            handle.write(text)
        if not os.path.exists(os.path.join(work, "keys", LISTED_FQRN + ".pub")):
            create_keys(LISTED_FQRN, os.path.join(work, "keys"))
        publish(source, LISTED_FQRN, store, os.path.join(work, "keys"))
        made.append(source)
    return listed_www


def env_for(work: str, url: str, cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVMFS_")}
    env.update({"CVMFS_SERVER_URL": url, "CVMFS_KEYS_DIR": os.path.join(work, "keys"),
                "CVMFS_CACHE_BASE": cache, "XDG_STATE_HOME": os.path.join(cache, "state"),
                "XDG_CONFIG_HOME": os.path.join(cache, "cfg"), "LANG": "C", "LC_ALL": "C",
                "PATH": "/usr/local/bin:/usr/bin:/bin"})
    return env


def timed(cmd, env, cwd=None) -> float:
    """Wall-clock seconds of ``cmd``; a failure ends the benchmark with its stderr."""
    started = time.monotonic()
    res = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
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
    names = [n for n in args.workloads.split(",") if n]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {unknown[0]!r}; choose from: {', '.join(WORKLOADS)}")
    os.makedirs(args.work, exist_ok=True)
    root = str(roots.debian_root())
    www = publish_once(root, args.work)
    uvm = [sys.executable, "-m", "uvm"]
    made = []
    print(f"load average {_load()}", file=sys.stderr)
    listed_www = {name: publish_listed(root, args.work, www, WORKLOADS[name], made)
                  for name in names if name in LISTED}
    print("| workload | latency | cold, no cache (requests, MB) | cold, empty cache "
          "| warm | past the TTL | --root | warm / --root "
          "| cold, no cache, prefetch list (requests, MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for latency in [float(x) for x in args.latency.split(",")]:
        server = FaultServer(www, latency=latency).start()
        try:
            url = server.url_for()
            for name in names:
                cmd = WORKLOADS[name]
                run = uvm + ["run", "--template", f"{FQRN}:/", "--", *cmd]
                colds, empties, requests, sizes = [], [], [], []
                warm_cache = None
                for _ in range(args.repeat):
                    cache = os.path.join(_fresh_dir(args.work), "c")
                    before_hits = server.total()
                    before_bytes = _bytes(www, server)
                    colds.append(timed(run, env_for(args.work, url, cache)))
                    requests.append(server.total() - before_hits)
                    sizes.append(_bytes(www, server) - before_bytes)
                    empty = _fresh_dir(args.work)
                    env = env_for(args.work, url, empty)
                    timed(uvm + ["cache", "info"], env)
                    empties.append(timed(run, env))
                    made += [empty, os.path.dirname(cache)]
                    if warm_cache is None:
                        warm_cache = cache
                env = env_for(args.work, url, warm_cache)
                warms, stales, plain = [], [], []
                for _ in range(args.repeat):
                    warms.append(timed(run, env))
                    _age_manifest(warm_cache)
                    stales.append(timed(run, env))
                    plain.append(timed(uvm + ["run", "--root", root, "--", *cmd], env))
                cold, empty_cold, warm, stale, base = (
                    statistics.median(x) for x in (colds, empties, warms, stales, plain))
                listed = "-"
                if name in listed_www:
                    times, made_here, counts = _cold_listed(listed_www[name], args, latency,
                                                            uvm + ["run", "--template",
                                                                   f"{LISTED_FQRN}:/", "--", *cmd])
                    made += made_here
                    listed = (f"{statistics.median(times):.2f} s ({statistics.median(counts[0]):.0f}, "
                              f"{statistics.median(counts[1]) / 1e6:.1f})")
                    print(f"  {name} at {latency * 1000:.0f} ms with a prefetch list, every "
                          f"round: {_list(times)}", file=sys.stderr)
                print(f"| `{name}` | {latency * 1000:.0f} ms | {cold:.2f} s "
                      f"({statistics.median(requests):.0f}, {statistics.median(sizes) / 1e6:.1f}) "
                      f"| {empty_cold:.2f} s | {warm * 1000:.0f} ms | {stale * 1000:.0f} ms "
                      f"| {base * 1000:.0f} ms "
                      f"| {warm / base:.2f} | {listed} |", flush=True)
                print(f"  {name} at {latency * 1000:.0f} ms, every round: no cache "
                      f"{_list(colds)}; empty cache {_list(empties)}; warm {_list(warms)}; "
                      f"past the TTL {_list(stales)}; --root {_list(plain)}", file=sys.stderr)
        finally:
            server.stop()
    print(f"load average {_load()}", file=sys.stderr)
    for path in made:
        shutil.rmtree(path, ignore_errors=True)
    return 0


def _cold_listed(www: str, args, latency: float, run):
    """Cold, no-cache rounds against the repository with a prefetch list:
    (times, caches to remove, (requests, bytes) per round)."""
    server = FaultServer(www, latency=latency).start()
    times, made, requests, sizes = [], [], [], []
    try:
        for _ in range(args.repeat):
            cache = os.path.join(_fresh_dir(args.work), "c")
            before_hits, before_bytes = server.total(), _bytes(www, server)
            times.append(timed(run, env_for(args.work, server.url_for(), cache)))
            requests.append(server.total() - before_hits)
            sizes.append(_bytes(www, server) - before_bytes)
            made.append(os.path.dirname(cache))
    finally:
        server.stop()
    return times, made, (requests, sizes)


def _fresh_dir(work: str) -> str:
    """A new directory for one round's cache, below ``WORK/rounds``, which
    carries ext4's "top of hierarchy" flag (``chattr +T``): each one starts
    in a block group of its own, as a first run on a new machine would,
    instead of next to the inodes the earlier rounds or runs freed (see the
    module doc).  Elsewhere the flag is refused, and nothing changes."""
    rounds = os.path.join(work, "rounds")
    if not os.path.isdir(rounds):
        os.makedirs(rounds)
        subprocess.run(["chattr", "+T", rounds], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
    return tempfile.mkdtemp(prefix="cache-", dir=rounds)


def _age_manifest(cache: str) -> None:
    """Make the verified manifest and whitelist in ``cache`` an hour old."""
    old = time.time() - 3600
    manifests = os.path.join(cache, "shared", "manifests")
    for name in os.listdir(manifests):
        if name.endswith((".cvmfspublished", ".cvmfswhitelist")):
            os.utime(os.path.join(manifests, name), (old, old))


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _list(times) -> str:
    return " ".join(f"{t:.2f}" for t in times)


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
