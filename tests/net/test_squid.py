"""Through a real squid forward proxy (Debian's package), as on a grid site."""

from __future__ import annotations

import os
import socket

from conftest import fast_settings

from uvm.cvmfs.servers import DIRECT

DATA = os.urandom(50000)


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def via_squid(mirror, h) -> bool:
    """Whether the mirror saw a request for ``h`` forwarded by squid (``Via`` header)."""
    return any(path.endswith(h.object_path()) and "squid" in hd.get("via", "")
               for path, hd in mirror.headers)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_objects_come_through_squid_and_squid_caches_them(squid, mirror, put, make_fetcher,
                                                          tmp_path):
    h = put(DATA)
    fetcher = make_fetcher(fast_settings([mirror.url_for()], proxies=squid.url, timeout=3.0))
    assert read(fetcher.fetch_object(h)) == DATA
    # a second client with its own cache is served by squid, not by the mirror
    other = make_fetcher(fast_settings([mirror.url_for()], proxies=squid.url, timeout=3.0),
                         base=str(tmp_path / "other-cache"))
    assert read(other.fetch_object(h)) == DATA
    assert mirror.count(h.object_path()) == 1
    assert via_squid(mirror, h)


def test_mirror_down_behind_squid_is_a_proxy_error_then_the_next_mirror(
        squid, mirror, mirror2, put, make_fetcher):
    h = put(DATA + b"failover")
    mirror.stop()  # squid answers 503 with X-Squid-Error: ERR_CONNECT_FAIL
    fetcher = make_fetcher(fast_settings([mirror.url_for(), mirror2.url_for()],
                                         proxies=squid.url, timeout=3.0))
    assert read(fetcher.fetch_object(h)) == DATA + b"failover"
    assert mirror2.count(h.object_path()) == 1
    assert fetcher.transport.chain.current(allow_reset=False)[0] == 1


def test_dead_proxy_in_a_group_fails_over_to_squid_and_back(squid, mirror, put, make_fetcher):
    dead = dead_url()
    h1, h2 = put(DATA + b"1"), put(DATA + b"2")
    settings = fast_settings([mirror.url_for()], proxies=f"{dead};{squid.url}", timeout=3.0,
                             proxy_reset_after=1e-6)
    fetcher = make_fetcher(settings)
    assert read(fetcher.fetch_object(h1)) == DATA + b"1"
    assert fetcher.transport.chain.proxies == [dead, squid.url]
    assert via_squid(mirror, h1)
    # the first group is preferred again after proxy_reset_after: still works
    assert read(fetcher.fetch_object(h2)) == DATA + b"2"


def test_load_balanced_group_with_a_dead_member(squid, mirror, put, make_fetcher):
    dead = dead_url()
    objects = {put(DATA + bytes([i])): DATA + bytes([i]) for i in range(4)}
    fetcher = make_fetcher(fast_settings([mirror.url_for()], proxies=f"{dead}|{squid.url}",
                                         timeout=3.0))
    for h, data in objects.items():
        assert read(fetcher.fetch_object(h)) == data
    assert sorted(fetcher.transport.chain.proxies) == sorted([dead, squid.url])


def test_corrupted_copy_in_squid_is_bypassed_with_no_cache(squid, mirror, put, make_fetcher,
                                                           tmp_path):
    h = put(DATA + b"corrupt-in-squid")
    mirror.add_fault("corrupt", match=h.object_path(), times=1)
    settings = fast_settings([mirror.url_for()], proxies=squid.url, timeout=3.0)
    fetcher = make_fetcher(settings)
    # squid stores the corrupted reply; the no-cache retry fetches a fresh copy
    assert read(fetcher.fetch_object(h)) == DATA + b"corrupt-in-squid"
    assert mirror.count(h.object_path()) == 2
    no_cache = [hd for path, hd in mirror.headers if path.endswith(h.object_path())][1]
    assert "no-cache" in no_cache.get("cache-control", "") + no_cache.get("pragma", "")


def test_fallback_proxy_removes_direct(squid, mirror, put, make_fetcher):
    h = put(DATA + b"fallback")
    fetcher = make_fetcher(fast_settings([mirror.url_for()], proxies=DIRECT,
                                         fallback=squid.url, timeout=3.0))
    assert read(fetcher.fetch_object(h)) == DATA + b"fallback"
    assert fetcher.transport.chain.proxies == [squid.url]
    assert via_squid(mirror, h)
