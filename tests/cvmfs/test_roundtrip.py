"""Publish generated trees, serve them over loopback HTTP, read everything back and compare."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections import defaultdict

import pytest

from uvm.cvmfs.catalog import FLAG_CHUNKED, Catalog
from uvm.cvmfs.hashing import Algorithm, Suffix
from uvm.cvmfs.publish import ChunkPolicy, publish
from uvm.cvmfs.publish.chunking import chunk_ranges
from uvm.cvmfs.repository import Repository
from uvm.errors import TagNotFoundError

from cvmfs_testlib import FQRN, REPO_ROOT, SMALL_CHUNKS, make_tree, run_uvm

ENV = {"UVM_ARCH": "aarch64"}


def compare_tree(repo: Repository, src: str, path: str = "/") -> int:
    """Every attribute and byte of ``src`` equals what ``repo`` shows at ``path``; entry count."""
    seen = 0
    groups = defaultdict(set)
    for dirpath, dirs, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        repo_dir = path.rstrip("/") + ("" if rel == "." else "/" + rel)
        names = sorted(dirs + files)
        assert sorted(repo.listdir(repo_dir or "/")) == names, repo_dir
        for name in names:
            host = os.path.join(dirpath, name)
            st = os.lstat(host)
            entry = repo.stat(f"{repo_dir}/{name}")
            seen += 1
            assert entry.name == name
            assert entry.mode == st.st_mode, host
            assert entry.mtime == st.st_mtime_ns // 10**9, host
            assert entry.mtime_ns == st.st_mtime_ns % 10**9, host
            assert (entry.uid, entry.gid) == (st.st_uid, st.st_gid)
            if stat.S_ISDIR(st.st_mode):
                assert entry.is_dir and entry.size == st.st_size
                assert entry.linkcount == st.st_nlink
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(host)
                assert entry.is_symlink and entry.symlink == target
                assert entry.size == len(os.fsencode(target))
                expected = target.replace("$(UVM_ARCH)", "aarch64").replace(
                    "$(UVM_ARCH:-x86_64)", "aarch64").replace("$(UVM_OS:-el9)", "el9")
                assert repo.readlink(entry.path) == expected
            elif stat.S_ISREG(st.st_mode):
                assert entry.is_regular and entry.size == st.st_size
                with open(host, "rb") as handle:
                    assert repo.read(entry.path) == handle.read(), host
                if entry.hardlink_group:
                    groups[(dirpath, entry.hardlink_group)].add((st.st_ino, entry.linkcount))
                else:
                    assert entry.linkcount == 1
            else:
                assert entry.is_special
                assert entry.rdev == (st.st_rdev if stat.S_ISCHR(st.st_mode) else 0)
    for members in groups.values():
        assert len(members) == 1  # one inode per group, one link count
    return seen


def count_catalogs(repo: Repository) -> int:
    pending, count = [repo.tree.root], 0
    while pending:
        catalog = pending.pop()
        count += 1
        for ref in catalog.nested_catalogs():
            pending.append(repo.tree.catalog_for(ref.path))
    return count


def test_round_trip_over_http(tmp_path, keydir, http_server):
    src = str(tmp_path / "src")
    counts = make_tree(src, seed=1, n_files=2500)
    result = publish(src, FQRN, http_server.store(), keydir, chunking=SMALL_CHUNKS, tag="v1",
                     description="first")
    assert result.revision == 1 and result.catalogs >= 5
    with Repository.open(FQRN, servers=http_server.repo_url(), keys=keydir,
                         state_dir=str(tmp_path / "state"), environ=ENV) as repo:
        seen = compare_tree(repo, src)
        assert seen == result.entries
        assert count_catalogs(repo) == result.catalogs
        assert repo.revision == 1 and repo.root_hash == result.root_hash
        # nested mountpoint shows the child catalog's root entry
        assert repo.stat("/d0/d1/d2").is_nested_root
        # chunked files are there, each with several P objects
        stats = repo.tree.root.statistics()
        assert stats["self_chunked"] + stats["subtree_chunked"] >= counts["files"] // 1000
        total_regular = stats["self_regular"] + stats["subtree_regular"]
        assert total_regular == sum(
            1 for d, _, fs in os.walk(src) for f in fs if stat.S_ISREG(os.lstat(os.path.join(d, f)).st_mode))
        # the walk visits every entry once
        walked = sum(len(d) + len(f) for _, d, f in repo.walk("/"))
        assert walked == seen
        assert [t.name for t in repo.tags()] == ["trunk", "v1"]


def test_catalog_schema_is_complete(tmp_path, keydir):
    src = str(tmp_path / "src")
    make_tree(src, seed=2, n_files=60, big_files=2, nested=1)
    store = str(tmp_path / "store")
    publish(src, FQRN, store, keydir, chunking=SMALL_CHUNKS)
    with Repository.open(FQRN, servers=store, keys=keydir, state_dir=str(tmp_path / "s")) as repo:
        db = sqlite3.connect(repo.tree.root.db_path)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"catalog", "chunks", "nested_catalogs", "bind_mountpoints",
                          "statistics", "properties"}
        columns = [row[1] for row in db.execute("PRAGMA table_info(catalog)")]
        assert columns == ["md5path_1", "md5path_2", "parent_1", "parent_2", "hardlinks", "hash",
                           "size", "mode", "mtime", "mtimens", "flags", "name", "symlink", "uid",
                           "gid", "xattr"]
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "idx_catalog_parent" in indexes
        props = dict(db.execute("SELECT key, value FROM properties"))
        assert props["schema"] == "2.5" and props["schema_revision"] == "7"
        assert props["revision"] == "1" and props["TTL"] == "240" and "root_prefix" not in props
        counters = dict(db.execute("SELECT counter, value FROM statistics"))
        for name in ("regular", "symlink", "special", "dir", "nested", "chunked", "chunked_size",
                     "chunks", "file_size", "xattr", "external", "external_file_size"):
            assert f"self_{name}" in counters and f"subtree_{name}" in counters
        # root entry: empty name, parent hash zero; md5path halves little-endian signed
        row = db.execute("SELECT md5path_1, md5path_2, parent_1, parent_2, flags FROM catalog "
                         "WHERE name = ''").fetchone()
        import hashlib
        import struct

        expected = struct.unpack("<qq", hashlib.md5(b"").digest())
        assert row == (*expected, 0, 0, 1)
        nested = repo.tree.catalog_for("/d0/d1/d2")
        assert nested.properties["root_prefix"] == "/d0/d1/d2"
        parent_row = db.execute("SELECT flags FROM catalog WHERE name = 'd2'").fetchone()
        assert parent_row == (3,)  # the mountpoint in the parent (root) catalog
        assert repo.tree.catalog_for("/d0/d1") is repo.tree.root
        assert nested.lookup("/d0/d1/d2").flags == 33
        # the marker itself is published as a regular empty file
        assert repo.stat("/d0/d1/d2/.cvmfscatalog").size == 0


def test_republish_tags_dates_and_reuse(tmp_path, keydir, http_server):
    src = str(tmp_path / "src")
    make_tree(src, seed=3, n_files=300, big_files=3, nested=2)
    store = http_server.store()
    first = publish(src, FQRN, store, keydir, chunking=SMALL_CHUNKS, tag="v1", now=1_700_000_000)
    objects_before = sum(len(files) for _, _, files in os.walk(os.path.join(store, "data")))
    # change the tree: one new file, one changed, one removed
    with open(os.path.join(src, "added.txt"), "w") as handle:
        handle.write("new in v2\n")
    victim = os.path.join(src, "d0", "d1", "changed.txt")
    with open(victim, "w") as handle:
        handle.write("v1 content\n")
    second_src_state = None
    second = publish(src, FQRN, store, keydir, chunking=SMALL_CHUNKS, tag="v2",
                     description="second", now=1_700_000_100)
    with open(victim, "w") as handle:
        handle.write("v3 content, longer\n")
    os.unlink(os.path.join(src, "added.txt"))
    third = publish(src, FQRN, store, keydir, chunking=SMALL_CHUNKS, now=1_700_000_200)
    assert (first.revision, second.revision, third.revision) == (1, 2, 3)
    assert second.new_objects <= 8  # two files + changed catalogs + history, not the tree
    objects_after = sum(len(files) for _, _, files in os.walk(os.path.join(store, "data")))
    assert objects_after - objects_before == second.new_objects + third.new_objects
    del second_src_state
    state = str(tmp_path / "state")
    url = http_server.repo_url()
    with Repository.open(FQRN, servers=url, keys=keydir, state_dir=state) as head:
        assert head.revision == 3
        assert head.read("/d0/d1/changed.txt") == b"v3 content, longer\n"
        assert not head.exists("/added.txt")
        assert head.tree.root.properties["previous_revision"] == str(second.root_hash)
        tags = {tag.name: tag for tag in head.tags()}
        assert set(tags) == {"trunk", "trunk-previous", "v1", "v2"}
        assert tags["trunk"].revision == 3 and tags["trunk-previous"].revision == 2
        assert tags["v2"].description == "second"
    with Repository.open(FQRN, servers=url, keys=keydir, state_dir=state, tag="v1") as old:
        assert old.revision == 1 and old.root_hash == first.root_hash
        assert not old.exists("/added.txt") and not old.exists("/d0/d1/changed.txt")
    with Repository.open(FQRN, servers=url, keys=keydir, state_dir=state, tag="v2") as v2:
        assert v2.read("/added.txt") == b"new in v2\n"
        assert v2.read("/d0/d1/changed.txt") == b"v1 content\n"
    with Repository.open(FQRN, servers=url, keys=keydir, state_dir=state,
                         date="2023-11-14T22:14:00Z") as by_date:  # 1_700_000_040
        assert by_date.revision == 1
    with Repository.open(FQRN, servers=url, keys=keydir, state_dir=state,
                         date=1_700_000_150) as by_date:
        assert by_date.revision == 2
    with Repository.open(FQRN, servers=url, keys=keydir, state_dir=state,
                         root_hash=str(second.root_hash)) as pinned:
        assert pinned.revision == 2
    with pytest.raises(TagNotFoundError):
        Repository.open(FQRN, servers=url, keys=keydir, state_dir=state, date="2020-01-01")
    with pytest.raises(TagNotFoundError):
        Repository.open(FQRN, servers=url, keys=keydir, state_dir=state, tag="nope")


def test_kill_9_mid_publish_leaves_previous_revision(tmp_path, keydir):
    src = str(tmp_path / "src")
    make_tree(src, seed=4, n_files=200, big_files=2, nested=2)
    store = str(tmp_path / "store")
    first = publish(src, FQRN, store, keydir, chunking=SMALL_CHUNKS)
    manifest_before = open(os.path.join(store, ".cvmfspublished"), "rb").read()
    for index in range(100):
        with open(os.path.join(src, f"more{index}.txt"), "w") as handle:
            handle.write(f"more {index}\n" * 50)
    script = textwrap.dedent(f"""
        import os, signal
        from uvm.cvmfs.publish import publish, ChunkPolicy
        done = []
        def progress(path):
            done.append(path)
            if len(done) == 120:
                os.kill(os.getpid(), signal.SIGKILL)
        publish({src!r}, {FQRN!r}, {store!r}, {keydir!r},
                chunking=ChunkPolicy(2048, 4096, 8192), progress=progress)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert open(os.path.join(store, ".cvmfspublished"), "rb").read() == manifest_before
    with Repository.open(FQRN, servers=store, keys=keydir, state_dir=str(tmp_path / "s")) as repo:
        assert repo.revision == 1 and repo.root_hash == first.root_hash
        assert not repo.exists("/more0.txt")
    txn = os.path.join(store, "data", "txn")
    assert set(os.listdir(txn)) - {".lock"}  # the killed publish left litter behind
    again = publish(src, FQRN, store, keydir, chunking=SMALL_CHUNKS)
    assert again.revision == 2
    assert os.listdir(txn) == [".lock"]  # cleared under the lock by the next publish
    with Repository.open(FQRN, servers=store, keys=keydir, state_dir=str(tmp_path / "s")) as repo:
        assert repo.read("/more99.txt") == b"more 99\n" * 50


