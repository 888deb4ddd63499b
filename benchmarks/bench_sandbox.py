#!/usr/bin/env python3
"""The sandbox against native chroot on the reference workloads W1-W5.

Inside the same Debian bookworm root (``debootstrap --variant=minbase
--include=gcc,libc6-dev,make,python3``, built and cached by
``tests/sandbox/roots.py``; ``benchmarks/workloads/`` installed as ``/bench``)
each workload runs as

- ``chroot ROOT /bench/wN.sh`` (native, as root: the limit), and
- ``uvm run --root ROOT -- /bench/wN.sh`` (uvm's whole start-up included),

interleaved in one run: one warm-up of each, then ``--reps`` rounds of
native, uvm.  With ``--ablation`` each round also runs uvm with ``--spread``
(no CPU placement) and with ``--spread`` and ``UVM_TRACER=python`` (no C
fast path either: the tracer as it was before both), and with
``UVM_PRELOAD=0`` (no preloaded library), so that each
decision's gain is measured in the same run.  Printed: the median wall times, uvm's ratio to native beside
upstream PRoot 5.4's (from ../shared/bench/README.md), and the tracer stops
per workload (``uvm run --stats``).  Then the tracer's peak RSS (VmHWM of the
uvm process, polled from /proc; the guest's memory is not counted) for a
``make -j4`` of 200 tiny C files.

    sudo .venv/bin/python benchmarks/bench_sandbox.py [--quick] [--i386] [--reps N] [--only w1,w3] [--ablation]

Needs root (native chroot, debootstrap on the first run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "sandbox"))
import roots  # noqa: E402

WORKLOADS = {
    "w1": "exec: /bin/true x300",
    "w2": "metadata: find /usr, ls -lR",
    "w3": "gcc hello.c x10",
    "w4": "python3 imports x10",
    "w5": "tar cf - /usr/lib",
}
# Upstream PRoot 5.4 with seccomp, ratio to native chroot on this kind of
# machine (../shared/bench/README.md); i386 figures where it gives them.
PROOT = {"w1": 2.0, "w2": 14.0, "w3": 2.2, "w4": 1.4, "w5": 3.8}
PROOT_I386 = {"w1": 2.3, "w3": 1.9, "w4": 1.3}
GOAL = {"w3": 1.3, "w4": 1.3}


def uvm_command() -> list[str]:
    script = Path(sys.executable).parent / "uvm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "uvm"]


def timed(cmd: list[str], env: dict) -> float:
    started = time.perf_counter()
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - started
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: "
                           f"{res.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


def bench_env() -> dict:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root",
            "LC_ALL": "C", "TERM": "dumb"}


# Variants of uvm for --ablation: extra options, environment.
ABLATION = {
    "spread": (["--spread"], {}),
    "python": (["--spread"], {"UVM_TRACER": "python"}),
    "no-preload": ([], {"UVM_PRELOAD": "0"}),
}


def run_workloads(root: Path, names: list[str], reps: int, ablation: bool = False) -> dict:
    env = bench_env()
    variants = ABLATION if ablation else {}
    results = {}
    for name in names:
        script = f"/bench/{name}.sh"
        native_cmd = ["chroot", str(root), script]
        with tempfile.NamedTemporaryFile(suffix=".json") as stats_file:
            uvm_cmd = [*uvm_command(), "run", "--root", str(root),
                       "--stats", stats_file.name, "--", script]
            others = {v: ([*uvm_command(), "run", "--root", str(root), *opts, "--", script],
                          {**env, **extra_env}) for v, (opts, extra_env) in variants.items()}
            timed(native_cmd, env)            # warm-up: page cache, ld.so cache
            timed(uvm_cmd, env)
            native, uvm = [], []
            times: dict = {v: [] for v in others}
            for _ in range(reps):
                native.append(timed(native_cmd, env))
                uvm.append(timed(uvm_cmd, env))
                for v, (cmd, venv) in others.items():
                    times[v].append(timed(cmd, venv))
            stats = json.loads(Path(stats_file.name).read_text())
        results[name] = {
            "native_s": statistics.median(native), "uvm_s": statistics.median(uvm),
            "native_all": native, "uvm_all": uvm,
            "stops": stats.get("stops"), "seccomp_stops": stats.get("seccomp_stops"),
            # settled in C: path calls, and fork events, first stops, signals
            "fast_path_stops": stats.get("fast_path_stops", 0) + stats.get("fast_path_events", 0),
            "processes": stats.get("processes"), "seccomp": stats.get("seccomp"),
            "variants": {v: statistics.median(t) / statistics.median(native) for v, t in times.items()},
        }
        r = results[name]
        r["ratio"] = r["uvm_s"] / r["native_s"]
        extra = "".join(f", {v} {x:.2f}x" for v, x in r["variants"].items())
        print(f"  {name}: native {r['native_s']:.3f} s, uvm {r['uvm_s']:.3f} s, "
              f"{r['ratio']:.2f}x{extra}, {r['stops']} stops ({r['fast_path_stops']} in C)",
              file=sys.stderr, flush=True)
    return results


MAKEFILE = """\
SRCS := $(wildcard src/*.c)
OBJS := $(SRCS:.c=.o)
all: prog
prog: $(OBJS)
\tgcc -o $@ $(OBJS)
%.o: %.c
\tgcc -O0 -c -o $@ $<
"""


def peak_rss_build(root: Path, files: int = 200, jobs: int = 4) -> dict:
    """Tracer VmHWM during `make -jJOBS` of FILES tiny C files (a scratch dir at /mnt)."""
    work = Path(tempfile.mkdtemp(prefix="uvm-bench-build-", dir="/var/tmp"))
    try:
        (work / "src").mkdir()
        for i in range(files):
            body = f"int f{i}(int x) {{ return x * {i} + 1; }}\n"
            if i == 0:
                body += "int main(void) { return 0; }\n"
            (work / "src" / f"f{i}.c").write_text(body)
        (work / "Makefile").write_text(MAKEFILE)
        with tempfile.NamedTemporaryFile(suffix=".json") as stats_file:
            cmd = [*uvm_command(), "run", "--root", str(root), "-b", f"{work}:/mnt",
                   "-w", "/mnt", "--stats", stats_file.name, "--",
                   "make", "-s", f"-j{jobs}"]
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=bench_env())
            peak_kb = 0
            stop = threading.Event()

            def poll():
                nonlocal peak_kb
                status = Path(f"/proc/{proc.pid}/status")
                while not stop.is_set():
                    try:
                        for line in status.read_text().splitlines():
                            if line.startswith("VmHWM:"):
                                peak_kb = max(peak_kb, int(line.split()[1]))
                    except (OSError, ValueError):
                        pass
                    stop.wait(0.02)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            _, err = proc.communicate()
            stop.set()
            poller.join()
            elapsed = time.perf_counter() - started
            if proc.returncode != 0:
                raise RuntimeError(f"the build under uvm failed: {err.decode()[-2000:]}")
            stats = json.loads(Path(stats_file.name).read_text())
        return {"files": files, "jobs": jobs, "peak_rss_mb": peak_kb / 1024,
                "seconds": elapsed, "processes": stats.get("processes"),
                "max_live_tracees": stats.get("max_live_tracees"),
                "stops": stats.get("stops")}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def per_stop(r: dict) -> str:
    """uvm's extra wall time divided by its stops (start-up included)."""
    if not r.get("stops"):
        return "-"
    return f"{(r['uvm_s'] - r['native_s']) / r['stops'] * 1e6:.0f}"


def table(results: dict, peers: dict, arch: str) -> str:
    variants = next(iter(results.values()), {}).get("variants", {})
    lines = [f"### {arch}", "",
             "| workload | native (s) | uvm (s) | uvm / native | "
             + "".join(f"{v} / native | " for v in variants)
             + "PRoot 5.4 | goal | tracer stops | of which in C | µs extra per stop | processes |",
             "|---|---|---|---|" + "---|" * len(variants) + "---|---|---|---|---|---|"]
    for name, r in results.items():
        peer = f"{peers[name]:.1f}x" if name in peers else "-"
        goal = f"< {GOAL[name]}x" if name in GOAL else f"< {peers[name]:.1f}x" if name in peers else "-"
        lines.append(f"| {name.upper()} {WORKLOADS[name]} | {r['native_s']:.3f} | {r['uvm_s']:.3f} "
                     f"| {r['ratio']:.2f}x | " + "".join(f"{x:.2f}x | " for x in r["variants"].values())
                     + f"{peer} | {goal} | {r['stops']} | {r['fast_path_stops']} "
                     f"| {per_stop(r)} | {r['processes']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 repetitions instead of 5")
    ap.add_argument("--reps", type=int, help="repetitions after the warm-up (default 5)")
    ap.add_argument("--i386", action="store_true", help="also the i386 Debian root")
    ap.add_argument("--only", help="comma-separated workloads, e.g. w1,w3")
    ap.add_argument("--no-rss", action="store_true", help="skip the 200-file build")
    ap.add_argument("--json", help="also write the raw figures to this file")
    ap.add_argument("--ablation", action="store_true",
                    help="also time uvm --spread, --spread with UVM_TRACER=python, and "
                    "uvm without the preloaded library (UVM_PRELOAD=0)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        ap.error("needs root: native chroot is the baseline")
    reps = args.reps or (3 if args.quick else 5)
    names = args.only.split(",") if args.only else list(WORKLOADS)

    report = {"reps": reps, "machine": {"cpus": os.cpu_count(),
                                        "kernel": os.uname().release},
              "loadavg_start": os.getloadavg()}
    arches = [("amd64", PROOT)] + ([("i386", PROOT_I386)] if args.i386 else [])
    out = []
    for arch, peers in arches:
        print(f"building/looking up the Debian {arch} root...", file=sys.stderr, flush=True)
        root = roots.debian_root(arch)
        print(f"{arch}: {root} (built in {roots.build_seconds(root)} s); "
              f"{reps} reps after a warm-up", file=sys.stderr, flush=True)
        results = run_workloads(root, names, reps, args.ablation)
        report[arch] = results
        out.append(table(results, peers, f"Debian bookworm {arch}, median of {reps}"))
    if not args.no_rss:
        rss = peak_rss_build(roots.debian_root("amd64"))
        report["build"] = rss
        out.append(f"Tracer peak RSS, `make -j{rss['jobs']}` of {rss['files']} C files "
                   f"under uvm: {rss['peak_rss_mb']:.1f} MB (goal < 60 MB); "
                   f"{rss['processes']} processes, at most {rss['max_live_tracees']} "
                   f"at once, {rss['stops']} stops, {rss['seconds']:.1f} s.")
    report["loadavg_end"] = os.getloadavg()
    load = max(report["loadavg_start"][0], report["loadavg_end"][0])
    out.append(f"Load average (1 min) at start/end: {report['loadavg_start'][0]:.2f} / "
               f"{report['loadavg_end'][0]:.2f} on {os.cpu_count()} CPUs"
               + (" -- a busy machine: ratios are noisy" if load > 1.0 else "") + ".")
    print("\n\n".join(out))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
