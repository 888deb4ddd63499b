"""Every kind of bad input gives its specific error, and through the CLI one line and no traceback."""

from __future__ import annotations

import datetime as _dt
import os

import pytest
from cvmfs_testlib import FQRN, SMALL_CHUNKS, assert_one_line_error, copy_store, run_uvm

from uvm.cvmfs import manifest as manifest_mod
from uvm.cvmfs import whitelist as whitelist_mod
from uvm.cvmfs.hashing import Algorithm, Suffix
from uvm.cvmfs.publish import publish
from uvm.cvmfs.publish.keys import load_publish_keys
from uvm.cvmfs.publish.store import ObjectStore
from uvm.cvmfs.repository import Repository
from uvm.errors import (
    CatalogError, CvmfsError, DecodeError, FetchError, IntegrityError, ManifestError,
    PathNotFoundError, PublishError, RollbackError, SignatureError, WhitelistError,
)


@pytest.fixture(scope="module")
def published(tmp_path_factory, keydir):
    """A small published repository: (source, store); tests tamper with copies."""
    base = tmp_path_factory.mktemp("published")
    src = base / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "hello.txt").write_bytes(b"hello, world\n")
    (src / "dir" / "file").write_bytes(b"some content\n" * 10)
    (src / "dir" / "sub" / ".cvmfscatalog").write_bytes(b"")
    (src / "dir" / "sub" / "big").write_bytes(bytes(range(256)) * 200)
    store = str(base / "store")
    publish(str(src), FQRN, store, keydir, chunking=SMALL_CHUNKS, tag="v1")
    return str(src), store


@pytest.fixture
def store(published, tmp_path):
    return copy_store(published[1], str(tmp_path / "store"))


def open_repo(store, keys, tmp_path, **kwargs):
    return Repository.open(kwargs.pop("fqrn", FQRN), servers=store, keys=keys,
                           state_dir=str(tmp_path / "state"), **kwargs)


def cli(store, keys, tmp_path, *args):
    return run_uvm("repo", *args, "--server", store, "--keys", keys,
                   "--state-dir", str(tmp_path / "state"))


def object_of(store, keys, tmp_path, path):
    with open_repo(store, keys, tmp_path) as repo:
        entry = repo.stat(path)
        return os.path.join(store, entry.content_hash.object_path())


def flip(path, position, mask=0x01):
    with open(path, "r+b") as handle:
        handle.seek(position)
        byte = handle.read(1)[0]
        handle.seek(position)
        handle.write(bytes([byte ^ mask]))


def resign_manifest(store, keydir, body: bytes) -> None:
    keys = load_publish_keys(FQRN, keydir)
    data = manifest_mod.sign(body, keys.repository_key, Algorithm.SHA1)
    with open(os.path.join(store, ".cvmfspublished"), "wb") as handle:
        handle.write(data)


def manifest_body(store) -> bytes:
    with open(os.path.join(store, ".cvmfspublished"), "rb") as handle:
        return handle.read().split(b"--\n", 1)[0]


# --- objects ----------------------------------------------------------------------