def test_shake128_repository(tmp_path, keydir, http_server):
    src = str(tmp_path / "src")
    make_tree(src, seed=5, n_files=80, big_files=2, nested=1)
    result = publish(src, FQRN, http_server.store(), keydir, chunking=SMALL_CHUNKS,
                     algorithm=Algorithm.SHAKE128)
    assert str(result.root_hash).endswith("-shake128")
    published = open(os.path.join(http_server.store(), ".cvmfspublished"), "rb").read()
    assert b"-shake128\n" in published.split(b"--\n")[1][:60]
    whitelist = open(os.path.join(http_server.store(), ".cvmfswhitelist"), "rb").read()
    assert b"-SHAKE128\n" in whitelist
    with Repository.open(FQRN, servers=http_server.repo_url(), keys=keydir,
                         state_dir=str(tmp_path / "s"), environ=ENV) as repo:
        assert repo.algorithm is Algorithm.SHAKE128
        compare_tree(repo, src)


def test_autocatalogs_split_large_trees(tmp_path, keydir):
    src = str(tmp_path / "src")
    make_tree(src, seed=6, n_files=400, big_files=1, nested=0)
    store = str(tmp_path / "store")
    result = publish(src, FQRN, store, keydir, chunking=SMALL_CHUNKS, autocatalogs=True,
                     autocatalog_max=60)
    assert result.catalogs > 3
    with Repository.open(FQRN, servers=store, keys=keydir, state_dir=str(tmp_path / "s"),
                         environ=ENV) as repo:
        compare_tree(repo, src)
        pending = [repo.tree.root]
        while pending:
            catalog = pending.pop()
            rows = catalog._db.execute("SELECT count(*) FROM catalog").fetchone()[0]
            assert rows <= 60
            pending.extend(repo.tree.catalog_for(ref.path) for ref in catalog.nested_catalogs())


