"""Keep-alive HTTP/1.1 GETs for the transport, on the standard library's ``http.client``.

Why not ``requests``: importing it (urllib3, idna, charset_normalizer,
certifi and their dependencies) costs about 0.1 s of CPU, a sixth of a cold
template start, and the transport needs only GET through an optional HTTP
proxy, keep-alive, timeouts and (when configured) redirects, which
``http.client`` gives for a fifth of that.  Policy (retries, failover,
classification, the low-speed watchdog) stays in :mod:`uvm.cvmfs.transport`;
this module only opens, reuses and closes connections and says which phase
failed.
"""

from __future__ import annotations

import base64
import http.client
import socket
import threading
import urllib.parse
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

_Key = Tuple[str, str, int, str]


class ConnectFailed(Exception):
    """No connection to the server or proxy (refused, unreachable, timed out)."""

    def __init__(self, detail: str, timed_out: bool) -> None:
        super().__init__(detail)
        self.timed_out = timed_out


class NoResponse(Exception):
    """Connected, but no response arrived (closed, reset or timed out)."""

    def __init__(self, detail: str, timed_out: bool) -> None:
        super().__init__(detail)
        self.timed_out = timed_out


def target_of(url: str, proxied: bool) -> Tuple[str, str, int, str]:
    """(scheme, host, port, request target) of ``url``; an HTTP proxy gets the absolute URL."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConnectFailed(f"unsupported URL {url!r}", False)
    port = parts.port or (443 if scheme == "https" else 80)
    if proxied and scheme == "http":
        return scheme, parts.hostname, port, url
    path = parts.path or "/"
    return scheme, parts.hostname, port, path + (f"?{parts.query}" if parts.query else "")


class Connections:
    """Idle keep-alive connections per (scheme, host, port, proxy), shared by threads.

    At most ``keep`` idle connections are kept per endpoint; a connection
    goes back only after its response was read to the end.  A request on a
    kept connection that the server has meanwhile closed is sent once more on
    a new one, as browsers and urllib3 do (servers close idle connections
    whenever they like).
    """

    def __init__(self, keep: int) -> None:
        self._keep = max(1, keep)
        self._idle: Dict[_Key, List[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def get(self, url: str, proxy: Optional[str], headers: Mapping[str, str],
            timeout: float) -> Tuple[http.client.HTTPResponse, Callable[[bool], None]]:
        """Send ``GET url``; return the response (status and headers read) and
        ``done(reusable)``, to call once the body is read or abandoned."""
        scheme, host, port, target = target_of(url, proxy is not None)
        key = (scheme, host, port, proxy or "")
        sent = dict(headers)
        if proxy is not None:
            auth = _proxy_authorization(proxy)
            if auth:
                sent["Proxy-Authorization"] = auth
        conn = self._take(key)
        if conn is not None:
            try:
                return self._send(key, conn, target, sent, timeout)
            except NoResponse as err:
                if err.timed_out:
                    raise
        return self._send(key, _connect(scheme, host, port, proxy, timeout), target, sent,
                          timeout)

    def _send(self, key: _Key, conn: http.client.HTTPConnection, target: str,
              headers: Mapping[str, str], timeout: float
              ) -> Tuple[http.client.HTTPResponse, Callable[[bool], None]]:
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request("GET", target, headers=dict(headers))
            response = conn.getresponse()
        except TimeoutError as err:
            conn.close()
            raise NoResponse(f"timed out waiting for a response: {err}", True) from None
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            raise NoResponse(f"no response: {err or type(err).__name__}", False) from None
        return response, _releaser(self, key, conn, response)

    def _take(self, key: _Key) -> Optional[http.client.HTTPConnection]:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def give_back(self, key: _Key, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._keep:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _releaser(pool: Connections, key: _Key, conn: http.client.HTTPConnection,
              response: http.client.HTTPResponse) -> Callable[[bool], None]:
    def done(reusable: bool) -> None:
        if reusable and not response.isclosed() and response.length == 0:
            response.read()  # nothing left: this marks the exchange finished
        if reusable and response.isclosed() and not response.will_close:
            pool.give_back(key, conn)
        else:
            conn.close()
    return done


def _connect(scheme: str, host: str, port: int, proxy: Optional[str],
             timeout: float) -> http.client.HTTPConnection:
    conn: http.client.HTTPConnection
    if proxy is not None:
        parts = urllib.parse.urlsplit(proxy)
        where = (parts.hostname or "", parts.port or 80)
    else:
        where = (host, port)
    if scheme == "https":
        import ssl  # only for https mirrors

        conn = http.client.HTTPSConnection(where[0], where[1], timeout=timeout,
                                           context=ssl.create_default_context())
        if proxy is not None:
            conn.set_tunnel(host, port)
    else:
        conn = http.client.HTTPConnection(where[0], where[1], timeout=timeout)
    conn._create_connection = _create_connection  # type: ignore[attr-defined]
    try:
        conn.connect()
    except TimeoutError as err:
        conn.close()
        raise ConnectFailed(f"connect timeout: {err}", True) from None
    except OSError as err:
        conn.close()
        raise ConnectFailed(f"connection failed: {err}", False) from None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _create_connection(address: Tuple[str, int], timeout: Any = None,
                       source_address: Any = None) -> socket.socket:
    """``socket.create_connection`` (http.client's hook for it) with an ASCII
    host name passed as bytes: given a ``str``, the socket module imports the
    IDNA codec to encode it, 4 ms of every cold start's first request."""
    host, port = address
    name = host.encode("ascii") if host.isascii() else host
    return socket.create_connection((name, port), timeout, source_address)  # type: ignore[arg-type]


def _proxy_authorization(proxy: str) -> Optional[str]:
    parts = urllib.parse.urlsplit(proxy)
    if parts.username is None:
        return None
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