def test_tampered_file_object(store, keydir, tmp_path):
    path = object_of(store, keydir, tmp_path, "/hello.txt")
    flip(path, os.path.getsize(path) // 2)
    with open_repo(store, keydir, tmp_path) as repo:
        with pytest.raises(DecodeError):
            repo.read("/hello.txt")
        assert repo.read("/dir/file") == b"some content\n" * 10  # the rest still reads
    result = cli(store, keydir, tmp_path, "cat", f"{FQRN}:/hello.txt")
    assert_one_line_error(result, "data/")
    assert result.stdout == b""  # never wrong data


def test_tampered_chunk_object(store, keydir, tmp_path):
    with open_repo(store, keydir, tmp_path) as repo:
        chunk = repo.tree.chunks(repo.stat("/dir/sub/big"))[1]
    flip(os.path.join(store, chunk.content_hash.object_path(Suffix.PARTIAL)), 3)
    with open_repo(store, keydir, tmp_path) as repo:
        with pytest.raises(IntegrityError):
            repo.read("/dir/sub/big")


def test_tampered_catalog_objects(store, keydir, tmp_path):
    manifest = manifest_mod.parse_manifest(manifest_body(store))
    flip(os.path.join(store, manifest.root_hash.object_path(Suffix.CATALOG)), 20)
    with pytest.raises(IntegrityError):
        open_repo(store, keydir, tmp_path)
    assert_one_line_error(cli(store, keydir, tmp_path, "info", FQRN), "corrupt")


def test_tampered_nested_catalog(store, keydir, tmp_path):
    with open_repo(store, keydir, tmp_path) as repo:
        ref = repo.tree.root.nested_catalogs()[0]
    flip(os.path.join(store, ref.content_hash.object_path(Suffix.CATALOG)), 10)
    with open_repo(store, keydir, tmp_path) as repo:
        assert repo.read("/hello.txt") == b"hello, world\n"
        with pytest.raises(IntegrityError):
            repo.stat("/dir/sub/big")


def test_missing_object(store, keydir, tmp_path, http_server):
    os.unlink(object_of(store, keydir, tmp_path, "/dir/file"))
    with open_repo(store, keydir, tmp_path) as repo:
        with pytest.raises(FetchError):
            repo.read("/dir/file")
    served = copy_store(store, http_server.store())
    with open_repo(http_server.repo_url(), keydir, tmp_path) as repo:
        with pytest.raises(FetchError) as err:
            repo.read("/dir/file")
        assert "404" in str(err.value)
    assert served
    assert_one_line_error(cli(store, keydir, tmp_path, "cat", f"{FQRN}:/dir/file"), "cannot fetch")


def test_missing_certificate(store, keydir, tmp_path):
    manifest = manifest_mod.parse_manifest(manifest_body(store))
    os.unlink(os.path.join(store, manifest.certificate.object_path(Suffix.CERTIFICATE)))
    with pytest.raises(FetchError):
        open_repo(store, keydir, tmp_path)


def test_catalog_that_is_not_sqlite(store, keydir, tmp_path):
    garbage = ObjectStore(store).put_bytes(b"this is not a SQLite database\n" * 50, Suffix.CATALOG)
    body = manifest_body(store)
    old = manifest_mod.parse_manifest(body)
    body = body.replace(f"C{old.root_hash}\n".encode(), f"C{garbage}\n".encode())
    body = body.replace(f"B{old.catalog_size}\n".encode(), b"B1500\n")
    resign_manifest(store, keydir, body)
    with pytest.raises(CatalogError):
        open_repo(store, keydir, tmp_path)
    assert_one_line_error(cli(store, keydir, tmp_path, "info", FQRN), "not a CernVM-FS catalog")


# --- manifest -------------------------------------------------------------------------


def test_every_flipped_manifest_byte_is_refused(store, keydir, tmp_path):
    path = os.path.join(store, ".cvmfspublished")
    original = open(path, "rb").read()
    for position in range(len(original)):
        with open(path, "wb") as handle:
            handle.write(original[:position] + bytes([original[position] ^ 0x20])
                         + original[position + 1:])
        with pytest.raises((SignatureError, ManifestError, FetchError, IntegrityError)):
            open_repo(store, keydir, tmp_path).close()
    with open(path, "wb") as handle:
        handle.write(original[:10] + bytes([original[10] ^ 1]) + original[11:])
    assert_one_line_error(cli(store, keydir, tmp_path, "info", FQRN), "manifest")


def test_malformed_manifest_lines(store, keydir, tmp_path):
    body = manifest_body(store)
    bad = b"".join(line + b"\n" if not line.startswith(b"S") else b"Sseven\n"
                   for line in body.split(b"\n")[:-1])
    resign_manifest(store, keydir, bad)
    with pytest.raises(ManifestError) as err:
        open_repo(store, keydir, tmp_path)
    assert "'S'" in str(err.value)
    assert_one_line_error(cli(store, keydir, tmp_path, "info", FQRN), "manifest line 'S'")
    missing = b"".join(line + b"\n" for line in body.split(b"\n")[:-1] if not line.startswith(b"C"))
    resign_manifest(store, keydir, missing)
    with pytest.raises(ManifestError):
        open_repo(store, keydir, tmp_path)
    with open(os.path.join(store, ".cvmfspublished"), "wb") as handle:
        handle.write(b"garbage without a signature block")
    with pytest.raises((ManifestError, SignatureError)):
        open_repo(store, keydir, tmp_path)


def test_repository_name_mismatch(store, keydir, tmp_path):
    with pytest.raises(ManifestError) as err:
        open_repo(store, keydir, tmp_path, fqrn="other.uvm.local")
    assert "other.uvm.local" in str(err.value)
    result = run_uvm("repo", "info", "other.uvm.local", "--server", store, "--keys", keydir,
                     "--state-dir", str(tmp_path / "state"))
    assert_one_line_error(result, "not 'other.uvm.local'")


def test_wrong_root_path_hash(store, keydir, tmp_path):
    body = manifest_body(store).replace(b"Rd41d8cd98f00b204e9800998ecf8427e", b"R" + b"0" * 32)
    resign_manifest(store, keydir, body)
    with pytest.raises(ManifestError):
        open_repo(store, keydir, tmp_path)


def test_manifest_signed_by_another_certificate(store, keydir, other_keydir, tmp_path):
    resign_manifest(store, other_keydir, manifest_body(store))
    with pytest.raises(SignatureError):
        open_repo(store, keydir, tmp_path)


# --- whitelist and keys -------------------------------------------------------------------


def test_every_flipped_whitelist_byte_is_refused(store, keydir, tmp_path):
    path = os.path.join(store, ".cvmfswhitelist")
    original = open(path, "rb").read()
    for position in range(len(original)):
        with open(path, "wb") as handle:
            handle.write(original[:position] + bytes([original[position] ^ 0x04])
                         + original[position + 1:])
        with pytest.raises((SignatureError, WhitelistError)):
            open_repo(store, keydir, tmp_path).close()
    with open(path, "wb") as handle:
        handle.write(original[:5] + bytes([original[5] ^ 1]) + original[6:])
    assert_one_line_error(cli(store, keydir, tmp_path, "info", FQRN), "whitelist")


def test_wrong_master_key(store, other_keydir, tmp_path):
    with pytest.raises(SignatureError) as err:
        open_repo(store, other_keydir, tmp_path)
    assert "master" in str(err.value)
    assert_one_line_error(cli(store, other_keydir, tmp_path, "info", FQRN), "master public key")


def test_no_master_key(store, tmp_path):
    empty = tmp_path / "nokeys"
    empty.mkdir()
    with pytest.raises(SignatureError):
        open_repo(store, str(empty), tmp_path)


def _write_whitelist(store, keydir, fqrn, created, days, fingerprint=None):
    keys = load_publish_keys(FQRN, keydir)
    from uvm.cvmfs.signature import certificate_fingerprint

    body = whitelist_mod.render(fqrn, fingerprint or certificate_fingerprint(keys.certificate),
                                created, days)
    with open(os.path.join(store, ".cvmfswhitelist"), "wb") as handle:
        handle.write(whitelist_mod.sign(body, keys.master_key, manifest_mod.parse_manifest(
            manifest_body(store)).algorithm))


def test_expired_whitelist(store, keydir, tmp_path):
    past = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=40)
    _write_whitelist(store, keydir, FQRN, past, 30)
    with pytest.raises(WhitelistError) as err:
        open_repo(store, keydir, tmp_path)
    assert "expired" in str(err.value)
    assert_one_line_error(cli(store, keydir, tmp_path, "info", FQRN), "expired")


