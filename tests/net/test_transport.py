"""The transport and fetcher against misbehaving loopback mirrors (no mocks)."""

from __future__ import annotations

import os
import socket

import pytest
from conftest import FQRN, fast_settings
from faultserver import put_file

from uvm.cvmfs.hashing import ContentHash, Suffix
from uvm.cvmfs.transport import BytesSink, Transport
from uvm.errors import FetchError, FetchFailure

DATA = os.urandom(20000) + b"x" * 50000


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_plain_fetch_streams_verifies_and_caches(mirror, put, make_fetcher):
    h = put(DATA)
    fetcher = make_fetcher(fast_settings([mirror.url_for()]))
    path = fetcher.fetch_object(h, expected_size=len(DATA))
    assert read(path) == DATA
    assert path == os.path.join(fetcher.cache.root, h.cache_path())
    assert fetcher.fetch_object(h) == path  # second time from the cache
    assert mirror.count(h.object_path()) == 1


def test_request_headers_are_like_the_stock_clients(mirror, put, make_fetcher):
    h = put(DATA)
    make_fetcher(fast_settings([mirror.url_for()])).fetch_object(h)
    (_, headers), = mirror.headers
    assert headers["user-agent"].startswith("uvm/") and "cvmfs" in headers["user-agent"]
    assert "pragma" not in headers and "cache-control" not in headers
    assert headers.get("connection", "").lower() == "keep-alive"


def test_uncompressed_objects_and_suffixes(mirror, put, make_fetcher):
    h = put(DATA, compress=False, suffix=Suffix.PARTIAL)
    fetcher = make_fetcher(fast_settings([mirror.url_for()]))
    assert read(fetcher.fetch_object(h, Suffix.PARTIAL, len(DATA), compressed=False)) == DATA


@pytest.mark.parametrize("code", [404, 500, 502, 400])
def test_host_errors_fail_over_to_the_next_mirror(mirror, mirror2, put, make_fetcher, code):
    h = put(DATA)
    mirror.add_fault("status", code=code)
    fetcher = make_fetcher(fast_settings([mirror.url_for(), mirror2.url_for()]))
    assert read(fetcher.fetch_object(h)) == DATA
    assert mirror.count(h.object_path()) == 1  # host errors are not retried on the same host
    assert mirror2.count(h.object_path()) == 1
    # failover is sticky: the next object goes straight to the second mirror
    h2 = put(b"second object")
    fetcher.fetch_object(h2)
    assert mirror.count(h2.object_path()) == 0 and mirror2.count(h2.object_path()) == 1


def test_rate_limit_is_retried_after_backoff(mirror, put, make_fetcher):
    h = put(DATA)
    mirror.add_fault("status", code=429, times=1)
    fetcher = make_fetcher(fast_settings([mirror.url_for()]))
    assert read(fetcher.fetch_object(h)) == DATA
    assert mirror.count(h.object_path()) == 2


@pytest.mark.parametrize("kind", ["reset", "short", "bad_length"])
def test_broken_transfers_are_retried_on_the_same_mirror(mirror, mirror2, put, make_fetcher,
                                                         kind):
    h = put(DATA)
    mirror.add_fault(kind, times=1)
    fetcher = make_fetcher(fast_settings([mirror.url_for(), mirror2.url_for()]))
    assert read(fetcher.fetch_object(h)) == DATA
    assert mirror.count(h.object_path()) == 2
    assert mirror2.count(h.object_path()) == 0
    assert os.listdir(fetcher.cache.txn_dir) == []


def test_persistent_transfer_errors_move_to_the_next_mirror(mirror, mirror2, put, make_fetcher):
    h = put(DATA)
    mirror.add_fault("reset")
    fetcher = make_fetcher(fast_settings([mirror.url_for(), mirror2.url_for()], max_retries=2))
    assert read(fetcher.fetch_object(h)) == DATA
    assert mirror.count(h.object_path()) == 3  # first try and two retries
    assert mirror2.count(h.object_path()) == 1


