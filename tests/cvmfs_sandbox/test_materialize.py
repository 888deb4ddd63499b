"""The shadow tree without the tracer: what a stock cvmfs2 mount would show.

Listings, sizes, modes, mtimes (with nanoseconds), symlink targets (variant
ones expanded), hard-link counts, FIFOs, nested catalogs invisible, and
contents are compared with the reader (``Repository``); a stat or a
listing never downloads content; a second process (and a second run)
reuses what the first filled; two processes filling one tree at once agree.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FQRN, MISC, VARIANT_ENV, env_for

from uvm import config as config_mod
from uvm.cvmfs.client import open_repository
from uvm.sandbox.materialize import CvmfsTrees, ShadowTree, parse_prefetch_list, shadow_base


def _content_requests(server) -> int:
    """Requests for file contents (data objects that are not catalogs,
    history or certificates; chunks count)."""
    total = 0
    for path, n in server.hits.items():
        if "/data/" in path and path[-1] not in "CHX":
            total += n
    return total


def _open(published, server, tmp_path, fqrn=MISC, **kw):
    env = env_for(published, server.url_for(), tmp_path)
    config = config_mod.load(environ=env, system_files=[])
    return open_repository(fqrn, config, state_dir=str(tmp_path / "state"), **kw), config


def _ns(entry) -> int:
    return entry.mtime * 10**9 + (entry.mtime_ns or 0)


def _walk_compare(repo, tree, top: str = "/") -> int:
    checked = 0
    for dirpath, dirs, others in repo.walk(top):
        host_dir = tree.host_of(dirpath)
        assert sorted(os.listdir(host_dir)) == sorted(e.name for e in dirs + others), dirpath
        for entry in dirs + others:
            host = os.path.join(host_dir, entry.name)
            if entry.is_dir:
                tree.host_of(entry.path)  # filled, so that its nlink counts subdirectories
            st = os.lstat(host)
            assert stat.S_IMODE(st.st_mode) == stat.S_IMODE(entry.mode), entry.path
            assert st.st_mtime_ns == _ns(entry), entry.path
            assert st.st_uid == os.geteuid(), entry.path
            if entry.is_dir:
                assert stat.S_ISDIR(st.st_mode)
                assert st.st_nlink == entry.linkcount, entry.path
            elif entry.is_symlink:
                assert os.readlink(host) == repo.readlink(entry.path), entry.path
            elif entry.is_regular:
                assert stat.S_ISREG(st.st_mode)
                assert st.st_size == entry.size, entry.path
                assert st.st_nlink == (entry.linkcount if entry.hardlink_group else 1), entry.path
            elif stat.S_ISFIFO(entry.mode):
                assert stat.S_ISFIFO(st.st_mode)
            checked += 1
    return checked


def test_metadata_matches_and_never_fetches_content(published, server, tmp_path):
    repo, _config = _open(published, server, tmp_path)
    with repo:
        tree = ShadowTree(repo, shadow_base(str(tmp_path / "cache")))
        before = _content_requests(server)
        assert _walk_compare(repo, tree) > 150
        # variant symlinks are expanded, as the stock client does
        links = [e for _d, _s, o in repo.walk("/") for e in o
                 if e.is_symlink and "$(UVM_ARCH)" in e.symlink]
        assert links and all(VARIANT_ENV["UVM_ARCH"] in os.readlink(tree.host_path(e.path))
                             for e in links)
        assert _content_requests(server) == before, "a stat or listing downloaded content"
        tree.close()


def test_a_stat_completes_a_directory_as_a_listing_would(published, server, tmp_path):
    """A stat of each directory alone (no listing) makes it complete, as a
    listing would (st_nlink counts subdirectories): hard links whole, known
    to later runs, and no content downloaded."""
    repo, _config = _open(published, server, tmp_path)
    base = shadow_base(str(tmp_path / "cache"))
    with repo:
        trees = CvmfsTrees(base)
        tree = trees.add(repo)
        before = _content_requests(server)
        dirs = [d for d, _subdirs, _others in repo.walk("/")]
        for directory in dirs:
            host = tree.host_path(directory)
            trees.ensure(host)
            trees.before("statx", host, 0)
            assert os.lstat(host).st_nlink == repo.stat(directory).linkcount, directory
        trees.close()
        again = ShadowTree(repo, base)
        assert {"" if d == "/" else d for d in dirs} <= again._complete  # the root is ""
        assert _walk_compare(repo, again) > 150
        assert _content_requests(server) == before
        again.close()


def test_contents_on_first_open_once_per_cache(published, server, tmp_path):
    repo, _config = _open(published, server, tmp_path)
    with repo:
        tree = ShadowTree(repo, shadow_base(str(tmp_path / "cache")))
        files = [e for _d, _s, o in repo.walk("/") for e in o if e.is_regular]
        assert any(e.is_chunked for e in files) and any(e.hardlink_group for e in files)
        for entry in files:
            host = tree.host_of(entry.path)
            tree.ensure_content(host)
            with open(host, "rb") as handle:
                assert handle.read() == repo.read(entry.path), entry.path
            st = os.lstat(host)
            assert st.st_mtime_ns == _ns(entry) and stat.S_IMODE(st.st_mode) == stat.S_IMODE(entry.mode)
            if entry.hardlink_group:
                assert st.st_nlink == entry.linkcount
        # directory mtimes survive the renames made inside them
        for dirpath, dirs, _o in repo.walk("/"):
            for d in dirs:
                assert os.lstat(tree.host_path(d.path)).st_mtime_ns == _ns(d), d.path
        fetched = _content_requests(server)
        tree.close()
    # a later run (another tree object, another repository handle) fetches nothing
    repo, _config = _open(published, server, tmp_path)
    with repo:
        tree = ShadowTree(repo, shadow_base(str(tmp_path / "cache")))
        for entry in files:
            host = tree.host_of(entry.path)
            tree.ensure_content(host)
        assert _content_requests(server) == fetched
        tree.close()


def test_empty_directory_is_filled_state(published, server, tmp_path):
    repo, _config = _open(published, server, tmp_path, fqrn=FQRN)
    with repo:
        tree = ShadowTree(repo, shadow_base(str(tmp_path / "cache")))
        host = tree.host_of("/os/demo/srv/empty")
        assert os.listdir(host) == []
        assert sorted(os.listdir(tree.host_of("/os/demo/srv"))) == ["empty"]
        tree.close()


def test_nested_catalogs_invisible(published, server, tmp_path):
    repo, _config = _open(published, server, tmp_path)
    with repo:
        tree = ShadowTree(repo, shadow_base(str(tmp_path / "cache")))
        host = tree.host_of("/d0/d1/d2")
        # the mountpoint is a plain directory showing the child catalog's
        # entries (the marker file is published content, as in a stock mount)
        assert sorted(os.listdir(host)) == sorted(repo.listdir("/d0/d1/d2"))
        assert stat.S_ISDIR(os.lstat(host).st_mode)
        assert "d3" in os.listdir(host)
        assert os.lstat(host).st_mode & 0o777 == repo.stat("/d0/d1/d2").mode & 0o777
        tree.close()


def test_read_only_like_a_mount(published, server, tmp_path):
    repo, _config = _open(published, server, tmp_path, fqrn=FQRN)
    with repo:
        trees = CvmfsTrees(shadow_base(str(tmp_path / "cache")))
        tree = trees.add(repo)
        host = tree.host_of("/os/demo/etc/uvm-marker")
        for name, flags in (("openat", os.O_WRONLY), ("openat", os.O_RDWR),
                            ("open", os.O_RDONLY | os.O_TRUNC), ("unlink", 0),
                            ("rename", 0), ("chmod", 0), ("utimensat", 0), ("truncate", 0)):
            with pytest.raises(OSError) as info:
                trees.before(name, host, flags)
            assert info.value.errno == errno.EROFS, name
        with pytest.raises(OSError) as info:
            trees.before("openat", tree.host_path("/os/demo/etc/new"), os.O_WRONLY | os.O_CREAT)
        assert info.value.errno == errno.EROFS
        with pytest.raises(OSError) as info:
            trees.before("mkdir", tree.host_of("/os/demo/etc"), 0)
        assert info.value.errno == errno.EEXIST  # mkdir -p works on a read-only mount
        with pytest.raises(OSError) as info:
            trees.before("link", host, 0)
        assert info.value.errno == errno.EXDEV
        trees.before("openat", host, os.O_RDONLY)  # reading is fine, and fills
        assert Path(host).read_text() == "revision one\n"
        trees.before("newfstatat", host, 0)  # not ours to judge
        trees.close()


_FILLER = r"""
import os, sys
sys.path.insert(0, {conftest_dir!r})
from uvm import config as config_mod
from uvm.cvmfs.client import open_repository
from uvm.sandbox.materialize import ShadowTree, shadow_base
env = {env!r}
config = config_mod.load(environ=env, system_files=[])
with open_repository({fqrn!r}, config, state_dir={state!r}) as repo:
    tree = ShadowTree(repo, shadow_base({cache!r}))
    for dirpath, dirs, others in repo.walk("/"):
        tree.host_of(dirpath)
        for e in others:
            if e.is_regular:
                tree.ensure_content(tree.host_of(e.path))
    tree.close()