def test_whitelist_expiry_has_hour_granularity():
    expires = _dt.datetime(2030, 1, 1, 12, 30, tzinfo=_dt.timezone.utc)
    assert not whitelist_mod.is_expired(expires, expires.replace(hour=11, minute=59))
    assert whitelist_mod.is_expired(expires, expires.replace(minute=0))  # same hour: expired
    assert whitelist_mod.is_expired(expires, expires.replace(hour=13))


@pytest.mark.parametrize("stamp", ["20261301000000", "2026010100000", "202601010000000",
                                   "2026O101000000", "20260101000000 ", "２０２６0101000000"])
def test_malformed_whitelist_expiry_is_a_whitelist_error(stamp):
    body = f"20260101000000\nE{stamp}\nNsome.repo\n".encode()
    with pytest.raises(WhitelistError) as err:
        whitelist_mod.expiry(body)
    assert "expiry" in str(err.value)


def test_whitelist_expiry_is_read_as_utc():
    body = b"20260101000000\nE20260228235959\nNsome.repo\n"
    assert whitelist_mod.expiry(body) == _dt.datetime(2026, 2, 28, 23, 59, 59,
                                                       tzinfo=_dt.timezone.utc)
    assert whitelist_mod.parse(body).expires == whitelist_mod.expiry(body)


