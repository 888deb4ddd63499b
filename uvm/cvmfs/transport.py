"""HTTP downloads over a ring of mirrors and a chain of proxies, with the stock client's failover.

The transport streams a response body into a *sink* (in practice the object
decoder writing a cache transaction file) and never learns what a cache is;
see ``style-anchors.md`` ("only the fetcher combines cache and network").
Policy comes from the pure functions of :mod:`uvm.cvmfs.servers`:

* transfer errors (connection failures, timeouts, short bodies) are retried
  on the same mirror and proxy ``max_retries`` times after a randomised,
  doubling backoff;
* then a proxy fault moves to the next proxy; when every proxy has failed,
  or the mirror itself failed, the next mirror of the ring is used and the
  proxies start over; the request gives up after every mirror was tried;
* bad data (hash mismatch, corrupt stream) is retried once with
  ``Pragma: no-cache`` and ``Cache-Control: no-cache`` (a proxy may hold a
  corrupted copy), then charged to the mirror;
* after ``proxy_reset_after`` / ``host_reset_after`` seconds the first proxy
  group / mirror is preferred again.

HTTP itself is :mod:`uvm.cvmfs.connections` (``http.client`` with
keep-alive), imported only when the first download starts: a run from a
warm cache imports no HTTP code at all.
"""

from __future__ import annotations

import random
import re
import threading
import time
import urllib.parse
from typing import Any, Callable, List, NamedTuple, Optional, Protocol, Sequence, Tuple

from uvm import __version__
from uvm import log as uvm_log
from uvm.cvmfs import servers
from uvm.cvmfs.servers import DIRECT, Blame, TransferProblem
from uvm.errors import CacheError, DecodeError, DecodeFailure, FetchError, FetchFailure

log = uvm_log.get(__name__)

USER_AGENT = f"uvm/{__version__} (cvmfs-compatible)"
MAX_REDIRECTS = 4
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 256 * 1024


class Sink(Protocol):
    """Where a response body goes; a fresh one is opened for every attempt."""

    def write(self, data: bytes) -> None:
        """Take the next piece; raise ``DecodeError`` if the data is bad."""

    def finish(self) -> Any:
        """The body is complete; verify it and return the result."""

    def discard(self) -> None:
        """The attempt failed; drop whatever was written."""


