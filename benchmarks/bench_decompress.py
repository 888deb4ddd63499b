#!/usr/bin/env python3
"""Inflate + verify throughput of the object codec: C versus its Python twin.

For objects of 1 KiB, 64 KiB, 1 MiB and 8 MiB (binary and text bytes from
this machine, zlib level 6 as CernVM-FS stores them), each backend hashes
the stored bytes (SHA-1), inflates them and writes the output to a file, in
the same run:

- ``stream``: ``Decoder`` fed 64 KiB pieces, then ``finish()`` (the download
  path: pieces as they come off the network);
- ``one call``: ``decode_bytes`` on the whole object (a cached download).

The Python twin is ``zlib.decompressobj`` + ``hashlib`` over the same pieces.
Figures are MB/s of decoded output (best of ``--repeat`` runs) and the ratio
native / Python.  Then the native decoder's scaling from 1 to 2 threads
(each thread decodes its own objects; aggregate throughput).

    .venv/bin/python benchmarks/bench_decompress.py [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Callable, List, Tuple

from uvm import _native, _pycodec
from uvm.cvmfs.hashing import Algorithm, ContentHash

SIZES = [("1 KiB", 1 << 10), ("64 KiB", 64 << 10), ("1 MiB", 1 << 20), ("8 MiB", 8 << 20)]
PIECE = 64 << 10
ALGORITHM = Algorithm.SHA1

Obj = Tuple[bytes, List[bytes], ContentHash, int]  # stored, pieces, hash, size


def corpus() -> bytes:
    """A few MiB of real bytes: executables, libraries and Python source."""
    parts = []
    for name in ("/usr/bin/python3", "/usr/lib/x86_64-linux-gnu/libcrypto.so.3", "/bin/bash"):
        try:
            parts.append(Path(os.path.realpath(name)).read_bytes())
        except OSError:
            pass
    parts.append(b"".join(p.read_bytes() for p in sorted(Path(os.__file__).parent.glob("*.py"))))
    return b"".join(parts)


def make_objects(source: bytes, size: int, total: int) -> List[Obj]:
    """Distinct objects of ``size`` bytes, about ``total`` bytes of output in all."""
    objects = []
    count = max(1, total // size)
    step = max(1, (len(source) - size) // count)
    for i in range(count):
        start = (i * step) % max(1, len(source) - size)
        data = source[start : start + size]
        stored = zlib.compress(data, 6)
        pieces = [stored[j : j + PIECE] for j in range(0, len(stored), PIECE)]
        objects.append((stored, pieces, ContentHash.of(stored, ALGORITHM), len(data)))
    return objects


def run_stream(codec, objects: List[Obj], fd: int) -> int:
    decoder_class = codec.Decoder
    done = 0
    for _stored, pieces, want, size in objects:
        os.lseek(fd, 0, os.SEEK_SET)
        decoder = decoder_class(ALGORITHM, fd, want, size)
        for piece in pieces:
            decoder.feed(piece)
        done += decoder.finish().size
    return done


def run_one_call(codec, objects: List[Obj], fd: int) -> int:
    decode_bytes = codec.decode_bytes
    done = 0
    for stored, _pieces, want, size in objects:
        os.lseek(fd, 0, os.SEEK_SET)
        done += decode_bytes(stored, ALGORITHM, fd, want, size).size
    return done


def throughputs(run: Callable, codecs: List, objects: List[Obj], fd: int,
                repeat: int) -> List[float]:
    """Best MB/s of ``repeat`` passes over ``objects`` for each codec, passes
    interleaved so that both see the same machine.  CPU time of this
    (single-threaded) process: other load on a shared machine distorts it
    far less than wall-clock time."""
    best = [0.0] * len(codecs)
    for _ in range(repeat):
        for i, codec in enumerate(codecs):
            start = time.process_time()
            done = run(codec, objects, fd)
            best[i] = max(best[i], done / (time.process_time() - start) / 1e6)
    return best


def scaling(run: Callable, codec, sets: List[List[Obj]], workdir: str, repeat: int,
            rounds: int) -> Tuple[float, float, float]:
    """Best aggregate wall-clock MB/s with 1 thread and with ``len(sets)``
    threads (one per object set, each decoded ``rounds`` times), the two
    measurements interleaved so that both see the same machine; and the
    cores the process kept busy in its best multi-thread run (CPU time /
    wall time: near 2 means the threads really ran in parallel, whatever
    else the machine was doing)."""
    fds = [os.open(os.path.join(workdir, f"t{i}"), os.O_RDWR | os.O_CREAT, 0o600)
           for i in range(len(sets))]
    best = {1: 0.0, len(sets): 0.0}
    busy = 0.0
    try:
        for _ in range(repeat):
            for count in best:
                totals = [0] * count
                barrier = threading.Barrier(count + 1)

                def work(n: int) -> None:
                    barrier.wait()
                    totals[n] = sum(run(codec, sets[n], fds[n]) for _ in range(rounds))

                threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
                for thread in threads:
                    thread.start()
                barrier.wait()
                start, cpu_start = time.perf_counter(), time.process_time()
                for thread in threads:
                    thread.join()
                elapsed = time.perf_counter() - start
                rate = sum(totals) / elapsed / 1e6
                if rate > best[count]:
                    best[count] = rate
                    if count > 1:
                        busy = (time.process_time() - cpu_start) / elapsed
    finally:
        for fd in fds:
            os.close(fd)
    return best[1], best[len(sets)], busy


def run_control(_codec, objects: List[Obj], _fd: int) -> int:
    """No codec: hashlib.sha1 over 1 MiB buffers (it releases the GIL), a
    control for how much parallelism the machine gives this process now."""
    done = 0
    for stored, _pieces, _want, _size in objects:
        hashlib.sha1(stored).digest()
        done += len(stored)
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="less data, fewer repeats")
    parser.add_argument("--repeat", type=int, default=5, help="passes per figure (best counts)")
    parser.add_argument("--out-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="where the output files go (default: /dev/shm, a tmpfs, so that "
                        "disk write-back from other work on the machine stays out of the figures)")
    parser.add_argument("--part", choices=["all", "single", "threads"], default="all",
                        help="only the single-thread table or only the thread scaling")
    args = parser.parse_args()
    if _native.BACKEND != "native":
        print(f"the C codec is not active ({_native.DETAIL}): nothing to compare", file=sys.stderr)
        return 1
    total = (8 << 20) if args.quick else (32 << 20)
    repeat = 2 if args.quick else args.repeat
    source = corpus()
    print(f"codec: {_native.DETAIL}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"output to a file in {args.out_dir or tempfile.gettempdir()}, rewound per object; "
          f"{PIECE >> 10} KiB pieces; SHA-1; "
          f"~{total >> 20} MiB of output per pass, best of {repeat}; MB/s of CPU time")
    with tempfile.TemporaryDirectory(dir=args.out_dir, prefix="uvm-bench-") as workdir:
        fd = os.open(os.path.join(workdir, "out"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if args.part != "threads":
                print()
                print(f"{'object':>8} {'API':>9} {'native MB/s':>12} {'python MB/s':>12} "
                      f"{'ratio':>7}")
            for label, size in SIZES if args.part != "threads" else []:
                objects = make_objects(source, size, total)
                for api, run in (("stream", run_stream), ("one call", run_one_call)):
                    native, python = throughputs(run, [_native, _pycodec], objects, fd, repeat)
                    print(f"{label:>8} {api:>9} {native:12.0f} {python:12.0f} "
                          f"{native / python:6.2f}x", flush=True)
        finally:
            os.close(fd)

        if args.part == "single":
            return 0
        print()
        print("threads: aggregate MB/s of wall-clock time, each thread decoding its own "
              f"objects (stream API); load average now {os.getloadavg()[0]:.2f}")
        print("control: the same for hashlib.sha1 over 1 MiB buffers (no codec), run just "
              "before: how much parallelism the machine gave this process then")
        print(f"{'object':>8} {'backend':>8} {'1 thread':>9} {'2 threads':>10} {'scaling':>8} "
              f"{'cores busy':>11} {'control':>10}")
        control_sets = [make_objects(source[n * 977 :], 1 << 20, 8 << 20) for n in range(2)]
        for label, size in SIZES:
            sets = [make_objects(source[n * 977 :], size, total // 4) for n in range(2)]
            rounds = 4
            for name, codec in (("native", _native), ("python", _pycodec)):
                # The control right before each row: the machine's share changes by the second.
                c_one, c_two, _ = scaling(run_control, None, control_sets, workdir, repeat, 24)
                one, two, busy = scaling(run_stream, codec, sets, workdir, repeat, rounds)
                print(f"{label:>8} {name:>8} {one:9.0f} {two:10.0f} {two / one:7.2f}x "
                      f"{busy:11.2f} {c_two / c_one:9.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