def test_whitelist_for_another_repository(store, keydir, tmp_path):
    _write_whitelist(store, keydir, "other.uvm.local", _dt.datetime.now(_dt.timezone.utc), 30)
    with pytest.raises(WhitelistError):
        open_repo(store, keydir, tmp_path)


def test_certificate_not_in_whitelist(store, keydir, tmp_path):
    _write_whitelist(store, keydir, FQRN, _dt.datetime.now(_dt.timezone.utc), 30,
                     fingerprint=":".join(["AB"] * 20))
    with pytest.raises(WhitelistError) as err:
        open_repo(store, keydir, tmp_path)
    assert "not in the whitelist" in str(err.value)


# --- rollback, paths, store ---------------------------------------------------------------


def test_rollback_is_refused(published, keydir, tmp_path):
    src, original = published
    old = copy_store(original, str(tmp_path / "old"))
    new = copy_store(original, str(tmp_path / "new"))
    publish(src, FQRN, new, keydir, chunking=SMALL_CHUNKS,
            now=manifest_mod.parse_manifest(manifest_body(old)).timestamp + 60)
    with open_repo(new, keydir, tmp_path) as repo:
        assert repo.revision == 2
    with pytest.raises(RollbackError):
        open_repo(old, keydir, tmp_path)
    assert_one_line_error(cli(old, keydir, tmp_path, "info", FQRN), "older")


def test_nonexistent_path(store, keydir, tmp_path):
    with open_repo(store, keydir, tmp_path) as repo:
        with pytest.raises(PathNotFoundError):
            repo.stat("/no/such/file")
        with pytest.raises(PathNotFoundError):
            repo.read("/dir/sub/missing")
    result = cli(store, keydir, tmp_path, "cat", f"{FQRN}:/no/such/file")
    assert_one_line_error(result, f"{FQRN}:/no/such/file does not exist")
    assert_one_line_error(cli(store, keydir, tmp_path, "ls", f"{FQRN}:/nope"), "does not exist")


def test_tampered_history_refuses_tags(store, keydir, tmp_path):
    manifest = manifest_mod.parse_manifest(manifest_body(store))
    flip(os.path.join(store, manifest.history.object_path(Suffix.HISTORY)), 12)
    with open_repo(store, keydir, tmp_path) as repo:  # head needs no history
        assert repo.read("/hello.txt") == b"hello, world\n"
    with pytest.raises(IntegrityError):
        open_repo(store, keydir, tmp_path, tag="v1")


