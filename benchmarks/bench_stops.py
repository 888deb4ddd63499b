#!/usr/bin/env python3
"""The cost of one tracer stop: a static program making one system call in
a loop, natively (chroot) and under ``uvm run --root`` (the C fast path
settles every stop), interleaved, median of ``--reps``.

Kinds: ``getpid`` (never stops: the baseline), ``fstat`` (glibc's fstat as
``newfstatat(fd, "", AT_EMPTY_PATH)``: a stop with nothing to rewrite),
``lstat`` (a stop and a path rewrite), ``stat`` (a rewrite and the check
that the final component is not a symlink).  Also printed: the tracer's
CPU per stop (``uvm run --stats``).  ``libc-stat`` and ``libc-open`` (open
and close) call glibc from a dynamic build, which gets the preloaded
library: no stop; its last column is the same without the library
(``UVM_PRELOAD=0``): a stop each.

    sudo .venv/bin/python benchmarks/bench_stops.py [--calls 20000] [--reps 5]

Needs root (native chroot) and gcc on the host (the program is built static).
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "sandbox"))
import roots  # noqa: E402

KINDS = ("getpid", "fstat", "lstat", "stat", "libc-stat", "libc-open")


def uvm_command() -> list:
    script = Path(sys.executable).parent / "uvm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "uvm"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (native chroot)")
    root = roots.debian_root()
    work = Path(tempfile.mkdtemp(prefix="uvm-bench-stops-", dir="/var/tmp"))
    scratch = Path(tempfile.mkdtemp(prefix="probe-", dir=root / "tmp"))
    try:
        for name, static in (("stops", ["-static"]), ("stops-dyn", [])):
            subprocess.run(["gcc", "-O2", *static, "-o", str(scratch / name),
                            str(HERE / "probe" / "stops.c")], check=True)
        inside = "/tmp/" + scratch.name + "/"
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
        print(f"{'call':9} {'native µs':>10} {'uvm µs':>8} {'tracer CPU µs/stop':>19} "
              f"{'no library µs':>14}")

        def under_uvm(program: str, kind: str, extra_env: dict) -> tuple:
            stats = work / "stats.json"
            out = subprocess.run([*uvm_command(), "run", "--root", str(root), "--no-layer",
                                  "--stats", str(stats), "--", program, kind, str(args.calls)],
                                 capture_output=True, text=True, env={**env, **extra_env},
                                 check=True)
            st = json.loads(stats.read_text())
            return float(out.stdout), st["tracer_cpu_s"] * 1e6 / max(1, st["stops"])

        for kind in KINDS:
            program = inside + ("stops-dyn" if kind.startswith("libc-") else "stops")
            native, uvm, cpu, bare = [], [], [], []
            for _ in range(args.reps):
                out = subprocess.run(["chroot", str(root), program, kind, str(args.calls)],
                                     capture_output=True, text=True, env=env, check=True)
                native.append(float(out.stdout))
                took, per_stop = under_uvm(program, kind, {})
                uvm.append(took)
                cpu.append(per_stop)
                if kind.startswith("libc-"):
                    bare.append(under_uvm(program, kind, {"UVM_PRELOAD": "0"})[0])
            stopping = kind not in ("getpid", "libc-stat", "libc-open")
            per_stop = f"{statistics.median(cpu):19.1f}" if stopping else f"{'-':>19}"
            without = f"{statistics.median(bare):14.2f}" if bare else f"{'-':>14}"
            print(f"{kind:9} {statistics.median(native):10.2f} {statistics.median(uvm):8.2f} "
                  f"{per_stop} {without}")
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
