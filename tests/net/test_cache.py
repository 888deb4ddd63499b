"""The shared cache under pressure: many processes, kill -9, a full disk, the quota, offline."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import FQRN, fast_env, fast_settings
from faultserver import put_file

from uvm.cvmfs.cache import Cache
from uvm.cvmfs.fetcher import Fetcher
from uvm.cvmfs.hashing import ContentHash, Suffix
from uvm.cvmfs.transport import Transport
from uvm.errors import CacheError, FetchError, FetchFailure

WORKER = os.path.join(os.path.dirname(__file__), "fetch_worker.py")


def make_objects(put, count, size, seed=b"", random=False):
    objects = {}
    for i in range(count):
        if random:
            data = os.urandom(size)
        else:
            data = hashlib.sha256(seed + str(i).encode()).digest() * (size // 32) + b"%d" % i
        objects[put(data)] = data
    return objects


def write_list(path, objects):
    with open(path, "w") as f:
        for h, data in objects.items():
            f.write(f"{h} {len(data)}\n")
    return str(path)


def check_output(stdout, objects):
    seen = {}
    for line in stdout.splitlines():
        text, digest = line.split()
        seen[ContentHash.parse(text)] = digest
    assert seen == {h: hashlib.sha1(d).hexdigest() for h, d in objects.items()}


def test_eight_processes_share_a_cold_cache(mirror, put, cache_dir, tmp_path):
    objects = make_objects(put, 40, 30000)
    listfile = write_list(tmp_path / "list", objects)
    mirror.latency = 0.01  # widen the window in which processes race for the same objects
    env = fast_env([mirror.url_for()], cache_dir)
    procs = [subprocess.Popen([sys.executable, WORKER, listfile] +
                              (["--prefetch"] if i % 2 else []),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(8)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        check_output(out, objects)
    for h in objects:
        assert 1 <= mirror.count(h.object_path()) <= 2, h
    cache = Cache(cache_dir)
    try:
        assert os.listdir(cache.txn_dir) == []
        info = cache.info()
        assert info["objects"] == len(objects)
        assert info["hits"] + info["misses"] >= 8 * len(objects)
    finally:
        cache.close()


def test_kill_9_during_downloads_leaves_nothing_servable_wrong(mirror, put, cache_dir,
                                                               tmp_path):
    objects = make_objects(put, 12, 60000, random=True)
    listfile = write_list(tmp_path / "list", objects)
    # every object trickles in, so the victim is killed with transactions open
    mirror.add_fault("trickle", step=4096, pause=0.02)
    env = fast_env([mirror.url_for()], cache_dir, CVMFS_LOW_SPEED_LIMIT="1")
    victim = subprocess.Popen([sys.executable, WORKER, listfile, "--prefetch"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    txn = os.path.join(cache_dir, "shared", "txn")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.isdir(txn) and os.listdir(txn):
            break
        time.sleep(0.01)
    assert os.listdir(txn), "the victim never started a download"
    time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    victim.stdout.close()
    leftovers = os.listdir(txn)
    mirror.clear_faults()

    survivor = subprocess.run([sys.executable, WORKER, listfile], env=env,
                              capture_output=True, text=True, timeout=120)
    assert survivor.returncode == 0, survivor.stderr
    check_output(survivor.stdout, objects)
    assert leftovers and os.listdir(txn) == []
    by_key = {str(h): d for h, d in objects.items()}
    cache = Cache(cache_dir)
    try:
        for key, _size in cache.scan():
            with open(os.path.join(cache.root, key[:2], key[2:]), "rb") as f:
                assert f.read() == by_key[key]
    finally:
        cache.close()


@pytest.fixture
def small_disk(tmp_path):
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs (the tests need root): {result.stderr}")
    yield str(mountpoint)
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_full_disk_is_a_one_line_cache_error_and_leaves_nothing_behind(
        mirror, put, small_disk, make_fetcher):
    big = os.urandom(3 << 20)
    h = put(big)
    small = put(b"fits easily")
    fetcher = make_fetcher(fast_settings([mirror.url_for()]), base=small_disk)
    with pytest.raises(CacheError) as info:
        fetcher.fetch_object(h, expected_size=len(big))
    message = info.value.one_line()
    assert "\n" not in message
    assert fetcher.cache.root in message and "CVMFS_QUOTA_LIMIT" in message
    assert mirror.count(h.object_path()) == 1  # a local failure is not retried remotely
    assert os.listdir(fetcher.cache.txn_dir) == []
    assert not fetcher.cache.contains(h)
    with open(fetcher.fetch_object(small), "rb") as f:  # the cache still works
        assert f.read() == b"fits easily"


def test_quota_evicts_lru_down_to_half_and_never_pinned_catalogs(mirror, put, make_fetcher):
    catalog_data = b"catalog" * 20000
    catalog = put(catalog_data, suffix=Suffix.CATALOG)
    objects = make_objects(put, 30, 150000, seed=b"quota")  # 4.5 MB against a 1 MB quota
    fetcher = make_fetcher(fast_settings([mirror.url_for()]), quota_mb=1)
    fetcher.fetch_object(catalog, Suffix.CATALOG)
    paths = fetcher.prefetch([(h, Suffix.NONE, len(d), True) for h, d in objects.items()],
                             parallel=4)
    assert len(paths) == len(objects)
    stats = fetcher.cache.quota.stats()
    assert stats["usage"] <= 1 << 20
    assert stats["evictions"] > 0
    assert fetcher.cache.contains(catalog)
    on_disk = sum(size for _key, size in fetcher.cache.scan())
    assert on_disk == stats["usage"]
    # whatever survived is intact, whatever was evicted comes back on demand
    for h, data in objects.items():
        with open(fetcher.fetch_object(h, expected_size=len(data)), "rb") as f:
            assert f.read() == data
    fetcher.close()
    other = Cache(fetcher.cache.base, 1)
    try:
        other.quota.cleanup(0)  # the pin ended with the fetcher
        assert not other.contains(catalog)
    finally:
        other.close()


def test_pins_of_dead_processes_do_not_count(put, cache_dir):
    cache = Cache(cache_dir, 1)
    try:
        cache.quota._transaction("fake a dead pin", lambda db: db.execute(
            "INSERT INTO pins VALUES ('ab', 999999999)"))
        assert cache.quota.stats()["pinned"] == 0
    finally:
        cache.close()


def test_offline_runs_use_the_last_verified_manifest_and_name_missing_objects(
        mirror, put, stratum, make_fetcher, caplog):
    put_file(stratum, FQRN, ".cvmfspublished", b"D0\nmanifest v1")
    cached = put(b"cached object")
    missing = put(b"never fetched")
    settings = fast_settings([mirror.url_for()])
    online = make_fetcher(settings)
    assert online.fetch_file(".cvmfspublished") == b"D0\nmanifest v1"
    online.fetch_object(cached)
    online.remember_verified()
    online.close()

    mirror.stop()
    offline = make_fetcher(settings)
    with caplog.at_level("WARNING"):
        assert offline.fetch_file(".cvmfspublished") == b"D0\nmanifest v1"
        assert offline.offline
        with open(offline.fetch_object(cached), "rb") as f:
            assert f.read() == b"cached object"
        with pytest.raises(FetchError) as info:
            offline.fetch_object(missing)
    assert info.value.failure is FetchFailure.OFFLINE
    assert str(missing) in str(info.value)
    assert sum("offline" in r.getMessage() for r in caplog.records) == 1


def test_unverified_manifests_are_not_kept_for_offline_use(mirror, stratum, make_fetcher):
    put_file(stratum, FQRN, ".cvmfspublished", b"never verified")
    settings = fast_settings([mirror.url_for()])
    make_fetcher(settings).fetch_file(".cvmfspublished")  # no remember_verified()
    mirror.stop()
    with pytest.raises(FetchError):
        make_fetcher(settings).fetch_file(".cvmfspublished")


def test_info_and_clean(mirror, put, make_fetcher):
    objects = make_objects(put, 5, 1000, seed=b"info")
    fetcher = make_fetcher(fast_settings([mirror.url_for()]))
    for h in objects:
        fetcher.fetch_object(h)
        fetcher.fetch_object(h)
    info = fetcher.cache.info()
    assert info["objects"] == 5 and info["hits"] == 5 and info["misses"] == 5
    assert info["hit_rate"] == 0.5
    assert fetcher.cache.clean() == 5
    assert fetcher.cache.info()["objects"] == 0
    assert not any(fetcher.cache.contains(h) for h in objects)


def test_shared_base_gives_group_writable_directories(tmp_path):
    base = tmp_path / "shared-cache"
    base.mkdir()
    os.chmod(base, 0o2775)
    cache = Cache(str(base))
    try:
        assert cache.shared
        assert os.stat(cache.root).st_mode & 0o070 == 0o070
        h = ContentHash.of(b"shared object")
        with cache.locked(h):  # the object's prefix directory is made here, shared
            assert os.stat(os.path.join(cache.root, h.digest.hex()[:2])).st_mode & 0o020
    finally:
        cache.close()
    private = Cache(str(tmp_path / "private"))
    try:
        assert not private.shared
        assert os.stat(private.root).st_mode & 0o077 == 0
    finally:
        private.close()


def test_quota_under_load_from_several_processes(mirror, put, cache_dir, tmp_path):
    sets = [make_objects(put, 15, 120000, seed=b"load%d" % i) for i in range(4)]
    env = fast_env([mirror.url_for()], cache_dir, CVMFS_QUOTA_LIMIT="1")
    procs = []
    for i, objects in enumerate(sets):
        listfile = write_list(tmp_path / f"list{i}", objects)
        procs.append(subprocess.Popen([sys.executable, WORKER, listfile, "--prefetch"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    for proc, objects in zip(procs, sets):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        check_output(out, objects)
    cache = Cache(cache_dir, 1)
    try:
        stats = cache.quota.stats()
        assert stats["evictions"] > 0
        assert stats["usage"] <= 1 << 20
        assert sum(size for _key, size in cache.scan()) == stats["usage"]
        assert stats["pinned"] == 0  # all workers are gone
    finally:
        cache.close()


def test_lost_database_is_rebuilt_from_the_objects_on_disk(mirror, put, make_fetcher,
                                                           cache_dir):
    objects = make_objects(put, 4, 5000, seed=b"rebuild")
    fetcher = make_fetcher(fast_settings([mirror.url_for()]))
    for h in objects:
        fetcher.fetch_object(h)
    fetcher.close()
    for suffix in ("", "-wal", "-shm"):
        path = os.path.join(cache_dir, "shared", "cachedb" + suffix)
        if os.path.exists(path):
            os.unlink(path)
    cache = Cache(cache_dir)
    try:
        stats = cache.quota.stats()
        assert stats["objects"] == 4
        assert stats["usage"] == sum(len(d) for d in objects.values())
    finally:
        cache.close()


def _open_cache(base: str, start, results) -> None:
    start.wait()
    try:
        Cache(base, 100).close()
        results.put("ok")
    except Exception as err:  # reported to the test, which shows it
        results.put(repr(err))


def test_processes_opening_a_new_cache_at_once_all_succeed(tmp_path):
    """Eight processes creating the same cache at the same moment: the first
    run on a fresh worker node starts many jobs at once."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    failures = []
    for round_no in range(30):
        base = str(tmp_path / f"cache{round_no}")
        results, start = ctx.Queue(), ctx.Barrier(8)
        procs = [ctx.Process(target=_open_cache, args=(base, start, results)) for _ in range(8)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        failures += [r for r in (results.get(timeout=10) for _ in procs) if r != "ok"]
    assert failures == []


def _prefixes(root):
    return sorted(n for n in os.listdir(root) if len(n) == 2)


def test_a_new_cache_makes_an_object_directory_with_its_first_object(mirror, put, make_fetcher):
    objects = make_objects(put, 3, 1000, seed=b"lazy")
    fetcher = make_fetcher(fast_settings([mirror.url_for()]))
    root = fetcher.cache.root
    assert _prefixes(root) == []
    for h, data in objects.items():
        with fetcher.open_object(h) as f:
            assert f.read() == data
    assert _prefixes(root) == sorted({h.digest.hex()[:2] for h in objects})
    assert sorted(k for k, _ in fetcher.cache.scan()) == sorted(str(h) for h in objects)


def test_a_tampered_object_is_refused_in_a_new_cache_and_leaves_nothing(
        mirror, put, make_fetcher):
    h = put(b"tampered in transit" * 100)
    mirror.add_fault("corrupt")
    fetcher = make_fetcher(fast_settings([mirror.url_for()]))
    with pytest.raises(FetchError) as info:
        fetcher.fetch_object(h)
    assert info.value.failure is FetchFailure.BAD_DATA
    assert not fetcher.cache.contains(h)
    assert fetcher.cache.scan() == []
    assert os.listdir(fetcher.cache.txn_dir) == []
    assert fetcher.cache.info()["quarantined"] == 0


def test_a_cache_made_with_every_directory_up_front_still_serves(mirror, put, cache_dir):
    """Caches made before the directories became lazy have all 256 and a quarantine."""
    os.makedirs(os.path.join(cache_dir, "shared", "manifests"))
    for name in ["txn", "quarantaine"] + [f"{i:02x}" for i in range(256)]:
        os.makedirs(os.path.join(cache_dir, "shared", name))
    objects = make_objects(put, 2, 500, seed=b"old layout")
    cache = Cache(cache_dir)
    fetcher = Fetcher(FQRN, cache, lambda: Transport(fast_settings([mirror.url_for()])),
                      own_cache=True)
    try:
        for h, data in objects.items():
            with fetcher.open_object(h) as f:
                assert f.read() == data
        assert cache.info()["objects"] == 2
    finally:
        fetcher.close()
