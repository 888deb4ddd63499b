"""A simple ``ObjectSource``: plain GETs from a list of servers, or a local stratum-0 directory.

Good enough for reading a repository from a static web server or straight
from a publisher's store; the network issue's fetcher (mirrors, proxies,
failover, shared cache) implements the same protocol.  Servers are tried in
order for each request.  Objects are hashed and inflated by the codec's
``Decoder`` into a private temporary directory; nothing gets its final name
before its hash matched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from typing import BinaryIO, List, Optional, Sequence

from uvm._native import Decoder
from uvm.cvmfs.hashing import ContentHash, Suffix
from uvm.errors import DecodeError, FetchError, FetchFailure

_PIECE = 1 << 20
USER_AGENT = "uvm (cvmfs-compatible reader)"


def expand_servers(value: str, fqrn: str) -> List[str]:
    """``CVMFS_SERVER_URL`` syntax: ``;`` list, ``@fqrn@`` and ``@org@`` replaced."""
    org = fqrn.split(".", 1)[0]
    return [
        item.strip().replace("@fqrn@", fqrn).replace("@org@", org).rstrip("/")
        for item in value.split(";")
        if item.strip()
    ]


def _local_dir(base: str) -> Optional[str]:
    if base.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlparse(base).path)
    if "://" not in base:
        return base
    return None


class SimpleSource:
    """Reads from ``servers``: ``http(s)://`` base URLs, ``file://`` URLs or directories."""

    def __init__(self, servers: Sequence[str], timeout: float = 30.0) -> None:
        if not servers:
            raise FetchError("no server configured", FetchFailure.HOST_CONNECTION,
                             hint="pass --server URL or set CVMFS_SERVER_URL")
        self.servers = list(servers)
        self.timeout = timeout
        self._session = None
        self._tmp = tempfile.mkdtemp(prefix="uvm-objects-")

    # --- raw transfer ------------------------------------------------------------

    def _http(self):
        if self._session is None:
            import requests  # imported only when a network read happens

            self._session = requests.Session()
            self._session.headers.update({"User-Agent": USER_AGENT, "Pragma": None})
        return self._session

    def _stream(self, name: str):
        """Yield pieces of ``name`` from the first server that has it."""
        problems = []
        for base in self.servers:
            local = _local_dir(base)
            if local is not None:
                path = os.path.join(local, name)
                try:
                    handle = open(path, "rb")
                except FileNotFoundError:
                    problems.append((FetchFailure.NOT_FOUND, f"{path} does not exist"))
                    continue
                except OSError as err:
                    problems.append((FetchFailure.LOCAL_IO, f"{path}: {err.strerror}"))
                    continue
                with handle:
                    yield from iter(lambda: handle.read(_PIECE), b"")
                return
            url = f"{base}/{name}"
            import requests

            try:
                response = self._http().get(url, stream=True, timeout=self.timeout,
                                            allow_redirects=False)
            except requests.RequestException as err:
                problems.append((FetchFailure.HOST_CONNECTION, f"{url}: {type(err).__name__}"))
                continue
            with response:
                if response.status_code != 200:
                    failure = (FetchFailure.NOT_FOUND if response.status_code == 404
                               else FetchFailure.HOST_HTTP)
                    problems.append((failure, f"{url}: HTTP {response.status_code}"))
                    continue
                try:
                    yield from response.iter_content(_PIECE)
                except requests.RequestException as err:
                    raise FetchError(f"transfer of {url} failed: {type(err).__name__}",
                                     FetchFailure.TRANSFER) from None
            return
        failure = problems[-1][0] if problems else FetchFailure.HOST_CONNECTION
        what = "; ".join(text for _, text in problems)
        raise FetchError(f"cannot fetch {name}: {what}", failure)

    # --- ObjectSource ------------------------------------------------------------

    def fetch_file(self, name: str) -> bytes:
        return b"".join(self._stream(name.lstrip("/")))

    def fetch_object(
        self,
        content_hash: ContentHash,
        suffix: Suffix = Suffix.NONE,
        expected_size: Optional[int] = None,
        compressed: bool = True,
    ) -> str:
        final = os.path.join(self._tmp, content_hash.cache_path())
        if os.path.exists(final):
            return final
        name = content_hash.object_path(suffix)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="txn.")
        try:
            try:
                decoder = Decoder(content_hash.algorithm, fd, expected_hash=content_hash,
                                  expected_size=expected_size, compressed=compressed)
                stream = self._stream(name)
                try:
                    for piece in stream:
                        decoder.feed(piece)
                finally:
                    stream.close()  # releases the connection at once, also on bad data
                decoder.finish()
            finally:
                os.close(fd)
        except DecodeError as err:
            os.unlink(tmp)
            raise DecodeError(f"object {name} is corrupt: {err}", err.failure) from None
        except BaseException:
            os.unlink(tmp)
            raise
        os.rename(tmp, final)
        return final

    def open_object(
        self,
        content_hash: ContentHash,
        suffix: Suffix = Suffix.NONE,
        expected_size: Optional[int] = None,
        compressed: bool = True,
    ) -> BinaryIO:
        # Objects in the private directory are never evicted while open.
        return open(self.fetch_object(content_hash, suffix, expected_size, compressed), "rb")

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        shutil.rmtree(self._tmp, ignore_errors=True)
