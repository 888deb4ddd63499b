"""Pure policy: server and proxy lists, failure classification, backoff."""

from __future__ import annotations

import random

import pytest
from requests.structures import CaseInsensitiveDict

from uvm.cvmfs import servers
from uvm.cvmfs.servers import DIRECT, Blame, TransferProblem
from uvm.errors import ConfigError, FetchFailure


def test_server_ring_expands_fqrn_and_org():
    urls = servers.expand_server_urls(
        "http://a.example/cvmfs/@fqrn@/ ; http://b.example:8000/@org@/x;;", "sft.cern.ch")
    assert urls == ["http://a.example/cvmfs/sft.cern.ch", "http://b.example:8000/sft/x"]
    with pytest.raises(ConfigError):
        servers.expand_server_urls("no-scheme.example/cvmfs", "x.y")


def test_an_absolute_directory_is_a_local_stratum0():
    assert servers.expand_server_urls("/srv/cvmfs/@fqrn@/", "a.b") == ["file:///srv/cvmfs/a.b"]


def test_proxy_groups_in_order_with_fallback_removing_direct():
    assert servers.parse_proxy_groups("") == [(DIRECT,)]
    assert servers.parse_proxy_groups("p1:3128|p2:3128;DIRECT") == [
        ("http://p1:3128", "http://p2:3128"), (DIRECT,)]
    assert servers.parse_proxy_groups("p1:3128;DIRECT", "http://fb:3128") == [
        ("http://p1:3128",), ("http://fb:3128",)]
    assert servers.parse_proxy_groups("DIRECT", "fb:1") == [("http://fb:1",)]
    assert servers.parse_proxy_groups("direct") == [(DIRECT,)]
    with pytest.raises(ConfigError):
        servers.parse_proxy_groups("auto")


def test_proxy_order_shuffles_within_groups_only():
    groups = [("a", "b", "c"), ("d",), ("e", "f")]
    seen = set()
    for seed in range(30):
        order = servers.proxy_order(groups, random.Random(seed))
        assert set(order[:3]) == {"a", "b", "c"} and order[3] == "d"
        assert set(order[4:]) == {"e", "f"}
        seen.add(tuple(order[:3]))
    assert len(seen) > 1  # load balancing


H = CaseInsensitiveDict


@pytest.mark.parametrize("status, proxied, failure", [
    (200, False, FetchFailure.OK),
    (206, True, FetchFailure.OK),
    (404, False, FetchFailure.NOT_FOUND),
    (404, True, FetchFailure.NOT_FOUND),
    (400, True, FetchFailure.HOST_HTTP),
    (500, True, FetchFailure.HOST_HTTP),
    (503, False, FetchFailure.HOST_HTTP),
    (429, True, FetchFailure.HOST_CONNECTION),
    (403, True, FetchFailure.PROXY_HTTP),
    (403, False, FetchFailure.HOST_HTTP),
    (407, True, FetchFailure.PROXY_HTTP),
    (302, True, FetchFailure.HOST_HTTP),
])
def test_status_classification(status, proxied, failure):
    assert servers.classify_status(status, H(), proxied) is failure


def test_squid_error_pages_are_proxy_errors():
    squid = H({"x-squid-error": "ERR_CONNECT_FAIL 111"})
    assert servers.classify_status(503, squid, True) is FetchFailure.PROXY_HTTP
    status = H({"Proxy-Status": "squid; error=connection_refused"})
    assert servers.classify_status(502, status, True) is FetchFailure.PROXY_HTTP
    assert servers.classify_status(502, H({"Proxy-Status": "squid"}), True) \
        is FetchFailure.HOST_HTTP


def test_transfer_errors_are_charged_to_the_proxy_or_the_direct_host():
    for problem in TransferProblem:
        via = servers.classify_transfer(problem, proxied=True)
        direct = servers.classify_transfer(problem, proxied=False)
        assert servers.is_retriable(via) and servers.is_retriable(direct)
        assert servers.blame(via, True) is Blame.PROXY
        assert servers.blame(direct, False) is Blame.HOST
    assert servers.blame(FetchFailure.BAD_DATA, True) is Blame.DATA
    assert servers.blame(FetchFailure.NOT_FOUND, True) is Blame.HOST
    assert not servers.is_retriable(FetchFailure.HOST_HTTP)
    assert not servers.is_retriable(FetchFailure.BAD_DATA)


def test_backoff_is_random_doubling_and_capped():
    rng = random.Random(1)
    for _ in range(200):
        delays = servers.backoff_schedule(6, 2.0, 10.0, rng)
        assert 0 <= delays[0] <= 2.0
        assert 0 <= delays[1] <= 4.0
        assert 0 <= delays[2] <= 8.0
        assert all(0 <= d <= 10.0 for d in delays[3:])
    many = [servers.backoff_delay(3, 2.0, 10.0, rng) for _ in range(500)]
    assert max(many) > 4.0  # the range really doubled
    assert servers.backoff_delay(1, 0, 10, rng) == 0.0
