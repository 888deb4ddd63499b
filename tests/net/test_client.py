"""A published repository read through the production fetcher: mirrors, cache, offline, preload."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from conftest import FQRN, fast_env

from uvm import config
from uvm.cvmfs.cache import Cache
from uvm.cvmfs.client import open_repository, subtree_objects
from uvm.cvmfs.publish import ChunkPolicy, create_keys, publish
from uvm.errors import FetchError, FetchFailure, SignatureError, UvmError, WhitelistError

FILES = {
    "bin/tool": os.urandom(30000),
    "lib/libbig.so": os.urandom(70000),  # chunked with the small policy below
    "share/doc/readme": b"read me\n" * 100,
    "share/doc/empty": b"",
    "etc/conf": b"key=value\n",
}


def publish_tree(stratum, tmp_path, ttl):
    src = tmp_path / "src"
    for name, data in FILES.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.symlink("tool", src / "bin" / "link")
    keydir = str(tmp_path / "keys")
    create_keys(FQRN, keydir)
    store = os.path.join(stratum, "cvmfs", FQRN)
    publish(str(src), FQRN, store, keydir, tag="v1",
            chunking=ChunkPolicy(8192, 16384, 32768), ttl=ttl)
    return keydir


@pytest.fixture
def published(stratum, tmp_path):
    """A repository with TTL 0: every open re-checks the manifest on the mirrors."""
    return publish_tree(stratum, tmp_path, ttl=0)


def environment(hosts, cache_dir, keydir, tmp_path, **extra):
    env = fast_env(hosts, cache_dir, CVMFS_KEYS_DIR=keydir,
                   XDG_STATE_HOME=str(tmp_path / "state"), **extra)
    return env


def test_read_everything_through_mirrors_and_cache(published, mirror, mirror2, cache_dir,
                                                   tmp_path):
    mirror.add_fault("status", code=503)  # the first mirror is broken: the ring goes on
    env = environment([mirror.url_for(), mirror2.url_for()], cache_dir, published, tmp_path)
    cfg = config.load(environ=env, system_files=[])
    with open_repository(FQRN, cfg, state_dir=str(tmp_path / "state")) as repo:
        for name, data in FILES.items():
            assert repo.read("/" + name) == data
        assert repo.readlink("/bin/link") == "tool"
        assert repo.source.cache.info()["objects"] > len(FILES)
    assert mirror2.count(".cvmfspublished") == 1


def test_opening_asks_for_each_bootstrap_file_and_first_object_once(published, mirror,
                                                                     cache_dir, tmp_path):
    """Manifest, whitelist, certificate and root catalog are fetched ahead of
    the reader; nothing is asked for twice."""
    env = environment([mirror.url_for()], cache_dir, published, tmp_path)
    cfg = config.load(environ=env, system_files=[])
    with open_repository(FQRN, cfg, state_dir=str(tmp_path / "state")) as repo:
        assert repo.read("/etc/conf") == FILES["etc/conf"]
        asked = dict(mirror.hits)
    assert asked[f"/cvmfs/{FQRN}/.cvmfspublished"] == 1
    assert asked[f"/cvmfs/{FQRN}/.cvmfswhitelist"] == 1
    assert sum(1 for path in asked if path.endswith("X")) == 1  # the certificate
    assert sum(1 for path in asked if path.endswith("C")) == 1  # the root catalog
    assert all(count == 1 for count in asked.values()), asked


def test_offline_after_one_verified_run(published, mirror, cache_dir, tmp_path, caplog):
    env = environment([mirror.url_for()], cache_dir, published, tmp_path)
    cfg = config.load(environ=env, system_files=[])
    state = str(tmp_path / "state")
    with open_repository(FQRN, cfg, state_dir=state) as repo:
        assert repo.read("/etc/conf") == FILES["etc/conf"]
        revision = repo.revision
    mirror.stop()
    with caplog.at_level("WARNING"):
        with open_repository(FQRN, cfg, state_dir=state) as repo:
            assert repo.revision == revision
            assert repo.read("/etc/conf") == FILES["etc/conf"]
            with pytest.raises(FetchError) as info:
                repo.read("/bin/tool")
    assert info.value.failure is FetchFailure.OFFLINE
    assert "not in the cache" in str(info.value)
    assert sum("offline" in r.getMessage() for r in caplog.records) == 1


def test_preload_fetches_a_subtree_in_parallel(published, mirror, cache_dir, tmp_path):
    env = environment([mirror.url_for()], cache_dir, published, tmp_path)
    cfg = config.load(environ=env, system_files=[])
    state = str(tmp_path / "state")
    with open_repository(FQRN, cfg, state_dir=state) as repo:
        wanted = subtree_objects(repo, "/share")
        assert len(wanted) == 2
        everything = subtree_objects(repo)
        assert len(everything) > len(FILES)  # chunks of the big library
    result = subprocess.run(
        [sys.executable, "-m", "uvm", "cache", "preload", f"{FQRN}:/", "--tag", "v1"],
        env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"{len(everything)} objects" in result.stdout
    mirror.stop()  # everything is cached now: reading needs no server at all
    with open_repository(FQRN, cfg, state_dir=state) as repo:
        for name, data in FILES.items():
            assert repo.read("/" + name) == data

    info = subprocess.run([sys.executable, "-m", "uvm", "cache", "info"], env=env,
                          capture_output=True, text=True)
    assert info.returncode == 0 and "hit rate:" in info.stdout
    assert f"repository:  {FQRN} revision 1" in info.stdout
    assert os.path.join(cache_dir, "shared") in info.stdout
    clean = subprocess.run([sys.executable, "-m", "uvm", "cache", "clean"], env=env,
                           capture_output=True, text=True)
    assert clean.returncode == 0 and "removed" in clean.stdout


def test_preload_offline_names_the_problem_in_one_line(published, mirror, cache_dir, tmp_path):
    env = environment([mirror.url_for()], cache_dir, published, tmp_path)
    mirror.stop()
    result = subprocess.run([sys.executable, "-m", "uvm", "cache", "preload", FQRN],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert ".cvmfspublished" in result.stderr and len(result.stderr.splitlines()) == 1


def test_copy_file_writes_every_file_whole_on_the_same_and_on_another_file_system(
        published, mirror, cache_dir, tmp_path):
    """The shadow tree's copies: in the kernel next to the cache, through a
    buffer onto another file system (here tmpfs); chunked files included."""
    env = environment([mirror.url_for()], cache_dir, published, tmp_path)
    cfg = config.load(environ=env, system_files=[])
    other = tempfile.mkdtemp(dir="/dev/shm")
    try:
        with open_repository(FQRN, cfg, state_dir=str(tmp_path / "state")) as repo:
            assert repo.stat("/lib/libbig.so").is_chunked
            for directory in (str(tmp_path), other):
                for name, data in FILES.items():
                    target = os.path.join(directory, name.replace("/", "_"))
                    with open(target, "wb") as out:
                        out.write(b"head:")
                        repo.copy_file("/" + name, out)
                    with open(target, "rb") as handle:
                        assert handle.read() == b"head:" + data, (directory, name)
    finally:
        shutil.rmtree(other, ignore_errors=True)


WARM_RUN = """
import sys
from uvm import config
from uvm.cvmfs.client import open_repository
with open_repository("%s", config.load(), state_dir=sys.argv[1]) as repo:
    data = repo.read("/etc/conf")
    print(repo.source.offline, repo.source.fresh_from_cache,
          "uvm.cvmfs.connections" in sys.modules or "http.client" in sys.modules,
          data.decode().strip())