def test_stalled_and_trickling_mirrors_time_out(mirror, mirror2, put, make_fetcher):
    h1, h2, h3 = put(DATA), put(DATA + b"2"), put(DATA + b"3")
    mirror.add_fault("stall_headers", match=h1.object_path(), seconds=20)
    mirror.add_fault("stall_body", match=h2.object_path(), seconds=20)
    mirror.add_fault("trickle", match=h3.object_path(), step=32, pause=0.1)
    settings = fast_settings([mirror.url_for(), mirror2.url_for()], timeout_direct=0.4,
                             max_retries=0, host_reset_after=0.0)
    fetcher = make_fetcher(settings)
    for h, data in ((h1, DATA), (h2, DATA + b"2"), (h3, DATA + b"3")):
        assert read(fetcher.fetch_object(h)) == data
        assert mirror2.count(h.object_path()) == 1
        fetcher.transport.chain._host = 0  # start each case at the faulty mirror


def test_corrupted_data_is_retried_without_caches_then_blamed_on_the_host(
        mirror, mirror2, put, make_fetcher):
    h = put(DATA)
    mirror.add_fault("corrupt", times=1)
    fetcher = make_fetcher(fast_settings([mirror.url_for(), mirror2.url_for()]))
    assert read(fetcher.fetch_object(h)) == DATA
    first, second = [hd for path, hd in mirror.headers]
    assert "pragma" not in first
    assert second["pragma"] == "no-cache" and second["cache-control"] == "no-cache"
    assert mirror2.count(h.object_path()) == 0

    h2 = put(b"persistently corrupt" * 1000)
    mirror.add_fault("corrupt", match=h2.object_path())
    assert read(fetcher.fetch_object(h2)) == b"persistently corrupt" * 1000
    assert mirror.count(h2.object_path()) == 2
    assert mirror2.count(h2.object_path()) == 1


def test_corrupt_everywhere_is_a_bad_data_error_and_nothing_is_cached(
        mirror, mirror2, put, make_fetcher):
    h = put(DATA)
    mirror.add_fault("corrupt")
    mirror2.add_fault("corrupt")
    fetcher = make_fetcher(fast_settings([mirror.url_for(), mirror2.url_for()]))
    with pytest.raises(FetchError) as info:
        fetcher.fetch_object(h)
    assert info.value.failure is FetchFailure.BAD_DATA
    assert not os.path.exists(os.path.join(fetcher.cache.root, h.cache_path()))
    assert os.listdir(fetcher.cache.txn_dir) == []


def test_wrong_size_goes_to_quarantine(mirror, put, make_fetcher):
    h = put(DATA)
    fetcher = make_fetcher(fast_settings([mirror.url_for()]))
    with pytest.raises(FetchError):
        fetcher.fetch_object(h, expected_size=len(DATA) + 1)
    assert os.listdir(fetcher.cache.quarantine_dir) == [str(h)]
    assert not fetcher.cache.contains(h)


def test_missing_everywhere_is_not_found(mirror, mirror2, make_fetcher):
    fetcher = make_fetcher(fast_settings([mirror.url_for(), mirror2.url_for()]))
    h = ContentHash.of(b"never published")
    with pytest.raises(FetchError) as info:
        fetcher.fetch_object(h)
    assert info.value.failure is FetchFailure.NOT_FOUND
    assert str(h) in str(info.value)


def test_all_mirrors_down_is_a_connection_error(make_fetcher):
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    fetcher = make_fetcher(fast_settings([f"http://127.0.0.1:{p}/cvmfs/@fqrn@" for p in ports]))
    with pytest.raises(FetchError) as info:
        fetcher.fetch_object(ContentHash.of(b"x"))
    assert info.value.failure is FetchFailure.HOST_CONNECTION


def test_recovery_when_the_first_mirror_comes_back(mirror, mirror2, put, make_fetcher):
    h1, h2 = put(b"one" * 100), put(b"two" * 100)
    port = mirror.port
    mirror.stop()
    fetcher = make_fetcher(fast_settings([mirror.url_for(), mirror2.url_for()],
                                         host_reset_after=1e-6))
    fetcher.fetch_object(h1)
    assert mirror2.count(h1.object_path()) == 1
    mirror.port = port
    mirror.start()
    fetcher.fetch_object(h2)  # reset-after elapsed: back on the first mirror
    assert mirror.count(h2.object_path()) == 1
    assert mirror2.count(h2.object_path()) == 0