def _reference_cut_marks(data: bytes, low: int, avg: int, high: int):
    """Xor32Detector::DoFindNextCutMark transcribed literally (int32 arithmetic, one buffer)."""

    def int32(value):
        value &= 0xFFFFFFFF
        return value - (1 << 32) if value >= 1 << 31 else value

    threshold, magic = 0xFFFFFFFF // avg, 0xFFFFFFFF // 2
    cuts, last, xor32, xor32_ptr = [], 0, 0, 0
    while len(data) > low:
        offset = max(last + low - 32, xor32_ptr)
        if offset >= len(data):
            break
        for i in range(offset, min(last + low, len(data))):
            xor32 = ((xor32 << 1) ^ data[i]) & 0xFFFFFFFF
        i = max(offset, last + low)
        end = min(last + high, len(data))
        cut = None
        while i < end:
            xor32 = ((xor32 << 1) ^ data[i]) & 0xFFFFFFFF
            diff = int32(int32(xor32) - magic)
            if abs(diff) < threshold or diff == -(1 << 31):  # C: abs(INT_MIN) stays negative
                cut = i
                break
            i += 1
        if cut is None:
            if i == last + high and i < len(data):
                cut = i
            else:
                break
        cuts.append(cut)
        last, xor32, xor32_ptr = cut, 0, cut
    return cuts


