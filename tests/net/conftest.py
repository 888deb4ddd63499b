"""Fixtures for the network tests: loopback mirrors, a real squid, tiny timeouts.

Everything runs on 127.0.0.1; nothing here mocks HTTP.  Timeouts and backoffs
are configured small so that failover paths finish in well under a second,
but no test asserts on time.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable, Iterator, List, Optional

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from faultserver import FaultServer, put_object  # noqa: E402

from uvm.cvmfs.cache import Cache  # noqa: E402
from uvm.cvmfs.fetcher import Fetcher  # noqa: E402
from uvm.cvmfs.servers import DIRECT  # noqa: E402
from uvm.cvmfs.transport import Transport, TransportSettings  # noqa: E402

FQRN = "test.uvm.local"
SQUID = shutil.which("squid") or "/usr/sbin/squid"


def fast_settings(hosts: List[str], proxies: str = DIRECT,
                  **overrides: object) -> TransportSettings:
    """Transport settings with test-sized timeouts and backoffs."""
    from uvm.cvmfs.servers import expand_server_urls, parse_proxy_groups

    values = dict(
        hosts=tuple(expand_server_urls(";".join(hosts), FQRN)),
        proxy_groups=tuple(parse_proxy_groups(proxies, overrides.pop("fallback", ""))),
        timeout=1.0,
        timeout_direct=1.0,
        low_speed_limit=1024,
        max_retries=1,
        backoff_init=0.01,
        backoff_max=0.02,
    )
    values.update(overrides)
    return TransportSettings(**values)  # type: ignore[arg-type]


def fast_env(hosts: List[str], cache: str, proxies: str = DIRECT, **extra: str) -> dict:
    """Environment for a child process: the same settings, spelled as CVMFS_* variables."""
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("CVMFS_"):
            del env[name]
    env.update({
        "CVMFS_SERVER_URL": ";".join(hosts),
        "CVMFS_HTTP_PROXY": proxies,
        "CVMFS_CACHE_BASE": cache,
        "CVMFS_TIMEOUT": "1",
        "CVMFS_TIMEOUT_DIRECT": "1",
        "CVMFS_BACKOFF_INIT": "0.01",
        "CVMFS_BACKOFF_MAX": "0.02",
        "XDG_CONFIG_HOME": os.path.join(cache, "no-config"),
        "XDG_CONFIG_DIRS": os.path.join(cache, "no-config"),
    })
    env.update(extra)
    return env


@pytest.fixture
def stratum(tmp_path) -> str:
    """Root directory the mirrors serve (``<root>/cvmfs/<fqrn>/...``)."""
    root = tmp_path / "stratum1"
    root.mkdir()
    return str(root)


@pytest.fixture
def mirror(stratum) -> Iterator[FaultServer]:
    server = FaultServer(stratum).start()
    yield server
    server.stop()


@pytest.fixture
def mirror2(stratum) -> Iterator[FaultServer]:
    """A second mirror with the same content and its own fault table and counters."""
    server = FaultServer(stratum).start()
    yield server
    server.stop()


@pytest.fixture
def put(stratum) -> Callable[..., object]:
    """``put(data, suffix=..., compress=...)`` stores an object on the mirrors."""
    return lambda data, **kw: put_object(stratum, FQRN, data, **kw)


@pytest.fixture
def cache_dir(tmp_path) -> str:
    return str(tmp_path / "cache")


@pytest.fixture
def make_fetcher(cache_dir) -> Iterator[Callable[..., Fetcher]]:
    """``make_fetcher(settings, quota_mb=4000, base=cache_dir)`` → an open Fetcher."""
    made: List[Fetcher] = []

    def make(settings: TransportSettings, quota_mb: int = 4000,
             base: Optional[str] = None) -> Fetcher:
        cache = Cache(base or cache_dir, quota_mb)
        fetcher = Fetcher(FQRN, cache, lambda: Transport(settings), parallel=8, own_cache=True)
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        try:
            fetcher.close()
        except Exception:  # a test may have closed it already
            pass


# --- squid ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Squid:
    """A real squid forward proxy on loopback, run in the foreground by the fixture."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Squid":
        os.makedirs(self.workdir, exist_ok=True)
        conf = os.path.join(self.workdir, "squid.conf")
        user = ""
        if os.geteuid() == 0:
            # squid drops root privileges; give its user the work directory.
            name = "proxy"
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                name, entry = "nobody", pwd.getpwnam("nobody")
            user = f"cache_effective_user {name}\n"
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        with open(conf, "w") as f:
            f.write(f"""\
http_port 127.0.0.1:{self.port}
{user}pid_filename {self.workdir}/squid.pid
access_log stdio:{self.workdir}/access.log
cache_log {self.workdir}/cache.log
cache_store_log none
coredump_dir {self.workdir}
acl all_src src all
http_access allow all_src
cache_mem 32 MB
maximum_object_size_in_memory 4 MB
negative_ttl 0 seconds
connect_timeout 2 seconds
read_timeout 5 seconds
shutdown_lifetime 0 seconds
pinger_enable off
dns_nameservers 127.0.0.1
netdb_filename none
via on
forwarded_for off
""")
        self.process = subprocess.Popen(
            [SQUID, "-N", "-f", conf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if \
                    self.process.stderr else ""
                log = ""
                try:
                    with open(os.path.join(self.workdir, "cache.log")) as f:
                        log = f.read()[-2000:]
                except OSError:
                    pass
                raise RuntimeError(f"squid exited: {err}\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("squid did not start listening")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()

    def access_log(self) -> str:
        try:
            with open(os.path.join(self.workdir, "access.log")) as f:
                return f.read()
        except OSError:
            return ""


@pytest.fixture(scope="session")
def squid() -> Iterator[Squid]:
    # Not below pytest's tmp_path: its parents are private to us, and squid
    # runs as its own user when started by root.
    workdir = tempfile.mkdtemp(prefix="uvm-squid-")
    os.chmod(workdir, 0o755)
    proxy = Squid(workdir)
    try:
        yield proxy.start()
    finally:
        proxy.stop()
        shutil.rmtree(workdir, ignore_errors=True)