"""


def test_two_processes_fill_one_tree(published, server, tmp_path):
    env = env_for(published, server.url_for(), tmp_path)
    script = _FILLER.format(conftest_dir=str(Path(__file__).parent), env=env, fqrn=MISC,
                            state=str(tmp_path / "state"), cache=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    repo, _config = _open(published, server, tmp_path)
    with repo:
        tree = ShadowTree(repo, shadow_base(str(tmp_path / "cache")))
        _walk_compare(repo, tree)
        for _d, _s, others in repo.walk("/"):
            for e in others:
                if e.is_regular:
                    host = tree.host_path(e.path)
                    with open(host, "rb") as handle:
                        assert handle.read() == repo.read(e.path), e.path
        assert os.listdir(os.path.join(tree.dir, "tmp")) == []
        tree.close()


def test_lookups_make_single_entries_listings_complete(published, server, tmp_path):
    """A path lookup creates that entry only; a stat or an open of a directory
    completes it; what is complete and what is absent is known to later runs."""
    repo, _config = _open(published, server, tmp_path, fqrn=FQRN)
    base = shadow_base(str(tmp_path / "cache"))
    with repo:
        trees = CvmfsTrees(base)
        tree = trees.add(repo)
        marker = tree.host_path("/os/demo/etc/uvm-marker")
        trees.ensure(marker)  # what the namespace does for every path it hands out
        etc = os.path.dirname(marker)
        assert os.listdir(etc) == ["uvm-marker"]
        assert os.listdir(tree.host_path("/os/demo")) == ["etc"]
        missing = tree.host_path("/os/demo/etc/nope/deeper")
        trees.ensure(missing)
        assert not os.path.lexists(os.path.dirname(missing))
        trees.before("newfstatat", etc, 0)  # st_nlink counts subdirectories: complete it
        assert sorted(os.listdir(etc)) == sorted(repo.listdir("/os/demo/etc"))
        assert os.lstat(etc).st_nlink == repo.stat("/os/demo/etc").linkcount
        trees.before("openat", tree.host_path("/os/demo"), os.O_RDONLY | os.O_DIRECTORY)
        assert sorted(os.listdir(tree.host_path("/os/demo"))) == sorted(repo.listdir("/os/demo"))
        trees.close()
        again = ShadowTree(repo, base)
        assert "/os/demo/etc" in again._complete and "/os/demo/etc/nope" in again._absent
        again.close()


def test_prefetch_list_lines():
    text = (b"# recorded\n/usr/bin/python3.11\n\n  /usr/lib/python3.11/  \n"
            b"usr/lib/../../../etc/passwd\n/\n#/etc/shadow\n/a//b/./c\n")
    assert parse_prefetch_list(text) == [
        "/usr/bin/python3.11", "/usr/lib/python3.11/", "/etc/passwd", "/", "/a/b/c"]