def test_chunker_matches_the_stock_xor32_detector():
    import random

    from uvm.cvmfs.publish.chunking import cut_marks

    rng = random.Random(11)
    inputs = [rng.randbytes(60_000), bytes(50_000), b"\xff" * 40_000,
              (b"abc" * 20_000), bytes(rng.choice([0, 255]) for _ in range(30_000))]
    for data in inputs:
        for low, avg, high in ((2048, 4096, 8192), (64, 256, 1024), (1000, 1500, 1600)):
            got = list(cut_marks(data, ChunkPolicy(low, avg, high)))
            assert got == _reference_cut_marks(data, low, avg, high)


def test_chunker_is_content_defined():
    import random

    rng = random.Random(7)
    data = bytearray(rng.randbytes(200_000))
    policy = ChunkPolicy(2048, 4096, 8192)
    before = chunk_ranges(bytes(data), policy)
    assert len(before) > 10
    assert all(2048 < size <= 8192 for _, size in before[:-1])
    assert sum(size for _, size in before) == len(data)
    old_chunks = {bytes(data[o:o + s]) for o, s in before}
    data[100_000:100_000] = b"inserted bytes"
    after = chunk_ranges(bytes(data), policy)
    new_chunks = [bytes(data[o:o + s]) for o, s in after]
    # cut marks realign after the edit: all but the chunks around it are shared
    assert sum(chunk not in old_chunks for chunk in new_chunks) <= 3
    assert chunk_ranges(b"x" * 100, policy) == [(0, 100)]


