"""Past its TTL, a manifest the mirrors still serve unchanged is confirmed without
verifying signatures again; anything else goes the full, verifying way."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time

import pytest
from conftest import FQRN, fast_env
from test_client import FILES, publish_tree

from uvm import config
from uvm.cvmfs import head
from uvm.cvmfs import whitelist as whitelist_mod
from uvm.cvmfs.client import open_repository
from uvm.cvmfs.hashing import Algorithm
from uvm.cvmfs.publish import ChunkPolicy, publish
from uvm.cvmfs.publish.keys import load_publish_keys
from uvm.cvmfs.rollback import RollbackState
from uvm.errors import RollbackError

CONFIRM = """
import sys
from uvm import config
from uvm.cvmfs.head import revalidate_head
known = revalidate_head("%s", config.load().settings("%s"), state_dir=sys.argv[1])
print(known.root_hash, known.revision, known.offline, "cryptography" in sys.modules)
""" % (FQRN, FQRN)


@pytest.fixture
def verified(stratum, mirror, cache_dir, tmp_path):
    """A repository (TTL 60 s) opened once the full way, so the cache holds
    verified copies, and its manifest made stale: (env, settings, state dir)."""
    keydir = publish_tree(stratum, tmp_path, ttl=60)
    env = fast_env([mirror.url_for()], cache_dir, CVMFS_KEYS_DIR=keydir,
                   XDG_STATE_HOME=str(tmp_path / "state"))
    settings = config.load(environ=env, system_files=[]).settings(FQRN)
    state = str(tmp_path / "state")
    with open_repository(FQRN, config.load(environ=env, system_files=[]), state_dir=state):
        pass
    make_stale(settings)
    return env, settings, state


def make_stale(settings) -> None:
    directory = head.bootstrap_dir(settings.cache_base)
    old = time.time() - 600
    for name in (head.MANIFEST, head.WHITELIST):
        os.utime(os.path.join(directory, FQRN + name), (old, old))


def manifest_head(stratum) -> tuple:
    with open(os.path.join(stratum, "cvmfs", FQRN, ".cvmfspublished"), "rb") as handle:
        fields = head.head_fields(handle.read())
    return fields.root_hash, fields.revision


def test_an_unchanged_manifest_is_confirmed_with_one_request_and_no_signature_code(
        verified, stratum, mirror):
    env, settings, state = verified
    assert head.fresh_head(FQRN, settings) is None
    before = mirror.total()
    child = subprocess.run([sys.executable, "-c", CONFIRM, state], env=env,
                           capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    root_hash, revision = manifest_head(stratum)
    assert child.stdout.split() == [root_hash, str(revision), "False", "False"]
    assert mirror.total() - before == 2  # manifest and whitelist, nothing else
    assert mirror.count(".cvmfspublished") == 2 and mirror.count(".cvmfswhitelist") == 2
    # confirmed now: the runs of the next TTL need no request at all
    assert head.fresh_head(FQRN, settings)[:2] == manifest_head(stratum)


def test_a_new_revision_is_left_to_the_full_verification(verified, stratum, tmp_path):
    env, settings, state = verified
    old = manifest_head(stratum)
    (tmp_path / "src" / "etc" / "conf").write_bytes(b"key=newer\n")
    publish(str(tmp_path / "src"), FQRN, os.path.join(stratum, "cvmfs", FQRN),
            str(tmp_path / "keys"), ttl=60, chunking=ChunkPolicy(8192, 16384, 32768))
    assert head.revalidate_head(FQRN, settings, state_dir=state) is None
    assert head.fresh_head(FQRN, settings) is None  # nothing was taken as verified
    with open_repository(FQRN, config.load(environ=env, system_files=[]),
                         state_dir=state) as repo:
        assert repo.read("/etc/conf") == b"key=newer\n"
    make_stale(settings)
    assert head.revalidate_head(FQRN, settings, state_dir=state)[:2] == manifest_head(stratum)
    assert manifest_head(stratum)[1] == old[1] + 1


def test_a_re_signed_whitelist_is_left_to_the_full_verification(verified, stratum, tmp_path):
    env, settings, state = verified
    path = os.path.join(stratum, "cvmfs", FQRN, ".cvmfswhitelist")
    with open(path, "rb") as handle:
        fingerprint = handle.read().split(b"\n")[3].decode()
    created = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    keys = load_publish_keys(FQRN, str(tmp_path / "keys"))
    with open(path, "wb") as handle:
        handle.write(whitelist_mod.sign(whitelist_mod.render(FQRN, fingerprint, created, 60),
                                        keys.master_key, Algorithm.SHA1))
    assert head.revalidate_head(FQRN, settings, state_dir=state) is None
    with open_repository(FQRN, config.load(environ=env, system_files=[]), state_dir=state):
        pass  # verifies the new whitelist and records it
    make_stale(settings)
    assert head.revalidate_head(FQRN, settings, state_dir=state)[:2] == manifest_head(stratum)


def test_other_master_keys_mean_a_full_verification(verified, tmp_path):
    env, settings, state = verified
    key = tmp_path / "keys" / f"{FQRN}.pub"
    key.write_bytes(key.read_bytes() + b"\n")  # same key, other bytes: verify again
    assert head.revalidate_head(FQRN, settings, state_dir=state) is None


def test_an_expired_whitelist_is_not_confirmed(verified, stratum):
    env, settings, state = verified
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=31)
    assert head.revalidate_head(FQRN, settings, state_dir=state, now=later) is None
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    assert head.revalidate_head(FQRN, settings, state_dir=state, now=soon)[:2] \
        == manifest_head(stratum)


def test_a_rollback_is_not_confirmed(verified, stratum, tmp_path):
    """Another user saw a newer revision: their rollback state refuses the
    cache's older copy, and the full open says why."""
    env, settings, state = verified
    other_state = str(tmp_path / "other-state")
    root_hash, revision = manifest_head(stratum)
    RollbackState(other_state).check_and_record(FQRN, revision + 1, int(time.time()) + 3600, root_hash)
    assert head.revalidate_head(FQRN, settings, state_dir=other_state) is None
    with pytest.raises(RollbackError):
        open_repository(FQRN, config.load(environ=env, system_files=[]), state_dir=other_state)


