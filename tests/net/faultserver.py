"""A stratum-1 stand-in on loopback that misbehaves on request.

Serves files below a root directory over HTTP/1.1 with keep-alive, and
injects faults per path: status codes, connection resets mid-body, stalls,
slow trickles, corrupted bytes, wrong ``Content-Length``, added latency.
Counts requests per path (so tests can assert how often an object was
downloaded) and records request headers.  Used by ``tests/net`` and by
``benchmarks/bench_fetch.py``.
"""

from __future__ import annotations

import collections
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from uvm._native import Encoder
from uvm.cvmfs.hashing import Algorithm, ContentHash, Suffix


@dataclass
class Fault:
    """``kind`` for requests whose path ends with ``match`` (``*``: any), ``times`` times."""

    kind: str
    match: str = "*"
    times: Optional[int] = None  # None: for ever
    params: Dict[str, Any] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for keep-alive handlers
    allow_reuse_address = True
    request_queue_size = 128


class FaultServer:
    """One mirror.  ``url_for(fqrn)`` is a CVMFS_SERVER_URL entry for it."""

    def __init__(self, root: str, port: int = 0, latency: float = 0.0) -> None:
        self.root = root
        self.port = port
        self.latency = latency
        self.faults: List[Fault] = []
        self.hits: collections.Counter = collections.Counter()
        self.headers: List[Tuple[str, Dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connections: set = set()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifetime -----------------------------------------------------------

    def start(self) -> "FaultServer":
        self._stop.clear()
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: new connections are refused (the mirror is down)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, fqrn: str = "@fqrn@") -> str:
        return f"{self.url}/cvmfs/{fqrn}"

    # -- faults and accounting ------------------------------------------------

    def add_fault(self, kind: str, match: str = "*", times: Optional[int] = None,
                  **params: Any) -> None:
        with self._lock:
            self.faults.append(Fault(kind, match, times, params))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def take_fault(self, path: str) -> Optional[Fault]:
        with self._lock:
            for fault in self.faults:
                if fault.match == "*" or path.endswith(fault.match):
                    if fault.times is None:
                        return fault
                    if fault.times > 0:
                        fault.times -= 1
                        return fault
            return None

    def count(self, suffix: str) -> int:
        with self._lock:
            return sum(n for path, n in self.hits.items() if path.endswith(suffix))

    def total(self) -> int:
        with self._lock:
            return sum(self.hits.values())

    def drop_connections(self) -> None:
        """Close every open client connection, as servers do with idle keep-alive ones."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops; False if it stopped."""
        return not self._stop.wait(seconds)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_owner: FaultServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's
        # algorithm and the client's delayed ACK add 40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server_owner._lock:
            self.server_owner._connections.add(self.connection)

    def finish(self) -> None:
        with self.server_owner._lock:
            self.server_owner._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        owner = self.server_owner
        path = urlsplit(self.path).path  # absolute URLs arrive through a proxy
        with owner._lock:
            owner.hits[path] += 1
            owner.headers.append((path, {k.lower(): v for k, v in self.headers.items()}))
        fault = owner.take_fault(path)
        params = fault.params if fault else {}
        delay = owner.latency + params.get("latency", 0.0) if fault and fault.kind == "latency" \
            else owner.latency
        if delay:
            time.sleep(delay)
        if fault and fault.kind == "status":
            self._send_status(params.get("code", 500), params.get("headers", {}))
            return
        if fault and fault.kind == "stall_headers":
            owner.sleep(params.get("seconds", 30))
            self.close_connection = True
            return
        full = os.path.normpath(os.path.join(owner.root, path.lstrip("/")))
        if not full.startswith(os.path.abspath(owner.root)) or not os.path.isfile(full):
            self._send_status(404)
            return
        with open(full, "rb") as f:
            data = f.read()
        if fault and fault.kind == "redirect":
            self.send_response(params.get("code", 302))
            self.send_header("Location", params["location"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault and fault.kind == "corrupt":
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
        length = len(data)
        if fault and fault.kind == "bad_length":
            length = len(data) + params.get("extra", 100)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-cvmfs" if "/.cvmfs" in path
                         else "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "max-age=61" if "/.cvmfs" in path
                         else "max-age=259200")
        self.end_headers()
        if fault and fault.kind in ("reset", "short"):
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            if fault.kind == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if fault and fault.kind == "stall_body":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            owner.sleep(params.get("seconds", 30))
            self.close_connection = True
            return
        if fault and fault.kind == "trickle":
            step, pause = params.get("step", 16), params.get("pause", 0.05)
            for start in range(0, len(data), step):
                try:
                    self.wfile.write(data[start:start + step])
                    self.wfile.flush()
                except OSError:
                    break
                if not owner.sleep(pause):
                    break
            self.close_connection = True
            return
        self.wfile.write(data)
        if fault and fault.kind == "bad_length":
            self.close_connection = True

    def _send_status(self, code: int, headers: Optional[Dict[str, str]] = None) -> None:
        body = f"status {code}\n".encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# --- making repository objects ----------------------------------------------


def put_object(root: str, fqrn: str, data: bytes, suffix: Suffix = Suffix.NONE,
               compress: bool = True, algorithm: Algorithm = Algorithm.SHA1) -> ContentHash:
    """Store ``data`` as a content-addressed object of ``fqrn`` below ``root``."""
    base = os.path.join(root, "cvmfs", fqrn)
    tmp = os.path.join(base, f"tmp.{os.getpid()}.{threading.get_ident()}")
    os.makedirs(base, exist_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if compress:
            encoder = Encoder(algorithm, fd)
            encoder.feed(data)
            content_hash = encoder.finish().content_hash
        else:
            os.write(fd, data)
            content_hash = ContentHash.of(data, algorithm)
    finally:
        os.close(fd)
    final = os.path.join(base, content_hash.object_path(suffix))
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.replace(tmp, final)
    return content_hash


def put_file(root: str, fqrn: str, name: str, data: bytes) -> None:
    """Store a plain repository file such as ``.cvmfspublished``."""
    path = os.path.join(root, "cvmfs", fqrn, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main() -> None:
    """``python faultserver.py ROOT [--latency S]``: serve until killed; prints the port.

    The benchmark runs the server in its own process, so that server and
    client do not share one interpreter lock.
    """
    import argparse
    import signal as _signal

    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    server = FaultServer(args.root, latency=args.latency).start()
    print(server.port, flush=True)
    _signal.sigwait({_signal.SIGTERM, _signal.SIGINT}) if hasattr(_signal, "sigwait") else None
    server.stop()


if __name__ == "__main__":
    import signal as _signal

    _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGTERM, _signal.SIGINT})
    main()
