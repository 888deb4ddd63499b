#!/usr/bin/env python3
"""The writable layer on a write-heavy workload: untar a generated C source
tree (``--files`` files), build it with ``make -j2``, delete it.

Three ways, interleaved in one run (one warm-up each, then ``--reps``
rounds), inside the Debian bookworm root of ``tests/sandbox/roots.py``:

- ``native``: ``chroot`` on a scratch copy of the root, working in
  ``/usr/src`` (the limit; root only);
- ``bound``: ``uvm run --no-layer --root ROOT -b WORK:/work``, working in a
  host directory bound in (no layer involved);
- ``layer``: ``uvm run --root ROOT``, working in ``/usr/src`` of the root,
  that is in the writable layer (a temporary one, created and removed by
  each run, as by default).

Printed: median wall times, ratios to native, and the layer's cost over the
bound directory (goal: at most 15%), plus the tracer stops of each uvm way.

    sudo .venv/bin/python benchmarks/bench_layer.py [--reps N] [--files N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "sandbox"))
import roots  # noqa: E402


def uvm_command() -> list:
    script = Path(sys.executable).parent / "uvm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "uvm"]


def make_tarball(dest: Path, nfiles: int) -> Path:
    tree = dest / "proj"
    (tree / "src").mkdir(parents=True)
    (tree / "Makefile").write_text(
        "OBJS=$(patsubst %.c,%.o,$(wildcard src/*.c))\n"
        "prog: $(OBJS)\n\tgcc -o $@ $^\n%.o: %.c\n\tgcc -O1 -c -o $@ $<\n")
    for i in range(nfiles):
        body = "\n".join(f"static int g{j}(int x){{return x*{j}+{i};}}" for j in range(40))
        nxt = f"f{i + 1}" if i + 1 < nfiles else None
        call = f"int {nxt}(int);\n" if nxt else ""
        ret = f"{nxt}(x) + g3(x)" if nxt else "g3(x)"
        (tree / "src" / f"f{i}.c").write_text(
            f"{call}{body}\nint f{i}(int x){{return {ret} + g{i % 40}(1);}}\n")
        for k in range(3):  # headers and docs too: more files to untar and delete
            (tree / "src" / f"f{i}_{k}.txt").write_text("x" * 2000)
    (tree / "src" / "main.c").write_text(
        "#include <stdio.h>\nint f0(int);\nint main(void){printf(\"%d\\n\", f0(1));return 0;}\n")
    tar = dest / "proj.tar"
    with tarfile.open(tar, "w") as t:
        t.add(tree, arcname="proj")
    shutil.rmtree(tree)
    os.chmod(tar, 0o644)
    return tar


SCRIPT = "set -e; cd {dir}; tar xf {tar}; cd proj; make -s -j2; ./prog >/dev/null; cd {dir}; rm -rf proj"


def timed(cmd, env) -> float:
    start = time.monotonic()
    res = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.monotonic() - start
    if res.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{res.stderr[-2000:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--files", type=int, default=150)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (native chroot)")
    root = roots.debian_root()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root", "LC_ALL": "C"}
    base = Path(tempfile.mkdtemp(prefix="uvm-bench-layer-", dir="/var/tmp"))
    try:
        tar = make_tarball(base, args.files)
        scratch_root = base / "root-copy"
        subprocess.run(["cp", "-a", str(root), str(scratch_root)], check=True)
        shutil.copy(tar, scratch_root / "tmp" / "proj.tar")
        work = base / "work"
        work.mkdir()
        stats_dir = base / "stats"
        stats_dir.mkdir()
        uvm = uvm_command()
        ways = {
            "native": lambda: ["chroot", str(scratch_root), "/bin/sh", "-c",
                               SCRIPT.format(dir="/usr/src", tar="/tmp/proj.tar")],
            "bound": lambda: [*uvm, "run", "--no-layer", "--stats", str(stats_dir / "bound.json"),
                              "--root", str(root), "-b", f"{work}:/work", "-b", f"{base}:/in",
                              "--", "/bin/sh", "-c", SCRIPT.format(dir="/work", tar="/in/proj.tar")],
            "layer": lambda: [*uvm, "run", "--stats", str(stats_dir / "layer.json"),
                              "--root", str(root), "-b", f"{base}:/in",
                              "--", "/bin/sh", "-c", SCRIPT.format(dir="/usr/src", tar="/in/proj.tar")],
        }
        times = {name: [] for name in ways}
        for rep in range(args.reps + 1):
            for name, cmd in ways.items():
                took = timed(cmd(), env)
                if rep:
                    times[name].append(took)
        med = {name: statistics.median(v) for name, v in times.items()}
        print(f"workload: untar {args.files * 4 + 1} files ({args.files + 1} C files), "
              f"make -j2, run, rm -rf; median of {args.reps}")
        print(f"{'way':8} {'median s':>9} {'x native':>9}   runs")
        for name in ways:
            runs = " ".join(f"{t:.2f}" for t in times[name])
            print(f"{name:8} {med[name]:9.2f} {med[name] / med['native']:9.2f}   {runs}")
        over = med["layer"] / med["bound"] - 1
        print(f"layer over bound directory: {over * 100:+.1f}% (goal: at most +15%)")
        for name in ("bound", "layer"):
            st = json.loads((stats_dir / f"{name}.json").read_text())
            print(f"stops {name}: {st['stops']} (seccomp {st['seccomp_stops']}, "
                  f"translated {st['translated_paths']}, settled in C "
                  f"{st.get('fast_path_stops', 0) + st.get('fast_path_events', 0)}), "
                  f"tracer CPU {st['tracer_cpu_s']:.2f} s (last round)")
    finally:
        subprocess.run(["rm", "-rf", str(base)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