""" % FQRN


def test_warm_run_within_the_ttl_needs_no_network_and_no_http_code(stratum, mirror, cache_dir,
                                                                   tmp_path):
    keydir = publish_tree(stratum, tmp_path, ttl=3600)
    env = environment([mirror.url_for()], cache_dir, keydir, tmp_path)
    state = str(tmp_path / "state")
    cold = subprocess.run([sys.executable, "-c", WARM_RUN, state], env=env,
                          capture_output=True, text=True)
    assert cold.stdout.split() == ["False", "False", "True", "key=value"], cold.stderr
    before = mirror.total()
    warm = subprocess.run([sys.executable, "-c", WARM_RUN, state], env=env,
                          capture_output=True, text=True)
    assert warm.stdout.split() == ["False", "True", "False", "key=value"], warm.stderr
    assert mirror.total() == before
    # CVMFS_MAX_TTL caps the repository's TTL (minutes): an old manifest is re-checked
    with open_repository(FQRN, config.load(environ=dict(env, CVMFS_MAX_TTL="1"),
                                           system_files=[]), state_dir=state) as repo:
        repo.source.cache.touch_file(FQRN, ".cvmfspublished", 1.0)
        repo.source.fetch_file(".cvmfspublished")
        assert mirror.total() > before


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_long_running_reader_moves_to_a_new_revision_after_the_ttl(stratum, mirror, cache_dir,
                                                                   tmp_path):
    from uvm.cvmfs.client import LiveRepository

    keydir = publish_tree(stratum, tmp_path, ttl=60)
    env = environment([mirror.url_for()], cache_dir, keydir, tmp_path)
    cfg = config.load(environ=env, system_files=[])
    state = str(tmp_path / "state")
    clock = FakeClock()
    live = LiveRepository(FQRN, cfg, state_dir=state, clock=clock)
    pinned = LiveRepository(FQRN, cfg, tag="v1", state_dir=state, clock=clock)
    try:
        first = live.revision
        old_handle = live.open_file("/etc/conf")
        (tmp_path / "src" / "etc" / "conf").write_bytes(b"key=new value\n")
        publish(str(tmp_path / "src"), FQRN, os.path.join(stratum, "cvmfs", FQRN), keydir,
                ttl=60, chunking=ChunkPolicy(8192, 16384, 32768))
        assert live.read("/etc/conf") == FILES["etc/conf"]  # within the TTL: no change
        clock.now += 61
        assert live.read("/etc/conf") == b"key=new value\n"
        assert live.revision == first + 1
        assert old_handle.read() == FILES["etc/conf"]  # the open file is unaffected
        old_handle.close()
        assert pinned.read("/etc/conf") == FILES["etc/conf"]  # a tag never moves
        assert pinned.revision == first
        mirror.stop()  # a failed check keeps the current revision
        clock.now += 61
        assert live.read("/etc/conf") == b"key=new value\n"
    finally:
        live.close()
        pinned.close()


def test_damaged_manifest_on_one_mirror_is_retried_on_the_next(published, mirror, mirror2,
                                                               cache_dir, tmp_path):
    mirror.add_fault("corrupt", match=".cvmfspublished")
    env = environment([mirror.url_for(), mirror2.url_for()], cache_dir, published, tmp_path)
    cfg = config.load(environ=env, system_files=[])
    with open_repository(FQRN, cfg, state_dir=str(tmp_path / "state")) as repo:
        assert repo.read("/etc/conf") == FILES["etc/conf"]
    assert mirror2.count(".cvmfspublished") == 1
    mirror2.add_fault("corrupt", match=".cvmfspublished")
    from uvm.errors import IntegrityError, ManifestError
    with pytest.raises((IntegrityError, ManifestError)):
        open_repository(FQRN, cfg, state_dir=str(tmp_path / "state"))


def test_preload_a_template_by_name(published, mirror, cache_dir, tmp_path):
    env = environment([mirror.url_for()], cache_dir, published, tmp_path)
    cfg = tmp_path / "uvm.toml"
    cfg.write_text(f'[templates.docs]\nrepository = "{FQRN}"\npath = "/share/doc"\n')
    result = subprocess.run(
        [sys.executable, "-m", "uvm", "--config", str(cfg), "cache", "preload", "docs"],
        env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"{FQRN}:/share/doc" in result.stdout and "2 objects" in result.stdout


def test_published_repository_through_squid_with_a_dead_first_mirror(
        published, squid, mirror, mirror2, cache_dir, tmp_path):
    mirror.stop()  # squid answers 503 + X-Squid-Error: a proxy error, then the next mirror
    env = environment([mirror.url_for(), mirror2.url_for()], cache_dir, published, tmp_path,
                      CVMFS_HTTP_PROXY=squid.url, CVMFS_TIMEOUT="3")
    result = subprocess.run([sys.executable, "-m", "uvm", "cache", "preload", FQRN],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert any("squid" in headers.get("via", "") for _, headers in mirror2.headers)
    cfg = config.load(environ=env, system_files=[])
    with open_repository(FQRN, cfg, state_dir=str(tmp_path / "state")) as repo:
        for name, data in FILES.items():
            assert repo.read("/" + name) == data


def _open_fails(cfg, state):
    with pytest.raises(UvmError) as info:
        open_repository(FQRN, cfg, state_dir=state)
    return info.value


def test_a_tampered_whitelist_is_refused_though_fetched_with_the_manifest(
        published, mirror, cache_dir, tmp_path):
    store = os.path.join(mirror.root, "cvmfs", FQRN)
    with open(os.path.join(store, ".cvmfswhitelist"), "rb") as f:
        original = f.read()
    tampered = original.replace(b"N" + FQRN.encode(), b"Nother.uvm.local", 1)
    assert tampered != original
    with open(os.path.join(store, ".cvmfswhitelist"), "wb") as f:
        f.write(tampered)
    env = environment([mirror.url_for()], cache_dir, published, tmp_path)
    cfg = config.load(environ=env, system_files=[])
    err = _open_fails(cfg, str(tmp_path / "state"))
    assert isinstance(err, (SignatureError, WhitelistError)), err
    assert mirror.count(".cvmfswhitelist") == 1 and mirror.count(".cvmfspublished") == 1
    cache = Cache(cache_dir)
    try:  # nothing of the refused state is kept as "last verified"
        assert cache.load_file(FQRN, ".cvmfspublished") is None
        assert cache.load_file(FQRN, ".cvmfswhitelist") is None
    finally:
        cache.close()


def test_a_tampered_manifest_is_refused_though_its_catalog_was_asked_for_ahead(
        published, mirror, cache_dir, tmp_path):
    store = os.path.join(mirror.root, "cvmfs", FQRN)
    with open(os.path.join(store, ".cvmfspublished"), "rb") as f:
        lines = f.read().split(b"\n")
    lines = [b"S99" if line.startswith(b"S") else line for line in lines]
    with open(os.path.join(store, ".cvmfspublished"), "wb") as f:
        f.write(b"\n".join(lines))
    env = environment([mirror.url_for()], cache_dir, published, tmp_path)
    cfg = config.load(environ=env, system_files=[])
    err = _open_fails(cfg, str(tmp_path / "state"))
    assert isinstance(err, SignatureError), err
    cache = Cache(cache_dir)
    try:
        assert cache.load_file(FQRN, ".cvmfspublished") is None
    finally:
        cache.close()


def test_a_whitelist_damaged_on_one_mirror_is_fetched_again_from_the_next(
        published, mirror, mirror2, cache_dir, tmp_path):
    mirror.add_fault("corrupt", match=".cvmfswhitelist")
    env = environment([mirror.url_for(), mirror2.url_for()], cache_dir, published, tmp_path)
    cfg = config.load(environ=env, system_files=[])
    with open_repository(FQRN, cfg, state_dir=str(tmp_path / "state")) as repo:
        assert repo.read("/etc/conf") == FILES["etc/conf"]
    assert mirror.count(".cvmfswhitelist") >= 1 and mirror2.count(".cvmfswhitelist") == 1
