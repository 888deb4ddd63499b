"""Helpers for the CernVM-FS tests: a seeded tree generator and CLI runners (no fixtures)."""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import sys
from typing import Dict, List

from uvm.cvmfs.publish import ChunkPolicy

FQRN = "test.uvm.local"
SMALL_CHUNKS = ChunkPolicy(2048, 4096, 8192)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# --- seeded tree generator ----------------------------------------------------------

ODD_NAMES = [
    "with space", "new\nline", "tab\there", "-leading-dash", "--double", "ünïcødé",
    "日本語", "emoji-\U0001F600", "quote'\"", "back\\slash", "$(NOT_A_VARIANT)",
    os.fsdecode(b"latin1-\xe9\xff"),
]


def make_tree(root: str, seed: int, n_files: int, big_files: int = 6,
              nested: int = 4) -> Dict[str, int]:
    """Write a deterministic tree of every entry kind under ``root``; return counts."""
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    dirs: List[str] = [root]
    counts = {"dirs": 0, "files": 0, "links": 0, "hardlinks": 0, "fifos": 0, "devices": 0}
    # deep chain
    deep = root
    for level in range(12):
        deep = os.path.join(deep, f"d{level}")
        os.mkdir(deep)
        dirs.append(deep)
        counts["dirs"] += 1
    for index in range(max(8, n_files // 25)):
        parent = rng.choice(dirs)
        path = os.path.join(parent, f"dir{index}")
        os.mkdir(path)
        dirs.append(path)
        counts["dirs"] += 1
    for index, name in enumerate(ODD_NAMES):
        with open(os.path.join(rng.choice(dirs), name), "wb") as handle:
            handle.write(f"odd {index}\n".encode())
        counts["files"] += 1
    for index in range(n_files):
        parent = rng.choice(dirs)
        path = os.path.join(parent, f"f{index}.dat")
        size = rng.choice([0, 1, 17, 100, 1000, 3000])
        with open(path, "wb") as handle:
            handle.write(rng.randbytes(size))
        os.chmod(path, rng.choice([0o644, 0o755, 0o600, 0o444, 0o4755]))
        ns = rng.randrange(10**9)
        sec = rng.randrange(10**9, 2 * 10**9)
        os.utime(path, ns=(sec * 10**9 + ns, sec * 10**9 + ns))
        counts["files"] += 1
    for index in range(big_files):
        # larger than the test chunk size: text-like and random content
        data = rng.randbytes(rng.randrange(20_000, 60_000))
        if index % 2:
            data = (b"line of text %d\n" % index) * 3000
        with open(os.path.join(rng.choice(dirs), f"big{index}.bin"), "wb") as handle:
            handle.write(data)
        counts["files"] += 1
    targets = ["/etc/passwd", "../f1.dat", "nowhere/dangling", "$(UVM_ARCH)/lib",
               "$(UVM_ARCH:-x86_64)/bin", "/cvmfs/other.repo/$(UVM_OS:-el9)", "$(unterminated",
               "a" * 200]
    for index in range(max(len(targets), n_files // 50)):
        os.symlink(targets[index % len(targets)], os.path.join(rng.choice(dirs), f"l{index}"))
        counts["links"] += 1
    for index in range(max(3, n_files // 200)):
        parent = rng.choice(dirs)
        first = os.path.join(parent, f"h{index}a")
        with open(first, "wb") as handle:
            handle.write(rng.randbytes(500))
        for suffix in "bc"[: 1 + index % 2]:
            os.link(first, os.path.join(parent, f"h{index}{suffix}"))
            counts["hardlinks"] += 1
        # a link into another directory: published as a separate file
        other = rng.choice(dirs)
        if other != parent:
            os.link(first, os.path.join(other, f"x{index}"))
    for index in range(3):
        os.mkfifo(os.path.join(rng.choice(dirs), f"fifo{index}"))
        counts["fifos"] += 1
    try:
        os.mknod(os.path.join(root, "null-dev"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        counts["devices"] += 1
    except PermissionError:
        pass
    # nested catalog markers: chosen directories plus one nested inside another
    candidates = [d for d in dirs[1:] if d != root]
    chosen = rng.sample(candidates, min(nested, len(candidates)))
    chosen.append(os.path.join(root, "d0", "d1", "d2"))
    chosen.append(os.path.join(root, "d0", "d1", "d2", "d3", "d4"))
    for directory in chosen:
        open(os.path.join(directory, ".cvmfscatalog"), "w").close()
    for directory in dirs:
        os.chmod(directory, rng.choice([0o755, 0o750, 0o775]))
    return counts


# --- CLI ------------------------------------------------------------------------------


def run_uvm(*args: str, env_extra: Dict[str, str] = None, check: bool = False):
    env = dict(os.environ)
    env.pop("CVMFS_SERVER_URL", None)
    env.pop("CVMFS_KEYS_DIR", None)
    env.pop("CVMFS_PUBLIC_KEY", None)
    env.update(env_extra or {})
    result = subprocess.run([sys.executable, "-m", "uvm", *args], capture_output=True,
                            env=env, cwd=REPO_ROOT)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr.decode(errors="replace"))
    return result


def assert_one_line_error(result, *needles: str) -> str:
    """Non-zero exit, exactly one stderr line starting 'uvm: error:', no traceback."""
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode != 0, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("uvm: error: "), stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def copy_store(src: str, dest: str) -> str:
    shutil.copytree(src, dest, symlinks=True)
    return dest
