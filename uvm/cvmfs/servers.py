"""Mirror and proxy lists, failure classification and backoff, as the stock client has them.

Everything here is a pure function of its arguments, so that the failover
policy of :mod:`uvm.cvmfs.transport` can be tested without a network.  The
rules follow ``network/download.cc`` of the CernVM-FS client (see
``cvmfs-format.md`` §6.2):

* ``CVMFS_SERVER_URL`` is a ``;``-separated ring of base URLs in which
  ``@fqrn@`` and ``@org@`` are replaced;
* ``CVMFS_HTTP_PROXY`` is a ``;``-separated list of load-balance groups tried
  in order, each a ``|``-separated set of proxies used in random order;
  ``DIRECT`` means no proxy; ``CVMFS_FALLBACK_PROXY`` adds groups at the end
  and removes ``DIRECT``;
* a failure is blamed either on the host (switch mirror) or on the proxy
  (switch proxy); only transfer-type failures are retried on the same path,
  after a randomised, doubling, capped backoff.
"""

from __future__ import annotations

import enum
import random
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from uvm.errors import ConfigError, FetchFailure

DIRECT = "DIRECT"
"""The proxy name meaning "connect to the mirror itself"."""


class Blame(enum.Enum):
    """Which link of the chain a failure is charged to."""

    HOST = "host"
    PROXY = "proxy"
    DATA = "data"  # bad bytes: retry without caches, then blame the host
    LOCAL = "local"  # our own disk; never retried over the network


# --- lists -----------------------------------------------------------------


def expand_server_urls(value: str, fqrn: str) -> List[str]:
    """The mirror ring of ``CVMFS_SERVER_URL`` for repository ``fqrn``.

    ``@fqrn@`` becomes the repository name and ``@org@`` its first DNS label
    (``sft`` for ``sft.cern.ch``); trailing slashes are dropped so that
    object paths can be appended with ``/``.  An absolute directory becomes a
    ``file://`` URL: a local stratum 0, read with the same verification.
    """
    org = fqrn.split(".", 1)[0]
    urls = []
    for item in value.split(";"):
        item = item.strip()
        if not item:
            continue
        item = item.replace("@fqrn@", fqrn).replace("@org@", org).rstrip("/")
        if item.startswith("/"):
            item = "file://" + item  # a local stratum-0 directory
        elif "://" not in item:
            raise ConfigError(
                f"server URL {item!r} has no scheme",
                hint="CVMFS_SERVER_URL entries look like http://host/cvmfs/@fqrn@ "
                "or an absolute directory",
            )
        urls.append(item)
    return urls


def _normalise_proxy(name: str) -> str:
    if name.upper() == DIRECT:
        return DIRECT
    if "://" not in name:
        name = "http://" + name
    return name.rstrip("/")


def parse_proxy_groups(http_proxy: str, fallback_proxy: str = "") -> List[Tuple[str, ...]]:
    """Proxy groups in the order they are tried, fallback groups last.

    Each group is a tuple of proxy URLs (or :data:`DIRECT`).  A fallback list
    removes ``DIRECT`` from the main list, as in the stock client; an empty
    result means ``DIRECT`` alone.  ``auto`` (WPAD/PAC) is not supported and
    raises :class:`ConfigError` rather than silently going direct.
    """
    groups: List[Tuple[str, ...]] = []
    fallback = _split_groups(fallback_proxy)
    for group in _split_groups(http_proxy):
        if fallback:
            group = tuple(p for p in group if p != DIRECT)
        if group:
            groups.append(group)
    groups.extend(fallback)
    return groups or [(DIRECT,)]


def _split_groups(value: str) -> List[Tuple[str, ...]]:
    groups = []
    for group_text in (value or "").split(";"):
        members = []
        for member in group_text.split("|"):
            member = member.strip()
            if not member:
                continue
            if member.lower() == "auto":
                raise ConfigError(
                    "proxy 'auto' (WPAD/PAC) is not supported",
                    hint="list the site's squid proxies explicitly in CVMFS_HTTP_PROXY",
                )
            members.append(_normalise_proxy(member))
        if members:
            groups.append(tuple(dict.fromkeys(members)))
    return groups


def proxy_order(groups: Sequence[Tuple[str, ...]], rng: random.Random) -> List[str]:
    """One flat failover order: groups in order, members of a group shuffled.

    Shuffling once per process spreads many clients over a group's members
    (load balancing) while every member is still tried before the next group.
    """
    order: List[str] = []
    for group in groups:
        members = list(group)
        rng.shuffle(members)
        order.extend(m for m in members if m not in order)
    return order


# --- classification --------------------------------------------------------