def test_cli_round_trip_and_export(tmp_path, keydir, http_server):
    src = str(tmp_path / "src")
    make_tree(src, seed=8, n_files=60, big_files=2, nested=1)
    keys = str(tmp_path / "clikeys")
    run_uvm("keys", "create", FQRN, "--dir", keys, check=True)
    assert sorted(os.listdir(keys)) == sorted(
        f"{FQRN}.{ext}" for ext in ("masterkey", "pub", "key", "crt"))
    out = run_uvm("publish", src, "--repo", FQRN, "--to", http_server.store(), "--keys", keys,
                  "--tag", "cli-v1", "--description", "from the CLI",
                  "--chunk-sizes", "2048,4096,8192", check=True)
    assert b"revision 1" in out.stdout
    env = {"CVMFS_SERVER_URL": f"{http_server.url}/cvmfs/@fqrn@", "CVMFS_KEYS_DIR": keys,
           "XDG_STATE_HOME": str(tmp_path / "state"), "UVM_ARCH": "aarch64",
           "CVMFS_CACHE_BASE": str(tmp_path / "cache")}
    info = run_uvm("repo", "info", FQRN, env_extra=env, check=True).stdout.decode()
    assert "revision:       1" in info and "cli-v1" in info and "sha1" in info
    odd_dir = next(os.path.relpath(d, src) for d, _, fs in os.walk(src) if "new\nline" in fs)
    odd_dir = "/" if odd_dir == "." else "/" + odd_dir
    listing = run_uvm("repo", "ls", f"{FQRN}:{odd_dir}", env_extra=env, check=True).stdout.decode()
    assert " new\\nline\n" in listing  # the name with a newline is escaped on one line
    assert listing.startswith("total ") and "\n-" in listing
    cat = run_uvm("repo", "cat", f"{FQRN}:/d0/d1/d2/.cvmfscatalog", env_extra=env, check=True)
    assert cat.stdout == b""
    dest = str(tmp_path / "export")
    run_uvm("repo", "export", f"{FQRN}:/", dest, env_extra=env, check=True)
    for dirpath, dirs, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        for name in dirs + files:
            a, b = os.path.join(dirpath, name), os.path.join(dest, rel, name)
            sa = os.lstat(a)
            if stat.S_ISCHR(sa.st_mode):
                assert not os.path.lexists(b)  # devices need privileges: reported, skipped
                continue
            sb = os.lstat(b)
            assert stat.S_IFMT(sa.st_mode) == stat.S_IFMT(sb.st_mode), a
            assert sa.st_mode == sb.st_mode, a
            if not stat.S_ISLNK(sa.st_mode):
                assert sa.st_mtime_ns == sb.st_mtime_ns, a
            if stat.S_ISREG(sa.st_mode):
                assert open(a, "rb").read() == open(b, "rb").read()
            if stat.S_ISLNK(sa.st_mode):
                assert os.readlink(a) == os.readlink(b)
    # hard-link groups come back as hard links
    groups = defaultdict(set)
    for dirpath, _, files in os.walk(dest):
        for name in files:
            if name.startswith("h") and name[1:-1].isdigit():
                groups[(dirpath, name[:-1])].add(os.lstat(os.path.join(dirpath, name)).st_ino)
    assert groups and all(len(inodes) == 1 for inodes in groups.values())


def test_chunked_file_objects_are_partials(tmp_path, keydir):
    src = str(tmp_path / "src")
    os.makedirs(src)
    data = os.urandom(50_000)
    with open(os.path.join(src, "big"), "wb") as handle:
        handle.write(data)
    store = str(tmp_path / "store")
    publish(src, FQRN, store, keydir, chunking=SMALL_CHUNKS)
    with Repository.open(FQRN, servers=store, keys=keydir, state_dir=str(tmp_path / "s")) as repo:
        entry = repo.stat("/big")
        assert entry.flags & FLAG_CHUNKED and entry.content_hash is None
        chunks = repo.tree.chunks(entry)
        assert len(chunks) > 3
        for chunk in chunks:
            assert os.path.exists(os.path.join(store, chunk.content_hash.object_path(Suffix.PARTIAL)))
        with repo.open("/big") as handle:
            handle.seek(30_000)
            assert handle.read(5000) == data[30_000:35_000]
        assert isinstance(repo.tree.root, Catalog)


def test_republish_reuses_unchanged_files_only(tmp_path, keydir):
    src = str(tmp_path / "src")
    make_tree(src, seed=9, n_files=120, big_files=2, nested=1)
    store = str(tmp_path / "store")
    first = publish(src, FQRN, store, keydir, chunking=SMALL_CHUNKS)
    again = publish(src, FQRN, store, keydir, chunking=SMALL_CHUNKS)
    assert again.unchanged_files == again.files == first.files
    assert again.new_objects <= again.catalogs + 1  # catalogs and history only
    # same size, new content, new mtime: read again
    target = os.path.join(src, "big0.bin") if os.path.exists(os.path.join(src, "big0.bin")) else None
    target = target or next(os.path.join(d, f) for d, _, fs in os.walk(src)
                            for f in fs if f.startswith("big"))
    data = bytearray(open(target, "rb").read())
    data[10] ^= 0xFF
    with open(target, "wb") as handle:
        handle.write(data)
    os.utime(target, ns=(os.stat(target).st_atime_ns, os.stat(target).st_mtime_ns + 1))
    third = publish(src, FQRN, store, keydir, chunking=SMALL_CHUNKS)
    assert third.unchanged_files == third.files - 1
    with Repository.open(FQRN, servers=store, keys=keydir, state_dir=str(tmp_path / "s"),
                         environ=ENV) as repo:
        compare_tree(repo, src)