def test_with_the_mirrors_down_the_verified_copies_are_used_but_stay_stale(
        verified, stratum, mirror, caplog):
    env, settings, state = verified
    mirror.stop()
    known = head.revalidate_head(FQRN, settings, state_dir=state)
    assert known[:2] == manifest_head(stratum) and known.offline
    assert "offline: no server reachable for " + FQRN in caplog.text
    assert head.fresh_head(FQRN, settings) is None  # the next run asks the network again


def test_a_tampered_record_is_not_trusted(verified):
    env, settings, state = verified
    path = os.path.join(head.bootstrap_dir(settings.cache_base), FQRN + head.VERIFIED_RECORD)
    with open(path, "rb") as handle:
        record = handle.read()
    with open(path, "wb") as handle:
        handle.write(record.replace(record[70:80], b"0" * 10))
    assert head.revalidate_head(FQRN, settings, state_dir=state) is None


def test_copies_that_differ_from_what_the_mirror_serves_are_not_refreshed(verified):
    """A damaged copy in the cache is never made fresh: the full open replaces it."""
    env, settings, state = verified
    path = os.path.join(head.bootstrap_dir(settings.cache_base), FQRN + head.MANIFEST)
    with open(path, "ab") as handle:
        handle.write(b"\n")
    make_stale(settings)
    assert head.revalidate_head(FQRN, settings, state_dir=state) is None
    assert head.fresh_head(FQRN, settings) is None


def test_a_run_past_the_ttl_reads_the_same_files(verified, stratum):
    env, settings, state = verified
    assert head.revalidate_head(FQRN, settings, state_dir=state) is not None
    with open_repository(FQRN, config.load(environ=env, system_files=[]),
                         state_dir=state) as repo:
        assert repo.read("/etc/conf") == FILES["etc/conf"]
        assert repo.source.fresh_from_cache