def classify_status(
    status: int, headers: Mapping[str, str], proxied: bool, follow_redirects: bool = False
) -> FetchFailure:
    """The failure an HTTP status means (``FetchFailure.OK`` for 2xx).

    ``headers`` must be case-insensitive (``http.client``'s message is).  A squid
    error page (``X-Squid-Error``) or ``Proxy-Status: ...; error=`` turns a
    host error into a proxy error: the proxy, not the mirror, failed.
    """
    if 200 <= status < 300:
        return FetchFailure.OK
    if 300 <= status < 400 and not follow_redirects:
        failure = FetchFailure.HOST_HTTP
    elif status == 404:
        failure = FetchFailure.NOT_FOUND
    elif status == 429:
        return FetchFailure.HOST_CONNECTION  # rate-limited: back off, then move on
    elif status in (400,) or 500 <= status < 600:
        failure = FetchFailure.HOST_HTTP
    else:
        failure = FetchFailure.PROXY_HTTP if proxied else FetchFailure.HOST_HTTP
    if proxied and _proxy_says_error(headers):
        return FetchFailure.PROXY_HTTP
    return failure


def _proxy_says_error(headers: Mapping[str, str]) -> bool:
    if headers.get("X-Squid-Error"):
        return True
    status = headers.get("Proxy-Status") or ""
    return "error=" in status.replace(" ", "").lower()


class TransferProblem(enum.Enum):
    """Network-level ways a transfer can fail (no HTTP status to judge)."""

    CONNECT = "connection failed"
    TIMEOUT = "timed out"
    SHORT = "short transfer"


def classify_transfer(problem: TransferProblem, proxied: bool) -> FetchFailure:
    """Failure of a connection that broke: the proxy's if one was used, else the host's."""
    if problem is TransferProblem.CONNECT:
        return FetchFailure.PROXY_CONNECTION if proxied else FetchFailure.HOST_CONNECTION
    if problem is TransferProblem.TIMEOUT:
        return FetchFailure.TIMEOUT
    return FetchFailure.TRANSFER


def blame(failure: FetchFailure, proxied: bool) -> Blame:
    """Which link a failure is charged to; decides proxy versus mirror failover."""
    if failure in (FetchFailure.PROXY_HTTP, FetchFailure.PROXY_CONNECTION):
        return Blame.PROXY
    if failure in (FetchFailure.TIMEOUT, FetchFailure.TRANSFER):
        return Blame.PROXY if proxied else Blame.HOST
    if failure is FetchFailure.BAD_DATA:
        return Blame.DATA
    if failure is FetchFailure.LOCAL_IO:
        return Blame.LOCAL
    return Blame.HOST


def is_retriable(failure: FetchFailure) -> bool:
    """Transfer-type failures, retried on the same path before failing over."""
    return failure in (
        FetchFailure.HOST_CONNECTION,
        FetchFailure.PROXY_CONNECTION,
        FetchFailure.TIMEOUT,
        FetchFailure.TRANSFER,
    )


def is_network_failure(failure: FetchFailure) -> bool:
    """Failures that mean "could not reach a server" (as opposed to "it said no")."""
    return failure in (
        FetchFailure.HOST_CONNECTION,
        FetchFailure.PROXY_CONNECTION,
        FetchFailure.PROXY_HTTP,
        FetchFailure.TIMEOUT,
        FetchFailure.TRANSFER,
        FetchFailure.OFFLINE,
    )


def is_unavailable(failure: FetchFailure) -> bool:
    """No usable answer from any mirror: unreachable, or failing with server errors.

    This is when a reader falls back to its last verified state (offline);
    "not found" is not included: a mirror that answers 404 is reachable.
    """
    return is_network_failure(failure) or failure is FetchFailure.HOST_HTTP


def offline_warning(fqrn: str, reason: str) -> str:
    """What a reader says when it falls back to its last verified state."""
    return (f"offline: no server reachable for {fqrn}; using the last verified state "
            f"from the cache ({reason})")


# --- backoff ---------------------------------------------------------------


def backoff_delay(attempt: int, init: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    The first delay is uniform in ``[0, init]``; each later one doubles the
    range, capped at ``maximum`` — the stock client's schedule, which keeps
    thousands of jobs from hammering a recovering server in lock-step.
    """
    if attempt < 1 or init <= 0:
        return 0.0
    ceiling = min(init * (2 ** (attempt - 1)), maximum if maximum > 0 else init)
    return rng.uniform(0.0, ceiling)


def backoff_schedule(
    retries: int, init: float, maximum: float, rng: Optional[random.Random] = None
) -> List[float]:
    """All delays for ``retries`` retries (for tests and documentation)."""
    rng = rng or random.Random()
    return [backoff_delay(i, init, maximum, rng) for i in range(1, retries + 1)]


def describe_chain(hosts: Iterable[str], proxies: Iterable[str]) -> str:
    """One line naming what was tried, for error messages."""
    return f"mirrors {', '.join(hosts)} via {', '.join(proxies)}"