def test_unwritable_store(published, keydir, tmp_path):
    src = published[0]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(PublishError) as err:
        publish(src, FQRN, str(blocker / "store"), keydir)
    assert "not writable" in str(err.value)
    result = run_uvm("publish", src, "--repo", FQRN, "--to", str(blocker / "store"),
                     "--keys", keydir)
    assert_one_line_error(result, "not writable")
    if os.geteuid() != 0:  # root ignores permission bits; the case above covers it
        readonly = tmp_path / "ro"
        readonly.mkdir()
        os.chmod(readonly, 0o555)
        with pytest.raises(PublishError):
            publish(src, FQRN, str(readonly), keydir)


def test_publish_with_missing_keys(published, tmp_path):
    result = run_uvm("publish", published[0], "--repo", FQRN, "--to", str(tmp_path / "s"),
                     "--keys", str(tmp_path / "nokeys"))
    assert_one_line_error(result, "cannot read key file")


def test_bad_date_and_tag_options(store, keydir, tmp_path):
    with pytest.raises(CvmfsError):
        open_repo(store, keydir, tmp_path, date="yesterday")
    assert_one_line_error(cli(store, keydir, tmp_path, "info", FQRN, "--tag", "nope"), "nope")
    assert_one_line_error(cli(store, keydir, tmp_path, "info", FQRN, "--date", "last week"),
                          "ISO 8601")


def test_no_server_configured(keydir, tmp_path):
    result = run_uvm("repo", "info", FQRN, "--keys", keydir)
    assert_one_line_error(result, "no server")


def test_history_of_older_schema_revisions(tmp_path):
    """Stock history databases before revision 3 lack 'branch' (and before 1, 'size')."""
    import sqlite3

    from uvm.cvmfs.history import History

    path = str(tmp_path / "old-history.sqlite")
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key));"
        "CREATE TABLE tags (name TEXT, hash TEXT, revision INTEGER, timestamp INTEGER, "
        "channel INTEGER, description TEXT, CONSTRAINT pk_tags PRIMARY KEY (name));"
        "INSERT INTO properties VALUES ('schema', '1.0');"
        "INSERT INTO tags VALUES ('old', '" + "ab" * 20 + "', 7, 1000, 0, 'x');"
    )
    db.commit()
    db.close()
    history = History(path)
    assert history.find("old").revision == 7 and history.find("old").size == 0
    assert history.find_by_date(2000).name == "old"
    history.close()


def test_concurrent_publish_is_refused(published, keydir, tmp_path):
    import fcntl

    src, original = published
    store = copy_store(original, str(tmp_path / "store"))
    fd = os.open(os.path.join(store, "data", "txn", ".lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(PublishError) as err:
            publish(src, FQRN, store, keydir)
        assert "in progress" in str(err.value)
    finally:
        os.close(fd)
    assert publish(src, FQRN, store, keydir).revision == 2


def test_public_key_list_needs_one_match_and_wins_over_keys_dir(store, keydir, other_keydir,
                                                                 tmp_path):
    wrong = os.path.join(other_keydir, f"{FQRN}.pub")
    right = os.path.join(keydir, f"{FQRN}.pub")
    with open_repo(store, f"{wrong}:{right}", tmp_path) as repo:  # CVMFS_PUBLIC_KEY style
        assert repo.revision == 1
    env = {"CVMFS_PUBLIC_KEY": f"{wrong}:{right}", "CVMFS_KEYS_DIR": other_keydir,
           "CVMFS_SERVER_URL": store, "CVMFS_CACHE_BASE": str(tmp_path / "cache")}
    result = run_uvm("repo", "info", FQRN, "--state-dir", str(tmp_path / "state"), env_extra=env)
    assert result.returncode == 0, result.stderr
    env["CVMFS_PUBLIC_KEY"] = wrong
    result = run_uvm("repo", "info", FQRN, "--state-dir", str(tmp_path / "state"), env_extra=env)
    assert_one_line_error(result, "master public key")