def test_redirects_are_host_errors_unless_followed(mirror, mirror2, put, make_fetcher,
                                                   tmp_path):
    h = put(DATA)
    target = mirror2.url_for(FQRN) + "/" + h.object_path()
    mirror.add_fault("redirect", location=target)
    transport = Transport(fast_settings([mirror.url_for()]))
    with pytest.raises(FetchError) as info:
        transport.download(h.object_path(), BytesSink)
    assert info.value.failure is FetchFailure.HOST_HTTP
    following = Transport(fast_settings([mirror.url_for()], follow_redirects=True))
    import zlib
    assert zlib.decompress(following.download(h.object_path(), BytesSink)) == DATA


def test_fetch_file_returns_raw_bytes(mirror, stratum, make_fetcher):
    put_file(stratum, FQRN, ".cvmfspublished", b"Cabc\n--\nsig")
    fetcher = make_fetcher(fast_settings([mirror.url_for()]))
    assert fetcher.fetch_file(".cvmfspublished") == b"Cabc\n--\nsig"


def test_dead_proxy_fails_over_to_the_next_in_its_group_and_then_direct(
        mirror, put, make_fetcher):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    h = put(DATA)
    fetcher = make_fetcher(fast_settings([mirror.url_for()], proxies=f"{dead};DIRECT"))
    assert read(fetcher.fetch_object(h)) == DATA
    assert fetcher.transport.chain.proxies == [dead, "DIRECT"]
    assert fetcher.transport.chain.current()[1] == 1


def test_content_length_shorter_than_the_body_is_bad_data_then_next_mirror(
        mirror, mirror2, put, make_fetcher):
    h = put(DATA)
    mirror.add_fault("bad_length", extra=-100)  # the client stops early: truncated stream
    fetcher = make_fetcher(fast_settings([mirror.url_for(), mirror2.url_for()]))
    assert read(fetcher.fetch_object(h)) == DATA
    assert mirror.count(h.object_path()) == 2  # once more without caches
    assert mirror2.count(h.object_path()) == 1


def test_proxy_http_errors_move_to_the_next_proxy(mirror, mirror2, put, make_fetcher):
    # mirror2 plays a forward proxy that refuses (403): a proxy error, not the mirror's
    h = put(DATA)
    mirror2.add_fault("status", code=403)
    fetcher = make_fetcher(fast_settings([mirror.url_for()],
                                         proxies=f"{mirror2.url};DIRECT"))
    assert read(fetcher.fetch_object(h)) == DATA
    assert mirror2.count(h.object_path()) == 1  # asked as a proxy, once (not retried)
    assert mirror.count(h.object_path()) == 1
    assert fetcher.transport.chain.current(allow_reset=False) == (0, 1)


def test_a_connection_the_server_closed_while_idle_is_replaced_unnoticed(mirror, put,
                                                                         make_fetcher):
    first, second = put(DATA), put(DATA[::-1])
    fetcher = make_fetcher(fast_settings([mirror.url_for()], max_retries=0))
    assert read(fetcher.fetch_object(first)) == DATA
    mirror.drop_connections()  # the transport still holds the closed one as idle
    assert read(fetcher.fetch_object(second)) == DATA[::-1]
    assert mirror.count(second.object_path()) == 1


def test_keep_alive_serves_many_objects_and_a_chunked_body(mirror, put, make_fetcher):
    objects = {put(DATA + bytes([i])): DATA + bytes([i]) for i in range(12)}
    fetcher = make_fetcher(fast_settings([mirror.url_for()]))
    fetcher.prefetch([(h, Suffix.NONE, len(d), True) for h, d in objects.items()])
    for h, data in objects.items():
        assert read(fetcher.fetch_object(h)) == data
    assert sum(mirror.count(h.object_path()) for h in objects) == len(objects)