class BytesSink:
    """Collects a small body (manifest, whitelist) in memory, bounded in size."""

    def __init__(self, limit: int = 16 << 20) -> None:
        self._parts: List[bytes] = []
        self._size = 0
        self._limit = limit

    def write(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            raise DecodeError(f"file larger than {self._limit} bytes", DecodeFailure.TOO_LARGE)
        self._parts.append(bytes(data))

    def finish(self) -> bytes:
        return b"".join(self._parts)

    def discard(self) -> None:
        self._parts.clear()


class TransportSettings(NamedTuple):
    """What the transport needs from the configuration, already parsed."""

    hosts: Tuple[str, ...]
    proxy_groups: Tuple[Tuple[str, ...], ...] = ((DIRECT,),)
    timeout: float = 5.0
    timeout_direct: float = 10.0
    low_speed_limit: int = 1024
    max_retries: int = 1
    backoff_init: float = 2.0
    backoff_max: float = 10.0
    follow_redirects: bool = False
    host_reset_after: float = 1800.0
    proxy_reset_after: float = 300.0
    pool_size: int = 16

    @classmethod
    def from_settings(cls, settings: Any, fqrn: str) -> "TransportSettings":
        """Build from a :class:`uvm.config.Settings` for repository ``fqrn``."""
        from uvm.errors import ConfigError

        hosts = servers.expand_server_urls(settings.server_url or "", fqrn)
        if not hosts:
            raise ConfigError(
                f"no server configured for {fqrn}",
                hint="set CVMFS_SERVER_URL or server_url in "
                f'[repositories."{fqrn}"] of ~/.config/uvm/config.toml',
            )
        groups = servers.parse_proxy_groups(settings.http_proxy, settings.fallback_proxy)
        return cls(
            hosts=tuple(hosts),
            proxy_groups=tuple(groups),
            timeout=settings.timeout,
            timeout_direct=settings.timeout_direct,
            low_speed_limit=settings.low_speed_limit,
            max_retries=max(0, settings.max_retries),
            backoff_init=settings.backoff_init,
            backoff_max=settings.backoff_max,
            follow_redirects=settings.follow_redirects,
            host_reset_after=settings.host_reset_after,
            proxy_reset_after=settings.proxy_reset_after,
            pool_size=max(4, settings.parallel_downloads),
        )


class Chain:
    """The current mirror and proxy, shared by all requests of a transport.

    Failover is sticky (later requests start where the last failure left
    off) and thread-safe: a failure only moves the chain if it still points
    at the failed element, so eight threads failing at once move it one step.
    """

    def __init__(self, hosts: Sequence[str], proxies: Sequence[str], host_reset_after: float,
                 proxy_reset_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.hosts = list(hosts)
        self.proxies = list(proxies)
        self._host = 0
        self._proxy = 0
        self._host_since = 0.0
        self._proxy_since = 0.0
        self._host_reset = host_reset_after
        self._proxy_reset = proxy_reset_after
        self._clock = clock
        self._lock = threading.Lock()

    def current(self, allow_reset: bool = True) -> Tuple[int, int]:
        """Indices of the mirror and proxy to use; reset timers apply at a request's start."""
        with self._lock:
            if not allow_reset:
                return self._host, self._proxy
            now = self._clock()
            if self._host and self._host_reset > 0 and now - self._host_since >= self._host_reset:
                log.info("back to the first mirror %s", self.hosts[0])
                self._host = 0
            if (self._proxy and self._proxy_reset > 0
                    and now - self._proxy_since >= self._proxy_reset):
                log.info("back to the first proxy %s", self.proxies[0])
                self._proxy = 0
            return self._host, self._proxy

    def switch_host(self, failed: int) -> None:
        with self._lock:
            if self._host == failed and len(self.hosts) > 1:
                self._host = (failed + 1) % len(self.hosts)
                self._host_since = self._clock()
                log.warning("switching mirror from %s to %s", self.hosts[failed],
                            self.hosts[self._host])

    def switch_proxy(self, failed: int) -> None:
        with self._lock:
            if self._proxy == failed and len(self.proxies) > 1:
                self._proxy = (failed + 1) % len(self.proxies)
                self._proxy_since = self._clock()
                log.warning("switching proxy from %s to %s", self.proxies[failed],
                            self.proxies[self._proxy])

    def reset_proxies(self) -> None:
        with self._lock:
            self._proxy = 0


def _short(err: BaseException) -> str:
    """The useful part of a socket error ("[Errno 111] Connection refused")."""
    text = str(err)
    match = re.search(r"\[Errno -?\d+\] [^'\")(]+", text)
    if match:
        return match.group(0).strip()
    if "timed out" in text:
        return "timed out"
    return text if len(text) < 120 else type(err).__name__


class _AttemptFailed(Exception):
    def __init__(self, failure: FetchFailure, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


class _LocalFailure(Exception):
    """The sink could not write (our disk): no network retry helps."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class Transport:
    """Downloads paths below the mirrors' base URLs into sinks."""

    def __init__(
        self,
        settings: TransportSettings,
        rng: Optional[random.Random] = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        proxies = servers.proxy_order(settings.proxy_groups, self._rng)
        self.chain = Chain(settings.hosts, proxies, settings.host_reset_after,
                           settings.proxy_reset_after, clock)
        self._connections: Any = None
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.bytes_received = 0

    # -- public -------------------------------------------------------------

    def download(self, path: str, open_sink: Callable[[], Sink], what: str = "") -> Any:
        """Stream ``<mirror>/<path>`` into a fresh sink per attempt; return ``sink.finish()``.

        Raises :class:`FetchError` once every mirror (and, per mirror, every
        proxy) has failed, and lets local errors of the sink (``CacheError``,
        ``OSError``) through at once.
        """
        what = what or path
        nhosts, nproxies = len(self.chain.hosts), len(self.chain.proxies)
        hosts_tried = proxies_tried = retries = 0
        no_cache = False
        attempts: List[Tuple[str, str, FetchFailure, str]] = []
        while True:
            host_index, proxy_index = self.chain.current(allow_reset=not attempts)
            host = self.chain.hosts[host_index]
            proxy = self.chain.proxies[proxy_index]
            proxied = proxy != DIRECT
            sink = open_sink()
            try:
                return self._attempt(f"{host}/{path.lstrip('/')}", proxy, sink, no_cache)
            except _AttemptFailed as failed:
                sink.discard()
                failure, detail = failed.failure, failed.detail
            except _LocalFailure as local:
                sink.discard()
                raise local.error
            except BaseException:
                sink.discard()
                raise
            attempts.append((host, proxy, failure, detail))
            log.info("%s from %s via %s: %s", what, host, proxy, detail)
            who = servers.blame(failure, proxied)
            if who is Blame.DATA:
                if not no_cache:
                    no_cache = True  # a proxy may hold a bad copy: bypass caches once
                    continue
                who = Blame.HOST
            elif servers.is_retriable(failure) and retries < self.settings.max_retries:
                retries += 1
                self._sleep(servers.backoff_delay(
                    retries, self.settings.backoff_init, self.settings.backoff_max, self._rng))
                continue
            retries = 0
            no_cache = False
            if who is Blame.PROXY:
                proxies_tried += 1
                if proxies_tried < nproxies:
                    self.chain.switch_proxy(proxy_index)
                    continue
                self.chain.reset_proxies()  # every proxy failed: blame the mirror
            hosts_tried += 1
            proxies_tried = 0
            if hosts_tried >= nhosts:
                raise self._give_up(what, attempts)
            self.chain.switch_host(host_index)

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, None
        if connections is not None:
            connections.close()

    # -- internals ----------------------------------------------------------

    @staticmethod
    def _give_up(what: str, attempts: List[Tuple[str, str, FetchFailure, str]]) -> FetchError:
        failures = [a[2] for a in attempts]
        if all(f is FetchFailure.NOT_FOUND for f in failures):
            failure = FetchFailure.NOT_FOUND
        else:
            failure = next((f for f in reversed(failures) if f is not FetchFailure.NOT_FOUND),
                           failures[-1])
        tried = "; ".join(
            f"{host}{'' if proxy == DIRECT else ' via ' + proxy}: {detail}"
            for host, proxy, _, detail in attempts[-6:]
        )
        return FetchError(f"cannot download {what}: {failure.value} ({tried})", failure,
                          hint="check CVMFS_SERVER_URL and CVMFS_HTTP_PROXY "
                          "(`uvm config show`)")

    def prepare(self) -> None:
        """Import the HTTP code now, in the caller's thread (see :meth:`Fetcher.ahead`)."""
        self._pool()

    def _pool(self) -> Any:
        with self._lock:
            if self._connections is None:
                from uvm.cvmfs.connections import Connections  # deferred: see the module docstring

                self._connections = Connections(self.settings.pool_size)
            return self._connections

    def _attempt(self, url: str, proxy: str, sink: Sink, no_cache: bool) -> Any:
        if url.startswith("file://"):
            return self._attempt_local(url[len("file://"):], sink)
        proxied = proxy != DIRECT
        timeout = self.settings.timeout if proxied else self.settings.timeout_direct
        response, done = self._response(url, proxy if proxied else None, no_cache, timeout)
        reusable = False
        try:
            failure = servers.classify_status(response.status, response.headers, proxied,
                                              self.settings.follow_redirects)
            if failure is not FetchFailure.OK:
                squid = response.headers.get("X-Squid-Error")
                raise _AttemptFailed(
                    failure, f"HTTP {response.status}" + (f" ({squid})" if squid else ""))
            result = self._receive(response, sink, proxied, timeout)
            reusable = True
            return result
        finally:
            done(reusable)

    def _response(self, url: str, proxy: Optional[str], no_cache: bool, timeout: float) -> Any:
        """The response to ``GET url`` (redirects followed when configured) and its ``done``."""
        from uvm.cvmfs.connections import ConnectFailed, NoResponse

        headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "Keep-Alive"}
        if no_cache:
            headers.update({"Pragma": "no-cache", "Cache-Control": "no-cache"})
        proxied = proxy is not None
        for _hop in range(MAX_REDIRECTS + 1):
            with self._lock:
                self.requests_sent += 1
            try:
                response, done = self._pool().get(url, proxy, headers, timeout)
            except ConnectFailed as err:
                problem = TransferProblem.CONNECT
                raise self._transfer(problem, proxied, str(err)) from None
            except NoResponse as err:
                problem = TransferProblem.TIMEOUT if err.timed_out else TransferProblem.CONNECT
                raise self._transfer(problem, proxied, str(err)) from None
            location = response.headers.get("Location")
            if not (self.settings.follow_redirects and response.status in _REDIRECTS
                    and location):
                return response, done
            done(True)
            url = urllib.parse.urljoin(url, location)
        raise _AttemptFailed(FetchFailure.HOST_HTTP, "too many redirects")

    def _receive(self, response: Any, sink: Sink, proxied: bool, timeout: float) -> Any:
        """Stream the body into ``sink``; short, broken and too slow transfers fail."""
        import http.client

        length_text = response.headers.get("Content-Length")
        expected = int(length_text) if length_text and length_text.isdigit() else None
        received = 0
        window_start, window_bytes = self._clock(), 0
        while True:
            try:
                data = response.read1(_CHUNK)
            except TimeoutError as err:
                raise self._transfer(TransferProblem.TIMEOUT, proxied,
                                     f"read timeout: {_short(err)}")
            except (http.client.HTTPException, OSError) as err:
                raise self._transfer(TransferProblem.SHORT, proxied,
                                     f"transfer broken after {received} bytes: "
                                     f"{_short(err) or type(err).__name__}")
            if not data:
                break
            received += len(data)
            self._feed(sink, data)
            # Low-speed watchdog: like curl's CURLOPT_LOW_SPEED_*, abort a
            # trickle slower than low_speed_limit over a whole timeout window.
            now = self._clock()
            if now - window_start >= timeout:
                rate = (received - window_bytes) / (now - window_start)
                if rate < self.settings.low_speed_limit:
                    raise self._transfer(
                        TransferProblem.TIMEOUT, proxied,
                        f"too slow: {rate:.0f} B/s < {self.settings.low_speed_limit} B/s")
                window_start, window_bytes = now, received
        with self._lock:
            self.bytes_received += received
        if expected is not None and received < expected:
            raise self._transfer(TransferProblem.SHORT, proxied,
                                 f"short transfer: {received} of {expected} bytes")
        return self._finish(sink)

    def _attempt_local(self, path: str, sink: Sink) -> Any:
        """A local stratum-0 directory: no HTTP, the same verification."""
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            raise _AttemptFailed(FetchFailure.HOST_HTTP, "no such file")
        except OSError as err:
            raise _AttemptFailed(FetchFailure.HOST_CONNECTION, err.strerror or str(err))
        with handle:
            for data in iter(lambda: handle.read(_CHUNK), b""):
                self._feed(sink, data)
        return self._finish(sink)

    @staticmethod
    def _finish(sink: Sink) -> Any:
        try:
            return sink.finish()
        except DecodeError as err:
            if err.failure is DecodeFailure.WRITE:
                raise _LocalFailure(err)
            raise _AttemptFailed(FetchFailure.BAD_DATA, f"bad data: {err}")
        except (CacheError, OSError) as err:
            raise _LocalFailure(err)

    @staticmethod
    def _feed(sink: Sink, data: bytes) -> None:
        try:
            sink.write(data)
        except DecodeError as err:
            if err.failure is DecodeFailure.WRITE:
                raise _LocalFailure(err)
            raise _AttemptFailed(FetchFailure.BAD_DATA, f"bad data: {err}")
        except (CacheError, OSError) as err:
            raise _LocalFailure(err)

    @staticmethod
    def _transfer(problem: TransferProblem, proxied: bool, detail: str) -> _AttemptFailed:
        return _AttemptFailed(servers.classify_transfer(problem, proxied), detail)
